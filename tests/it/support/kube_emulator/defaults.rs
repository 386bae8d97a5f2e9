//! Server-side defaulting, as a real API server (and its always-on admission and
//! controllers) fills in fields the client left out. Defaults only fill what is missing,
//! so a client that sets the same value sees no difference.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// Fills in defaults for `obj` of type `rt`. `cluster_ip` allocates a Service IP.
pub fn apply_defaults(rt: &ResourceType, obj: &mut Value, cluster_ip: &mut dyn FnMut() -> String) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => namespace(obj),
        ("", "Secret") => secret(obj),
        ("", "Pod") => {
            if let Some(spec) = object_field(obj, "spec") {
                pod_spec(spec);
            }
            pod_status(obj);
        }
        ("", "PodTemplate") => {
            if let Some(spec) = object_field(obj, "template").and_then(|t| object_field(t, "spec"))
            {
                pod_spec(spec);
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            default(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        ("", "Service") => service(obj, cluster_ip),
        ("apps", "Deployment") => deployment(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        _ if rt.is_custom() => {
            if let Some(schema) = &rt.schema
                && let Some(map) = obj.as_object_mut()
            {
                // Not metadata: only the custom resource's own fields are defaulted.
                for (key, sub) in schema["properties"].as_object().into_iter().flatten() {
                    if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    if !map.contains_key(key)
                        && let Some(default) = sub.get("default")
                    {
                        map.insert(key.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(key) {
                        super::validation::apply_schema_defaults(child, sub);
                    }
                }
            }
        }
        _ => {}
    }
}

/// `obj[key]` if it is an object (never inserts anything).
fn object_field<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    obj.get_mut(key).filter(|v| v.is_object())
}

/// Sets `obj[key]` to `value` if it is absent (or null).
fn default(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

fn namespace(obj: &mut Value) {
    let name = obj["metadata"]["name"].clone();
    default(&mut obj["metadata"], "labels", json!({}));
    default(
        &mut obj["metadata"]["labels"],
        "kubernetes.io/metadata.name",
        name,
    );
    default(obj, "spec", json!({}));
    default(&mut obj["spec"], "finalizers", json!(["kubernetes"]));
    default(obj, "status", json!({}));
    default(&mut obj["status"], "phase", json!("Active"));
}

/// `type: Opaque`, and `stringData` folded into base64 `data` (stringData is write-only).
fn secret(obj: &mut Value) {
    default(obj, "type", json!("Opaque"));
    let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    default(obj, "data", json!({}));
    for (key, value) in string_data {
        let bytes = value.as_str().unwrap_or_default().as_bytes().to_vec();
        let encoded = serde_json::to_value(k8s_openapi::ByteString(bytes)).unwrap_or_default();
        obj["data"][key] = encoded;
    }
}

/// Pod spec defaults (used for Pods and for workload pod templates).
fn pod_spec(spec: &mut Value) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            containers.iter_mut().for_each(container);
        }
    }
}

/// A new Pod is `Pending` with a QoS class (the status the API server writes on create;
/// only the kubelet moves it on, through the status subresource).
fn pod_status(obj: &mut Value) {
    let qos = qos_class(&obj["spec"]);
    default(obj, "status", json!({}));
    default(&mut obj["status"], "phase", json!("Pending"));
    default(&mut obj["status"], "qosClass", json!(qos));
}

/// `Guaranteed` when every container's cpu and memory limits equal its requests,
/// `BestEffort` when nothing is requested or limited, else `Burstable`.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let empty = |v: &Value| v.as_object().is_none_or(|m| m.is_empty());
    if containers
        .iter()
        .all(|c| empty(&c["resources"]["requests"]) && empty(&c["resources"]["limits"]))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = &c["resources"]["limits"][*r];
            let request = &c["resources"]["requests"][*r];
            !limit.is_null() && (request.is_null() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or_default().to_string();
    let last_segment = image.rsplit('/').next().unwrap_or_default();
    let tag = last_segment.split_once(':').map(|(_, t)| t);
    let pull = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
        "IfNotPresent"
    } else {
        "Always"
    };
    default(c, "imagePullPolicy", json!(pull));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            default(port, "protocol", json!("TCP"));
        }
    }
}

fn service(obj: &mut Value, cluster_ip: &mut dyn FnMut() -> String) {
    let Some(spec) = object_field(obj, "spec") else {
        return;
    };
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    if spec["type"] != "ExternalName" {
        if spec["clusterIP"].is_null() {
            spec["clusterIP"] = json!(cluster_ip());
        }
        let ip = spec["clusterIP"].clone();
        default(spec, "clusterIPs", json!([ip]));
        default(spec, "ipFamilies", json!(["IPv4"]));
        default(spec, "ipFamilyPolicy", json!("SingleStack"));
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            default(port, "protocol", json!("TCP"));
            let target = port["port"].clone();
            default(port, "targetPort", target);
        }
    }
}

fn deployment(obj: &mut Value) {
    let Some(spec) = object_field(obj, "spec") else {
        return;
    };
    default(spec, "replicas", json!(1));
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
    default(
        spec,
        "strategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
    );
    if let Some(template_spec) =
        object_field(spec, "template").and_then(|t| object_field(t, "spec"))
    {
        pod_spec(template_spec);
    }
}

fn daemon_set(obj: &mut Value) {
    let Some(spec) = object_field(obj, "spec") else {
        return;
    };
    default(spec, "revisionHistoryLimit", json!(10));
    default(
        spec,
        "updateStrategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
    );
    if let Some(template_spec) =
        object_field(spec, "template").and_then(|t| object_field(t, "spec"))
    {
        pod_spec(template_spec);
    }
}

fn network_policy(obj: &mut Value) {
    let Some(spec) = object_field(obj, "spec") else {
        return;
    };
    let mut types = vec![json!("Ingress")];
    if spec.get("egress").is_some() {
        types.push(json!("Egress"));
    }
    default(spec, "policyTypes", Value::Array(types));
}

/// CRD defaults plus the status the apiextensions controller would set (Established).
fn crd(obj: &mut Value) {
    let Some(spec) = object_field(obj, "spec") else {
        return;
    };
    default(spec, "conversion", json!({"strategy": "None"}));
    let kind = spec["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    default(&mut spec["names"], "singular", json!(kind.to_lowercase()));
    default(&mut spec["names"], "listKind", json!(format!("{kind}List")));
    let names = spec["names"].clone();
    let stored: Vec<Value> = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    obj["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "storedVersions": stored,
    });
}
