//! The pure runner-pod plan: desired runner counts + drover's live runner Pods + GitHub's
//! view of the runners → which Pods to create, delete and keep. No I/O; the I/O (listing
//! Pods, JIT configs, Secrets, deletes) is in [`super::runner_pods`]. Operators' view:
//! `docs/kubernetes.md` ("Runner Pods").
//!
//! Rules, per declared `engine: drover` runner set (they mirror the Slurm runner-job plan):
//! 1. Finished Pods (`Succeeded`, `Failed`) are deleted (cleanup); failed ones are reported
//!    (`runner-pods-failed`).
//! 2. Live Pods are `Pending` and `Running` ones; a terminating Pod (deletion requested) is
//!    not live but still counts against `max`.
//! 3. A Pod older than the start deadline whose runner never came online (still `Pending`,
//!    or `Running` with a registered but offline runner) is replaced: deleted, reported
//!    (`runner-start-timeout`), and not counted. A `Running` Pod past the deadline whose
//!    runner GitHub no longer knows (its ephemeral job finished, or the registration was
//!    removed) can take no job: it is deleted without a finding.
//! 4. Too few live Pods: create the difference, never above `max` (counting live,
//!    terminating and replaced Pods).
//! 5. Too many: delete `Pending` Pods first (newest first), then `Running` Pods whose runner
//!    is registered, online and idle (newest first). A busy runner is never deleted, nor one
//!    whose state is unknown (no registry) or that is still starting.
//!
//! Pods of runner sets no longer declared here (or in another namespace): finished ones are
//! cleaned up, `Pending` ones are deleted only with prune, running ones are left to finish
//! and reported (`runner-set-undeclared`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::render::{COMPONENT_LABEL, Rendered};
use crate::plan::{
    Action, Change, Finding, FindingSeverity, LiveState, RunnerChange, RunnerReason, Target,
};
use crate::runners::RegisteredRunner;
use crate::runners::runner_name;
use crate::runners::scale_down::{self, Live, Standing};
use crate::runners::{RunnerId, Slot};
use crate::sites::{MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL, RUNNER_SET_LABEL, SITE_LABEL};

/// Target kind of runner Pods in plans.
pub(crate) const TARGET_KIND: &str = "Pod";
/// Label marking Pods (and their Secrets) that drover itself created, so that pods of the
/// same runner-pod labels created by actions-runner-controller are never touched.
pub(crate) const ENGINE_LABEL: &str = "drover.dev/engine";
/// Value of [`ENGINE_LABEL`].
pub(crate) const ENGINE: &str = "drover";
/// The environment variable the runner reads its JIT config from (`run.sh` accepts every
/// argument as `ACTIONS_RUNNER_INPUT_<NAME>`).
pub(crate) const JIT_ENV: &str = "ACTIONS_RUNNER_INPUT_JITCONFIG";
/// The key of the per-runner Secret holding the JIT config.
pub(crate) const JIT_KEY: &str = "jitconfig";

/// The label selector of the runner Pods drover created for `fleet`.
pub(crate) fn runner_pod_selector(fleet: &str) -> String {
    format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{OWNER_LABEL}={fleet},{COMPONENT_LABEL}=runner,{ENGINE_LABEL}={ENGINE}"
    )
}

/// A Pod's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, not all containers running yet (scheduling, image pull).
    Pending,
    /// Bound to a node, containers started.
    Running,
    /// Every container exited 0.
    Succeeded,
    /// A container failed.
    Failed,
    /// The node stopped reporting.
    Unknown,
}

impl Phase {
    fn parse(s: &str) -> Phase {
        match s {
            "" | "Pending" => Phase::Pending,
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            _ => Phase::Unknown,
        }
    }

    /// `Pending`, `Running`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }
}

/// One runner Pod as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerPod {
    /// Pod name (= runner name).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The site it was made for; `None` for a Pod made before site labels.
    pub site: Option<String>,
    /// The runner set (label `drover.dev/runner-set`).
    pub set: String,
    /// uid (delete precondition).
    pub uid: String,
    /// resourceVersion when observed (delete precondition: a Pod that changed since, e.g.
    /// went from Pending to Running, is not deleted).
    pub resource_version: String,
    /// Phase.
    pub phase: Phase,
    /// creationTimestamp, Unix seconds.
    pub created: i64,
    /// Deletion was requested (`deletionTimestamp` set).
    pub terminating: bool,
    /// Why a container waits or ended (e.g. `ImagePullBackOff`, `Error (exit 1)`).
    pub detail: Option<String>,
}

/// Parses an RFC 3339 time (`metav1.Time`) into Unix seconds.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

