//! Wire formats: tolerant serde shapes of slurmrestd / `--json` output and request bodies.
//!
//! One set of response structs reads every OpenAPI version drover speaks. v0.0.38 (Slurm
//! 22.05) has plain numbers, `job_state` as a string and flat partitions; v0.0.40 to v0.0.45
//! (Slurm 23.11 to 26.05) share one data parser shape: numbers as `{set, infinite, number}`,
//! states as arrays, nested partitions. Compared on the live servers (fixtures in
//! `fixtures/live/`), the fields drover reads and sends are the same from v0.0.40 to
//! v0.0.45; what differs is listed on [`ApiVersion`]. Request bodies and paths depend on the
//! negotiated version; responses are parsed the same way for all.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use super::ApiError;
use super::types::{Job, JobSpec, JobState, Node, Partition};

/// OpenAPI versions drover speaks, newest first in [`ApiVersion::PREFERENCE`].
///
/// Differences between them that drover handles (checked against real slurmrestd 22.05,
/// 24.11 and 26.05):
/// - v0.0.38 has its own submit body (`script` outside `job`, environment as an object,
///   `gres`, plain numbers), lists a held submit's `2042` as an *error*, and its list paths
///   have no trailing slash.
/// - v0.0.40 to v0.0.45 take the same submit body and answer with the same job, partition
///   and node fields; a held submit's 2042 is only a warning.
/// - v0.0.40 and v0.0.41 answer `DELETE job/{id}` for an unknown job with success; v0.0.42
///   and later list per-job results in `status` (2017 unknown job, 2021 already ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiVersion {
    /// `v0.0.38`, new in Slurm 22.05 (the newest 22.05 serves).
    V0038,
    /// `v0.0.40`, new in Slurm 23.11 (served up to 24.11).
    V0040,
    /// `v0.0.41`, new in Slurm 24.05 (24.11 still serves it; 26.05 does not).
    V0041,
    /// `v0.0.42`, new in Slurm 24.11 (the newest 24.11 serves; 26.05 still serves it).
    V0042,
    /// `v0.0.43`, new in Slurm 25.05.
    V0043,
    /// `v0.0.44`, new in Slurm 25.11.
    V0044,
    /// `v0.0.45`, new in Slurm 26.05 (the newest 26.05 serves).
    V0045,
}

/// How a version's request bodies are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// v0.0.38.
    Legacy,
    /// v0.0.40 and later (Slurm's `data_parser` plugins).
    DataParser,
}

impl ApiVersion {
    /// Versions in order of preference, newest first.
    pub const PREFERENCE: [ApiVersion; 7] = [
        ApiVersion::V0045,
        ApiVersion::V0044,
        ApiVersion::V0043,
        ApiVersion::V0042,
        ApiVersion::V0041,
        ApiVersion::V0040,
        ApiVersion::V0038,
    ];

    /// The version string as it appears in paths, e.g. `v0.0.38`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V0038 => "v0.0.38",
            ApiVersion::V0040 => "v0.0.40",
            ApiVersion::V0041 => "v0.0.41",
            ApiVersion::V0042 => "v0.0.42",
            ApiVersion::V0043 => "v0.0.43",
            ApiVersion::V0044 => "v0.0.44",
            ApiVersion::V0045 => "v0.0.45",
        }
    }

    /// The version named `s` (`v0.0.42`), if drover speaks it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::PREFERENCE.into_iter().find(|v| v.as_str() == s)
    }

    fn dialect(self) -> Dialect {
        match self {
            ApiVersion::V0038 => Dialect::Legacy,
            _ => Dialect::DataParser,
        }
    }

    /// The path of one object or action, e.g. `/slurm/v0.0.42/job/submit`.
    pub fn path(self, rest: &str) -> String {
        format!("/slurm/{}/{rest}", self.as_str())
    }

    /// The path of a list (`jobs`, `partitions`, `nodes`), as `/openapi/v3` spells it:
    /// with a trailing slash from v0.0.40 on.
    pub fn list_path(self, what: &str) -> String {
        match self.dialect() {
            Dialect::Legacy => self.path(what),
            Dialect::DataParser => self.path(&format!("{what}/")),
        }
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `/slurm/` API versions a `/openapi/v3` document lists in its `paths`, newest first
/// (whether drover speaks them or not).
pub(super) fn offered_versions(openapi: &Value) -> Vec<String> {
    let mut versions: Vec<String> = openapi
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|paths| paths.keys())
        .filter_map(|p| p.strip_prefix("/slurm/")?.split('/').next())
        .filter(|v| v.starts_with('v'))
        .map(str::to_owned)
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(version_key(v)));
    versions.dedup();
    versions
}

