//! The trust model of pull-request plans, and the offline plan.
//!
//! A pull request's fleet is only loaded, validated and rendered. What drover *reads* —
//! site connection settings (kubeconfig context, in-cluster, Slurm URL and user) and the
//! SecretRefs those settings name (env var, file path) — comes from the base branch's
//! fleet, never from the pull request: otherwise a PR could make drover read `/etc/shadow`
//! as a "token" or send a site credential to a URL of its choosing.
//!
//! [`overlay`] builds the fleet that is planned against live sites: the PR's fleet with
//! every site's connection replaced by the base's. A site the PR adds (or whose kind it
//! changes) has no trusted connection and is planned offline against nothing.
//!
//! [`offline_site`] is the plan without site I/O: the PR's rendered desired state diffed
//! against the base branch's rendered desired state, from the drivers' own pure renderers
//! and the Kubernetes normaliser (same masking, same YAML).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::credentials;
use crate::fleet::FleetRepo;
use crate::fleet::model::Site;
use crate::plan::{Action, Change, Finding, FindingSeverity, SiteKind, SitePlan, Target};
use crate::sites::kubernetes::{normalize, render as kube_render};
use crate::sites::slurm::render as slurm_render;
use crate::sites::{self, RunOptions, SiteContext};

/// How one site of a pull request is planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteMode {
    /// Against the live site, through the base branch's connection.
    Live,
    /// Offline: the PR's desired state against the base branch's, with why.
    Offline(String),
}

/// The PR fleet with every site's connection settings (and the SecretRefs they name)
/// taken from the base fleet. Returns it and the sites that have a trusted connection.
pub fn overlay(pr: &FleetRepo, base: &FleetRepo) -> (FleetRepo, BTreeSet<String>) {
    let mut merged = pr.clone();
    let mut trusted = BTreeSet::new();
    let mut connection_refs = BTreeSet::new();
    for (name, site) in &mut merged.sites {
        let Some(base_site) = base.sites.get(name) else {
            continue;
        };
        let (spec, base_spec) = (&mut site.value.spec, &base_site.value.spec);
        match (
            &mut spec.kubernetes,
            &base_spec.kubernetes,
            &mut spec.slurm,
            &base_spec.slurm,
        ) {
            (Some(k), Some(bk), None, None) => {
                k.context = bk.context.clone();
                k.in_cluster = bk.in_cluster;
                k.kubeconfig_ref = bk.kubeconfig_ref.clone();
                connection_refs.extend(bk.kubeconfig_ref.clone());
            }
            (None, None, Some(s), Some(bs)) => {
                s.rest = bs.rest.clone();
                s.cli = bs.cli.clone();
                connection_refs.extend(bs.rest.as_ref().map(|r| r.token_ref.clone()));
            }
            _ => continue,
        }
        spec.timeout_seconds = base_spec.timeout_seconds;
        trusted.insert(name.clone());
    }
    for name in connection_refs {
        match base.secrets.get(&name) {
            Some(s) => merged.secrets.insert(name, s.clone()),
            None => merged.secrets.remove(&name),
        };
    }
    // Connections of untrusted sites must never be used: drop them.
    for (name, site) in &mut merged.sites {
        if !trusted.contains(name) {
            if let Some(k) = &mut site.value.spec.kubernetes {
                k.kubeconfig_ref = None;
                k.context = None;
                k.in_cluster = false;
            }
            if let Some(s) = &mut site.value.spec.slurm {
                s.rest = None;
                s.cli = None;
            }
        }
    }
    (merged, trusted)
}

/// Whether drover holds read credentials for a (trusted) site in this process, and if
/// not, why. Checks presence only; the value is never shown.
pub fn credentials_for(
    repo: &FleetRepo,
    site: &Site,
    options: &RunOptions,
) -> Result<(), NoCredentials> {
    let resolve = |name: &str| -> Result<(), NoCredentials> {
        let s = repo
            .secrets
            .get(name)
            .ok_or_else(|| NoCredentials::NoSecretRef(name.to_owned()))?;
        credentials::resolve(name, &s.value.spec)
            .map(drop)
            .map_err(NoCredentials::Unreadable)
    };
    if let Some(k) = &site.spec.kubernetes {
        if k.in_cluster {
            return std::env::var_os("KUBERNETES_SERVICE_HOST")
                .map(drop)
                .ok_or(NoCredentials::NotInCluster);
        }
        if let Some(r) = &k.kubeconfig_ref {
            return resolve(r);
        }
        let home = std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".kube/config"));
        let found = options.kubeconfig.as_ref().is_some_and(|p| p.is_file())
            || std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
            || home.is_some_and(|p| p.is_file());
        return if found {
            Ok(())
        } else {
            Err(NoCredentials::NoKubeconfig)
        };
    }
    if let Some(s) = &site.spec.slurm {
        if let Some(rest) = &s.rest {
            return resolve(&rest.token_ref);
        }
        let on_path = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("sbatch").is_file()));
        return if on_path {
            Ok(())
        } else {
            Err(NoCredentials::NoSlurmCli)
        };
    }
    Err(NoCredentials::NoConnection)
}