impl RunnerPod {
    /// Reads a listed Pod; `None` when it carries no runner-set label or no name.
    pub fn from_value(pod: &Value) -> Option<RunnerPod> {
        let meta = &pod["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let set = meta["labels"][RUNNER_SET_LABEL].as_str()?.to_string();
        let site = meta["labels"][SITE_LABEL].as_str().map(str::to_string);
        let name = meta["name"].as_str()?.to_string();
        let statuses = pod["status"]["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let detail = statuses.iter().find_map(|c| {
            let state = &c["state"];
            if let Some(reason) = state["waiting"]["reason"].as_str() {
                return Some(reason.to_string());
            }
            let t = &state["terminated"];
            let code = t["exitCode"].as_i64()?;
            (code != 0)
                .then(|| format!("{} (exit {code})", t["reason"].as_str().unwrap_or("Error")))
        });
        Some(RunnerPod {
            name,
            namespace: text(&meta["namespace"]),
            site,
            set,
            uid: text(&meta["uid"]),
            resource_version: text(&meta["resourceVersion"]),
            phase: Phase::parse(pod["status"]["phase"].as_str().unwrap_or_default()),
            created: meta["creationTimestamp"]
                .as_str()
                .and_then(parse_time)
                .unwrap_or(0),
            terminating: !meta["deletionTimestamp"].is_null(),
            detail,
        })
    }

    fn target(&self) -> Target {
        Target {
            kind: TARGET_KIND.into(),
            namespace: Some(self.namespace.clone()),
            name: self.name.clone(),
        }
    }

    fn change(&self, reason: RunnerReason) -> RunnerChange {
        let state = match self.phase {
            Phase::Pending => Some(LiveState::Pending),
            Phase::Running => Some(LiveState::Running),
            _ => None,
        };
        RunnerChange { reason, state }
    }

    fn age(&self, now: i64) -> i64 {
        now - self.created
    }

    fn described(&self) -> String {
        match &self.detail {
            Some(d) => format!("{} ({d})", self.phase.as_str()),
            None => self.phase.as_str().to_string(),
        }
    }
}

/// A declared `engine: drover` runner set of the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DesiredSet {
    /// Runner set name.
    pub set: String,
    /// Desired number of live runners (the autoscaler's decision, else `min`).
    pub count: u32,
    /// The set's `max`.
    pub max: u32,
}

/// Why a Pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeleteReason {
    /// It finished (`Succeeded` or `Failed`): cleanup.
    Finished,
    /// Scale-down of a `Pending` Pod.
    ScaleDownPending,
    /// Scale-down of a `Running` Pod whose runner is online and idle.
    ScaleDownIdle,
    /// Its runner did not come online within the start deadline.
    StartTimeout,
    /// Past the start deadline, its runner is no longer registered with GitHub.
    NotRegistered,
    /// Its runner set is no longer declared (prune).
    Undeclared,
}

/// One step of the runner plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunnerOp {
    /// Create a runner of `set` in `namespace`: JIT config, Pod, Secret. Its name
    /// (`drover-<fleet>-<set>-<random>`) is drawn at apply time; the plan shows the
    /// stable target `<set>#new-<index>` so that an unapplied plan reads the same every
    /// time.
    Create {
        /// Runner set.
        set: String,
        /// 1-based index among this set's creates.
        index: usize,
        /// Namespace.
        namespace: String,
        /// Why, for the plan.
        note: String,
    },
    /// Delete a Pod; with `deregister`, the runner's GitHub registration is removed first
    /// and the Pod is kept if GitHub says the runner is busy.
    Delete {
        /// The Pod as observed.
        pod: RunnerPod,
        /// Why.
        reason: DeleteReason,
        /// Deregister first.
        deregister: bool,
        /// Why, for the plan.
        note: String,
    },
    /// Leave a Pod as it is.
    Keep(RunnerPod, String),
}

impl RunnerOp {
    /// The plan change this step shows as.
    pub(crate) fn change(&self) -> Change {
        let (action, target, reason, runner) = match self {
            RunnerOp::Create {
                set,
                index,
                namespace,
                note,
            } => (
                Action::Create,
                RunnerId::new(set.as_str(), Slot::New(*index))
                    .target(TARGET_KIND, Some(namespace.clone())),
                note.clone(),
                RunnerChange {
                    reason: RunnerReason::ScaleUp,
                    state: None,
                },
            ),
            RunnerOp::Delete {
                pod, reason, note, ..
            } => (
                Action::Delete,
                pod.target(),
                note.clone(),
                pod.change(reason.typed()),
            ),
            RunnerOp::Keep(pod, note) => (
                Action::Unchanged,
                pod.target(),
                note.clone(),
                pod.change(RunnerReason::Kept),
            ),
        };
        Change::of_runner(action, target, reason, runner)
    }
}

impl DeleteReason {
    fn typed(self) -> RunnerReason {
        match self {
            DeleteReason::Finished => RunnerReason::Finished,
            DeleteReason::ScaleDownPending | DeleteReason::ScaleDownIdle => RunnerReason::ScaleDown,
            DeleteReason::StartTimeout => RunnerReason::StartTimeout,
            DeleteReason::NotRegistered => RunnerReason::NotRegistered,
            DeleteReason::Undeclared => RunnerReason::Undeclared,
        }
    }
}

