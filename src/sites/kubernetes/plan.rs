//! Plan (pure): desired objects + observed objects → per-object create / update / delete /
//! unchanged with diffs, node label/taint patches, and findings. No I/O; the benchmark and
//! unit tests call [`compute`] with plain values.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::checks;
use super::kinds::{self, KindInfo};
use super::normalize::{self, desired_view, project};
use super::observe::{CustomKind, Observed};
use super::render::{self, Rendered};
use crate::fleet::model::SitePolicy;
use crate::plan::{Action, Change, Finding, FindingSeverity, SiteKind, SitePlan, Target};
use crate::sites::{MANAGED_BY, MANAGED_BY_LABEL, OWNER_LABEL, SITE_LABEL};

/// Settings of one plan.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// Site name.
    pub site: String,
    /// Site policy.
    pub policy: SitePolicy,
    /// The owning fleet (value of the owner label).
    pub fleet: String,
    /// Whether owned objects no longer declared are deleted.
    pub prune: bool,
    /// Whether the desired state is complete (every fleet document valid). When it is not,
    /// nothing is pruned: a missing document must not read as "delete its objects".
    pub desired_complete: bool,
}

/// One write the apply step performs.
#[derive(Debug, Clone)]
pub struct Op {
    /// Create, update or delete.
    pub action: Action,
    /// What.
    pub target: Target,
    /// Its kind.
    pub kind: KindInfo,
    /// The object to apply (create/update), or the live object (delete).
    pub object: Value,
    /// Why this op cannot be performed (e.g. its CRD is not installed).
    pub blocked: Option<String>,
}

/// A computed plan: what is shown, and what apply does.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The plan as shown.
    pub plan: SitePlan,
    /// The writes, in apply order (deletes last).
    pub ops: Vec<Op>,
    /// How many owned objects exist on the site (the mass-prune base).
    pub owned_count: usize,
}

type Key = (String, Option<String>, String);

