//! Field paths and field sets, the vocabulary of server-side apply.
//!
//! A [`FieldSet`] is the set of leaf paths (plus keyed list elements) an object sets.
//! Maps recurse; lists are atomic except the well-known list-maps in [`list_keys`],
//! whose elements are addressed by key (`k:{"name":"x"}` in `fieldsV1`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElem {
    /// A map key / struct field (`f:name`).
    Field(String),
    /// An element of a list-map, by its canonical JSON key (`k:{"name":"x"}`).
    Key(String),
}

/// A path from the object root.
pub type FieldPath = Vec<PathElem>;

/// A set of paths.
pub type FieldSet = BTreeSet<FieldPath>;

/// Renders a path the way conflict messages do: `.spec.containers[name="x"].image`.
pub fn display_path(path: &[PathElem]) -> String {
    let mut out = String::new();
    for elem in path {
        match elem {
            PathElem::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            PathElem::Key(k) => {
                let map: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
        }
    }
    out
}

/// Key fields of a list-map element of list `field`, or `None` if the list is atomic.
fn list_key_fields(field: &str, item: &Value) -> Option<&'static [&'static str]> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some(&["name"]),
        "volumeMounts" => Some(&["mountPath"]),
        "ports" if item.get("containerPort").is_some() => Some(&["containerPort", "protocol"]),
        "ports" if item.get("port").is_some() => Some(&["port", "protocol"]),
        _ => None,
    }
}

/// The canonical key of `item` in list `field`, or `None` if it has none.
pub fn list_key(field: &str, item: &Value) -> Option<String> {
    let names = list_key_fields(field, item)?;
    let mut key = Map::new();
    for name in names {
        let value = match item.get(*name) {
            Some(v) => v.clone(),
            None if *name == "protocol" => Value::String("TCP".to_string()),
            None => return None,
        };
        key.insert((*name).to_string(), value);
    }
    Some(Value::Object(key).to_string())
}

/// Whether every element of `items` has a key, i.e. the list is treated as a list-map.
pub fn is_list_map(field: &str, items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.is_object() && list_key(field, i).is_some())
}