/// GitHub's view of runners by name: `None` without a registry (outside `drover serve`).
pub(crate) type Registrations<'a> = Option<&'a dyn Fn(&str) -> Option<RegisteredRunner>>;

/// Inputs of the runner plan besides the Pods.
pub(crate) struct RunnerInputs<'a> {
    /// The site planned: Pods labelled for another site are not its own.
    pub site: &'a str,
    /// The runner namespace of the site.
    pub namespace: &'a str,
    /// Declared `engine: drover` runner sets of the site.
    pub desired: &'a [DesiredSet],
    /// Whether pending Pods of undeclared sets may be deleted (prune on, desired state
    /// complete).
    pub prune: bool,
    /// Start deadline, seconds.
    pub start_timeout_secs: u64,
    /// Now, Unix seconds.
    pub now: i64,
    /// GitHub's view of the runners.
    pub registered: Registrations<'a>,
}

/// The steps and findings about runner Pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RunnerPlan {
    /// Steps, by runner set in name order.
    pub ops: Vec<RunnerOp>,
    /// Findings about runner Pods.
    pub findings: Vec<Finding>,
}

impl RunnerPlan {
    /// The plan changes of the steps.
    pub(crate) fn changes(&self) -> Vec<Change> {
        self.ops.iter().map(RunnerOp::change).collect()
    }
}

