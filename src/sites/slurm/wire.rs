//! Wire formats: tolerant serde shapes of slurmrestd / `--json` output and request bodies.
//!
//! One set of response structs reads both OpenAPI generations: v0.0.38 (Slurm 22.05: plain
//! numbers, `job_state` a string, flat partitions) and v0.0.40 (Slurm 23.11+: numbers as
//! `{set, infinite, number}`, states as arrays, nested partitions). Only request bodies and
//! paths depend on the negotiated [`ApiVersion`].

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use super::ApiError;
use super::types::{Job, JobSpec, JobState, Node, Partition};

/// OpenAPI plugin versions drover can speak, newest first in [`ApiVersion::PREFERENCE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `openapi/v0.0.38` (Slurm 21.08-23.02).
    V0038,
    /// `openapi/v0.0.40` (Slurm 23.11-24.11).
    V0040,
}

impl ApiVersion {
    /// Versions in order of preference.
    pub const PREFERENCE: [ApiVersion; 2] = [ApiVersion::V0040, ApiVersion::V0038];

    /// The version string as it appears in paths, e.g. `v0.0.38`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V0038 => "v0.0.38",
            ApiVersion::V0040 => "v0.0.40",
        }
    }
}

/// An integer that may be plain, `null`, or a v0.0.40 `{set, infinite, number}` object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Num(pub Option<u64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(Num(match v {
            Value::Number(n) => n.as_u64(),
            Value::Object(m) => no_val(&m),
            _ => None,
        }))
    }
}

fn no_val(m: &Map<String, Value>) -> Option<u64> {
    let flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("set") && !flag("infinite") {
        m.get("number").and_then(Value::as_u64)
    } else {
        None
    }
}

/// A list that may arrive as one string (v0.0.38), an array (v0.0.40) or `null`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Strings(pub Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Strings(match Value::deserialize(d)? {
            Value::String(s) => s
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }))
    }
}

/// One error entry; Slurm spells the code `error_number`, `error_code` or `errno`.
#[derive(Debug, Default, Deserialize)]
pub struct WireError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    error_number: Option<i64>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    errno: Option<i64>,
}

impl WireError {
    fn into_api(self) -> ApiError {
        let parts: Vec<String> = [self.error, self.description]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect();
        let message = if parts.is_empty() {
            "unspecified error".to_owned()
        } else {
            parts.join(": ")
        };
        ApiError {
            code: self.error_number.or(self.error_code).or(self.errno),
            message,
        }
    }
}

/// The `errors` list common to every response.
#[derive(Debug, Default, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    errors: Vec<WireError>,
}

/// Extracts Slurm's error list from any response body (empty if none or unparsable).
pub fn errors_of(body: &[u8]) -> Vec<ApiError> {
    serde_json::from_slice::<Envelope>(body)
        .map(|e| e.errors.into_iter().map(WireError::into_api).collect())
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
struct JobsResp {
    #[serde(default)]
    jobs: Vec<WireJob>,
}

#[derive(Debug, Deserialize)]
struct WireJob {
    #[serde(default)]
    job_id: Num,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    partition: Option<String>,
    #[serde(default)]
    job_state: Strings,
    #[serde(default)]
    state_reason: Option<String>,
    #[serde(default)]
    tres_per_node: Option<String>,
    #[serde(default)]
    tres_req_str: Option<String>,
    #[serde(default)]
    submit_time: Num,
    #[serde(default)]
    start_time: Num,
}

impl WireJob {
    fn into_job(self) -> Job {
        Job {
            id: self.job_id.0.unwrap_or(0),
            name: self.name.unwrap_or_default(),
            comment: self.comment.unwrap_or_default(),
            user: self.user_name.unwrap_or_default(),
            partition: self.partition.unwrap_or_default(),
            state: base_state(&self.job_state.0),
            reason: self.state_reason.unwrap_or_default(),
            gres: strip_gres_prefix(self.tres_per_node.as_deref().unwrap_or("")),
            tres: self.tres_req_str.unwrap_or_default(),
            submit_time: self.submit_time.0.unwrap_or(0),
            start_time: self.start_time.0.unwrap_or(0),
        }
    }
}

/// The first state that names a base state; v0.0.40 may add flags such as `REQUEUED`.
fn base_state(states: &[String]) -> JobState {
    let mapped: Vec<JobState> = states.iter().map(|s| JobState::from_slurm(s)).collect();
    mapped
        .iter()
        .find(|s| !matches!(s, JobState::Other(_)))
        .or(mapped.first())
        .cloned()
        .unwrap_or_else(|| JobState::Other("UNKNOWN".to_owned()))
}

/// `gres:gpu:a100:1` (22.05) and `gres/gpu:a100:1` (23.02+) both become `gpu:a100:1`.
pub fn strip_gres_prefix(tres: &str) -> String {
    let items: Vec<&str> = tres
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.strip_prefix("gres:")
                .or_else(|| s.strip_prefix("gres/"))
                .unwrap_or(s)
        })
        .collect();
    items.join(",")
}

