//! What a real API server refuses: invalid names and labels, unknown fields (strict field
//! validation), ill-typed bodies, and a few per-kind rules drover could get wrong.
//!
//! Unknown fields of built-in kinds are found by deserialising the body into its
//! k8s-openapi type and serialising it back: any input field missing from the round trip is
//! unknown. For custom resources the CRD's `openAPIV3Schema` is walked: a property not
//! declared where the schema lists `properties` (without `additionalProperties` or
//! `x-kubernetes-preserve-unknown-fields`) is unknown; no schema means everything is accepted.

use std::sync::LazyLock;

use k8s_openapi::api::{apps, coordination, core, networking, node, policy, rbac};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use regex::Regex;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::resources::ResourceType;
use super::status::ApiError;

static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
static DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap());
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").unwrap());

type RoundTrip = fn(&Value) -> Result<Value, serde_json::Error>;

fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Value, serde_json::Error> {
    serde_json::to_value(serde_json::from_value::<T>(value.clone())?)
}

/// The typed round trip of a built-in kind, if it is one.
fn typed_round_trip(rt: &ResourceType) -> Option<RoundTrip> {
    let f: RoundTrip = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => round_trip::<core::v1::Namespace>,
        ("", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>,
        ("", "Secret") => round_trip::<core::v1::Secret>,
        ("", "ConfigMap") => round_trip::<core::v1::ConfigMap>,
        ("", "Pod") => round_trip::<core::v1::Pod>,
        ("", "PodTemplate") => round_trip::<core::v1::PodTemplate>,
        ("", "Node") => round_trip::<core::v1::Node>,
        ("", "ResourceQuota") => round_trip::<core::v1::ResourceQuota>,
        ("", "Service") => round_trip::<core::v1::Service>,
        ("apps", "DaemonSet") => round_trip::<apps::v1::DaemonSet>,
        ("apps", "Deployment") => round_trip::<apps::v1::Deployment>,
        ("rbac.authorization.k8s.io", "Role") => round_trip::<rbac::v1::Role>,
        ("rbac.authorization.k8s.io", "RoleBinding") => round_trip::<rbac::v1::RoleBinding>,
        ("rbac.authorization.k8s.io", "ClusterRole") => round_trip::<rbac::v1::ClusterRole>,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            round_trip::<rbac::v1::ClusterRoleBinding>
        }
        ("networking.k8s.io", "NetworkPolicy") => round_trip::<networking::v1::NetworkPolicy>,
        ("node.k8s.io", "RuntimeClass") => round_trip::<node::v1::RuntimeClass>,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            round_trip::<CustomResourceDefinition>
        }
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::v1::Lease>,
        ("scheduling.k8s.io", "PriorityClass") => {
            round_trip::<k8s_openapi::api::scheduling::v1::PriorityClass>
        }
        ("policy", "PodDisruptionBudget") => round_trip::<policy::v1::PodDisruptionBudget>,
        _ => return None,
    };
    Some(f)
}

/// Finds the fields of `body` the type does not declare, as dotted paths (`spec.foo`).
///
/// Errors with 400 BadRequest when a built-in body does not even decode (wrong types).
pub fn unknown_fields(rt: &ResourceType, body: &Value) -> Result<Vec<String>, ApiError> {
    let mut unknown = Vec::new();
    if let Some(f) = typed_round_trip(rt) {
        let back = f(body).map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
                kind = rt.kind,
                v = rt.version
            ))
        })?;
        diff_missing(body, &back, "", &mut unknown);
    } else if let Some(schema) = &rt.schema {
        for (key, value) in body.as_object().into_iter().flatten() {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match schema.get("properties").and_then(|p| p.get(key)) {
                Some(sub) => schema_unknown(value, sub, key, &mut unknown),
                None if open_schema(schema) => {}
                None => unknown.push(key.clone()),
            }
        }
    }
    Ok(unknown)
}