/// Plans every runner set of the site. Pure.
pub(crate) fn plan_runners(inputs: &RunnerInputs<'_>, pods: &[RunnerPod]) -> RunnerPlan {
    let mut plan = RunnerPlan::default();
    let declared: BTreeSet<&str> = inputs.desired.iter().map(|d| d.set.as_str()).collect();
    let mut by_set: BTreeMap<&str, Vec<&RunnerPod>> = BTreeMap::new();
    let mut undeclared: BTreeMap<&str, Vec<&RunnerPod>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| is_own(p, inputs)) {
        if declared.contains(pod.set.as_str()) && pod.namespace == inputs.namespace {
            by_set.entry(pod.set.as_str()).or_default().push(pod);
        } else {
            undeclared.entry(pod.set.as_str()).or_default().push(pod);
        }
    }
    let mut desired: Vec<&DesiredSet> = inputs.desired.iter().collect();
    desired.sort_by(|a, b| a.set.cmp(&b.set));
    for d in desired {
        let pods = by_set.remove(d.set.as_str()).unwrap_or_default();
        plan_set(inputs, d, pods, &mut plan);
    }
    for (set, pods) in undeclared {
        plan_undeclared(inputs, set, pods, &mut plan);
    }
    if inputs.registered.is_none() {
        let sets: Vec<String> = plan
            .ops
            .iter()
            .filter_map(|op| match op {
                RunnerOp::Create { set, .. } => Some(set.clone()),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for set in sets {
            plan.findings.push(Finding::new(
                FindingSeverity::Error,
                "runner-registry-missing",
                format!("RunnerSet {set}"),
                "runner Pods need a just-in-time config from GitHub, which only `drover serve` (with its GitHub connection) mints; its runner Pods are not created",
            ));
        }
    }
    plan
}

/// Whether `pod` is this site's: labelled for it, or made before site labels in its
/// runner namespace (which no other site may share, E316). A Pod of another site, or an
/// unlabelled one elsewhere, is left alone.
fn is_own(pod: &RunnerPod, inputs: &RunnerInputs<'_>) -> bool {
    match pod.site.as_deref() {
        Some(site) => site == inputs.site,
        None => pod.namespace == inputs.namespace,
    }
}

fn sort_pods(pods: &mut [&RunnerPod]) {
    pods.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
}

fn plan_set<'a>(
    inputs: &RunnerInputs<'_>,
    d: &DesiredSet,
    mut pods: Vec<&'a RunnerPod>,
    plan: &mut RunnerPlan,
) {
    sort_pods(&mut pods);
    let timeout = i64::try_from(inputs.start_timeout_secs).unwrap_or(i64::MAX);
    let mut ops: Vec<RunnerOp> = Vec::new();
    let mut failed = Vec::new();
    let mut timed_out = Vec::new();
    let mut terminating = 0usize;
    let mut replaced = 0usize;
    // Live pods, by how scale-down may treat them.
    let mut pending: Vec<&RunnerPod> = Vec::new();
    let mut idle: Vec<&RunnerPod> = Vec::new();
    let mut others: Vec<(&RunnerPod, String)> = Vec::new();
    let delete =
        |pod: &RunnerPod, reason: DeleteReason, note: String, deregister: bool| RunnerOp::Delete {
            pod: pod.clone(),
            reason,
            deregister,
            note,
        };
    let has_registry = inputs.registered.is_some();
    for pod in pods {
        let old = pod.age(inputs.now) >= timeout;
        if pod.terminating {
            terminating += 1;
            ops.push(RunnerOp::Keep(pod.clone(), "terminating".into()));
            continue;
        }
        match pod.phase {
            Phase::Succeeded | Phase::Failed => {
                if pod.phase == Phase::Failed {
                    failed.push(format!("{} ({})", pod.name, pod.described()));
                }
                let registered = inputs.registered.is_some_and(|r| r(&pod.name).is_some());
                ops.push(delete(
                    pod,
                    DeleteReason::Finished,
                    format!("runner finished: {}", pod.described()),
                    registered,
                ));
            }
            Phase::Pending if old => {
                replaced += 1;
                timed_out.push(format!("{} ({})", pod.name, pod.described()));
                ops.push(delete(
                    pod,
                    DeleteReason::StartTimeout,
                    format!(
                        "start deadline ({}s) passed while {}: replaced",
                        inputs.start_timeout_secs,
                        pod.described()
                    ),
                    has_registry,
                ));
            }
            Phase::Pending => pending.push(pod),
            Phase::Running => match inputs.registered.map(|r| r(&pod.name)) {
                None => others.push((
                    pod,
                    "running; its GitHub state is unknown without drover serve's registry, so it is never removed".into(),
                )),
                Some(Some(RegisteredRunner { busy: true, .. })) => {
                    others.push((pod, "running a job".into()));
                }
                Some(Some(RegisteredRunner { online: true, .. })) => idle.push(pod),
                Some(Some(_)) if old => {
                    replaced += 1;
                    timed_out.push(format!("{} (registered, never online)", pod.name));
                    ops.push(delete(
                        pod,
                        DeleteReason::StartTimeout,
                        format!(
                            "start deadline ({}s) passed and the runner never came online: replaced",
                            inputs.start_timeout_secs
                        ),
                        true,
                    ));
                }
                Some(Some(_)) => others.push((pod, "starting: registered, not online yet".into())),
                Some(None) if old => {
                    replaced += 1;
                    ops.push(delete(
                        pod,
                        DeleteReason::NotRegistered,
                        "no longer registered with GitHub (its job finished, or the registration was removed): it can take no job".into(),
                        true,
                    ));
                }
                Some(None) => others.push((pod, "starting: not registered yet".into())),
            },
            Phase::Unknown => others.push((pod, "phase Unknown (node not reporting); never removed".into())),
        }
    }

    let max = d.max as usize;
    let want = (d.count as usize).min(max);
    let standing = |pod: &'a RunnerPod, standing| Live {
        key: pod.name.as_str(),
        standing,
        since: pod.created,
    };
    let live: Vec<Live<&str>> = (pending.iter().map(|p| standing(p, Standing::Pending)))
        .chain(idle.iter().map(|p| standing(p, Standing::Idle)))
        .chain(others.iter().map(|(p, _)| standing(p, Standing::Protected)))
        .collect();
    let remove = scale_down::victims(&live, want);
    let surviving = live.len() - remove.len();
    for pod in &pending {
        if remove.contains(pod.name.as_str()) {
            ops.push(delete(
                pod,
                DeleteReason::ScaleDownPending,
                format!("scale down to {want}: {}", pod.described()),
                has_registry,
            ));
        } else {
            ops.push(RunnerOp::Keep((*pod).clone(), pod.described()));
        }
    }
    for pod in &idle {
        if remove.contains(pod.name.as_str()) {
            ops.push(delete(
                pod,
                DeleteReason::ScaleDownIdle,
                format!("scale down to {want}: runner online and idle (deregistered first)"),
                true,
            ));
        } else {
            ops.push(RunnerOp::Keep((*pod).clone(), "running, idle".into()));
        }
    }
    for (pod, note) in &others {
        let note = if surviving > want {
            format!(
                "{note}; above the desired {want}, but only pending Pods and idle runners are removed"
            )
        } else {
            note.clone()
        };
        ops.push(RunnerOp::Keep((*pod).clone(), note));
    }
    // Never above max: live, terminating and replaced Pods all still hold a slot now.
    if surviving < want {
        let room = max.saturating_sub(surviving + terminating + replaced);
        let count = (want - surviving).min(room);
        for index in 1..=count {
            ops.push(RunnerOp::Create {
                set: d.set.clone(),
                index,
                namespace: inputs.namespace.to_string(),
                note: format!("scale up to {want} ({surviving} live)"),
            });
        }
    }
    plan.ops.extend(ops);
    if !failed.is_empty() {
        plan.findings.push(Finding::new(
            FindingSeverity::Warning,
            "runner-pods-failed",
            format!("RunnerSet {}", d.set),
            format!(
                "{} runner Pod(s) failed and are cleaned up: {}",
                failed.len(),
                shown(&failed)
            ),
        ));
    }
    if !timed_out.is_empty() {
        plan.findings.push(Finding::new(
            FindingSeverity::Warning,
            "runner-start-timeout",
            format!("RunnerSet {}", d.set),
            format!(
                "{} runner(s) did not come online within {}s and are replaced: {}",
                timed_out.len(),
                inputs.start_timeout_secs,
                shown(&timed_out)
            ),
        ));
    }
}

