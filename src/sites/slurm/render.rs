//! Fleet → runner job specs for one Slurm site. Pure: no I/O, no secret values.
//!
//! Each runner set whose pool is on the site becomes one [`RunnerTemplate`]: the
//! [`JobSpec`] every runner of the set is submitted with (only the slot in the comment and
//! `DROVER_RUNNER_SLOT` differ), plus the environment variables that are filled at submit
//! time (secrets from SecretRefs, the JIT grant). The batch script is documented in
//! `docs/slurm.md` ("The runner job").

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::identity::{COMMENT_PREFIX, JobIdentity, job_name};
use super::jit;
use super::types::JobSpec;
use crate::fleet::model::{
    BindMount, NodePool, RunnerSet, SlurmContainer, SlurmContainerDefaults, SlurmSite,
};
use crate::fleet::quantity::Quantity;
use crate::sites::SiteContext;

/// Shown instead of values filled at submit time.
const MASK_SECRET: &str = "<secret from SecretRef {}>";

/// One runner set rendered for the site.
#[derive(Debug, Clone)]
pub struct RunnerTemplate {
    /// Runner set name.
    pub set: String,
    /// NodePool name.
    pub pool: String,
    /// The job spec, with the comment of slot 0 (see [`RunnerTemplate::job`]) and without
    /// secret environment variables.
    pub spec: JobSpec,
    /// Environment variables filled from SecretRefs at submit time: (variable, SecretRef).
    pub secret_env: Vec<(String, String)>,
    /// Whether the script fetches a JIT config at start (the default command).
    pub needs_jit: bool,
    /// Identity of the set's jobs (slot 0 here).
    pub identity: JobIdentity,
}

impl RunnerTemplate {
    /// The job spec of one slot, without secrets (they are added by apply).
    pub fn job(&self, slot: u32) -> JobSpec {
        let mut spec = self.spec.clone();
        spec.comment = JobIdentity {
            slot,
            ..self.identity.clone()
        }
        .comment();
        spec.environment
            .insert("DROVER_RUNNER_SLOT".into(), slot.to_string());
        spec
    }

    /// The spec as people read it (plans, `drover render`): secrets masked, the slot shown
    /// as `<slot>`.
    pub fn to_value(&self, replicas: u32) -> Value {
        let s = &self.spec;
        let mut env: BTreeMap<String, String> = s.environment.clone();
        env.insert("DROVER_RUNNER_SLOT".into(), "<slot>".into());
        for (var, secret) in &self.secret_env {
            env.insert(var.clone(), MASK_SECRET.replace("{}", secret));
        }
        if self.needs_jit {
            env.insert(jit::URL_VAR.into(), "<drover's JIT endpoint>".into());
            env.insert(jit::TOKEN_VAR.into(), "<one-time credential>".into());
        }
        let mut job = serde_json::Map::new();
        job.insert("name".into(), json!(s.name));
        job.insert(
            "comment".into(),
            json!(format!(
                "{COMMENT_PREFIX}fleet={},set={},slot=<slot>",
                self.identity.fleet, self.identity.set
            )),
        );
        job.insert("partition".into(), json!(s.partition));
        let optional = [
            ("account", s.account.as_ref().map(|v| json!(v))),
            ("qos", s.qos.as_ref().map(|v| json!(v))),
            ("gres", s.gres.as_ref().map(|v| json!(v))),
        ];
        for (k, v) in optional.into_iter() {
            if let Some(v) = v {
                job.insert(k.into(), v);
            }
        }
        job.insert("cpusPerTask".into(), json!(s.cpus_per_task));
        if let Some(m) = s.memory_mb {
            job.insert("memoryMB".into(), json!(m));
        }
        if let Some(t) = s.time_limit_minutes {
            job.insert("timeLimitMinutes".into(), json!(t));
        }
        if let Some(c) = &s.constraint {
            job.insert("constraint".into(), json!(c));
        }
        job.insert("workingDirectory".into(), json!(s.working_directory));
        job.insert("environment".into(), json!(env));
        job.insert("script".into(), json!(s.script));
        json!({
            "kind": "SlurmJob",
            "runnerSet": self.set,
            "pool": self.pool,
            "replicas": replicas,
            "job": Value::Object(job),
        })
    }
}

