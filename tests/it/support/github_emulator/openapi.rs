//! GitHub's published OpenAPI description (`@octokit/openapi`, `api.github.com.json`),
//! used to check every request drover sends and every response the emulator returns.
//!
//! The description is OpenAPI 3.0: schemas say `nullable: true` instead of listing
//! `"null"` as a type. [`OpenApi::load`] rewrites that into plain JSON Schema (draft 4,
//! which 3.0 schemas follow) once, then compiles one validator per operation and status
//! on first use. The file is installed by `scripts/github-openapi.sh` (run here if missing).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::{Draft, Validator};
use serde_json::{Value, json};

/// The loaded description with a validator cache.
pub struct OpenApi {
    spec: Value,
    paths: Vec<(Vec<String>, String)>,
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

/// One operation of the description, found by method and concrete path.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The path template, e.g. `/orgs/{org}/actions/runners`.
    pub template: String,
    /// Lower-case method.
    pub method: String,
    /// The `operationId`.
    pub id: String,
}

fn spec_path() -> PathBuf {
    if let Ok(p) = std::env::var("GITHUB_OPENAPI_JSON") {
        return p.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("scripts/github-openapi.sh"))
        .output()
        .expect("run scripts/github-openapi.sh");
    assert!(
        out.status.success(),
        "scripts/github-openapi.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Rewrites OpenAPI 3.0 `nullable` into JSON Schema, everywhere in `v`.
fn denull(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(denull),
        Value::Object(map) => {
            map.values_mut().for_each(denull);
            if map.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".into(), json!([t, "null"]));
                    if let Some(Value::Array(e)) = map.get_mut("enum") {
                        e.push(Value::Null);
                    }
                } else {
                    let inner = Value::Object(std::mem::take(map));
                    map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                }
            }
        }
        _ => {}
    }
}

impl OpenApi {
    /// The process-wide description (loaded and rewritten once).
    pub fn get() -> &'static OpenApi {
        static SPEC: OnceLock<OpenApi> = OnceLock::new();
        SPEC.get_or_init(|| OpenApi::load(&spec_path()))
    }

    /// Loads and rewrites the description at `path`.
    pub fn load(path: &std::path::Path) -> OpenApi {
        let text = std::fs::read_to_string(path).expect("read api.github.com.json");
        let mut spec: Value = serde_json::from_str(&text).expect("parse api.github.com.json");
        denull(&mut spec);
        let paths = spec["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(|p| (p.split('/').map(String::from).collect(), p.clone()))
            .collect();
        OpenApi {
            spec,
            paths,
            validators: Mutex::default(),
        }
    }

    /// Follows a local `$ref` (`#/components/...`) if `v` is one.
    fn deref<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .spec
                .pointer(r.trim_start_matches('#'))
                .unwrap_or(&Value::Null),
            None => v,
        }
    }

    /// The operation serving `method path`; the template with the most literal segments
    /// wins (`.../runners/generate-jitconfig` over `.../runners/{runner_id}`).
    pub fn operation(&self, method: &str, path: &str) -> Option<Operation> {
        let method = method.to_ascii_lowercase();
        let segs: Vec<&str> = path.split('/').collect();
        self.paths
            .iter()
            .filter(|(t, p)| {
                t.len() == segs.len()
                    && t.iter()
                        .zip(&segs)
                        .all(|(t, s)| t.starts_with('{') || t == s)
                    && self.spec["paths"][p].get(&method).is_some()
            })
            .max_by_key(|(t, _)| t.iter().filter(|s| !s.starts_with('{')).count())
            .map(|(_, p)| Operation {
                template: p.clone(),
                id: self.spec["paths"][p][&method]["operationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                method: method.clone(),
            })
    }

    fn op(&self, op: &Operation) -> &Value {
        &self.spec["paths"][&op.template][&op.method]
    }

    fn validator(&self, key: &str, schema: &Value) -> Arc<Validator> {
        let mut cache = self.validators.lock().unwrap();
        if let Some(v) = cache.get(key) {
            return v.clone();
        }
        let root = json!({"components": self.spec["components"], "allOf": [schema]});
        let v = Arc::new(
            jsonschema::options()
                .with_draft(Draft::Draft4)
                .build(&root)
                .unwrap_or_else(|e| panic!("schema for {key} does not compile: {e}")),
        );
        cache.insert(key.to_string(), v.clone());
        v
    }

    fn check(&self, key: &str, schema: &Value, instance: &Value) -> Vec<String> {
        self.validator(key, schema)
            .iter_errors(instance)
            .map(|e| format!("{key}: {} at `{}`", e, e.instance_path()))
            .collect()
    }

    /// Problems with a request: undeclared or invalid query parameters, a missing or
    /// invalid JSON body. Empty when the request conforms.
    pub fn check_request(
        &self,
        op: &Operation,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Vec<String> {
        let spec = self.op(op);
        let mut problems = Vec::new();
        let params: Vec<&Value> = spec["parameters"]
            .as_array()
            .map(|ps| ps.iter().map(|p| self.deref(p)).collect())
            .unwrap_or_default();
        for (name, value) in query {
            let Some(param) = params
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == name.as_str())
            else {
                problems.push(format!("{}: undeclared query parameter `{name}`", op.id));
                continue;
            };
            let schema = &param["schema"];
            // Query values are strings on the wire; type them as the schema says.
            let typed = match schema["type"].as_str() {
                Some("integer") => value
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or(json!(value)),
                Some("boolean") => value
                    .parse::<bool>()
                    .map(Value::from)
                    .unwrap_or(json!(value)),
                _ => json!(value),
            };
            let key = format!("{} query {name}", op.id);
            problems.extend(self.check(&key, schema, &typed));
        }
        let request_body = self.deref(&spec["requestBody"]);
        match (request_body.get("content"), body) {
            (Some(content), Some(body)) => {
                let schema = &content["application/json"]["schema"];
                problems.extend(self.check(&format!("{} request", op.id), schema, body));
            }
            (Some(_), None) if request_body["required"] == true => {
                problems.push(format!("{}: request body required", op.id));
            }
            (None, Some(body)) if body != &json!({}) && !body.is_null() => {
                problems.push(format!("{}: request body not expected", op.id));
            }
            _ => {}
        }
        problems
    }

    /// Problems with a response: an undeclared status, or a body that does not match the
    /// declared schema.
    pub fn check_response(&self, op: &Operation, status: u16, body: Option<&Value>) -> Vec<String> {
        let responses = &self.op(op)["responses"];
        let Some(declared) = responses.get(status.to_string()) else {
            return vec![format!("{}: status {status} is not declared", op.id)];
        };
        let declared = self.deref(declared);
        match (declared["content"]["application/json"].get("schema"), body) {
            (Some(schema), Some(body)) => {
                self.check(&format!("{} {status} response", op.id), schema, body)
            }
            (Some(_), None) => vec![format!("{}: {status} needs a JSON body", op.id)],
            (None, Some(_)) => vec![format!("{}: {status} has no body", op.id)],
            (None, None) => Vec::new(),
        }
    }

    /// Whether the operation declares a response with this status.
    pub fn declares(&self, op: &Operation, status: u16) -> bool {
        self.op(op)["responses"].get(status.to_string()).is_some()
    }

    /// Problems with a webhook payload, by the description's webhook name
    /// (e.g. `workflow-job-queued`).
    pub fn check_webhook(&self, name: &str, body: &Value) -> Vec<String> {
        let schema = &self.spec["x-webhooks"][name]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        if schema.is_null() {
            return vec![format!("no webhook `{name}` in the description")];
        }
        self.check(&format!("webhook {name}"), schema, body)
    }
}
