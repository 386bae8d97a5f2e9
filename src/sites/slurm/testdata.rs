//! Test helpers: the slurmrestd exchanges captured from the real test beds in
//! `fixtures/live/` (how and from what: `fixtures/README.md`).

use serde_json::Value;

use super::types::JobSpec;
use super::wire::ApiVersion;

/// One captured request and its answer.
pub struct Exchange {
    /// HTTP status of the answer.
    pub status: u16,
    /// How long slurmrestd took to answer.
    pub elapsed_ms: u64,
    /// The answer body, as received (re-serialised JSON).
    pub body: Vec<u8>,
    /// The body that was sent, for requests that had one.
    pub request_body: Option<Value>,
}

/// Reads `fixtures/live/<path>` (e.g. `26.05/v0.0.45/jobs.json`).
pub fn exchange(path: &str) -> Exchange {
    let full = format!(
        "{}/src/sites/slurm/fixtures/live/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"));
    Exchange {
        status: doc["status"].as_u64().expect("status") as u16,
        elapsed_ms: doc["elapsed_ms"].as_u64().expect("elapsed_ms"),
        body: serde_json::to_vec(&doc["body"]).expect("body"),
        request_body: doc.get("request_body").cloned(),
    }
}

/// Every (generation, version) captured, oldest first.
pub const CAPTURED: [(&str, ApiVersion); 8] = [
    ("22.05", ApiVersion::V0038),
    ("24.11", ApiVersion::V0040),
    ("24.11", ApiVersion::V0041),
    ("24.11", ApiVersion::V0042),
    ("26.05", ApiVersion::V0042),
    ("26.05", ApiVersion::V0043),
    ("26.05", ApiVersion::V0044),
    ("26.05", ApiVersion::V0045),
];

/// The newest version of each generation, whose error answers were captured.
pub const NEWEST: [(&str, ApiVersion); 3] = [
    ("22.05", ApiVersion::V0038),
    ("24.11", ApiVersion::V0042),
    ("26.05", ApiVersion::V0045),
];

/// The spec `fixtures/capture.py` submitted (`drover_spec`): its request bodies are what
/// `wire::submit_body` makes of this.
pub fn capture_spec() -> JobSpec {
    JobSpec {
        name: "drover-fixture".into(),
        comment: "drover:fleet=fixture,set=cpu,slot=1".into(),
        partition: "cpu".into(),
        account: None,
        qos: None,
        gres: Some("gpu:a100:1".into()),
        cpus_per_task: 1,
        memory_mb: Some(100),
        time_limit_minutes: Some(5),
        constraint: None,
        working_directory: "/tmp/drover-slurm/work".into(),
        script: "#!/bin/sh\nsleep 300\n".into(),
        environment: [("DROVER_FIXTURE".to_owned(), "1".to_owned())].into(),
    }
}