/// Why a Slurm site's runner jobs cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The site is not a Slurm site.
    #[error("site `{0}` is not a Slurm site")]
    NotSlurm(String),
    /// One runner set cannot be rendered.
    #[error("site `{site}`, RunnerSet `{set}`: {problem}")]
    Set {
        /// The site.
        site: String,
        /// The runner set.
        set: String,
        /// What is wrong.
        problem: SetProblem,
    },
}

/// What keeps one runner set from rendering as a Slurm job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetProblem {
    /// Neither the pool nor the site names a partition.
    #[error("NodePool `{0}` names no partition and the site has no defaultPartition")]
    NoPartition(String),
    /// The cpu quantity does not parse.
    #[error("cannot read cpu quantity `{0}`")]
    Cpu(String),
    /// The memory quantity does not parse.
    #[error("cannot read memory quantity `{0}`")]
    Memory(String),
}

/// Renders every runner set on the site, in name order.
pub fn render(ctx: &SiteContext<'_>) -> Result<Vec<RunnerTemplate>, RenderError> {
    let site_name = ctx.name();
    let slurm = ctx
        .site
        .value
        .spec
        .slurm
        .as_ref()
        .ok_or_else(|| RenderError::NotSlurm(site_name.to_owned()))?;
    let mut out = Vec::new();
    for (name, set) in &ctx.repo.runner_sets {
        let Some(pool) = ctx.repo.pools.get(&set.value.spec.pool) else {
            continue;
        };
        if pool.value.spec.site != site_name {
            continue;
        }
        out.push(
            render_set(ctx, slurm, &pool.value, &set.value).map_err(|problem| {
                RenderError::Set {
                    site: site_name.to_owned(),
                    set: name.clone(),
                    problem,
                }
            })?,
        );
    }
    Ok(out)
}