/// Parses a job list (`GET .../jobs` or `squeue --json`).
pub fn parse_jobs(body: &[u8]) -> Result<Vec<Job>, serde_json::Error> {
    let resp: JobsResp = serde_json::from_slice(body)?;
    Ok(resp.jobs.into_iter().map(WireJob::into_job).collect())
}

#[derive(Debug, Deserialize)]
struct PartitionsResp {
    #[serde(default)]
    partitions: Vec<WirePartition>,
}

#[derive(Debug, Deserialize)]
struct WirePartition {
    #[serde(default)]
    name: Option<String>,
    /// v0.0.38: hostlist string; v0.0.40: `{configured, total, allowed_allocation}`.
    #[serde(default)]
    nodes: Value,
    /// v0.0.38 only.
    #[serde(default)]
    state: Strings,
    /// v0.0.38 only.
    #[serde(default)]
    total_nodes: Num,
    /// v0.0.40 only: `{state: [..]}`.
    #[serde(default)]
    partition: Option<PartitionInner>,
}

#[derive(Debug, Default, Deserialize)]
struct PartitionInner {
    #[serde(default)]
    state: Strings,
}

impl WirePartition {
    fn into_partition(self) -> Partition {
        let (hostlist, total) = match &self.nodes {
            Value::String(s) => (s.clone(), self.total_nodes.0),
            Value::Object(m) => (
                m.get("configured")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                m.get("total").and_then(Value::as_u64),
            ),
            _ => (String::new(), self.total_nodes.0),
        };
        let states = self.partition.map(|p| p.state.0).unwrap_or(self.state.0);
        let nodes = expand_hostlist(&hostlist);
        let total_nodes = total.map_or(nodes.len() as u32, |t| t as u32);
        Partition {
            name: self.name.unwrap_or_default(),
            state: upper_join(&states),
            nodes,
            total_nodes,
            gres: String::new(),
        }
    }
}

/// Parses a partition list (`GET .../partitions`).
pub fn parse_partitions(body: &[u8]) -> Result<Vec<Partition>, serde_json::Error> {
    let resp: PartitionsResp = serde_json::from_slice(body)?;
    Ok(resp
        .partitions
        .into_iter()
        .map(WirePartition::into_partition)
        .collect())
}

#[derive(Debug, Deserialize)]
struct NodesResp {
    #[serde(default)]
    nodes: Vec<WireNode>,
}

#[derive(Debug, Deserialize)]
struct WireNode {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    state: Strings,
    /// v0.0.38 only (v0.0.40 folds flags into `state`).
    #[serde(default)]
    state_flags: Strings,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    gres: Option<String>,
    #[serde(default)]
    partitions: Strings,
}

