//! `drover schema`: print or write the JSON Schemas of the fleet kinds.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use drover::fleet::model::Kind;
use drover::fleet::schema;

use super::Exit;

/// Arguments of `drover schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Kind to print (Fleet, Site, NodePool, RunnerSet, SecretRef; any case). All when omitted.
    pub kind: Option<String>,
    /// Write every schema to DIR/<kind>.json instead of printing.
    #[arg(long, value_name = "DIR", conflicts_with = "kind")]
    pub write: Option<PathBuf>,
}

/// Runs `drover schema`.
pub fn run(args: &SchemaArgs) -> anyhow::Result<Exit> {
    if let Some(dir) = &args.write {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for kind in Kind::ALL {
            let path = dir.join(format!("{}.json", schema::file_stem(kind)));
            std::fs::write(&path, schema::schema_text(kind))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(Exit::Success);
    }
    match &args.kind {
        Some(name) => match Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
        {
            Some(kind) => print!("{}", schema::schema_text(kind)),
            None => {
                eprintln!(
                    "error: unknown kind `{name}`; known kinds: Fleet, Site, NodePool, RunnerSet, SecretRef"
                );
                return Ok(Exit::Usage);
            }
        },
        None => {
            let all: serde_json::Map<String, serde_json::Value> = Kind::ALL
                .into_iter()
                .map(|k| (k.as_str().to_string(), schema::schema_for(k)))
                .collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
    }
    Ok(Exit::Success)
}
