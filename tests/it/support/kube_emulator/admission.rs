//! What the always-on admission plugins and the garbage collector do, for the kinds drover
//! uses: Pod admission (ServiceAccount, Priority, ResourceQuota `pods`) and ownerReference
//! garbage collection.
//!
//! - **ServiceAccount**: a Pod naming a `serviceAccountName` that does not exist in its
//!   namespace is refused (403). A Pod naming none is accepted (the emulator has no
//!   `default` ServiceAccount controller to create one; a real server would default it).
//! - **Priority**: a Pod naming a `priorityClassName` that does not exist is refused (403);
//!   otherwise `spec.priority` (and `preemptionPolicy`) are set from the class.
//! - **ResourceQuota**, for quotas of its namespace that select the Pod (no scope, or a
//!   `PriorityClass` `In`/`NotIn`/`Exists` scope selector), as `pkg/quota` does: when a
//!   quota tracks `requests.cpu`, `requests.memory`, `limits.cpu` or `limits.memory`,
//!   every container (init and sidecar containers included) must set it (403 `failed
//!   quota: Q: must specify ...`; a request defaults to its limit); the Pod is refused
//!   (403 `exceeded quota`) when the Pods the quota counts (not `Succeeded`/`Failed`) plus
//!   this one would exceed any tracked hard limit (`pods`, cpu, memory, extended
//!   resources such as `requests.amd.com/gpu`). A Pod's usage is the sum over its
//!   containers and sidecars, or its largest init container when that is more.
//! - **Garbage collection**: a real cluster deletes, in the background, every object whose
//!   `ownerReferences` all name objects that no longer exist (by uid). The emulator does it
//!   synchronously: after every delete for the whole store ([`Store::collect_garbage`]),
//!   after a create for the new object (`Store::collect_if_orphaned`);
//!   `propagationPolicy: Orphan` removes the references to the deleted owner instead.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::resources::ResourceType;
use super::status::ApiError;
use super::store::{ObjKey, Store};

