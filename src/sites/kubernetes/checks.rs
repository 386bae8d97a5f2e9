//! Site checks (pure): what the fleet expects of the cluster, compared with what was
//! observed, as [`Finding`]s. Nothing here is ever installed or changed by drover.
//!
//! Codes: `version-out-of-range`, `version-unknown`, `crd-missing`, `runtime-class-missing`,
//! `device-plugin-missing`, `device-plugin-not-ready`, `pool-short-of-nodes`,
//! `node-not-ready`, `pool-short-of-gpus`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::observe::Observed;
use super::render::{PoolRule, Rendered};
use crate::plan::{Finding, FindingSeverity};

/// Whether a node's labels match a selector (every key equal).
pub(crate) fn matches_selector(node: &Value, selector: &BTreeMap<String, String>) -> bool {
    let labels = &node["metadata"]["labels"];
    selector
        .iter()
        .all(|(k, v)| labels.get(k).and_then(Value::as_str) == Some(v.as_str()))
}

fn node_name(node: &Value) -> &str {
    node["metadata"]["name"].as_str().unwrap_or_default()
}

fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `MAJOR.MINOR` of a version string such as `v1.31.2`, `1.30`, or a `minor` like `31+`.
pub(crate) fn major_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// Every finding for the site.
pub(crate) fn check(rendered: &Rendered, observed: &Observed) -> Vec<Finding> {
    let mut out = Vec::new();
    version(rendered, observed, &mut out);
    for (crd, why) in &rendered.requires.crds {
        if !observed.crds.contains(crd) {
            out.push(Finding::new(
                FindingSeverity::Error,
                "crd-missing",
                format!("CustomResourceDefinition {crd}"),
                format!(
                    "not installed (needed: {why}); drover checks CRDs, it never installs them"
                ),
            ));
        }
    }
    for (rc, why) in &rendered.requires.runtime_classes {
        if !observed.runtime_classes.contains(rc) {
            out.push(Finding::new(
                FindingSeverity::Error,
                "runtime-class-missing",
                format!("RuntimeClass {rc}"),
                format!("not found ({why}); runner pods using it cannot start"),
            ));
        }
    }
    for (role, why) in &rendered.requires.cluster_roles {
        if !observed.cluster_roles.contains(role) {
            out.push(Finding::new(
                FindingSeverity::Error,
                "cluster-role-missing",
                format!("ClusterRole {role}"),
                format!(
                    "not found ({why}); the ARC controller cannot create this set's runner Pods"
                ),
            ));
        }
    }
    for (ns, name, ds) in &observed.daemon_sets {
        let subject = format!("DaemonSet {ns}/{name}");
        let Some(ds) = ds else {
            out.push(Finding::new(
                FindingSeverity::Error,
                "device-plugin-missing",
                subject,
                "device plugin DaemonSet not found",
            ));
            continue;
        };
        let ready = ds["status"]["numberReady"].as_u64().unwrap_or(0);
        let desired = ds["status"]["desiredNumberScheduled"].as_u64().unwrap_or(0);
        if desired == 0 || ready < desired {
            out.push(Finding::new(
                FindingSeverity::Error,
                "device-plugin-not-ready",
                subject,
                format!("{ready} of {desired} device-plugin pods ready"),
            ));
        }
    }
    for pool in &rendered.pools {
        pool_checks(pool, observed, &mut out);
    }
    out
}

fn version(rendered: &Rendered, observed: &Observed, out: &mut Vec<Finding>) {
    if rendered.requires.native_sidecars
        && let Some(found) = observed.server_version.as_deref().and_then(major_minor)
        && found < (1, 29)
    {
        out.push(Finding::new(
            FindingSeverity::Error,
            "native-sidecar-unsupported",
            "API server",
            format!(
                "docker: dind runs dockerd as a native sidecar (an init container with restartPolicy: Always), which needs Kubernetes 1.29 or later; this is {}.{}",
                found.0, found.1
            ),
        ));
    }
    let Some(range) = &rendered.requires.version else {
        return;
    };
    let Some(found) = observed.server_version.as_deref().and_then(major_minor) else {
        out.push(Finding::new(
            FindingSeverity::Warning,
            "version-unknown",
            "API server",
            format!(
                "cannot read the server version ({:?})",
                observed.server_version
            ),
        ));
        return;
    };
    let min = range.min.as_deref().and_then(major_minor);
    let max = range.max.as_deref().and_then(major_minor);
    if min.is_some_and(|m| found < m) || max.is_some_and(|m| found > m) {
        out.push(Finding::new(
            FindingSeverity::Error,
            "version-out-of-range",
            "API server",
            format!(
                "Kubernetes {}.{} is outside the supported range {}..{}",
                found.0,
                found.1,
                range.min.as_deref().unwrap_or("*"),
                range.max.as_deref().unwrap_or("*"),
            ),
        ));
    }
}

fn pool_checks(pool: &PoolRule, observed: &Observed, out: &mut Vec<Finding>) {
    let subject = format!("NodePool {}", pool.pool);
    let nodes: Vec<&Value> = observed
        .nodes
        .iter()
        .filter(|n| matches_selector(n, &pool.node_selector))
        .collect();
    if let Some(expected) = pool.node_count
        && (nodes.len() as u64) < u64::from(expected)
    {
        out.push(Finding::new(
            if nodes.is_empty() {
                FindingSeverity::Error
            } else {
                FindingSeverity::Warning
            },
            "pool-short-of-nodes",
            subject.clone(),
            format!("{} of {expected} nodes match the nodeSelector", nodes.len()),
        ));
    }
    let not_ready: Vec<&str> = nodes
        .iter()
        .filter(|n| !is_ready(n))
        .map(|n| node_name(n))
        .collect();
    if !not_ready.is_empty() {
        out.push(Finding::new(
            FindingSeverity::Warning,
            "node-not-ready",
            subject.clone(),
            format!("not Ready: {}", not_ready.join(", ")),
        ));
    }
    let Some((resource, per_node)) = &pool.gpu else {
        return;
    };
    let allocatable = |n: &Value| -> u64 {
        n["status"]["allocatable"][resource.as_str()]
            .as_str()
            .and_then(|q| q.parse().ok())
            .unwrap_or(0)
    };
    let short: Vec<String> = nodes
        .iter()
        .filter(|n| allocatable(n) < u64::from(*per_node))
        .map(|n| format!("{} ({})", node_name(n), allocatable(n)))
        .collect();
    if !short.is_empty() {
        let fits = pool.max_gpu_request == 0
            || nodes
                .iter()
                .any(|n| allocatable(n) >= u64::from(pool.max_gpu_request));
        out.push(Finding::new(
            if fits {
                FindingSeverity::Warning
            } else {
                FindingSeverity::Error
            },
            "pool-short-of-gpus",
            subject,
            format!(
                "{} of {} nodes have fewer than {per_node} {resource} allocatable: {}",
                short.len(),
                nodes.len(),
                short.join(", ")
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_git_versions_and_minors() {
        assert_eq!(major_minor("v1.31.2"), Some((1, 31)));
        assert_eq!(major_minor("1.29"), Some((1, 29)));
        assert_eq!(major_minor("v1.30.1-eks-123"), Some((1, 30)));
        assert_eq!(major_minor("1.31+"), Some((1, 31)));
        assert_eq!(major_minor("garbage"), None);
    }
}