/// Why drover holds no read credentials for a site in this process.
#[derive(Debug, thiserror::Error)]
pub enum NoCredentials {
    /// The site's SecretRef is not declared on the base branch.
    #[error("SecretRef `{0}` does not exist on the base branch")]
    NoSecretRef(String),
    /// The SecretRef's value cannot be read here.
    #[error(transparent)]
    Unreadable(credentials::CredentialError),
    /// An in-cluster site, outside a cluster.
    #[error("in-cluster site, and this is not running in a cluster")]
    NotInCluster,
    /// No kubeconfig anywhere drover looks.
    #[error("no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config)")]
    NoKubeconfig,
    /// A Slurm CLI site, without the tools.
    #[error("the Slurm CLI (sbatch) is not installed here")]
    NoSlurmCli,
    /// Neither Kubernetes nor Slurm connection settings.
    #[error("the site has no connection settings")]
    NoConnection,
}

/// The values of the credentials a trusted site would use, for masking.
pub fn credential_values(repo: &FleetRepo, site: &Site) -> Vec<String> {
    let refs = site
        .spec
        .kubernetes
        .as_ref()
        .and_then(|k| k.kubeconfig_ref.clone())
        .into_iter()
        .chain(
            site.spec
                .slurm
                .as_ref()
                .and_then(|s| s.rest.as_ref())
                .map(|r| r.token_ref.clone()),
        );
    refs.filter_map(|name| {
        let s = repo.secrets.get(&name)?;
        credentials::resolve(&name, &s.value.spec)
            .ok()
            .map(|v| v.expose().to_string())
    })
    .collect()
}

const BASE_HEADER: &str = "--- base\n+++ pull request\n";

fn relabel(diff: String) -> String {
    match diff.strip_prefix("--- live\n+++ desired\n") {
        Some(rest) => format!("{BASE_HEADER}{rest}"),
        None => diff,
    }
}

type Key = (String, Option<String>, String);