fn core_key(plural: &str, namespace: &str, name: &str) -> ObjKey {
    ObjKey {
        group: String::new(),
        plural: plural.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

impl Store {
    /// Admission of a new object (create, or an apply that creates). May set fields.
    pub(super) fn admit_create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        if !(rt.group.is_empty() && rt.kind == "Pod") {
            return Ok(());
        }
        let ns = namespace.unwrap_or_default();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let forbidden = |why: String| ApiError::forbidden("", "pods", &name, why);
        if let Some(sa) = obj["spec"]["serviceAccountName"].as_str()
            && !self
                .objects
                .contains_key(&core_key("serviceaccounts", ns, sa))
        {
            return Err(forbidden(format!(
                "error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"
            )));
        }
        if let Some(pc) = obj["spec"]["priorityClassName"].as_str() {
            let key = ObjKey {
                group: "scheduling.k8s.io".into(),
                plural: "priorityclasses".into(),
                namespace: String::new(),
                name: pc.into(),
            };
            let Some(class) = self.objects.get(&key) else {
                return Err(forbidden(format!(
                    "no PriorityClass with name {pc} was found"
                )));
            };
            obj["spec"]["priority"] = class["value"].clone();
            obj["spec"]["preemptionPolicy"] = class["preemptionPolicy"].clone();
        }
        let pc = obj["spec"]["priorityClassName"]
            .as_str()
            .unwrap_or_default();
        for (key, quota) in self.in_namespace("resourcequotas", ns) {
            if !quota_selects(quota, pc) {
                continue;
            }
            self.admit_compute(&key.name, quota, ns, obj)
                .map_err(&forbidden)?;
            let Some(limit) = quota["spec"]["hard"]["pods"]
                .as_str()
                .and_then(|p| p.parse::<usize>().ok())
            else {
                continue;
            };
            let used = self
                .in_namespace("pods", ns)
                .filter(|(_, p)| {
                    !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                })
                .filter(|(_, p)| {
                    quota_selects(
                        quota,
                        p["spec"]["priorityClassName"].as_str().unwrap_or_default(),
                    )
                })
                .count();
            if used + 1 > limit {
                return Err(forbidden(format!(
                    "exceeded quota: {}, requested: pods=1, used: pods={used}, limited: pods={limit}",
                    key.name
                )));
            }
        }
        Ok(())
    }

    /// The compute resources of a quota (`pkg/quota/v1/evaluator/core/pods.go`): every
    /// container (init and sidecar containers included) must set each tracked cpu/memory
    /// request or limit ("must specify"), and the Pods the quota counts plus this one must
    /// stay within every tracked hard limit ("exceeded quota").
    fn admit_compute(
        &self,
        quota_name: &str,
        quota: &Value,
        ns: &str,
        pod: &Value,
    ) -> Result<(), String> {
        let hard: Vec<(String, u128)> = quota["spec"]["hard"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "pods")
            .filter_map(|(k, v)| Some((tracked_name(k), milli(v.as_str()?)?)))
            .collect();
        let mut missing: Vec<String> = Vec::new();
        for resource in [
            "limits.cpu",
            "limits.memory",
            "requests.cpu",
            "requests.memory",
        ] {
            if !hard.iter().any(|(k, _)| k == resource) {
                continue;
            }
            let unset: Vec<&str> = containers(pod)
                .filter(|(c, _)| container_value(c, resource).is_none())
                .map(|(c, _)| c["name"].as_str().unwrap_or_default())
                .collect();
            if !unset.is_empty() {
                missing.push(format!("{resource} for: {}", unset.join(",")));
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "failed quota: {quota_name}: must specify {}",
                missing.join("; ")
            ));
        }
        for (resource, limit) in &hard {
            let requested = pod_usage(pod, resource);
            if requested == 0 {
                continue;
            }
            let used: u128 = self
                .in_namespace("pods", ns)
                .filter(|(_, p)| {
                    !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                })
                .filter(|(_, p)| {
                    quota_selects(
                        quota,
                        p["spec"]["priorityClassName"].as_str().unwrap_or_default(),
                    )
                })
                .map(|(_, p)| pod_usage(p, resource))
                .sum();
            if used + requested > *limit {
                return Err(format!(
                    "exceeded quota: {quota_name}, requested: {resource}={}, used: {resource}={}, limited: {resource}={}",
                    show(requested),
                    show(used),
                    show(*limit)
                ));
            }
        }
        Ok(())
    }

    /// The core objects of one kind (`plural`) in namespace `ns`, in name order.
    fn in_namespace<'a>(
        &'a self,
        plural: &'a str,
        ns: &'a str,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        self.objects
            .range(core_key(plural, ns, "")..)
            .take_while(move |(k, _)| k.group.is_empty() && k.plural == plural && k.namespace == ns)
    }

    /// After a create: the new object is collected at once when it has owner references
    /// and none of them names an existing object (by kind, name and uid, as the collector
    /// checks them). Only the new object can be such an orphan: nothing else changed, and
    /// nothing can name the new object's uid yet.
    pub(super) fn collect_if_orphaned(&mut self, key: &ObjKey) -> bool {
        let Some(refs) = self.objects.get(key).and_then(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .filter(|r| !r.is_empty())
                .cloned()
        }) else {
            return false;
        };
        if refs.iter().any(|r| self.owner_exists(&key.namespace, r)) {
            return false;
        }
        self.remove(key.clone());
        true
    }

    /// Whether an owner reference of an object in `namespace` names an existing object.
    fn owner_exists(&self, namespace: &str, owner: &Value) -> bool {
        let text = |f: &str| owner[f].as_str().unwrap_or_default();
        let Some(rt) = self.type_of(text("apiVersion"), text("kind")) else {
            return false;
        };
        self.objects
            .get(&ObjKey::new(&rt, Some(namespace), text("name")))
            .is_some_and(|o| o["metadata"]["uid"].as_str() == Some(text("uid")))
    }

    /// Deletes every object whose owners are all gone (repeatedly, for chains). Returns how
    /// many objects were deleted.
    pub fn collect_garbage(&mut self) -> usize {
        let mut collected = 0;
        loop {
            // Borrowed uids: this runs after every create and delete.
            let uids: HashSet<&str> = self
                .objects
                .values()
                .filter_map(|o| o.get("metadata")?.get("uid")?.as_str())
                .collect();
            let orphans: Vec<ObjKey> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    o.get("metadata")
                        .and_then(|m| m.get("ownerReferences"))
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            !refs.is_empty()
                                && refs
                                    .iter()
                                    .all(|r| !uids.contains(r["uid"].as_str().unwrap_or_default()))
                        })
                })
                .map(|(k, _)| k.clone())
                .collect();
            if orphans.is_empty() {
                return collected;
            }
            for key in orphans {
                self.remove(key);
                collected += 1;
            }
        }
    }

    /// `propagationPolicy: Orphan`: dependents of the deleted owner `uid` lose their
    /// reference to it instead of being collected.
    pub(super) fn orphan_dependents(&mut self, uid: &str) {
        let dependents: Vec<ObjKey> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in dependents {
            let Some(mut obj) = self.objects.get(&key).cloned() else {
                continue;
            };
            let refs: Vec<Value> = obj["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["uid"] != uid)
                .cloned()
                .collect();
            let meta = obj["metadata"]
                .as_object_mut()
                .expect("stored objects have metadata");
            if refs.is_empty() {
                meta.remove("ownerReferences");
            } else {
                meta.insert("ownerReferences".into(), json!(refs));
            }
            self.commit(key, obj, "MODIFIED");
        }
    }
}