/// `v0.0.42` → `[0, 0, 42]`, for ordering.
fn version_key(v: &str) -> Vec<u64> {
    v.trim_start_matches('v')
        .split('.')
        .map(|n| n.parse().unwrap_or(0))
        .collect()
}

/// The newest of `offered` that drover speaks.
pub(super) fn choose_version(offered: &[String]) -> Option<ApiVersion> {
    ApiVersion::PREFERENCE
        .into_iter()
        .find(|v| offered.iter().any(|o| o == v.as_str()))
}

/// An integer that may be plain, `null`, or a v0.0.40+ `{set, infinite, number}` object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Num(pub Option<u64>);

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

/// A list that may arrive as one string (v0.0.38), an array (v0.0.40+) or `null`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Strings(pub Vec<String>);

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
pub(super) struct WireError {
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
pub(super) struct Envelope {
    #[serde(default)]
    errors: Vec<WireError>,
}

/// Extracts Slurm's error list from any response body (empty if none or unparsable).
pub(super) fn errors_of(body: &[u8]) -> Vec<ApiError> {
    serde_json::from_slice::<Envelope>(body)
        .map(|e| e.errors.into_iter().map(WireError::into_api).collect())
        .unwrap_or_default()
}

/// Whether `body` is a Slurm answer at all (a JSON object with `errors` or `meta`), as
/// opposed to, say, a proxy's error page.
pub(super) fn is_slurm_answer(body: &[u8]) -> bool {
    serde_json::from_slice::<Map<String, Value>>(body)
        .is_ok_and(|m| m.contains_key("errors") || m.contains_key("meta"))
}

/// Slurm's warnings (`warnings[].description`) of any response body.
pub(super) fn warnings_of(body: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Warnings {
        #[serde(default)]
        warnings: Vec<Warning>,
    }
    #[derive(Deserialize)]
    struct Warning {
        #[serde(default)]
        description: Option<String>,
    }
    serde_json::from_slice::<Warnings>(body)
        .map(|w| {
            w.warnings
                .into_iter()
                .filter_map(|w| w.description)
                .collect()
        })
        .unwrap_or_default()
}

/// `ESLURM_ALREADY_DONE`: "Job/step already completing or completed".
pub(super) const ALREADY_DONE: i64 = 2021;

/// The per-job failures in the `status` list of a v0.0.42+ `DELETE job/{id}` answer
/// (`[{error: {code, string, message}, job_id, step_id}]`); empty for older versions,
/// which have no such list. A job that had already ended ([`ALREADY_DONE`]) is not a
/// failure: it is gone, as the cancel wanted, and older versions answer it with success.
pub(super) fn cancel_failures(body: &[u8]) -> Vec<ApiError> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        status: Vec<Status>,
    }
    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        error: StatusError,
        #[serde(default)]
        step_id: Option<String>,
    }
    #[derive(Default, Deserialize)]
    struct StatusError {
        #[serde(default)]
        code: Option<i64>,
        #[serde(default)]
        string: Option<String>,
    }
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
        return Vec::new();
    };
    answer
        .status
        .into_iter()
        .filter(|s| s.error.code.is_some_and(|c| c != 0 && c != ALREADY_DONE))
        .map(|s| ApiError {
            code: s.error.code,
            message: match (s.error.string, s.step_id) {
                (Some(m), Some(id)) => format!("{m} (job {id})"),
                (Some(m), None) => m,
                (None, _) => "unspecified error".to_owned(),
            },
        })
        .collect()
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