/// A site's desired objects as comparable values, keyed by target.
fn desired(
    repo: &FleetRepo,
    name: &str,
    kind: SiteKind,
) -> Result<BTreeMap<Key, Value>, sites::RenderError> {
    let Some(site) = repo.sites.get(name) else {
        return Ok(BTreeMap::new());
    };
    if sites::kind_of(&site.value) != kind {
        return Ok(BTreeMap::new());
    }
    let options = RunOptions::default();
    let ctx = SiteContext {
        repo,
        site,
        options: &options,
    };
    let mut out = BTreeMap::new();
    match kind {
        SiteKind::Kubernetes => {
            let rendered = kube_render::render(&ctx)?;
            for obj in &rendered.objects {
                let key = (
                    obj["kind"].as_str().unwrap_or_default().to_string(),
                    obj["metadata"]["namespace"].as_str().map(str::to_string),
                    obj["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
                out.insert(key, normalize::desired_view(obj));
            }
            for pool in &rendered.pools {
                if pool.labels.is_empty() && pool.taints.is_empty() {
                    continue;
                }
                let mut v = serde_json::json!({
                    "kind": "Node",
                    "nodeSelector": pool.node_selector,
                    "labels": pool.labels,
                    "taints": pool.taints,
                });
                normalize::drop_empty(&mut v);
                out.insert(
                    ("Node".into(), None, format!("nodes of pool {}", pool.pool)),
                    v,
                );
            }
        }
        SiteKind::Slurm => {
            for t in slurm_render::render(&ctx)? {
                let v = t.to_value(ctx.desired_runners(&t.set));
                out.insert(("SlurmJob".into(), None, format!("{}#*", t.set)), v);
            }
        }
    }
    Ok(out)
}

fn rendered_findings(repo: &FleetRepo, name: &str) -> Vec<Finding> {
    let Some(site) = repo.sites.get(name) else {
        return Vec::new();
    };
    let options = RunOptions::default();
    let ctx = SiteContext {
        repo,
        site,
        options: &options,
    };
    match sites::kind_of(&site.value) {
        SiteKind::Kubernetes => kube_render::render(&ctx)
            .map(|r| r.findings)
            .unwrap_or_default(),
        SiteKind::Slurm => Vec::new(),
    }
}

/// The offline plan of one site the PR declares: its rendered desired state in the PR
/// against the base branch's (nothing when the base lacks the site or it changed kind).
pub fn offline_site(pr: &FleetRepo, base: &FleetRepo, name: &str) -> SitePlan {
    let Some(site) = pr.sites.get(name) else {
        return removed_site(base, name);
    };
    let kind = sites::kind_of(&site.value);
    let policy = site.value.spec.policy;
    let (after, before) = match (desired(pr, name, kind), desired(base, name, kind)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) => {
            return SitePlan::failed(
                name,
                kind,
                policy,
                format!("cannot render the pull request's desired state: {e}"),
            );
        }
        (_, Err(_)) => (desired(pr, name, kind).unwrap_or_default(), BTreeMap::new()),
    };
    let mut plan = SitePlan::new(name, kind, policy);
    let target = |k: &Key| Target {
        kind: k.0.clone(),
        namespace: k.1.clone(),
        name: k.2.clone(),
    };
    for (key, new) in &after {
        let change = match before.get(key) {
            None => Change {
                action: Action::Create,
                target: target(key),
                diff: Some(relabel(normalize::diff(&Value::Null, new))),
                reason: None,
                runner: None,
            },
            Some(old) if old == new => Change {
                action: Action::Unchanged,
                target: target(key),
                diff: None,
                reason: None,
                runner: None,
            },
            Some(old) => Change {
                action: Action::Update,
                target: target(key),
                diff: Some(relabel(normalize::diff(old, new))),
                reason: None,
                runner: None,
            },
        };
        plan.changes.push(change);
    }
    for (key, old) in before.iter().filter(|(k, _)| !after.contains_key(*k)) {
        let reason = if key.0 == "Namespace" {
            "no longer declared; namespaces are never pruned"
        } else {
            "no longer declared; deleted on apply when pruning is on"
        };
        plan.changes.push(Change {
            action: Action::Delete,
            target: target(key),
            diff: Some(relabel(normalize::diff(old, &Value::Null))),
            reason: Some(reason.into()),
            runner: None,
        });
    }
    plan.findings = rendered_findings(pr, name);
    plan
}

/// A site the PR removes: drover stops managing it; nothing on it is deleted.
pub fn removed_site(base: &FleetRepo, name: &str) -> SitePlan {
    let (kind, policy) = base
        .sites
        .get(name)
        .map(|s| (sites::kind_of(&s.value), s.value.spec.policy))
        .unwrap_or((SiteKind::Kubernetes, Default::default()));
    let mut plan = SitePlan::new(name, kind, policy);
    plan.findings.push(Finding::new(
        FindingSeverity::Warning,
        "site-removed",
        format!("site {name}"),
        "the pull request removes this site: drover stops managing it after the merge and deletes nothing on it",
    ));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{LoadOptions, validate_dir};

    fn load(yaml_edit: impl Fn(&str) -> String) -> FleetRepo {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet");
        let tmp = tempfile::tempdir().unwrap();
        copy(&root, tmp.path(), &yaml_edit);
        let v = validate_dir(tmp.path(), &LoadOptions::default()).unwrap();
        assert!(v.is_valid(), "{:?}", v.diagnostics);
        v.repo
    }

    fn copy(from: &std::path::Path, to: &std::path::Path, edit: &dyn Fn(&str) -> String) {
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&dest).unwrap();
                copy(&e.path(), &dest, edit);
            } else {
                std::fs::write(&dest, edit(&std::fs::read_to_string(e.path()).unwrap())).unwrap();
            }
        }
    }

    #[test]
    fn connections_and_their_secret_refs_come_from_the_base() {
        let base = load(|s| s.to_string());
        let pr = load(|s| {
            s.replace("context: eks-prod", "context: attacker")
                .replace("/var/run/secrets/drover/hpc-slurm.jwt", "/etc/shadow")
        });
        let (merged, trusted) = overlay(&pr, &base);
        let eks = &merged.sites["eks-prod"]
            .value
            .spec
            .kubernetes
            .as_ref()
            .unwrap();
        assert_eq!(eks.context.as_deref(), Some("eks-prod"));
        let jwt = &merged.secrets["hpc-slurm-jwt"]
            .value
            .spec
            .file
            .as_ref()
            .unwrap()
            .path;
        assert_eq!(jwt, "/var/run/secrets/drover/hpc-slurm.jwt");
        assert!(trusted.contains("eks-prod") && trusted.contains("hpc"));
    }

    #[test]
    fn the_offline_plan_diffs_the_pr_against_the_base() {
        let base = load(|s| s.to_string());
        let unchanged = offline_site(&base, &base, "eks-prod");
        assert!(!unchanged.has_changes(), "{unchanged:?}");
        assert!(unchanged.counts().unchanged > 0);
        let pr = load(|s| s.replace("max: 20", "max: 21"));
        let plan = offline_site(&pr, &base, "eks-prod");
        assert_eq!(plan.counts().update, 1, "{plan:?}");
        let diff = plan.changes.iter().find_map(|c| c.diff.clone()).unwrap();
        assert!(diff.starts_with("--- base\n+++ pull request\n"), "{diff}");
        assert!(diff.contains("+    pods: \"21\""), "{diff}");
        // A site the base does not have is all creates; one the PR drops is reported.
        let new = offline_site(&pr, &FleetRepo::default(), "hpc");
        assert!(
            new.changes.iter().all(|c| c.action == Action::Create),
            "{new:?}"
        );
        assert_eq!(removed_site(&base, "hpc").findings[0].code, "site-removed");
    }
}