/// The paths `obj` sets below `prefix`, recursing into maps and list-maps.
pub fn collect(value: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    let Value::Object(map) = value else {
        out.insert(prefix.clone());
        return;
    };
    for (key, child) in map {
        prefix.push(PathElem::Field(key.clone()));
        match child {
            Value::Object(m) if !m.is_empty() => collect(child, prefix, out),
            Value::Array(items) if is_list_map(key, items) => {
                for item in items {
                    let k = list_key(key, item).expect("checked by is_list_map");
                    prefix.push(PathElem::Key(k));
                    out.insert(prefix.clone());
                    collect(item, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

/// The managed paths of a whole object: `metadata.{labels,annotations,finalizers,ownerReferences}`
/// and every top-level field except `apiVersion`, `kind`, `metadata` (and `status` when excluded).
pub fn object_field_set(obj: &Value, exclude_status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (key, child) in map {
        let skip =
            matches!(key.as_str(), "apiVersion" | "kind") || (exclude_status && key == "status");
        if skip {
            continue;
        }
        if key == "metadata" {
            let mut meta = Map::new();
            for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(v) = child.get(field) {
                    meta.insert(field.to_string(), v.clone());
                }
            }
            if !meta.is_empty() {
                let mut prefix = vec![PathElem::Field("metadata".to_string())];
                collect(&Value::Object(meta), &mut prefix, &mut out);
            }
            continue;
        }
        let mut prefix = Vec::new();
        collect(
            &Value::Object(Map::from_iter([(key.clone(), child.clone())])),
            &mut prefix,
            &mut out,
        );
    }
    out
}

/// The value at `path`, if present.
pub fn get_path<'a>(obj: &'a Value, path: &[PathElem]) -> Option<&'a Value> {
    let mut current = obj;
    let mut last_field = "";
    for elem in path {
        match elem {
            PathElem::Field(f) => {
                current = current.get(f)?;
                last_field = f;
            }
            PathElem::Key(k) => {
                current = current
                    .as_array()?
                    .iter()
                    .find(|i| list_key(last_field, i).as_deref() == Some(k))?;
            }
        }
    }
    Some(current)
}

/// Removes the field or list element at `path`; a no-op if absent.
pub fn remove_path(obj: &mut Value, path: &[PathElem]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let field_of_parent = parent_path.iter().rev().find_map(|e| match e {
        PathElem::Field(f) => Some(f.clone()),
        PathElem::Key(_) => None,
    });
    let Some(parent) = get_path_mut(obj, parent_path) else {
        return;
    };
    match last {
        PathElem::Field(f) => {
            if let Some(map) = parent.as_object_mut() {
                map.remove(f);
            }
        }
        PathElem::Key(k) => {
            let field = field_of_parent.unwrap_or_default();
            if let Some(items) = parent.as_array_mut() {
                items.retain(|i| list_key(&field, i).as_deref() != Some(k));
            }
        }
    }
}

fn get_path_mut<'a>(obj: &'a mut Value, path: &[PathElem]) -> Option<&'a mut Value> {
    let mut current = obj;
    let mut last_field = String::new();
    for elem in path {
        match elem {
            PathElem::Field(f) => {
                current = current.get_mut(f)?;
                last_field = f.clone();
            }
            PathElem::Key(k) => {
                current = current
                    .as_array_mut()?
                    .iter_mut()
                    .find(|i| list_key(&last_field, i).as_deref() == Some(k))?;
            }
        }
    }
    Some(current)
}

/// Removes now-empty maps left behind on the way to `path` (never `metadata` or the root).
pub fn prune_empty_parents(obj: &mut Value, path: &[PathElem]) {
    for len in (2..path.len()).rev() {
        let parent = &path[..len];
        let empty = matches!(get_path(obj, parent), Some(Value::Object(m)) if m.is_empty());
        if empty {
            remove_path(obj, parent);
        }
    }
}

/// Merges an applied configuration into a live object: maps recurse, list-maps merge by
/// key, everything else (scalars, atomic lists) is replaced.
pub fn merge(live: &mut Value, applied: &Value, field: &str) {
    match (live, applied) {
        (Value::Object(live_map), Value::Object(applied_map)) => {
            for (key, value) in applied_map {
                match live_map.get_mut(key) {
                    Some(existing) => merge(existing, value, key),
                    None => {
                        live_map.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(live_items), Value::Array(applied_items))
            if is_list_map(field, applied_items)
                && live_items.iter().all(|i| list_key(field, i).is_some()) =>
        {
            for item in applied_items {
                let key = list_key(field, item);
                match live_items.iter_mut().find(|l| list_key(field, l) == key) {
                    Some(existing) => merge(existing, item, field),
                    None => live_items.push(item.clone()),
                }
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// Encodes a field set as `fieldsV1`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        terminal: bool,
        children: BTreeMap<String, Node>,
    }
    fn render(node: &Node) -> Value {
        let mut map = Map::new();
        if node.terminal && !node.children.is_empty() {
            map.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (k, child) in &node.children {
            map.insert(k.clone(), render(child));
        }
        Value::Object(map)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for elem in path {
            let key = match elem {
                PathElem::Field(f) => format!("f:{f}"),
                PathElem::Key(k) => format!("k:{k}"),
            };
            node = node.children.entry(key).or_default();
        }
        node.terminal = true;
    }
    render(&root)
}

/// Decodes `fieldsV1` into a field set.
pub fn from_fields_v1(value: &Value) -> FieldSet {
    fn walk(value: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        let Some(map) = value.as_object() else { return };
        for (key, child) in map {
            if key == "." {
                out.insert(prefix.clone());
                continue;
            }
            let elem = if let Some(f) = key.strip_prefix("f:") {
                PathElem::Field(f.to_string())
            } else if let Some(k) = key.strip_prefix("k:") {
                let canonical = serde_json::from_str::<Value>(k)
                    .map(|v| canonical_key(&v))
                    .unwrap_or(k.to_string());
                PathElem::Key(canonical)
            } else {
                PathElem::Key(key.to_string())
            };
            prefix.push(elem);
            if child.as_object().is_some_and(Map::is_empty) {
                out.insert(prefix.clone());
            } else {
                walk(child, prefix, out);
            }
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// A key object rendered with sorted keys.
fn canonical_key(value: &Value) -> String {
    match value.as_object() {
        Some(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
            .to_string()
        }
        None => value.to_string(),
    }
}

/// Whether `path` equals or lies below `ancestor`.
pub fn is_under(path: &[PathElem], ancestor: &[PathElem]) -> bool {
    path.len() >= ancestor.len() && path[..ancestor.len()] == *ancestor
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trip() {
        let obj = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "replicas": 1}});
        let set = object_field_set(&obj, true);
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
    }
}