/// The first state that names a base state; v0.0.40+ may add flags such as `REQUEUED`.
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
pub(super) fn strip_gres_prefix(tres: &str) -> String {
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
pub(super) fn parse_jobs(body: &[u8]) -> Result<Vec<Job>, serde_json::Error> {
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
    /// v0.0.38: hostlist string; v0.0.40+: `{configured, total, allowed_allocation}`.
    #[serde(default)]
    nodes: Value,
    /// v0.0.38 only.
    #[serde(default)]
    state: Strings,
    /// v0.0.38 only.
    #[serde(default)]
    total_nodes: Num,
    /// v0.0.40+ only: `{state: [..]}`.
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
pub(super) fn parse_partitions(body: &[u8]) -> Result<Vec<Partition>, serde_json::Error> {
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
    /// v0.0.38 only (v0.0.40+ folds flags into `state`).
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
pub(super) fn parse_nodes(body: &[u8]) -> Result<Vec<Node>, serde_json::Error> {
    let resp: NodesResp = serde_json::from_slice(body)?;
    Ok(resp.nodes.into_iter().map(WireNode::into_node).collect())
}

#[derive(Debug, Deserialize)]
struct SubmitResp {
    #[serde(default)]
    job_id: Num,
}

/// The job id of a submit response, if it has one.
pub(super) fn parse_submit(body: &[u8]) -> Result<Option<u64>, serde_json::Error> {
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
pub(super) fn expand_hostlist(list: &str) -> Vec<String> {
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
pub(super) fn submit_body(spec: &JobSpec, version: ApiVersion, hold: bool) -> Value {
    let mut body = match version.dialect() {
        Dialect::Legacy => submit_body_legacy(spec),
        Dialect::DataParser => submit_body_data_parser(spec),
    };
    if hold {
        body["job"]["hold"] = json!(true);
    }
    body
}

/// The JSON body of `POST .../job/{id}` that releases a user hold (every version).
pub(super) fn release_body() -> Value {
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

fn submit_body_legacy(spec: &JobSpec) -> Value {
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

fn submit_body_data_parser(spec: &JobSpec) -> Value {
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
pub(super) fn parse_scontrol_partitions(text: &str) -> Vec<Partition> {
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

    mod fuzz {
        //! Bounded fuzzing of the decoders: any bytes, and JSON shaped like slurmrestd's
        //! answers, decode or fail cleanly, never panic.
        use super::*;
        use proptest::prelude::*;

        fn answer() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                "[A-Za-z0-9_=:, ]{0,16}".prop_map(Value::from),
            ];
            leaf.prop_recursive(5, 64, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                    proptest::collection::btree_map(
                        prop::sample::select(vec![
                            "jobs",
                            "nodes",
                            "partitions",
                            "errors",
                            "warnings",
                            "job_id",
                            "job_state",
                            "name",
                            "comment",
                            "user_name",
                            "partition",
                            "tres_per_node",
                            "gres",
                            "state",
                            "number",
                            "set",
                            "infinite",
                            "error_number",
                            "error",
                            "description",
                            "meta",
                            "plugin",
                        ])
                        .prop_map(str::to_string),
                        inner,
                        0..6,
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn decode_all(body: &[u8]) {
            let _ = parse_jobs(body);
            let _ = parse_nodes(body);
            let _ = parse_partitions(body);
            let _ = errors_of(body);
            let _ = warnings_of(body);
            let _ = cancel_failures(body);
            let _ = is_slurm_answer(body);
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

            #[test]
            fn any_bytes_decode_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
                decode_all(&body);
            }

            #[test]
            fn answer_shaped_json_decodes_or_fails_cleanly(v in answer()) {
                decode_all(&serde_json::to_vec(&v).unwrap());
                let offered = offered_versions(&v);
                let _ = choose_version(&offered);
            }
        }
    }
    use crate::sites::slurm::testdata::{CAPTURED, capture_spec, exchange};

    /// `fixtures/live/<gen>/<version>/<name>.json`.
    fn live(slurm: &str, v: ApiVersion, name: &str) -> crate::sites::slurm::testdata::Exchange {
        exchange(&format!("{slurm}/{v}/{name}.json"))
    }

    #[test]
    fn live_jobs_parse_in_every_version() {
        for (slurm, v) in CAPTURED {
            let jobs = parse_jobs(&live(slurm, v, "jobs").body).unwrap();
            let seen: Vec<(&str, JobState, &str, &str)> = jobs
                .iter()
                .map(|j| {
                    (
                        j.name.as_str(),
                        j.state.clone(),
                        j.reason.as_str(),
                        j.gres.as_str(),
                    )
                })
                .collect();
            assert_eq!(
                seen,
                vec![
                    (
                        "drover-fixture",
                        JobState::Pending,
                        "JobHeldUser",
                        "gpu:a100:1"
                    ),
                    ("drover-fixture-run", JobState::Running, "None", ""),
                    (
                        "drover-fixture-gone",
                        JobState::Cancelled,
                        "JobHeldUser",
                        "gpu:a100:1"
                    ),
                ],
                "Slurm {slurm}, {v}"
            );
            for j in &jobs {
                assert!(j.id > 0, "{slurm} {v}: {j:?}");
                assert_eq!(
                    (j.user.as_str(), j.partition.as_str(), j.comment.as_str()),
                    ("drover-ci", "cpu", "drover:fleet=fixture,set=cpu,slot=1"),
                    "{slurm} {v}"
                );
                assert_eq!(j.tres, "cpu=1,mem=100M,node=1,billing=1", "{slurm} {v}");
                assert!(j.submit_time > 1_700_000_000, "{slurm} {v}: {j:?}");
            }
            assert_eq!(
                jobs[0].start_time, 0,
                "{slurm} {v}: a held job has not started"
            );
            assert!(jobs[1].start_time >= jobs[1].submit_time, "{slurm} {v}");
        }
    }

    #[test]
    fn live_partitions_and_nodes_parse_in_every_version() {
        for (slurm, v) in CAPTURED {
            let parts = parse_partitions(&live(slurm, v, "partitions").body).unwrap();
            let seen: Vec<(&str, &str, u32)> = parts
                .iter()
                .map(|p| (p.name.as_str(), p.state.as_str(), p.total_nodes))
                .collect();
            assert_eq!(
                seen,
                vec![("cpu", "UP", 1), ("gpu", "UP", 1), ("maint", "UP", 1)],
                "Slurm {slurm}, {v}"
            );
            assert!(
                parts.iter().all(|p| p.nodes == ["localhost"]),
                "{slurm} {v}"
            );
            let nodes = parse_nodes(&live(slurm, v, "nodes").body).unwrap();
            assert_eq!(nodes.len(), 1, "{slurm} {v}");
            let n = &nodes[0];
            assert_eq!(
                (
                    n.name.as_str(),
                    n.state.as_str(),
                    n.gres.as_str(),
                    n.reason.as_str()
                ),
                ("localhost", "IDLE+COMPLETING", "gpu:a100:4", ""),
                "Slurm {slurm}, {v}: 22.05's state_flags join its state as later versions' flags do"
            );
            assert_eq!(n.partitions, vec!["cpu", "gpu", "maint"], "{slurm} {v}");
        }
    }

    #[test]
    fn submit_bodies_are_what_the_live_servers_accepted() {
        for (slurm, v) in CAPTURED {
            let held = live(slurm, v, "submit-held");
            assert_eq!(
                Some(submit_body(&capture_spec(), v, true)),
                held.request_body,
                "Slurm {slurm}, {v}: held submit"
            );
            let plain = live(slurm, v, "submit");
            let spec = JobSpec {
                name: "drover-fixture-run".into(),
                gres: None,
                ..capture_spec()
            };
            assert_eq!(
                Some(submit_body(&spec, v, false)),
                plain.request_body,
                "Slurm {slurm}, {v}: submit"
            );
            for ex in [&held, &plain] {
                assert_eq!(ex.status, 200, "{slurm} {v}");
                assert!(
                    parse_submit(&ex.body).unwrap().is_some_and(|id| id > 0),
                    "{slurm} {v}"
                );
            }
            // A held submit is "2042 Job is in held state": an error in v0.0.38, a warning
            // from v0.0.40 on.
            let held_errors: Vec<Option<i64>> =
                errors_of(&held.body).iter().map(|e| e.code).collect();
            let warnings = warnings_of(&held.body);
            if v == ApiVersion::V0038 {
                assert_eq!(
                    (held_errors, warnings.len()),
                    (vec![Some(2042)], 0),
                    "{slurm} {v}"
                );
            } else {
                assert!(held_errors.is_empty(), "{slurm} {v}");
                assert!(
                    warnings.iter().any(|w| w.contains("held state")),
                    "{slurm} {v}: {warnings:?}"
                );
            }
            assert!(errors_of(&plain.body).is_empty() && warnings_of(&plain.body).is_empty());
        }
    }

    #[test]
    fn bad_partition_is_coded_in_every_version() {
        for (slurm, v) in CAPTURED {
            let ex = live(slurm, v, "submit-bad-partition");
            let errors = errors_of(&ex.body);
            assert_eq!(errors.len(), 1, "{slurm} {v}");
            assert_eq!(errors[0].code, Some(2000), "{slurm} {v}");
            assert!(
                errors[0]
                    .message
                    .contains("Invalid partition name specified")
            );
            assert!(
                ex.status == 500 || ex.status == 422,
                "{slurm} {v}: {}",
                ex.status
            );
        }
    }

    #[test]
    fn release_and_cancel_answers_in_every_version() {
        for (slurm, v) in CAPTURED {
            for name in ["release", "cancel", "cancel-again"] {
                let ex = live(slurm, v, name);
                assert_eq!(ex.status, 200, "{slurm} {v} {name}");
                assert!(errors_of(&ex.body).is_empty(), "{slurm} {v} {name}");
                assert!(cancel_failures(&ex.body).is_empty(), "{slurm} {v} {name}");
            }
            // Cancelling a job Slurm does not know: v0.0.38 says so as an error (HTTP 500),
            // v0.0.40/41 answer success, v0.0.42+ list it in `status` (HTTP 200).
            let unknown = live(slurm, v, "cancel-unknown");
            let codes = |errors: Vec<ApiError>| errors.iter().map(|e| e.code).collect::<Vec<_>>();
            let (errors, failures) = (
                codes(errors_of(&unknown.body)),
                codes(cancel_failures(&unknown.body)),
            );
            match v {
                ApiVersion::V0038 => assert_eq!(
                    (unknown.status, errors, failures),
                    (500, vec![Some(2017)], vec![])
                ),
                ApiVersion::V0040 | ApiVersion::V0041 => {
                    assert_eq!((unknown.status, errors, failures), (200, vec![], vec![]))
                }
                _ => assert_eq!(
                    (unknown.status, errors, failures),
                    (200, vec![], vec![Some(2017)]),
                    "{slurm} {v}"
                ),
            }
        }
        let again = live("26.05", ApiVersion::V0045, "cancel-again");
        assert!(
            String::from_utf8_lossy(&again.body).contains("2021"),
            "the fixture has an already-ended job in `status`, which is not a failure"
        );
    }

    #[test]
    fn versions_are_chosen_newest_first_from_the_live_openapi_paths() {
        let cases = [
            (
                "22.05/openapi/main.json",
                vec!["v0.0.38"],
                ApiVersion::V0038,
            ),
            (
                "24.11/openapi/main.json",
                vec!["v0.0.42", "v0.0.41", "v0.0.40"],
                ApiVersion::V0042,
            ),
            (
                "24.11/openapi/v0040.json",
                vec!["v0.0.40"],
                ApiVersion::V0040,
            ),
            (
                "24.11/openapi/v0041.json",
                vec!["v0.0.41"],
                ApiVersion::V0041,
            ),
            (
                "26.05/openapi/main.json",
                vec!["v0.0.45", "v0.0.44", "v0.0.43", "v0.0.42"],
                ApiVersion::V0045,
            ),
        ];
        for (path, offered, chosen) in cases {
            let doc: Value = serde_json::from_slice(&exchange(path).body).unwrap();
            let got = offered_versions(&doc);
            assert_eq!(got, offered, "{path}");
            assert_eq!(choose_version(&got), Some(chosen), "{path}");
        }
        let old = json!({"paths": {"/slurm/v0.0.37/jobs": {}, "/slurm/v0.0.39/jobs": {}, "/slurmdb/v0.0.39/jobs": {}, "/openapi/v3": {}}});
        assert_eq!(offered_versions(&old), vec!["v0.0.39", "v0.0.37"]);
        assert_eq!(choose_version(&offered_versions(&old)), None);
        assert_eq!(choose_version(&[]), None);
    }

    #[test]
    fn paths_follow_openapi_spelling() {
        assert_eq!(ApiVersion::V0038.list_path("jobs"), "/slurm/v0.0.38/jobs");
        assert_eq!(
            ApiVersion::V0045.list_path("nodes"),
            "/slurm/v0.0.45/nodes/"
        );
        assert_eq!(
            ApiVersion::V0041.path("job/submit"),
            "/slurm/v0.0.41/job/submit"
        );
        for v in ApiVersion::PREFERENCE {
            assert_eq!(ApiVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(ApiVersion::parse("v0.0.39"), None);
        let mut sorted = ApiVersion::PREFERENCE;
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(sorted, ApiVersion::PREFERENCE, "newest first");
    }

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