fn plan_undeclared(
    inputs: &RunnerInputs<'_>,
    set: &str,
    mut pods: Vec<&RunnerPod>,
    plan: &mut RunnerPlan,
) {
    sort_pods(&mut pods);
    let mut running = Vec::new();
    let mut failed = Vec::new();
    for pod in pods {
        let op = match pod.phase {
            _ if pod.terminating => RunnerOp::Keep(pod.clone(), "terminating".into()),
            Phase::Succeeded | Phase::Failed => {
                if pod.phase == Phase::Failed {
                    failed.push(format!("{} ({})", pod.name, pod.described()));
                }
                RunnerOp::Delete {
                    pod: pod.clone(),
                    reason: DeleteReason::Finished,
                    deregister: inputs.registered.is_some_and(|r| r(&pod.name).is_some()),
                    note: format!("runner finished: {}", pod.described()),
                }
            }
            Phase::Pending if inputs.prune => RunnerOp::Delete {
                pod: pod.clone(),
                reason: DeleteReason::Undeclared,
                deregister: inputs.registered.is_some(),
                note: "runner set no longer declared here: pending Pod pruned".into(),
            },
            Phase::Pending => RunnerOp::Keep(
                pod.clone(),
                "pending; runner set no longer declared here, prune is off".into(),
            ),
            Phase::Running | Phase::Unknown => {
                running.push(pod.name.clone());
                RunnerOp::Keep(
                    pod.clone(),
                    format!(
                        "{}; runner set no longer declared here, left to finish",
                        pod.phase.as_str()
                    ),
                )
            }
        };
        plan.ops.push(op);
    }
    if !running.is_empty() {
        plan.findings.push(Finding::new(
            FindingSeverity::Warning,
            "runner-set-undeclared",
            format!("RunnerSet {set}"),
            format!(
                "{} runner Pod(s) of a runner set not declared as `engine: drover` in namespace {} are still running ({}); drover leaves running runners to finish",
                running.len(),
                inputs.namespace,
                shown(&running)
            ),
        ));
    }
    if !failed.is_empty() {
        plan.findings.push(Finding::new(
            FindingSeverity::Warning,
            "runner-pods-failed",
            format!("RunnerSet {set}"),
            format!(
                "{} runner Pod(s) failed and are cleaned up: {}",
                failed.len(),
                shown(&failed)
            ),
        ));
    }
}

fn shown(items: &[String]) -> String {
    let more = items.len().saturating_sub(10);
    let list = items
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        format!("{list} and {more} more")
    } else {
        list
    }
}

/// A name for a new runner of `set`: `drover-<fleet>-<set>-<suffix>`, with suffixes drawn
/// from `suffix` until the name is not in `used` (then it is added).
pub(crate) fn fresh_name(
    fleet: &str,
    set: &str,
    used: &mut BTreeSet<String>,
    suffix: &mut dyn FnMut() -> String,
) -> String {
    loop {
        let name = runner_name(fleet, set, &suffix());
        if used.insert(name.clone()) {
            return name;
        }
    }
}

/// Five random characters `[a-z0-9]` for a runner name.
pub(crate) fn random_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut n = RandomState::new().hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), nanos));
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The Pod of runner `name` of `set`: the set's rendered PodTemplate, with drover's engine
/// label and the runner container reading its JIT config from the Secret of the same name.
/// `None` when the site renders no PodTemplate for the set.
pub(crate) fn pod_object(rendered: &Rendered, set: &str, name: &str) -> Option<Value> {
    let template = rendered.objects.iter().find(|o| {
        o["kind"] == "PodTemplate"
            && o["metadata"]["name"] == set
            && o["metadata"]["namespace"] == rendered.namespace.as_str()
    })?;
    let template = &template["template"];
    let mut labels = template["metadata"]["labels"].clone();
    labels[ENGINE_LABEL] = json!(ENGINE);
    let mut spec = template["spec"].clone();
    let containers = spec["containers"].as_array_mut()?;
    let runner = containers
        .iter_mut()
        .find(|c| c["name"] == "runner")?
        .as_object_mut()?;
    let env = runner.entry("env").or_insert_with(|| json!([]));
    env.as_array_mut()?.push(json!({
        "name": JIT_ENV,
        "valueFrom": {"secretKeyRef": {"name": name, "key": JIT_KEY}},
    }));
    Some(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": rendered.namespace, "labels": labels},
        "spec": spec,
    }))
}