fn key_of(obj: &Value) -> Key {
    (
        obj["kind"].as_str().unwrap_or_default().to_string(),
        obj["metadata"]["namespace"].as_str().map(str::to_string),
        obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn target_of(key: &Key) -> Target {
    Target {
        kind: key.0.clone(),
        namespace: key.1.clone(),
        name: key.2.clone(),
    }
}

/// Whose a live object is, by drover's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This fleet's, applied for this site.
    Site,
    /// This fleet's, labelled by a drover before site labels (no site named): adopted when
    /// the site declares it, never pruned.
    Legacy,
    /// Another fleet's or another site's, or nobody's.
    Other,
}

/// Whose `obj` is, for site `site` of fleet `fleet`.
pub(crate) fn owner(obj: &Value, fleet: &str, site: &str) -> Owner {
    let labels = &obj["metadata"]["labels"];
    if labels[MANAGED_BY_LABEL].as_str() != Some(MANAGED_BY)
        || labels[OWNER_LABEL].as_str() != Some(fleet)
    {
        return Owner::Other;
    }
    match labels[SITE_LABEL].as_str() {
        None => Owner::Legacy,
        Some(s) if s == site => Owner::Site,
        Some(_) => Owner::Other,
    }
}

/// Whether a live object carries drover's ownership labels for `fleet` and `site`.
pub fn is_owned(obj: &Value, fleet: &str, site: &str) -> bool {
    owner(obj, fleet, site) == Owner::Site
}

fn push(
    plan: &mut SitePlan,
    ops: &mut Vec<Op>,
    kind: KindInfo,
    key: Key,
    desired: &Value,
    live: Option<&Value>,
    blocked: Option<String>,
) {
    let view = if normalize::has_empty(desired) {
        std::borrow::Cow::Owned(desired_view(desired))
    } else {
        std::borrow::Cow::Borrowed(desired)
    };
    let (action, diff) = match live {
        None => (Action::Create, Some(normalize::diff(&Value::Null, &view))),
        Some(l) if normalize::projection_matches(&view, l) => (Action::Unchanged, None),
        Some(l) => {
            let projected = project(&view, l);
            if projected == *view {
                (Action::Unchanged, None)
            } else {
                (Action::Update, Some(normalize::diff(&projected, &view)))
            }
        }
    };
    let target = target_of(&key);
    if action != Action::Unchanged {
        ops.push(Op {
            action,
            target: target.clone(),
            kind,
            object: desired.clone(),
            blocked: blocked.clone(),
        });
    }
    plan.changes.push(Change {
        action,
        target,
        diff,
        reason: if action == Action::Unchanged {
            None
        } else {
            blocked
        },
        runner: None,
    });
}

/// Computes the plan of one site.
pub fn compute(rendered: &Rendered, observed: &Observed, settings: &PlanSettings) -> Planned {
    let mut plan = SitePlan::new(&settings.site, SiteKind::Kubernetes, settings.policy);
    let mut ops = Vec::new();
    let live: HashMap<Key, (&Value, Owner)> = observed
        .owned
        .iter()
        .map(|o| (o, owner(o, &settings.fleet, &settings.site)))
        .filter(|(_, owner)| *owner != Owner::Other)
        .map(|(o, owner)| (key_of(o), (o, owner)))
        .collect();
    let mut desired_keys = std::collections::HashSet::new();

    let mut rendered_objects: Vec<&Value> = rendered.objects.iter().collect();
    rendered_objects.sort_by_cached_key(|o| {
        kinds::lookup(
            o["apiVersion"].as_str().unwrap_or_default(),
            o["kind"].as_str().unwrap_or_default(),
        )
        .map_or(u8::MAX, |k| k.tier)
    });
    let mut unsupported_reported = std::collections::BTreeSet::new();
    for obj in rendered_objects {
        let Some(mut kind) = kinds::lookup(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        ) else {
            continue;
        };
        let key = key_of(obj);
        desired_keys.insert(key.clone());
        let mut blocked = kind
            .crd
            .filter(|crd| !observed.crds.contains(*crd))
            .map(|crd| format!("CRD {crd} is not installed"));
        // Custom kinds go out at the version the cluster serves (discovery).
        let mut adapted = None;
        if kind.kind == kinds::AUTOSCALING_RUNNER_SET.kind {
            match arc_version(obj, observed) {
                ArcVersion::Rendered(findings) => plan.findings.extend(findings),
                ArcVersion::Discovered(v) => {
                    let mut o = obj.clone();
                    o["metadata"]["labels"][kinds::VERSION_LABEL] = json!(v);
                    adapted = Some(o);
                }
                ArcVersion::Unknown(finding) => {
                    blocked.get_or_insert_with(|| finding.message.clone());
                    if !plan.findings.iter().any(|f| f.code == finding.code) {
                        plan.findings.push(finding);
                    }
                }
            }
        }
        if is_unbound_arc_manager(obj) {
            match arc_manager_subject(obj, observed) {
                Ok(subject) => {
                    let mut o = obj.clone();
                    o["subjects"] = json!([subject]);
                    adapted = Some(o);
                }
                Err(finding) => {
                    blocked.get_or_insert_with(|| finding.message.clone());
                    plan.findings.push(finding);
                }
            }
        }
        match observed.custom.get(kind.kind) {
            Some(CustomKind::Served(chosen)) if chosen.version != kind.version => {
                kind = *chosen;
                let mut o = adapted.take().unwrap_or_else(|| obj.clone());
                o["apiVersion"] = json!(chosen.api_version());
                adapted = Some(o);
            }
            Some(CustomKind::Unsupported(why)) => {
                if unsupported_reported.insert(kind.kind) {
                    plan.findings.push(Finding::new(
                        FindingSeverity::Error,
                        "crd-version-unsupported",
                        format!(
                            "CustomResourceDefinition {}",
                            kind.crd.unwrap_or(kind.plural)
                        ),
                        why.clone(),
                    ));
                }
                blocked.get_or_insert_with(|| why.clone());
            }
            _ => {}
        }
        push(
            &mut plan,
            &mut ops,
            kind,
            key.clone(),
            adapted.as_ref().unwrap_or(obj),
            live.get(&key).map(|(o, _)| *o),
            blocked,
        );
    }

    // Node labels and taints: one patch per node, merging every pool that selects it.
    for (node, patch) in node_patches(rendered, observed) {
        let key = ("Node".to_string(), None, node.clone());
        let live_node = observed
            .nodes
            .iter()
            .find(|n| n["metadata"]["name"] == node.as_str());
        push(
            &mut plan,
            &mut ops,
            kinds::NODE,
            key,
            &patch,
            live_node,
            None,
        );
    }

    // Owned objects that are no longer declared. Legacy ones (no site label) may be another
    // site's: they are reported, never pruned.
    let undeclared = live.iter().filter(|(k, _)| !desired_keys.contains(*k));
    let mut legacy: Vec<String> = Vec::new();
    let mut orphans: Vec<(&Key, &Value)> = Vec::new();
    for (key, (obj, owner)) in undeclared {
        match owner {
            Owner::Legacy => legacy.push(target_of(key).to_string()),
            _ => orphans.push((key, *obj)),
        }
    }
    if !legacy.is_empty() {
        legacy.sort();
        plan.findings.push(Finding::new(
            FindingSeverity::Warning,
            "legacy-objects-not-pruned",
            format!("site {}", settings.site),
            format!(
                "{} object(s) of this fleet carry no `{SITE_LABEL}` label (applied by an older drover), and this site does not declare them; they may be another site's, so they are never pruned: {}",
                legacy.len(),
                legacy.join(", ")
            ),
        ));
    }
    orphans.sort_by_key(|(k, v)| {
        let tier = kinds::lookup(
            v["apiVersion"].as_str().unwrap_or_default(),
            v["kind"].as_str().unwrap_or_default(),
        )
        .map_or(0, |k| k.tier);
        (std::cmp::Reverse(tier), (*k).clone())
    });
    let mut pending = Vec::new();
    for (key, obj) in orphans {
        let Some(kind) = kinds::lookup(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        ) else {
            continue;
        };
        let target = target_of(key);
        if kind == kinds::NAMESPACE {
            plan.findings.push(Finding::new(
                FindingSeverity::Warning,
                "namespace-not-pruned",
                target.to_string(),
                "owned by drover and no longer declared; namespaces are never pruned (deleting one deletes everything in it, drover's or not): delete it by hand if it is unused",
            ));
            continue;
        }
        if !(settings.prune && settings.desired_complete) {
            pending.push(target.to_string());
            continue;
        }
        let minimal = json!({
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {
                "name": obj["metadata"]["name"],
                "namespace": obj["metadata"]["namespace"],
                "labels": obj["metadata"]["labels"],
            },
        });
        let mut minimal = minimal;
        normalize::drop_empty(&mut minimal);
        plan.changes.push(Change {
            action: Action::Delete,
            target: target.clone(),
            diff: Some(normalize::diff(&minimal, &Value::Null)),
            reason: Some("owned by drover, no longer declared".into()),
            runner: None,
        });
        ops.push(Op {
            action: Action::Delete,
            target,
            kind,
            object: obj.clone(),
            blocked: None,
        });
    }
    if !pending.is_empty() {
        let why = if settings.desired_complete {
            "run with --prune to delete them"
        } else {
            "not pruned because the fleet repo has invalid documents (desired state incomplete)"
        };
        let shown: Vec<&str> = pending.iter().take(10).map(String::as_str).collect();
        let more = if pending.len() > 10 {
            format!(" and {} more", pending.len() - 10)
        } else {
            String::new()
        };
        plan.findings.push(Finding::new(
            FindingSeverity::Warning,
            "prune-pending",
            format!("site {}", settings.site),
            format!(
                "{} owned objects no longer declared; {why}: {}{more}",
                pending.len(),
                shown.join(", ")
            ),
        ));
    }

    plan.findings.extend(rendered.findings.iter().cloned());
    plan.findings.extend(checks::check(rendered, observed));
    Planned {
        plan,
        ops,
        owned_count: live.len(),
    }
}

/// Where an AutoscalingRunnerSet's `app.kubernetes.io/version` label comes from.
enum ArcVersion {
    /// Rendered from the site's `arc.controllerVersion`; findings when a controller
    /// Deployment of another major.minor was found.
    Rendered(Vec<Finding>),
    /// Not set by the site: the one version the controller Deployments carry.
    Discovered(String),
    /// Neither: the set cannot be applied (ARC would delete it on every reconcile).
    Unknown(Finding),
}

/// ARC accepts any set from a `dev` or `canary-` build; else major.minor must match.
fn arc_versions_match(set: &str, controller: &str) -> bool {
    controller == "dev"
        || controller.starts_with("canary-")
        || checks::major_minor(set) == checks::major_minor(controller)
}

fn arc_version(obj: &Value, observed: &Observed) -> ArcVersion {
    let subject = format!(
        "AutoscalingRunnerSet {}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    );
    let found: Vec<(&str, &str)> = observed
        .arc_controllers
        .iter()
        .filter_map(|c| Some((c.deployment.as_str(), c.version.as_deref()?)))
        .collect();
    if let Some(set) = obj["metadata"]["labels"][kinds::VERSION_LABEL].as_str() {
        let findings = found
            .iter()
            .filter(|(_, v)| !arc_versions_match(set, v))
            .map(|(d, v)| {
                Finding::new(
                    FindingSeverity::Error,
                    "arc-version-mismatch",
                    subject.clone(),
                    format!("the site's arc.controllerVersion is {set}, but the controller Deployment {d} is version {v}: actions-runner-controller deletes sets whose major.minor differs from its own, on every reconcile"),
                )
            })
            .collect();
        return ArcVersion::Rendered(findings);
    }
    let mut versions: Vec<&str> = found.iter().map(|(_, v)| *v).collect();
    versions.sort_unstable();
    versions.dedup();
    match versions.as_slice() {
        [one] => ArcVersion::Discovered(one.to_string()),
        [] => ArcVersion::Unknown(Finding::new(
            FindingSeverity::Error,
            "arc-version-unknown",
            subject,
            format!(
                "no actions-runner-controller Deployment ({}) with an app.kubernetes.io/version label was found and the site sets no arc.controllerVersion; without the version label the controller deletes the set on every reconcile",
                kinds::ARC_CONTROLLER_SELECTOR
            ),
        )),
        several => ArcVersion::Unknown(Finding::new(
            FindingSeverity::Error,
            "arc-version-unknown",
            subject,
            format!(
                "actions-runner-controller Deployments of several versions were found ({}); set the site's arc.controllerVersion",
                several.join(", ")
            ),
        )),
    }
}

/// A manager RoleBinding rendered without a subject (the site names no controller
/// ServiceAccount): the plan takes it from the controller Deployment.
fn is_unbound_arc_manager(obj: &Value) -> bool {
    obj["kind"] == kinds::ROLE_BINDING.kind
        && obj["subjects"].as_array().is_some_and(Vec::is_empty)
        && obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == kinds::ARC_CLEANUP_FINALIZER))
}