/// Input fields (non-null) that are absent from the round-tripped value.
fn diff_missing(input: &Value, back: &Value, prefix: &str, out: &mut Vec<String>) {
    match (input, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let path = join(prefix, key);
                match b.get(key) {
                    Some(other) => diff_missing(value, other, &path, out),
                    None if value.is_null() => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_missing(x, y, &format!("{prefix}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn open_schema(schema: &Value) -> bool {
    schema.get("properties").is_none()
        || schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
        || schema.get("additionalProperties").is_some()
}

fn schema_unknown(value: &Value, schema: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !open_schema(schema) => {
            for (key, child) in map {
                match schema["properties"].get(key) {
                    Some(sub) => schema_unknown(child, sub, &join(prefix, key), out),
                    None => out.push(join(prefix, key)),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    schema_unknown(item, item_schema, &format!("{prefix}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Removes the given dotted paths (as produced by [`unknown_fields`]) from `body`.
pub fn prune(body: &mut Value, paths: &[String]) {
    for path in paths {
        let mut parts: Vec<&str> = path.split('.').collect();
        let Some(last) = parts.pop() else { continue };
        if let Some(Value::Object(map)) = descend(body, &parts) {
            map.remove(split_index(last).0);
        }
    }
}

/// The value at dotted `parts` (with `[i]` indices), if present.
fn descend<'a>(value: &'a mut Value, parts: &[&str]) -> Option<&'a mut Value> {
    let Some((first, rest)) = parts.split_first() else {
        return Some(value);
    };
    let (name, index) = split_index(first);
    let child = value.get_mut(name)?;
    let child = match index {
        Some(i) => child.get_mut(i)?,
        None => child,
    };
    descend(child, rest)
}

/// `containers[0]` → (`containers`, Some(0)).
fn split_index(part: &str) -> (&str, Option<usize>) {
    match part.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
        None => (part, None),
    }
}

/// Validates the object's name (and namespace name) and its label keys and values.
pub fn validate_metadata(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push((
            "metadata.name".to_string(),
            "Required value: name or generateName is required".to_string(),
        ));
    } else if let Some(problem) = name_problem(rt, name) {
        causes.push((
            "metadata.name".to_string(),
            format!("Invalid value: \"{name}\": {problem}"),
        ));
    }
    for (key, value) in obj["metadata"]["labels"].as_object().into_iter().flatten() {
        let field = format!("metadata.labels.{key}");
        if !valid_label_key(key) {
            causes.push((field.clone(), format!("Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
        }
        match value.as_str() {
            Some(v) if v.is_empty() || (v.len() <= 63 && QUALIFIED_NAME.is_match(v)) => {}
            _ => causes.push((field, format!("Invalid value: {value}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"))),
        }
    }
    owner_reference_problems(&obj["metadata"]["ownerReferences"], &mut causes);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&rt.group, &rt.kind, name, causes))
    }
}

/// `metadata.ownerReferences`: apiVersion, kind, name and uid are required, and at most one
/// reference may be the controller (apimachinery's `ValidateOwnerReferences`).
fn owner_reference_problems(refs: &Value, causes: &mut Vec<(String, String)>) {
    let field = "metadata.ownerReferences";
    let mut controllers = 0;
    for r in refs.as_array().into_iter().flatten() {
        let empty = |key: &str| r[key].as_str().is_none_or(str::is_empty);
        if empty("apiVersion") {
            causes.push((
                format!("{field}.apiVersion"),
                "Invalid value: \"\": version must not be empty".into(),
            ));
        }
        if empty("kind") {
            causes.push((
                format!("{field}.kind"),
                "Invalid value: \"\": kind must not be empty".into(),
            ));
        }
        if empty("name") {
            causes.push((
                format!("{field}.name"),
                "Invalid value: \"\": name must not be empty".into(),
            ));
        }
        if empty("uid") {
            causes.push((
                format!("{field}.uid"),
                "Invalid value: \"\": uid must not be empty".into(),
            ));
        }
        if r["controller"].as_bool() == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        causes.push((
            field.to_string(),
            "Invalid value: []: Only one reference can have Controller set to true".into(),
        ));
    }
}

/// Why `name` is not a valid object name for this kind, if it is not.
fn name_problem(rt: &ResourceType, name: &str) -> Option<String> {
    let label_only = rt.is_namespace() || (rt.group.is_empty() && rt.kind == "Service");
    if label_only {
        let ok = name.len() <= 63 && DNS1123_LABEL.is_match(name);
        return (!ok).then(|| "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string());
    }
    let ok = name.len() <= 253 && DNS1123_SUBDOMAIN.is_match(name);
    (!ok).then(|| "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string())
}

fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && DNS1123_SUBDOMAIN.is_match(p));
    prefix_ok && !name.is_empty() && name.len() <= 63 && QUALIFIED_NAME.is_match(name)
}

/// Per-kind rules: Pods need containers, workload selectors must match their template, a
/// CRD's name must be `<plural>.<group>`. `old` is the stored object on update.
pub fn validate_kind(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => require_containers(&obj["spec"], "spec", &mut causes),
        ("apps", "Deployment" | "DaemonSet") => {
            require_containers(
                &obj["spec"]["template"]["spec"],
                "spec.template.spec",
                &mut causes,
            );
            check_selector(obj, &mut causes);
            if let Some(old) = old
                && old["spec"]["selector"] != obj["spec"]["selector"]
            {
                causes.push((
                    "spec.selector".to_string(),
                    format!(
                        "Invalid value: {}: field is immutable",
                        obj["spec"]["selector"]
                    ),
                ));
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let spec = &obj["spec"];
            let expected = format!(
                "{}.{}",
                spec["names"]["plural"].as_str().unwrap_or_default(),
                spec["group"].as_str().unwrap_or_default()
            );
            if name != expected {
                causes.push((
                    "metadata.name".to_string(),
                    format!(
                        "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
                    ),
                ));
            }
            if spec["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                causes.push(("spec.names.kind".to_string(), "Required value".to_string()));
            }
            if spec["versions"].as_array().is_none_or(Vec::is_empty) {
                causes.push((
                    "spec.versions".to_string(),
                    "Invalid value: null: must have exactly one version marked as storage version"
                        .to_string(),
                ));
            }
        }
        _ => {}
    }
    if rt.is_custom()
        && let Some(schema) = &rt.schema
    {
        for (key, value) in obj.as_object().into_iter().flatten() {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(sub) = schema["properties"].get(key) {
                schema_problems(value, sub, key, &mut causes);
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&rt.group, &rt.kind, name, causes))
    }
}

/// What the real server's structural-schema validation refuses in a custom resource:
/// wrong types, values outside an `enum`, missing `required` properties, and the
/// `minimum`/`maxLength` bounds, with its messages.
fn schema_problems(value: &Value, schema: &Value, path: &str, causes: &mut Vec<(String, String)>) {
    if value.is_null() {
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let expected = schema["type"].as_str().unwrap_or_default();
    let type_ok = match expected {
        _ if int_or_string => value.is_string() || value.is_i64() || value.is_u64(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        let found = match value {
            Value::Object(_) => "object",
            Value::Array(_) => "array",
            Value::String(_) => "string",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_f64() => "number",
            _ => "integer",
        };
        causes.push((
            path.to_string(),
            format!(
                "Invalid value: \"{found}\": {path} in body must be of type {expected}: \"{found}\""
            ),
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let listed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        causes.push((
            path.to_string(),
            format!(
                "Unsupported value: {value}: supported values: {}",
                listed.join(", ")
            ),
        ));
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
        && n < min
    {
        causes.push((
            path.to_string(),
            format!(
                "Invalid value: {value}: {path} in body should be greater than or equal to {min}"
            ),
        ));
    }
    if let (Some(max), Some(s)) = (schema["maxLength"].as_u64(), value.as_str())
        && s.chars().count() as u64 > max
    {
        causes.push((
            path.to_string(),
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    match value {
        Value::Object(map) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(key) = required.as_str()
                    && map.get(key).is_none_or(Value::is_null)
                {
                    causes.push((join(path, key), "Required value".to_string()));
                }
            }
            for (key, child) in map {
                let sub = schema["properties"]
                    .get(key)
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                if let Some(sub) = sub {
                    schema_problems(child, sub, &join(path, key), causes);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    schema_problems(item, item_schema, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

/// Fills in the `default`s of a structural schema where a property is absent and its
/// parent object exists (as the real server defaults custom resources on write and read).
pub fn apply_schema_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            for (key, sub) in schema["properties"].as_object().into_iter().flatten() {
                if !map.contains_key(key)
                    && let Some(default) = sub.get("default")
                {
                    map.insert(key.clone(), default.clone());
                }
                if let Some(child) = map.get_mut(key) {
                    apply_schema_defaults(child, sub);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_schema_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

fn require_containers(pod_spec: &Value, prefix: &str, causes: &mut Vec<(String, String)>) {
    if pod_spec["containers"].as_array().is_none_or(Vec::is_empty) {
        causes.push((format!("{prefix}.containers"), "Required value".to_string()));
    }
}

fn check_selector(obj: &Value, causes: &mut Vec<(String, String)>) {
    let selector = &obj["spec"]["selector"];
    let Some(match_labels) = selector["matchLabels"].as_object() else {
        if selector.is_null() {
            causes.push(("spec.selector".to_string(), "Required value".to_string()));
        }
        return;
    };
    let template_labels = &obj["spec"]["template"]["metadata"]["labels"];
    if match_labels
        .iter()
        .any(|(k, v)| template_labels.get(k) != Some(v))
    {
        causes.push((
            "spec.template.metadata.labels".to_string(),
            format!(
                "Invalid value: {template_labels}: `selector` does not match template `labels`"
            ),
        ));
    }
}