/// The per-runner Secret holding `jit` under [`JIT_KEY`], owned by the Pod (`uid`): deleting
/// the Pod garbage-collects it. Built only at apply time; never shown or logged.
pub(crate) fn secret_object(pod: &Value, uid: &str, jit: &str) -> Value {
    let meta = &pod["metadata"];
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": meta["labels"],
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": uid,
            }],
        },
        "type": "Opaque",
        "stringData": {JIT_KEY: jit},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const NOW: i64 = 1_000_000;
    const NS: &str = "runners";

    fn pod(name: &str, set: &str, phase: Phase, age: i64) -> RunnerPod {
        RunnerPod {
            name: name.into(),
            namespace: NS.into(),
            site: Some("lab".into()),
            set: set.into(),
            uid: format!("uid-{name}"),
            resource_version: "7".into(),
            phase,
            created: NOW - age,
            terminating: false,
            detail: None,
        }
    }

    fn set(name: &str, count: u32, max: u32) -> DesiredSet {
        DesiredSet {
            set: name.into(),
            count,
            max,
        }
    }

    fn reg(online: bool, busy: bool) -> RegisteredRunner {
        RegisteredRunner {
            id: 1,
            online,
            busy,
        }
    }

    fn run(
        desired: &[DesiredSet],
        pods: &[RunnerPod],
        registered: Option<&HashMap<&str, RegisteredRunner>>,
        prune: bool,
    ) -> RunnerPlan {
        let lookup = registered.map(|m| move |name: &str| m.get(name).copied());
        let lookup_ref: Registrations<'_> = lookup
            .as_ref()
            .map(|f| f as &dyn Fn(&str) -> Option<RegisteredRunner>);
        let inputs = RunnerInputs {
            site: "lab",
            namespace: NS,
            desired,
            prune,
            start_timeout_secs: 600,
            now: NOW,
            registered: lookup_ref,
        };
        plan_runners(&inputs, pods)
    }

    fn creates(plan: &RunnerPlan) -> usize {
        plan.ops
            .iter()
            .filter(|op| matches!(op, RunnerOp::Create { .. }))
            .count()
    }

    fn summary(plan: &RunnerPlan) -> Vec<String> {
        plan.ops
            .iter()
            .map(|op| {
                let c = op.change();
                format!("{} {}", c.action.as_str(), c.target.name)
            })
            .collect()
    }

    fn deleted(plan: &RunnerPlan) -> Vec<(String, DeleteReason, bool)> {
        plan.ops
            .iter()
            .filter_map(|op| match op {
                RunnerOp::Delete {
                    pod,
                    reason,
                    deregister,
                    ..
                } => Some((pod.name.clone(), *reason, *deregister)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn scale_up_creates_named_runners_up_to_the_desired_count() {
        let none = HashMap::new();
        let plan = run(
            &[set("small", 3, 4)],
            &[pod("a", "small", Phase::Running, 5)],
            Some(&none),
            false,
        );
        assert_eq!(
            summary(&plan),
            ["unchanged a", "create small#new-1", "create small#new-2"]
        );
        assert!(plan.findings.is_empty(), "{:?}", plan.findings);
    }

    #[test]
    fn never_above_max_counting_terminating_and_replaced_pods() {
        let none = HashMap::new();
        // desired above max: clamped.
        let plan = run(&[set("s", 9, 2)], &[], Some(&none), false);
        assert_eq!(creates(&plan), 2);
        // A terminating pod still holds a slot.
        let mut t = pod("t", "s", Phase::Running, 5);
        t.terminating = true;
        let plan = run(&[set("s", 2, 2)], &[t], Some(&none), false);
        assert_eq!(creates(&plan), 1);
        // A replaced pod too: the replacement comes once it is gone.
        let stuck = pod("p", "s", Phase::Pending, 601);
        let plan = run(
            &[set("s", 2, 2)],
            std::slice::from_ref(&stuck),
            Some(&none),
            false,
        );
        assert_eq!(creates(&plan), 1);
        let plan = run(&[set("s", 1, 4)], &[stuck], Some(&none), false);
        assert_eq!(creates(&plan), 1, "below max the replacement is immediate");
    }

    #[test]
    fn names_already_in_use_are_never_reused() {
        let mut used = BTreeSet::from(["drover-ci-s-aaaaa".to_string()]);
        let mut draws = ["aaaaa", "aaaaa", "bbbbb"].into_iter().map(String::from);
        let name = fresh_name("ci", "s", &mut used, &mut || draws.next().unwrap());
        assert_eq!(name, "drover-ci-s-bbbbb");
        assert!(used.contains(&name));
    }

    #[test]
    fn finished_pods_are_cleaned_up_and_failures_reported() {
        let mut failed = pod("f", "s", Phase::Failed, 50);
        failed.detail = Some("Error (exit 1)".into());
        let pods = [pod("ok", "s", Phase::Succeeded, 50), failed];
        let registered = HashMap::from([("f", reg(false, false))]);
        let plan = run(&[set("s", 0, 4)], &pods, Some(&registered), false);
        assert_eq!(
            deleted(&plan),
            [
                ("f".into(), DeleteReason::Finished, true),
                ("ok".into(), DeleteReason::Finished, false)
            ]
        );
        assert_eq!(plan.findings[0].code, "runner-pods-failed");
        assert!(
            plan.findings[0]
                .message
                .contains("f (Failed (Error (exit 1)))")
        );
        // Finished pods do not count: a set of 1 gets a new runner.
        let plan = run(&[set("s", 1, 4)], &pods, Some(&registered), false);
        assert_eq!(creates(&plan), 1);
    }

    #[test]
    fn scale_down_removes_pending_newest_first_then_idle_never_busy() {
        let pods = [
            pod("busy", "s", Phase::Running, 100),
            pod("idle-old", "s", Phase::Running, 90),
            pod("idle-new", "s", Phase::Running, 80),
            pod("pend-old", "s", Phase::Pending, 20),
            pod("pend-new", "s", Phase::Pending, 10),
        ];
        let registered = HashMap::from([
            ("busy", reg(true, true)),
            ("idle-old", reg(true, false)),
            ("idle-new", reg(true, false)),
        ]);
        let plan = run(&[set("s", 4, 5)], &pods, Some(&registered), false);
        assert_eq!(
            deleted(&plan),
            [("pend-new".into(), DeleteReason::ScaleDownPending, true)]
        );
        let plan = run(&[set("s", 2, 5)], &pods, Some(&registered), false);
        assert_eq!(
            deleted(&plan),
            [
                ("pend-old".into(), DeleteReason::ScaleDownPending, true),
                ("pend-new".into(), DeleteReason::ScaleDownPending, true),
                ("idle-new".into(), DeleteReason::ScaleDownIdle, true),
            ]
        );
        let plan = run(&[set("s", 0, 5)], &pods, Some(&registered), false);
        let gone: Vec<String> = deleted(&plan).into_iter().map(|d| d.0).collect();
        assert_eq!(gone.len(), 4);
        assert!(
            !gone.contains(&"busy".to_string()),
            "a busy runner is never removed"
        );
        assert_eq!(creates(&plan), 0);
    }

    #[test]
    fn running_runners_with_unknown_or_starting_state_are_never_scaled_down() {
        let pods = [
            pod("a", "s", Phase::Running, 10),
            pod("b", "s", Phase::Running, 10),
            pod("c", "s", Phase::Unknown, 10),
        ];
        // No registry: nothing is known, nothing is removed.
        let plan = run(&[set("s", 0, 5)], &pods, None, false);
        assert!(deleted(&plan).is_empty());
        assert!(plan.ops.iter().all(|op| match op {
            RunnerOp::Keep(_, note) => note.contains("above the desired 0"),
            _ => false,
        }));
        // Registered but not online yet, or not registered yet: starting.
        let registered = HashMap::from([("a", reg(false, false))]);
        let plan = run(&[set("s", 0, 5)], &pods, Some(&registered), false);
        assert!(deleted(&plan).is_empty());
    }

    #[test]
    fn runners_that_never_come_online_are_replaced_and_reported() {
        let mut stuck = pod("stuck", "s", Phase::Pending, 700);
        stuck.detail = Some("ImagePullBackOff".into());
        let pods = [
            stuck,
            pod("offline", "s", Phase::Running, 601),
            pod("gone", "s", Phase::Running, 900),
            pod("young", "s", Phase::Running, 30),
        ];
        let registered = HashMap::from([("offline", reg(false, false))]);
        let plan = run(&[set("s", 4, 10)], &pods, Some(&registered), false);
        assert_eq!(
            deleted(&plan),
            [
                ("gone".into(), DeleteReason::NotRegistered, true),
                ("stuck".into(), DeleteReason::StartTimeout, true),
                ("offline".into(), DeleteReason::StartTimeout, true),
            ]
        );
        assert_eq!(creates(&plan), 3, "replacements for the three");
        let finding = &plan.findings[0];
        assert_eq!(finding.code, "runner-start-timeout");
        assert!(
            finding
                .message
                .contains("stuck (Pending (ImagePullBackOff))")
                && finding
                    .message
                    .contains("offline (registered, never online)")
                && !finding.message.contains("gone"),
            "{}",
            finding.message
        );
        // Without a registry only pending pods can be judged.
        let plan = run(&[set("s", 4, 10)], &pods, None, false);
        assert_eq!(
            deleted(&plan),
            [("stuck".into(), DeleteReason::StartTimeout, false)]
        );
    }

    #[test]
    fn undeclared_sets_prune_pending_only_and_leave_running_to_finish() {
        let mut other_ns = pod("moved", "s", Phase::Pending, 5);
        other_ns.namespace = "old".into();
        let pods = [
            pod("run", "gone", Phase::Running, 5),
            pod("pend", "gone", Phase::Pending, 5),
            pod("done", "gone", Phase::Succeeded, 5),
            other_ns,
        ];
        let registered = HashMap::from([("run", reg(true, false))]);
        let keep = run(&[set("s", 0, 1)], &pods, Some(&registered), false);
        assert_eq!(
            deleted(&keep),
            [("done".into(), DeleteReason::Finished, false)]
        );
        assert_eq!(keep.findings[0].code, "runner-set-undeclared");
        let prune = run(&[set("s", 0, 1)], &pods, Some(&registered), true);
        assert_eq!(
            deleted(&prune),
            [
                ("done".into(), DeleteReason::Finished, false),
                ("pend".into(), DeleteReason::Undeclared, true),
                ("moved".into(), DeleteReason::Undeclared, true),
            ]
        );
        assert!(!deleted(&prune).iter().any(|d| d.0 == "run"));
    }

    #[test]
    fn without_a_registry_creates_carry_a_finding() {
        let plan = run(&[set("s", 1, 1)], &[], None, false);
        assert_eq!(creates(&plan), 1);
        assert_eq!(plan.findings[0].code, "runner-registry-missing");
        let plan = run(&[set("s", 0, 1)], &[], None, false);
        assert!(plan.findings.is_empty());
    }

    #[test]
    fn a_steady_state_plans_no_changes() {
        let pods = [
            pod("a", "s", Phase::Running, 100),
            pod("b", "s", Phase::Pending, 5),
        ];
        let registered = HashMap::from([("a", reg(true, true))]);
        let plan = run(&[set("s", 2, 2)], &pods, Some(&registered), false);
        assert!(plan.changes().iter().all(|c| c.action == Action::Unchanged));
    }

    #[test]
    fn pods_parse_from_the_api_shape() {
        let v = json!({
            "metadata": {"name": "drover-ci-s-abcde", "namespace": NS, "uid": "u", "resourceVersion": "9",
                "creationTimestamp": "2026-11-22T15:00:00Z", "labels": {RUNNER_SET_LABEL: "s"}},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "runner", "state": {"waiting": {"reason": "ErrImagePull"}}}]},
        });
        let p = RunnerPod::from_value(&v).unwrap();
        assert_eq!((p.phase, p.set.as_str()), (Phase::Pending, "s"));
        assert_eq!(p.detail.as_deref(), Some("ErrImagePull"));
        assert_eq!(p.created, parse_time("2026-11-22T15:00:00Z").unwrap());
        assert!(p.created > 0);
        let unlabelled = json!({"metadata": {"name": "x"}});
        assert!(RunnerPod::from_value(&unlabelled).is_none());
    }

    #[test]
    fn pods_come_from_the_rendered_template_with_the_jit_config_by_reference() {
        let template = json!({
            "apiVersion": "v1", "kind": "PodTemplate",
            "metadata": {"name": "s", "namespace": NS},
            "template": {
                "metadata": {"labels": {RUNNER_SET_LABEL: "s", COMPONENT_LABEL: "runner"}},
                "spec": {"containers": [
                    {"name": "runner", "image": "r:1", "env": [{"name": "A", "value": "1"}]},
                    {"name": "dind", "image": "d:1"},
                ]},
            },
        });
        let rendered = Rendered {
            namespace: NS.into(),
            objects: vec![template],
            ..Rendered::default()
        };
        let pod = pod_object(&rendered, "s", "drover-ci-s-abcde").unwrap();
        assert_eq!(pod["metadata"]["name"], "drover-ci-s-abcde");
        assert_eq!(pod["metadata"]["namespace"], NS);
        assert_eq!(pod["metadata"]["labels"][ENGINE_LABEL], ENGINE);
        assert_eq!(pod["metadata"]["labels"][RUNNER_SET_LABEL], "s");
        let env = &pod["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["name"], "A");
        assert_eq!(
            env[1],
            json!({"name": JIT_ENV, "valueFrom": {"secretKeyRef": {"name": "drover-ci-s-abcde", "key": JIT_KEY}}})
        );
        assert!(pod["spec"]["containers"][1].get("env").is_none());
        assert!(pod_object(&rendered, "other", "x").is_none());

        let secret = secret_object(&pod, "uid-1", "cfg");
        assert_eq!(secret["metadata"]["name"], "drover-ci-s-abcde");
        assert_eq!(
            secret["metadata"]["ownerReferences"],
            json!([{"apiVersion": "v1", "kind": "Pod", "name": "drover-ci-s-abcde", "uid": "uid-1"}])
        );
        assert_eq!(secret["stringData"][JIT_KEY], "cfg");
        assert_eq!(secret["type"], "Opaque");
        // The plan never carries it: a create shows a stable target and no diff.
        let create = RunnerOp::Create {
            set: "s".into(),
            index: 2,
            namespace: NS.into(),
            note: "scale up".into(),
        }
        .change();
        assert_eq!(create.target.name, "s#new-2");
        assert!(create.diff.is_none());
    }

    #[test]
    fn random_suffixes_are_five_lowercase_alphanumerics() {
        let a = random_suffix();
        assert_eq!(a.len(), 5);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(a, random_suffix());
    }
}