/// Whether a ResourceQuota counts Pods of PriorityClass `pc` (`""` for none).
fn quota_selects(quota: &Value, pc: &str) -> bool {
    let Some(exprs) = quota["spec"]["scopeSelector"]["matchExpressions"].as_array() else {
        return true;
    };
    exprs.iter().all(|e| {
        if e["scopeName"] != "PriorityClass" {
            return true;
        }
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e["operator"].as_str() {
            Some("In") => values.contains(&pc),
            Some("NotIn") => !values.contains(&pc),
            Some("Exists") => !pc.is_empty(),
            Some("DoesNotExist") => pc.is_empty(),
            _ => true,
        }
    })
}

/// A quota key as tracked: `cpu` and `memory` mean their requests.
fn tracked_name(key: &str) -> String {
    match key {
        "cpu" | "memory" => format!("requests.{key}"),
        other => other.to_string(),
    }
}

/// Every container of a Pod with whether it is a regular init container (not a sidecar).
fn containers(pod: &Value) -> impl Iterator<Item = (&Value, bool)> {
    let spec = &pod["spec"];
    let regular = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c, false));
    let init = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c, c["restartPolicy"] != "Always"));
    regular.chain(init)
}

/// A container's value of `requests.X` / `limits.X`, in milli-units. A request that is
/// not set defaults to the limit (as the API server defaults it).
fn container_value(c: &Value, resource: &str) -> Option<u128> {
    let (kind, name) = resource.split_once('.')?;
    let res = &c["resources"];
    let own = res[kind][name].as_str().and_then(milli);
    match kind {
        "requests" => own.or_else(|| res["limits"][name].as_str().and_then(milli)),
        _ => own,
    }
}

/// A Pod's usage of a resource: the sum over its containers and sidecars, or the largest
/// regular init container when that is more.
fn pod_usage(pod: &Value, resource: &str) -> u128 {
    let mut sum = 0;
    let mut init_max = 0;
    for (c, regular_init) in containers(pod) {
        let v = container_value(c, resource).unwrap_or(0);
        if regular_init {
            init_max = init_max.max(v);
        } else {
            sum += v;
        }
    }
    sum.max(init_max)
}

/// A quantity in milli-units (`2` → 2000, `500m` → 500, `1Gi` → 1073741824000); the
/// emulator's own parser, independent of drover's.
pub fn milli(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() || frac.len() > 3 {
        return None;
    }
    let frac_milli: u128 = format!("{frac:0<3}").parse().ok()?;
    let base = int.parse::<u128>().ok()? * 1000 + frac_milli;
    let factor: u128 = match suffix {
        "" => 1000,
        "m" => return (frac.is_empty()).then(|| int.parse().ok()).flatten(),
        "k" => 1000u128.pow(1),
        "M" => 1000u128.pow(2),
        "G" => 1000u128.pow(3),
        "T" => 1000u128.pow(4),
        "Ki" => 1024u128.pow(1),
        "Mi" => 1024u128.pow(2),
        "Gi" => 1024u128.pow(3),
        "Ti" => 1024u128.pow(4),
        "Pi" => 1024u128.pow(5),
        _ => return None,
    };
    Some(if suffix.is_empty() {
        base
    } else {
        base * factor
    })
}

/// Milli-units as a quantity (`2500m`, or whole units when exact).
fn show(milli: u128) -> String {
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}