impl WireNode {
    fn into_node(self) -> Node {
        let mut states = self.state.0;
        states.extend(self.state_flags.0);
        Node {
            name: self.name.unwrap_or_default(),
            state: upper_join(&states),
            reason: self.reason.unwrap_or_default(),
            gres: self.gres.filter(|g| g != "(null)").unwrap_or_default(),
            partitions: self.partitions.0,
        }
    }
}

/// Parses a node list (`GET .../nodes` or `sinfo --json`).
pub fn parse_nodes(body: &[u8]) -> Result<Vec<Node>, serde_json::Error> {
    let resp: NodesResp = serde_json::from_slice(body)?;
    Ok(resp.nodes.into_iter().map(WireNode::into_node).collect())
}

#[derive(Debug, Deserialize)]
struct SubmitResp {
    #[serde(default)]
    job_id: Num,
}

/// The job id of a submit response, if it has one.
pub fn parse_submit(body: &[u8]) -> Result<Option<u64>, serde_json::Error> {
    Ok(serde_json::from_slice::<SubmitResp>(body)?
        .job_id
        .0
        .filter(|id| *id > 0))
}

fn upper_join(states: &[String]) -> String {
    let upper: Vec<String> = states.iter().map(|s| s.to_ascii_uppercase()).collect();
    upper.join("+")
}

/// Expands a Slurm host list: `gpu[01-03,07],cpu1` → `gpu01 gpu02 gpu03 gpu07 cpu1`.
pub fn expand_hostlist(list: &str) -> Vec<String> {
    if matches!(list.trim(), "" | "(null)") {
        return Vec::new();
    }
    split_top_level(list)
        .into_iter()
        .flat_map(expand_one)
        .collect()
}

