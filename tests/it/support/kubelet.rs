//! A test "kubelet" for the Kubernetes API emulator: it plays the node for runner Pods.
//!
//! Every 100 ms it lists Pods (through the API, like a kubelet). A new `Pending` Pod is
//! started: the runner container's `ACTIONS_RUNNER_INPUT_JITCONFIG` is resolved from the
//! referenced Secret (as the kubelet resolves `secretKeyRef`), the stand-in runner binary
//! is started with it in its environment, and the Pod's status becomes `Running` through
//! the status subresource. When the process exits the Pod becomes `Succeeded` (exit 0) or
//! `Failed`. A Pod whose Secret does not exist stays `Pending` with the container waiting
//! (`CreateContainerConfigError`), as on a real node. A deleted Pod's process is killed.
//! [`Kubelet::hold`] keeps new Pods `Pending` (a node without room).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

/// The running kubelet; stops (killing its processes) when dropped.
pub struct Kubelet {
    hold: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const JIT_ENV: &str = "ACTIONS_RUNNER_INPUT_JITCONFIG";

impl Kubelet {
    /// Starts playing the node: runner processes are `runner` with `args`.
    pub fn start(client: kube::Client, runner: PathBuf, args: Vec<String>) -> Kubelet {
        let hold = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(client, runner, args, hold.clone()));
        Kubelet { hold, task }
    }

    /// While held, new Pods are left `Pending`.
    pub fn hold(&self, hold: bool) {
        self.hold.store(hold, Ordering::SeqCst);
    }
}

struct Started {
    namespace: String,
    name: String,
    child: tokio::process::Child,
    /// The `Running` status reached the API server (retried every tick until it does, as a
    /// kubelet retries its status updates while the API server fails).
    reported: bool,
}

/// A Pod whose process exited, until its final status reached the API server.
struct Exited {
    namespace: String,
    name: String,
    code: i32,
}

async fn run(client: kube::Client, runner: PathBuf, args: Vec<String>, hold: Arc<AtomicBool>) {
    let all: Api<Pod> = Api::all(client.clone());
    // By uid: the processes this node runs.
    let mut started: BTreeMap<String, Started> = BTreeMap::new();
    let mut exited: BTreeMap<String, Exited> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(list) = all.list(&ListParams::default()).await else {
            continue;
        };
        let live: BTreeMap<String, &Pod> = list
            .items
            .iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        // Deleted Pods: their containers are killed.
        let gone: Vec<String> = started
            .keys()
            .filter(|uid| !live.contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(mut s) = started.remove(&uid) {
                let _ = s.child.kill().await;
            }
        }
        // Exited processes: the Pod is finished (reported until the API server takes it).
        let mut finished = Vec::new();
        for (uid, s) in started.iter_mut() {
            if let Ok(Some(status)) = s.child.try_wait() {
                finished.push((uid.clone(), status.code().unwrap_or(137)));
            }
        }
        for (uid, code) in finished {
            let s = started.remove(&uid).expect("listed");
            exited.insert(
                uid,
                Exited {
                    namespace: s.namespace,
                    name: s.name,
                    code,
                },
            );
        }
        let mut reported = Vec::new();
        for (uid, e) in &exited {
            let (phase, reason) = if e.code == 0 {
                ("Succeeded", "Completed")
            } else {
                ("Failed", "Error")
            };
            let state = json!({"terminated": {"exitCode": e.code, "reason": reason}});
            if !live.contains_key(uid)
                || set_status(&client, &e.namespace, &e.name, phase, state).await
            {
                reported.push(uid.clone());
            }
        }
        for uid in reported {
            exited.remove(&uid);
        }
        for s in started.values_mut().filter(|s| !s.reported) {
            s.reported = set_status(&client, &s.namespace, &s.name, "Running", running()).await;
        }
        if hold.load(Ordering::SeqCst) {
            continue;
        }
        for (uid, pod) in live {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if started.contains_key(&uid)
                || exited.contains_key(&uid)
                || phase != Some("Pending")
                || pod.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some((secret, key)) = jit_ref(pod) else {
                continue; // not a runner Pod
            };
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let value = match secrets.get_opt(&secret).await {
                Ok(Some(s)) => s
                    .data
                    .and_then(|d| d.get(&key).cloned())
                    .map(|b| String::from_utf8_lossy(&b.0).to_string()),
                _ => None,
            };
            let Some(value) = value else {
                set_status(
                    &client,
                    &ns,
                    &name,
                    "Pending",
                    json!({"waiting": {"reason": "CreateContainerConfigError",
                        "message": format!("secret \"{secret}\" not found")}}),
                )
                .await;
                continue;
            };
            let child = tokio::process::Command::new(&runner)
                .args(&args)
                .env(JIT_ENV, value)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start the stand-in runner");
            let reported = set_status(&client, &ns, &name, "Running", running()).await;
            started.insert(
                uid,
                Started {
                    namespace: ns,
                    name,
                    child,
                    reported,
                },
            );
        }
    }
}

/// The Secret name and key the runner container's JIT config comes from.
fn jit_ref(pod: &Pod) -> Option<(String, String)> {
    let spec = pod.spec.as_ref()?;
    let runner = spec.containers.iter().find(|c| c.name == "runner")?;
    let var = runner.env.as_ref()?.iter().find(|e| e.name == JIT_ENV)?;
    let r = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
    Some((r.name.clone(), r.key.clone()))
}

fn running() -> Value {
    json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})
}

/// Sets a Pod's phase and its runner container's state; `false` when the API server
/// refused or failed.
async fn set_status(
    client: &kube::Client,
    ns: &str,
    name: &str,
    phase: &str,
    state: Value,
) -> bool {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let patch = json!({"status": {
        "phase": phase,
        "containerStatuses": [{
            "name": "runner", "image": "runner", "imageID": "", "restartCount": 0,
            "ready": phase == "Running", "started": phase == "Running", "state": state,
        }],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .is_ok()
}