/// The ARC controller's ServiceAccount, from the one controller Deployment's labels (as
/// the gha-runner-scale-set chart finds it), or a finding saying why it cannot be known.
fn arc_manager_subject(obj: &Value, observed: &Observed) -> Result<Value, Finding> {
    let subject = format!(
        "RoleBinding {}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    );
    let mut accounts: Vec<&(String, String)> = observed
        .arc_controllers
        .iter()
        .filter_map(|c| c.service_account.as_ref())
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    let why = match accounts.as_slice() {
        [(ns, name)] => return Ok(render::arc_manager_subject(ns, name)),
        [] => format!(
            "no actions-runner-controller Deployment ({}) with the {} and {} labels was found and the site sets no arc.controllerServiceAccount; the controller could not manage this set's runners",
            kinds::ARC_CONTROLLER_SELECTOR,
            kinds::ARC_CONTROLLER_SA_NAMESPACE_LABEL,
            kinds::ARC_CONTROLLER_SA_NAME_LABEL
        ),
        several => format!(
            "actions-runner-controller Deployments with different ServiceAccounts were found ({}); set the site's arc.controllerServiceAccount",
            several
                .iter()
                .map(|(ns, n)| format!("{ns}/{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(Finding::new(
        FindingSeverity::Error,
        "arc-controller-unknown",
        subject,
        why,
    ))
}

/// Per node: declared labels, the merged taint list, whether any taint is declared.
type NodeDecl = (Map<String, Value>, Vec<Value>, bool);

/// The Node patches: for each node selected by a pool with declared labels or taints, the
/// declared labels, and the node's taint list with the declared taints put in (replacing a
/// live taint with the same key and effect, else appended). Taints are an atomic list in
/// server-side apply, so drover applies the whole list, keeping taints it did not declare.
pub fn node_patches(rendered: &Rendered, observed: &Observed) -> BTreeMap<String, Value> {
    let mut per_node: BTreeMap<String, NodeDecl> = BTreeMap::new();
    for pool in &rendered.pools {
        if pool.labels.is_empty() && pool.taints.is_empty() {
            continue;
        }
        for node in observed
            .nodes
            .iter()
            .filter(|n| checks::matches_selector(n, &pool.node_selector))
        {
            let name = node["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let entry = per_node.entry(name).or_insert_with(|| {
                let live_taints = node["spec"]["taints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                (Map::new(), live_taints, false)
            });
            for (k, v) in &pool.labels {
                entry.0.insert(k.clone(), json!(v));
            }
            for t in &pool.taints {
                entry.2 = true;
                let same = |l: &Value| l["key"] == t["key"] && l["effect"] == t["effect"];
                match entry.1.iter_mut().find(|l| same(l)) {
                    Some(slot) => *slot = t.clone(),
                    None => entry.1.push(t.clone()),
                }
            }
        }
    }
    per_node
        .into_iter()
        .map(|(name, (labels, taints, has_taints))| {
            let mut patch = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
            if !labels.is_empty() {
                patch["metadata"]["labels"] = Value::Object(labels);
            }
            if has_taints {
                // Only the fields drover sets: a taint's timeAdded stays with its owner.
                let taints: Vec<Value> = taints
                    .iter()
                    .map(|t| {
                        let mut t = t.clone();
                        if let Some(m) = t.as_object_mut() {
                            m.remove("timeAdded");
                        }
                        t
                    })
                    .collect();
                patch["spec"] = json!({"taints": taints});
            }
            (name, patch)
        })
        .collect()
}
