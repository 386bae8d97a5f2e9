//! Request-body preparation shared by the write verbs, and small JSON helpers.

use serde_json::{Map, Value, json};

use super::resources::ResourceType;
use super::status::ApiError;
use super::store::{FieldValidation, WriteOptions};
use super::validation;

/// Checks and normalises a write body: type and name/namespace must agree with the URL,
/// unknown fields are refused (Strict) or pruned (with a warning under Warn), and
/// client-supplied `managedFields` and (for types with a status subresource) `status` are
/// dropped. `require_type` demands explicit apiVersion/kind (apply).
pub fn prepare(
    rt: &ResourceType,
    mut body: Value,
    namespace: Option<&str>,
    name: Option<&str>,
    opts: &WriteOptions,
    require_type: bool,
) -> Result<(Value, Vec<String>), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    check_type_field(&mut body, "apiVersion", &rt.api_version(), require_type)?;
    check_type_field(&mut body, "kind", &rt.kind, require_type)?;
    let meta = body
        .as_object_mut()
        .expect("checked")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    if rt.namespaced {
        let given = meta
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if given.is_some() && given != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.insert("namespace".into(), json!(namespace.unwrap_or_default()));
    } else {
        meta.remove("namespace");
    }
    if let Some(url_name) = name {
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != url_name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({url_name})"
                )));
            }
            _ => {
                meta.insert("name".into(), json!(url_name));
            }
        }
    }
    meta.remove("managedFields");
    let unknown = validation::unknown_fields(rt, &body)?;
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        let listed: Vec<String> = unknown
            .iter()
            .map(|u| format!("unknown field \"{u}\""))
            .collect();
        match opts.validation {
            FieldValidation::Strict => {
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    listed.join(", ")
                )));
            }
            FieldValidation::Warn => warnings = listed,
            FieldValidation::Ignore => {}
        }
        validation::prune(&mut body, &unknown);
    }
    if rt.has_status
        && let Some(map) = body.as_object_mut()
    {
        map.remove("status");
    }
    Ok((body, warnings))
}

fn check_type_field(
    body: &mut Value,
    field: &str,
    expected: &str,
    required: bool,
) -> Result<(), ApiError> {
    match body.get(field).and_then(Value::as_str) {
        Some(given) if given != expected => Err(ApiError::bad_request(format!(
            "the {field} in the data ({given}) does not match the expected {field} ({expected})"
        ))),
        Some(_) => Ok(()),
        None if required => Err(ApiError::bad_request(format!(
            "invalid object: {field} must be set"
        ))),
        None => {
            body[field] = json!(expected);
            Ok(())
        }
    }
}

/// 409 Conflict if `submitted` carries a `metadata.resourceVersion` other than `old`'s.
pub fn check_resource_version(
    rt: &ResourceType,
    submitted: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    let given = submitted["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty());
    match given {
        Some(rv) if Some(rv) != old["metadata"]["resourceVersion"].as_str() => {
            let name = old["metadata"]["name"].as_str().unwrap_or_default();
            Err(ApiError::conflict_modified(&rt.group, &rt.plural, name))
        }
        _ => Ok(()),
    }
}

/// A stored object as served at `rt`'s version (no conversion, like `strategy: None`).
pub fn render(rt: &ResourceType, obj: &Value) -> Value {
    let mut out = obj.clone();
    out["apiVersion"] = json!(rt.api_version());
    out
}

/// RFC 7386 JSON merge patch.
pub fn json_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target_map = target.as_object_mut().expect("just made an object");
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            json_merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Drops null-valued fields everywhere (an apply configuration's nulls mean "not set").
pub fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Puts back the stored `status` (or none) after a main-resource write.
pub fn restore_status(obj: &mut Value, status: Option<&Value>) {
    if let Some(map) = obj.as_object_mut() {
        map.remove("status");
        if let Some(status) = status {
            map.insert("status".into(), status.clone());
        }
    }
}

/// Whether anything outside `metadata` and `status` differs (bumps `metadata.generation`).
pub fn content_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            for key in ["metadata", "status", "apiVersion", "kind"] {
                map.remove(key);
            }
        }
        v
    };
    strip(old) != strip(new)
}

/// Equality that ignores `managedFields[].time`, `resourceVersion` and `apiVersion`: used
/// to recognise no-op writes, which a real server does not persist.
pub fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("apiVersion");
        }
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        if let Some(entries) = v["metadata"]
            .get_mut("managedFields")
            .and_then(Value::as_array_mut)
        {
            for entry in entries {
                if let Some(e) = entry.as_object_mut() {
                    e.remove("time");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}
