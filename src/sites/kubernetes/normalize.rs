//! Normalisation: what of a live object is compared with what drover wants, and how both
//! are written for a diff.
//!
//! The live object is *projected* onto the desired object's field set: only paths present
//! in the desired object are kept, so server-set fields (`status`, `managedFields`,
//! `resourceVersion`, `uid`, defaults such as `imagePullPolicy`) and fields other managers
//! own never show as drift. List items whose elements carry a merge key (`name`,
//! `mountPath`, `containerPort`, taint `key`+`effect`) are matched by key; other lists are
//! compared whole. Empty maps, empty lists and nulls are treated as absent (the API server
//! drops them). Secret `data`/`stringData` values are always masked here, so no caller can
//! forget: a changed key shows as `<redacted: changed>`.

use serde_json::{Map, Value};

/// Marker shown instead of a secret value.
pub(crate) const REDACTED: &str = "<redacted>";
/// Marker shown instead of a secret value that differs from the live one.
pub(crate) const REDACTED_CHANGED: &str = "<redacted: changed>";

/// The merge key fields of list items, by list field name (strategic-merge / SSA keys).
fn merge_key(field: &str, item: &Value) -> Option<Vec<&'static str>> {
    let keys: &[&'static str] = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => &["name"],
        "volumeMounts" => &["mountPath"],
        "ports" if item.get("containerPort").is_some() => &["containerPort"],
        "ports" if item.get("port").is_some() => &["port"],
        "taints" => &["key", "effect"],
        _ => return None,
    };
    keys.iter()
        .all(|k| item.get(*k).is_some())
        .then(|| keys.to_vec())
}

fn item_key(keys: &[&str], item: &Value) -> Vec<Value> {
    keys.iter()
        .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
        .collect()
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Drops null / empty-map / empty-list fields, recursively (list elements are kept).
pub(crate) fn drop_empty(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for child in m.values_mut() {
                drop_empty(child);
            }
            m.retain(|_, c| !is_empty(c));
        }
        Value::Array(items) => items.iter_mut().for_each(drop_empty_inner),
        _ => {}
    }
}

fn drop_empty_inner(v: &mut Value) {
    if let Value::Object(m) = v {
        for child in m.values_mut() {
            drop_empty(child);
        }
        m.retain(|_, c| !is_empty(c));
    } else {
        drop_empty(v);
    }
}

/// The desired object as compared: empties dropped.
pub(crate) fn desired_view(desired: &Value) -> Value {
    let mut d = desired.clone();
    drop_empty(&mut d);
    d
}

/// `live` restricted to the field set of `desired` (which must be a [`desired_view`]).
pub(crate) fn project(desired: &Value, live: &Value) -> Value {
    project_field("", desired, live).unwrap_or(Value::Null)
}

fn project_field(field: &str, desired: &Value, live: &Value) -> Option<Value> {
    match (desired, live) {
        (_, Value::Null) => None,
        (Value::Object(d), Value::Object(l)) => {
            let mut out = Map::new();
            for (k, dv) in d {
                if let Some(lv) = l.get(k)
                    && let Some(p) = project_field(k, dv, lv)
                    && !is_empty(&p)
                {
                    out.insert(k.clone(), p);
                }
            }
            Some(Value::Object(out))
        }
        (Value::Array(d), Value::Array(l)) => {
            let keys = d
                .first()
                .and_then(|first| merge_key(field, first))
                .filter(|keys| d.iter().all(|i| keys.iter().all(|k| i.get(*k).is_some())));
            match keys {
                // A list-map: match by key, keep desired order, drop live-only items (owned
                // by others; drover's apply leaves them alone).
                Some(keys) => {
                    let mut out = Vec::new();
                    for di in d {
                        let key = item_key(&keys, di);
                        if let Some(li) = l.iter().find(|li| item_key(&keys, li) == key) {
                            out.push(project_field("", di, li).unwrap_or(Value::Null));
                        }
                    }
                    for li in l {
                        let key = item_key(&keys, li);
                        if merge_key(field, li).is_some()
                            && !d.iter().any(|di| item_key(&keys, di) == key)
                            && field == "taints"
                        {
                            // Taints are an atomic list: extra live taints are replaced by
                            // drover's full list, so they are part of the comparison.
                            out.push(li.clone());
                        }
                    }
                    Some(Value::Array(out))
                }
                // Atomic list: elements by index, extra live elements kept (they would change).
                None => {
                    let mut out = Vec::new();
                    for (i, li) in l.iter().enumerate() {
                        match d.get(i) {
                            Some(di) => out.push(project_field("", di, li).unwrap_or(Value::Null)),
                            None => out.push(li.clone()),
                        }
                    }
                    Some(Value::Array(out))
                }
            }
        }
        (_, l) => {
            let mut l = l.clone();
            drop_empty(&mut l);
            Some(l)
        }
    }
}

/// Whether a value holds an empty map, empty list or null anywhere as a field value.
pub(crate) fn has_empty(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.values().any(|c| is_empty(c) || has_empty(c)),
        Value::Array(items) => items.iter().any(has_empty),
        _ => false,
    }
}