fn split_top_level(list: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

fn expand_one(host: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (host.find('['), host.find(']')) else {
        return vec![host.to_owned()];
    };
    let (prefix, ranges, suffix) = (&host[..open], &host[open + 1..close], &host[close + 1..]);
    ranges
        .split(',')
        .flat_map(expand_range)
        .map(|n| format!("{prefix}{n}{suffix}"))
        .collect()
}

fn expand_range(range: &str) -> Vec<String> {
    let Some((lo, hi)) = range.split_once('-') else {
        return vec![range.to_owned()];
    };
    let width = lo.len();
    match (lo.parse::<u64>(), hi.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => (a..=b).map(|n| format!("{n:0width$}")).collect(),
        _ => vec![range.to_owned()],
    }
}

/// The JSON body of `POST .../job/submit` for `version`; `hold` submits the job held
/// (priority 0) until [`release_body`] is posted to `.../job/{id}`.
pub fn submit_body(spec: &JobSpec, version: ApiVersion, hold: bool) -> Value {
    let mut body = match version {
        ApiVersion::V0038 => submit_body_v0038(spec),
        ApiVersion::V0040 => submit_body_v0040(spec),
    };
    if hold {
        body["job"]["hold"] = json!(true);
    }
    body
}

/// The JSON body of `POST .../job/{id}` that releases a user hold (both versions).
pub fn release_body() -> Value {
    json!({ "hold": false })
}

/// Environment with a `PATH` added if missing: REST jobs get no environment but this one.
fn environment(spec: &JobSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec.environment.clone().into_iter().collect();
    if !spec.environment.contains_key("PATH") {
        env.push(("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()));
    }
    env
}

fn common_fields(spec: &JobSpec) -> Map<String, Value> {
    let mut job = Map::new();
    job.insert("name".into(), json!(spec.name));
    job.insert("comment".into(), json!(spec.comment));
    job.insert("partition".into(), json!(spec.partition));
    job.insert("cpus_per_task".into(), json!(spec.cpus_per_task));
    job.insert(
        "current_working_directory".into(),
        json!(spec.working_directory),
    );
    let optional = [
        ("account", &spec.account),
        ("qos", &spec.qos),
        ("constraints", &spec.constraint),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            job.insert(key.into(), json!(v));
        }
    }
    job
}

fn submit_body_v0038(spec: &JobSpec) -> Value {
    let mut job = common_fields(spec);
    if let Some(g) = &spec.gres {
        job.insert("gres".into(), json!(g));
    }
    if let Some(m) = spec.memory_mb {
        job.insert("memory_per_node".into(), json!(m));
    }
    if let Some(t) = spec.time_limit_minutes {
        job.insert("time_limit".into(), json!(t));
    }
    let env: Map<String, Value> = environment(spec)
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    job.insert("environment".into(), Value::Object(env));
    json!({ "script": spec.script, "job": job })
}

fn set_number(n: u64) -> Value {
    json!({ "set": true, "infinite": false, "number": n })
}

fn submit_body_v0040(spec: &JobSpec) -> Value {
    let mut job = common_fields(spec);
    job.insert("script".into(), json!(spec.script));
    if let Some(g) = &spec.gres {
        job.insert("tres_per_node".into(), json!(format!("gres/{g}")));
    }
    if let Some(m) = spec.memory_mb {
        job.insert("memory_per_node".into(), set_number(m));
    }
    if let Some(t) = spec.time_limit_minutes {
        job.insert("time_limit".into(), set_number(u64::from(t)));
    }
    let env: Vec<Value> = environment(spec)
        .into_iter()
        .map(|(k, v)| json!(format!("{k}={v}")))
        .collect();
    job.insert("environment".into(), Value::Array(env));
    json!({ "job": job })
}

/// Parses `scontrol show partition --oneliner`: one partition per line of `Key=Value` pairs.
pub fn parse_scontrol_partitions(text: &str) -> Vec<Partition> {
    text.lines()
        .filter(|l| l.starts_with("PartitionName="))
        .map(scontrol_partition)
        .collect()
}

fn scontrol_partition(line: &str) -> Partition {
    let field = |key: &str| {
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default()
    };
    let nodes = expand_hostlist(&field("Nodes"));
    let total_nodes = field("TotalNodes").parse().unwrap_or(nodes.len() as u32);
    Partition {
        name: field("PartitionName"),
        state: field("State").to_ascii_uppercase(),
        nodes,
        total_nodes,
        gres: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/src/sites/slurm/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn v0040_jobs_parse() {
        let jobs = parse_jobs(&fixture("v0.0.40/jobs.json")).unwrap();
        assert_eq!(jobs.len(), 2);
        let gpu = &jobs[0];
        assert_eq!(
            (gpu.id, gpu.name.as_str(), gpu.comment.as_str()),
            (4242, "drover-gpu-runner", "drover:runnerset=gpu-a100")
        );
        assert_eq!(
            (gpu.user.as_str(), gpu.partition.as_str()),
            ("drover-ci", "gpu")
        );
        assert_eq!(gpu.state, JobState::Running);
        assert_eq!(gpu.gres, "gpu:a100:1");
        assert_eq!(gpu.submit_time, 1_732_000_000);
        assert_eq!(
            jobs[1].state,
            JobState::Pending,
            "flags after the base state are ignored"
        );
        assert_eq!(jobs[1].reason, "Resources");
    }

    #[test]
    fn v0040_partitions_parse() {
        let parts = parse_partitions(&fixture("v0.0.40/partitions.json")).unwrap();
        assert_eq!(parts[0].name, "gpu");
        assert_eq!(parts[0].state, "UP");
        assert_eq!(parts[0].nodes, vec!["gpu01", "gpu02", "gpu03"]);
        assert_eq!(parts[0].total_nodes, 3);
        assert_eq!(parts[1].state, "DOWN");
    }

    #[test]
    fn v0040_nodes_parse() {
        let nodes = parse_nodes(&fixture("v0.0.40/nodes.json")).unwrap();
        assert_eq!(nodes[0].name, "gpu01");
        assert_eq!(nodes[0].state, "IDLE+DRAIN");
        assert_eq!(nodes[0].reason, "maintenance");
        assert_eq!(nodes[0].gres, "gpu:a100:4");
        assert_eq!(nodes[0].partitions, vec!["gpu", "debug"]);
    }

    #[test]
    fn v0040_submit_and_errors_parse() {
        assert_eq!(
            parse_submit(&fixture("v0.0.40/submit.json")).unwrap(),
            Some(4243)
        );
        let errors = errors_of(&fixture("v0.0.40/error.json"));
        assert_eq!(errors[0].code, Some(2000));
        assert!(
            errors[0]
                .message
                .contains("Invalid partition name specified")
        );
    }

    #[test]
    fn no_val_numbers() {
        let n: Num = serde_json::from_str(r#"{"set":true,"infinite":false,"number":7}"#).unwrap();
        assert_eq!(n, Num(Some(7)));
        let inf: Num = serde_json::from_str(r#"{"set":true,"infinite":true,"number":0}"#).unwrap();
        assert_eq!(inf, Num(None));
        let plain: Num = serde_json::from_str("12").unwrap();
        assert_eq!(plain, Num(Some(12)));
    }

    #[test]
    fn hostlists_expand() {
        assert_eq!(
            expand_hostlist("gpu[01-03,07],cpu1"),
            vec!["gpu01", "gpu02", "gpu03", "gpu07", "cpu1"]
        );
        assert_eq!(expand_hostlist("localhost"), vec!["localhost"]);
        assert!(expand_hostlist("(null)").is_empty());
    }

    fn spec() -> JobSpec {
        JobSpec {
            name: "n".into(),
            comment: "c".into(),
            partition: "gpu".into(),
            account: None,
            qos: None,
            gres: Some("gpu:a100:1".into()),
            cpus_per_task: 2,
            memory_mb: Some(512),
            time_limit_minutes: Some(10),
            constraint: None,
            working_directory: "/home/ci".into(),
            script: "#!/bin/sh\nsleep 1\n".into(),
            environment: [("TOKEN".to_owned(), "s".to_owned())].into(),
        }
    }

    #[test]
    fn v0040_submit_body_nests_script_and_uses_no_val() {
        let body = submit_body(&spec(), ApiVersion::V0040, false);
        assert!(body.get("script").is_none());
        assert_eq!(body["job"]["script"], "#!/bin/sh\nsleep 1\n");
        assert_eq!(body["job"]["tres_per_node"], "gres/gpu:a100:1");
        assert_eq!(body["job"]["memory_per_node"]["number"], 512);
        assert_eq!(body["job"]["time_limit"]["set"], true);
        let env = body["job"]["environment"].as_array().unwrap();
        assert!(
            env.contains(&json!("TOKEN=s"))
                && env.iter().any(|e| e.as_str().unwrap().starts_with("PATH="))
        );
    }

    #[test]
    fn v0038_submit_body_keeps_script_outside_job() {
        let body = submit_body(&spec(), ApiVersion::V0038, false);
        assert!(body["job"].get("hold").is_none());
        assert_eq!(
            submit_body(&spec(), ApiVersion::V0038, true)["job"]["hold"],
            true
        );
        assert_eq!(body["script"], "#!/bin/sh\nsleep 1\n");
        assert_eq!(body["job"]["gres"], "gpu:a100:1");
        assert_eq!(body["job"]["memory_per_node"], 512);
        assert_eq!(body["job"]["environment"]["TOKEN"], "s");
    }

    #[test]
    fn scontrol_partitions_parse() {
        let text = "PartitionName=cpu AllowGroups=ALL Default=YES Nodes=n[1-2] State=UP TotalCPUs=64 TotalNodes=2\n\
                    PartitionName=maint Nodes=n1 State=DOWN TotalNodes=1\n";
        let parts = parse_scontrol_partitions(text);
        assert_eq!(parts[0].nodes, vec!["n1", "n2"]);
        assert_eq!(
            (
                parts[1].name.as_str(),
                parts[1].state.as_str(),
                parts[1].total_nodes
            ),
            ("maint", "DOWN", 1)
        );
    }
}
