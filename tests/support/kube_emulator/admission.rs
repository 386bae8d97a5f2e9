//! What the always-on admission plugins and the garbage collector do, for the kinds drover
//! uses: Pod admission (ServiceAccount, Priority, ResourceQuota `pods`) and ownerReference
//! garbage collection.
//!
//! - **ServiceAccount**: a Pod naming a `serviceAccountName` that does not exist in its
//!   namespace is refused (403). A Pod naming none is accepted (the emulator has no
//!   `default` ServiceAccount controller to create one; a real server would default it).
//! - **Priority**: a Pod naming a `priorityClassName` that does not exist is refused (403);
//!   otherwise `spec.priority` (and `preemptionPolicy`) are set from the class.
//! - **ResourceQuota**: a Pod is refused (403 `exceeded quota`) when a quota of its
//!   namespace that selects it (no scope, or a `PriorityClass` `In`/`NotIn`/`Exists` scope
//!   selector) has `hard.pods` and the Pods it already counts (not `Succeeded`/`Failed`)
//!   reach it. Only `pods` is enforced, not cpu/memory.
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
            let Some(limit) = quota["spec"]["hard"]["pods"]
                .as_str()
                .and_then(|p| p.parse::<usize>().ok())
            else {
                continue;
            };
            if !quota_selects(quota, pc) {
                continue;
            }
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