/// Whether [`project`]`(desired, live) == desired`, without building the projection.
pub(crate) fn projection_matches(desired: &Value, live: &Value) -> bool {
    matches_field("", desired, live)
}

fn matches_field(field: &str, desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| matches_field(k, dv, lv))),
        (Value::Array(d), Value::Array(l)) => {
            let keys = d
                .first()
                .and_then(|first| merge_key(field, first))
                .filter(|keys| d.iter().all(|i| keys.iter().all(|k| i.get(*k).is_some())));
            match keys {
                Some(keys) => {
                    let all_match = d.iter().all(|di| {
                        let key = item_key(&keys, di);
                        l.iter()
                            .find(|li| item_key(&keys, li) == key)
                            .is_some_and(|li| matches_field("", di, li))
                    });
                    all_match && (field != "taints" || l.len() == d.len())
                }
                None => {
                    d.len() == l.len() && d.iter().zip(l).all(|(di, li)| matches_field("", di, li))
                }
            }
        }
        (Value::Object(_) | Value::Array(_), _) => false,
        (d, l) => d == l,
    }
}

/// Masks Secret values in a pair of (live, desired) views of the same object. A key whose
/// values differ is marked [`REDACTED_CHANGED`] on the desired side; every value is
/// replaced, whatever the kind of either side says, if either side is a Secret.
pub(crate) fn mask_secrets(live: &mut Value, desired: &mut Value) {
    let is_secret = |v: &Value| v.get("kind").and_then(Value::as_str) == Some("Secret");
    if !(is_secret(live) || is_secret(desired)) {
        return;
    }
    for field in ["data", "stringData"] {
        let live_map = live.get(field).and_then(Value::as_object).cloned();
        if let Some(Value::Object(d)) = desired.get_mut(field) {
            for (k, v) in d.iter_mut() {
                let same = live_map.as_ref().and_then(|l| l.get(k)) == Some(&*v);
                *v = Value::String(if same { REDACTED } else { REDACTED_CHANGED }.to_string());
            }
        }
        if let Some(Value::Object(l)) = live.get_mut(field) {
            for v in l.values_mut() {
                *v = Value::String(REDACTED.to_string());
            }
        }
    }
}

/// YAML text of a value (deterministic: key order as built).
pub(crate) fn to_yaml(v: &Value) -> String {
    if v.is_null() {
        return String::new();
    }
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# not representable as YAML: {e}\n"))
}

/// The unified diff between a live view and a desired view, with secrets masked.
pub(crate) fn diff(live: &Value, desired: &Value) -> String {
    let mut l = live.clone();
    let mut d = desired.clone();
    mask_secrets(&mut l, &mut d);
    crate::plan::diff::unified(&to_yaml(&l), &to_yaml(&d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn projection_ignores_defaults_status_and_foreign_fields() {
        let desired = desired_view(&json!({
            "apiVersion": "v1", "kind": "PodTemplate",
            "metadata": {"name": "x", "labels": {"a": "1"}},
            "template": {"spec": {"containers": [{"name": "runner", "image": "i:1"}], "volumes": []}},
        }));
        let live = json!({
            "apiVersion": "v1", "kind": "PodTemplate",
            "metadata": {"name": "x", "labels": {"a": "1", "other": "x"}, "uid": "u", "resourceVersion": "7",
                "managedFields": [{"manager": "drover"}]},
            "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "s:1"},
                {"name": "runner", "image": "i:1", "imagePullPolicy": "IfNotPresent"}],
                "dnsPolicy": "ClusterFirst"}},
            "status": {"x": 1},
        });
        assert_eq!(project(&desired, &live), desired);
        let mut changed = live.clone();
        changed["template"]["spec"]["containers"][1]["image"] = json!("i:2");
        let d = diff(&project(&desired, &changed), &desired);
        assert!(d.contains("-      image: i:2\n+      image: i:1\n"), "{d}");
    }

    #[test]
    fn secret_values_are_masked_and_changed_keys_marked() {
        let desired = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"same": "c2FtZQ==", "new": "aHVudGVyMg=="}});
        let live = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"same": "c2FtZQ==", "new": "b2xk"}});
        let d = diff(&project(&desired, &live), &desired);
        assert!(
            !d.contains("aHVudGVyMg==") && !d.contains("b2xk") && !d.contains("c2FtZQ=="),
            "{d}"
        );
        assert!(d.contains("+  new: \"<redacted: changed>\""), "{d}");
        let d = diff(&Value::Null, &desired);
        assert!(!d.contains("aHVudGVyMg=="), "{d}");
    }

    #[test]
    fn empty_collections_equal_absent_ones() {
        let desired = desired_view(&json!({"rules": [], "spec": {"egress": [{}]}}));
        let live = json!({"rules": null, "spec": {"egress": [{}], "policyTypes": ["Ingress"]}});
        assert_eq!(project(&desired, &live), desired);
    }
}