/// The names of the runner sets [`render`] would render (no errors).
pub fn declared_sets(ctx: &SiteContext<'_>) -> Vec<String> {
    ctx.repo
        .runner_sets
        .iter()
        .filter(|(_, set)| {
            ctx.repo
                .pools
                .get(&set.value.spec.pool)
                .is_some_and(|p| p.value.spec.site == ctx.name())
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn render_set(
    ctx: &SiteContext<'_>,
    slurm: &SlurmSite,
    pool: &NodePool,
    set: &RunnerSet,
) -> Result<RunnerTemplate, SetProblem> {
    let spec = &set.spec;
    let pool_slurm = pool.spec.slurm.clone().unwrap_or_default();
    let partition = pool_slurm
        .partition
        .clone()
        .or_else(|| slurm.default_partition.clone())
        .ok_or_else(|| SetProblem::NoPartition(pool.metadata.name.clone()))?;
    let gres = spec.resources.gpu.as_ref().map(|gpu| {
        let model = pool
            .spec
            .gpu
            .as_ref()
            .and_then(|g| g.model.clone())
            .or_else(|| pool_slurm.gres.as_deref().and_then(gres_type));
        match model {
            Some(m) => format!("gpu:{m}:{}", gpu.count),
            None => format!("gpu:{}", gpu.count),
        }
    });
    let cpus = match &spec.resources.cpu {
        Some(q) => parse_cpus(q).ok_or_else(|| SetProblem::Cpu(q.clone()))?,
        None => 1,
    };
    let memory_mb = match &spec.resources.memory {
        Some(q) => Some(parse_memory_mb(q).ok_or_else(|| SetProblem::Memory(q.clone()))?),
        None => None,
    };
    let fleet = ctx.fleet_name();
    let set_name = &set.metadata.name;
    let mut environment = BTreeMap::from([
        ("DROVER_SITE".to_owned(), ctx.name().to_owned()),
        ("DROVER_FLEET".to_owned(), fleet.to_owned()),
        ("DROVER_RUNNER_SET".to_owned(), set_name.clone()),
    ]);
    let mut secret_env = Vec::new();
    for var in &spec.env {
        match (&var.value, &var.secret_ref) {
            (_, Some(secret)) => secret_env.push((var.name.clone(), secret.clone())),
            (Some(value), None) => {
                environment.insert(var.name.clone(), value.clone());
            }
            (None, None) => {
                environment.insert(var.name.clone(), String::new());
            }
        }
    }
    let needs_jit = spec.command.is_empty();
    let container = spec
        .container
        .as_ref()
        .map(|c| Container::resolve(&slurm.container, c));
    let identity = JobIdentity::new(fleet, ctx.name(), set_name.clone(), 0);
    Ok(RunnerTemplate {
        set: set_name.clone(),
        pool: pool.metadata.name.clone(),
        spec: JobSpec {
            name: job_name(fleet, set_name),
            comment: identity.comment(),
            partition,
            account: slurm.account.clone(),
            qos: slurm.qos.clone(),
            gres,
            cpus_per_task: cpus,
            memory_mb,
            time_limit_minutes: spec.time_limit_minutes,
            constraint: pool_slurm.constraint.clone(),
            working_directory: slurm.scratch_dir.clone(),
            script: script(
                &slurm.scratch_dir,
                fleet,
                set_name,
                &spec.command,
                container.as_ref(),
            ),
            environment,
        },
        secret_env,
        needs_jit,
        identity,
    })
}

/// The GRES type of `gpu:a100:4` (`a100`); `None` for `gpu` or `gpu:4`.
fn gres_type(gres: &str) -> Option<String> {
    let mut parts = gres.split(':');
    let _name = parts.next()?;
    let second = parts.next()?;
    (!second.bytes().all(|b| b.is_ascii_digit())).then(|| second.to_owned())
}

/// A runner set's Apptainer container with the site's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The image, as `apptainer exec` takes it.
    pub image: String,
    /// The site's binds (but those whose target the set binds itself), then the set's.
    pub binds: Vec<BindMount>,
    /// `APPTAINER_CACHEDIR`: the set's, else the site's.
    pub image_cache_dir: Option<String>,
}

impl Container {
    /// The set's container settings over the site's defaults: a set bind replaces a site
    /// bind with the same target, and the set's image cache replaces the site's.
    pub fn resolve(site: &SlurmContainerDefaults, set: &SlurmContainer) -> Self {
        let mut binds: Vec<BindMount> = site
            .binds
            .iter()
            .filter(|b| !set.binds.iter().any(|own| own.target() == b.target()))
            .cloned()
            .collect();
        binds.extend(set.binds.iter().cloned());
        Self {
            image: set.image.clone(),
            binds,
            image_cache_dir: set
                .image_cache_dir
                .clone()
                .or_else(|| site.image_cache_dir.clone()),
        }
    }

    /// The script lines that define `container`, the `apptainer exec` command line as a
    /// bash array: rootless (`--userns`), the job directory and every bind mount bound.
    fn definition(&self) -> String {
        let mut s = String::new();
        if let Some(cache) = &self.image_cache_dir {
            s.push_str(&format!(
                "# Apptainer's image cache outlives the job directory.\n\
                 export APPTAINER_CACHEDIR={}\n\
                 mkdir -p -- \"$APPTAINER_CACHEDIR\"\n",
                sh_quote(cache)
            ));
        }
        s.push_str("container=(apptainer exec --userns\n  --bind \"$work\"\n");
        for bind in &self.binds {
            let spec = format!(
                "{}:{}{}",
                bind.source,
                bind.target(),
                if bind.read_only { ":ro" } else { "" }
            );
            s.push_str(&format!("  --bind {}\n", sh_quote(&spec)));
        }
        s.push_str(&format!("  {})\n", sh_quote(&self.image)));
        s
    }
}

/// The batch script: a per-job work directory on node-local scratch, then the runner,
/// inside an Apptainer container when the set has one.
pub fn script(
    scratch: &str,
    fleet: &str,
    set: &str,
    command: &[String],
    container: Option<&Container>,
) -> String {
    let run = match container {
        Some(_) => "\"${container[@]}\" ",
        None => "",
    };
    let mut s = format!(
        "#!/bin/bash\n\
         # drover runner job: fleet {fleet}, runner set {set}. Generated by drover.\n\
         # Secrets reach this job only through its environment, never through this script.\n\
         set -euo pipefail\n\
         work={}/drover-\"${{SLURM_JOB_ID}}\"\n\
         mkdir -p -- \"$work\"\n\
         trap 'cd / && rm -rf -- \"$work\"' EXIT\n\
         cd -- \"$work\"\n\
         export HOME=\"${{HOME:-$work}}\"\n",
        sh_quote(scratch.trim_end_matches('/'))
    );
    if let Some(container) = container {
        s.push_str(&container.definition());
    }
    if command.is_empty() {
        s.push_str(&format!(
            ": \"${{{url}:?drover passes {url} in the job environment}}\"\n\
             : \"${{{tok}:?drover passes {tok} in the job environment}}\"\n\
             # One-time credential -> JIT runner config; the header goes through stdin, not argv.\n\
             cfg=\"$(printf 'Authorization: Bearer %s\\n' \"${tok}\" | curl --fail --silent --show-error \\\n\
             \x20 --retry 3 --max-time 60 -X POST -H @- -H \"X-Drover-Slurm-Job: ${{SLURM_JOB_ID}}\" \"${url}\")\"\n\
             unset {tok}\n\
             runner_dir=\"${{DROVER_RUNNER_DIR:-/opt/actions-runner}}\"\n\
             {run}cp -a -- \"$runner_dir/.\" \"$work/runner\"\n\
             cd -- \"$work/runner\"\n\
             {run}./run.sh --jitconfig \"$cfg\"\n",
            url = jit::URL_VAR,
            tok = jit::TOKEN_VAR,
        ));
    } else {
        let argv: Vec<String> = command.iter().map(|a| sh_quote(a)).collect();
        s.push_str(&format!("{run}{}\n", argv.join(" ")));
    }
    s
}

/// Quotes a word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// CPUs from a Kubernetes CPU quantity (`16`, `2.5`, `500m`), rounded up, at least 1.
pub fn parse_cpus(q: &str) -> Option<u32> {
    let units = Quantity::parse(q)?.ceil_units().max(1);
    u32::try_from(units).ok()
}

/// MiB (Slurm's `M`) from a Kubernetes memory quantity (`120Gi`, `512Mi`, `8G`, `1000`),
/// rounded up.
pub fn parse_memory_mb(q: &str) -> Option<u64> {
    u64::try_from(Quantity::parse(q)?.ceil_mebibytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_become_mib() {
        for (q, mb) in [
            ("120Gi", 122_880),
            ("512Mi", 512),
            ("1Ti", 1_048_576),
            ("0.5Gi", 512),
            ("1.5Gi", 1536),
            ("8G", 7630),
            ("1000", 1),
            ("2048Ki", 2),
            ("1M", 1),
        ] {
            assert_eq!(parse_memory_mb(q), Some(mb), "{q}");
        }
        for bad in ["", "Gi", "1.Gi", ".5Gi", "1e3", "-1Gi", "12Qi"] {
            assert_eq!(parse_memory_mb(bad), None, "{bad}");
        }
    }

    #[test]
    fn cpu_quantities_round_up() {
        for (q, n) in [("16", 16), ("500m", 1), ("2.5", 3), ("1500m", 2), ("0", 1)] {
            assert_eq!(parse_cpus(q), Some(n), "{q}");
        }
        assert_eq!(parse_cpus("two"), None);
    }

    #[test]
    fn gres_type_comes_from_the_pools_gres() {
        assert_eq!(gres_type("gpu:a100:4").as_deref(), Some("a100"));
        assert_eq!(gres_type("gpu:4"), None);
        assert_eq!(gres_type("gpu"), None);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("sleep"), "sleep");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn scripts_never_carry_the_jit_token_and_quote_commands() {
        let default = script("/scratch/", "f", "s", &[], None);
        assert!(default.contains("work=/scratch/drover-\"${SLURM_JOB_ID}\"\n"));
        assert!(default.contains("./run.sh --jitconfig \"$cfg\""));
        assert!(default.contains("unset DROVER_JIT_TOKEN"));
        let container = Container {
            image: "/img/r.sif".into(),
            binds: Vec::new(),
            image_cache_dir: None,
        };
        let custom = script(
            "/tmp",
            "f",
            "s",
            &["bash".into(), "-c".into(), "echo $X; sleep 1".into()],
            Some(&container),
        );
        assert!(
            custom.ends_with(
                "container=(apptainer exec --userns\n  --bind \"$work\"\n  /img/r.sif)\n\
                 \"${container[@]}\" bash -c 'echo $X; sleep 1'\n"
            ),
            "{custom}"
        );
        assert!(!custom.contains("DROVER_JIT"));
        assert!(!custom.contains("APPTAINER_CACHEDIR"), "{custom}");
    }

    fn bind(source: &str, target: Option<&str>, read_only: bool) -> BindMount {
        BindMount {
            source: source.into(),
            target: target.map(str::to_owned),
            read_only,
        }
    }

    #[test]
    fn a_sets_container_settings_override_the_sites() {
        let site = SlurmContainerDefaults {
            binds: vec![
                bind("/cvmfs", None, true),
                bind("/scratch/datasets", Some("/data"), true),
            ],
            image_cache_dir: Some("/scratch/apptainer".into()),
        };
        let set = SlurmContainer {
            image: "docker://ghcr.io/acme/runner:1".into(),
            binds: vec![bind("/projects/ml/data", Some("/data"), false)],
            image_cache_dir: None,
        };
        let c = Container::resolve(&site, &set);
        assert_eq!(
            c.binds,
            [
                bind("/cvmfs", None, true),
                bind("/projects/ml/data", Some("/data"), false)
            ]
        );
        assert_eq!(c.image_cache_dir.as_deref(), Some("/scratch/apptainer"));
        let own_cache = SlurmContainer {
            image_cache_dir: Some("/home/ci/.apptainer".into()),
            ..set
        };
        let c = Container::resolve(&SlurmContainerDefaults::default(), &own_cache);
        assert_eq!(c.image_cache_dir.as_deref(), Some("/home/ci/.apptainer"));
        assert_eq!(c.binds, [bind("/projects/ml/data", Some("/data"), false)]);
    }

    /// The default runner command in a container with bind mounts and a persistent image
    /// cache: every `apptainer exec` gets `--userns`, the job directory and each bind.
    #[test]
    fn container_script_binds_and_caches() {
        let container = Container {
            image: "docker://ghcr.io/acme/runner:2.321.0".into(),
            binds: vec![
                bind("/cvmfs", None, true),
                bind("/scratch/datasets", Some("/data"), true),
                bind("/scratch/ci out", Some("/out"), false),
            ],
            image_cache_dir: Some("/scratch/apptainer-cache".into()),
        };
        let text = script("/scratch/local", "acme", "a100", &[], Some(&container));
        insta::assert_snapshot!("container_script", text);
    }
}

#[cfg(test)]
mod snapshot {
    use crate::fleet::{LoadOptions, validate_dir};
    use crate::sites::{RunOptions, SiteContext};

    /// The example fleet's Slurm site (fleet/sites/hpc-slurm.yaml, fleet/runners/gpu.yaml).
    #[test]
    fn example_fleet_hpc_site_renders() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet");
        let v = validate_dir(&root, &LoadOptions::default()).unwrap();
        assert!(v.is_valid(), "{:?}", v.diagnostics);
        let options = RunOptions {
            desired_runners: [("gpu-a100-slurm".to_owned(), 2)].into(),
            ..RunOptions::default()
        };
        let ctx = SiteContext {
            repo: &v.repo,
            site: &v.repo.sites["hpc"],
            options: &options,
        };
        let mut values = super::super::render_values(&ctx).unwrap();
        // The script as lines, so that the snapshot reads like the script.
        for v in &mut values {
            let script = v["job"]["script"].as_str().unwrap().to_owned();
            v["job"]["script"] = script.lines().collect::<Vec<_>>().into();
        }
        insta::assert_yaml_snapshot!("hpc_runner_jobs", values);
    }
}
