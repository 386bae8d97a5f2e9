//! Drift reports: what differs between the fleet repo and each site, for people and cron.
//!
//! A drift report is derived from a plan made with pruning on (so owned objects the fleet
//! no longer declares show up) and is never applied. It sorts the plan's changes into what
//! an operator asks about: objects changed out of band (with their diffs), owned objects
//! missing, owned objects no longer declared, runner sets below their minimum, and site
//! check findings. Pure: a [`Plan`] in, a [`DriftReport`] out.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::plan::{Action, ApplyReport, Finding, Plan, SitePlan, Target};
use crate::runners::RunnerId;

/// Drift across every site considered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftReport {
    /// One entry per site, in name order.
    pub sites: Vec<SiteDrift>,
    /// Queued GitHub jobs no runner set can serve (fleet-wide: a job has no site).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unserved: Vec<crate::autoscale::controller::UnservedJob>,
    /// Why queued jobs were not checked (no GitHub connection, GitHub error), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_unchecked: Option<String>,
}

/// One site's drift.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SiteDrift {
    /// Site name.
    pub site: String,
    /// Set when the site could not be observed: its drift is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Owned objects whose live state differs from the fleet, with unified diffs.
    pub changed: Vec<Changed>,
    /// Objects the fleet declares that do not exist on the site.
    pub missing: Vec<Target>,
    /// Owned objects the fleet no longer declares.
    pub undeclared: Vec<Target>,
    /// Runner sets with fewer runners than their `min`: set → runners missing.
    pub below_min: BTreeMap<String, usize>,
    /// Site checks that failed.
    pub findings: Vec<Finding>,
}

/// An object changed out of band.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    /// The object.
    pub target: Target,
    /// Unified diff from live to desired (secret values masked).
    pub diff: String,
}

impl SiteDrift {
    /// Whether anything differs (findings included; unknown sites count as drift).
    pub fn has_drift(&self) -> bool {
        self.error.is_some()
            || !self.changed.is_empty()
            || !self.missing.is_empty()
            || !self.undeclared.is_empty()
            || !self.below_min.is_empty()
            || !self.findings.is_empty()
    }

    /// Objects changed out of band, missing or no longer declared, plus runners missing
    /// below min: what an apply can repair (findings are not counted).
    pub fn objects(&self) -> usize {
        self.changed.len()
            + self.missing.len()
            + self.undeclared.len()
            + self.below_min.values().sum::<usize>()
    }

    /// The drift left after `report` was applied: every change it applied is repaired
    /// (an applied runner submission fills one missing runner); failed ones stay.
    pub fn remaining_after(&self, report: &ApplyReport) -> SiteDrift {
        let applied = |action: Action, target: &Target| {
            report
                .applied
                .iter()
                .any(|(a, t)| *a == action && t == target)
        };
        let mut left = self.clone();
        left.changed.retain(|c| !applied(Action::Update, &c.target));
        left.missing.retain(|t| !applied(Action::Create, t));
        left.undeclared.retain(|t| !applied(Action::Delete, t));
        for (action, target) in &report.applied {
            if *action != Action::Create || !is_runner(target) {
                continue;
            }
            let Some(id) = RunnerId::of_target(target) else {
                continue;
            };
            if let Some(n) = left.below_min.get_mut(&id.set) {
                *n = n.saturating_sub(1);
            }
        }
        left.below_min.retain(|_, n| *n > 0);
        left
    }

    /// The drift of one site's plan (made with pruning on).
    pub fn from_plan(plan: &SitePlan) -> Self {
        let mut drift = SiteDrift {
            site: plan.site.clone(),
            error: plan.error.clone(),
            findings: plan.findings.clone(),
            ..SiteDrift::default()
        };
        for change in &plan.changes {
            let runner = is_runner(&change.target);
            match change.action {
                Action::Create if runner => {
                    if let Some(id) = RunnerId::of_target(&change.target) {
                        *drift.below_min.entry(id.set).or_default() += 1;
                    }
                }
                Action::Create => drift.missing.push(change.target.clone()),
                Action::Update => drift.changed.push(Changed {
                    target: change.target.clone(),
                    diff: change.diff.clone().unwrap_or_default(),
                }),
                Action::Delete if !runner => drift.undeclared.push(change.target.clone()),
                Action::Delete | Action::Unchanged => {}
            }
        }
        drift
    }
}

/// Runner jobs (`<runner set>#<slot>`) and runner Pods (every Pod change is one; a create
/// is `<runner set>#new-<n>`): their creates mean "below min", their deletes are not drift.
fn is_runner(target: &Target) -> bool {
    target.kind == "Pod" || RunnerId::of_target(target).is_some()
}

impl DriftReport {
    /// The drift in a plan made with pruning on.
    pub fn from_plan(plan: &Plan) -> Self {
        Self {
            sites: plan.sites.iter().map(SiteDrift::from_plan).collect(),
            ..Self::default()
        }
    }

    /// Whether any site drifts, or a queued job cannot be served.
    pub fn has_drift(&self) -> bool {
        self.sites.iter().any(SiteDrift::has_drift) || !self.unserved.is_empty()
    }

    fn jobs_text(&self, out: &mut String) {
        for j in &self.unserved {
            let _ = writeln!(
                out,
                "job {} in {} [{}] cannot be served: {}",
                j.job_id,
                j.repo,
                j.labels.join(", "),
                j.reason
            );
        }
        if let Some(why) = &self.jobs_unchecked {
            let _ = writeln!(out, "queued jobs not checked: {why}");
        }
    }

    fn jobs_markdown(&self, out: &mut String) {
        if !self.unserved.is_empty() {
            out.push_str("\n#### Jobs no runner set can serve\n\n");
            for j in &self.unserved {
                let _ = writeln!(
                    out,
                    "- job {} in `{}` (`{}`): {}",
                    j.job_id,
                    j.repo,
                    j.labels.join("`, `"),
                    j.reason
                );
            }
        }
        if let Some(why) = &self.jobs_unchecked {
            let _ = writeln!(out, "\n_Queued jobs not checked: {why}._");
        }
    }

    /// Plain text, one section per drifting site.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for site in &self.sites {
            if !site.has_drift() {
                let _ = writeln!(out, "site {}: no drift", site.site);
                continue;
            }
            let _ = writeln!(out, "site {}:", site.site);
            if let Some(err) = &site.error {
                let _ = writeln!(out, "  error: {err} (drift unknown)");
            }
            for c in &site.changed {
                let _ = writeln!(out, "  changed out of band: {}", c.target);
                for line in c.diff.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
            for t in &site.missing {
                let _ = writeln!(out, "  missing: {t}");
            }
            for t in &site.undeclared {
                let _ = writeln!(out, "  no longer declared: {t}");
            }
            for (set, n) in &site.below_min {
                let _ = writeln!(out, "  runner set {set} below min: {n} runner(s) missing");
            }
            for f in &site.findings {
                let _ = writeln!(out, "  finding [{}] {}: {}", f.code, f.subject, f.message);
            }
        }
        self.jobs_text(&mut out);
        out
    }

    /// Markdown, for issues and job summaries.
    pub fn markdown(&self) -> String {
        let mut out = String::from("### drover drift report\n\n");
        out.push_str("| Site | Changed | Missing | Undeclared | Below min | Findings |\n|---|---:|---:|---:|---:|---:|\n");
        for s in &self.sites {
            if s.error.is_some() {
                let _ = writeln!(out, "| {} | ? | ? | ? | ? | error |", s.site);
            } else {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    s.site,
                    s.changed.len(),
                    s.missing.len(),
                    s.undeclared.len(),
                    s.below_min.values().sum::<usize>(),
                    s.findings.len()
                );
            }
        }
        for s in self.sites.iter().filter(|s| s.has_drift()) {
            let _ = writeln!(out, "\n#### {}\n", s.site);
            if let Some(err) = &s.error {
                let _ = writeln!(out, "**Error:** {err}; drift unknown.\n");
            }
            for c in &s.changed {
                let _ = writeln!(
                    out,
                    "<details><summary>changed out of band: <code>{}</code></summary>\n\n```diff\n{}\n```\n</details>\n",
                    c.target,
                    c.diff.trim_end()
                );
            }
            for t in &s.missing {
                let _ = writeln!(out, "- missing: `{t}`");
            }
            for t in &s.undeclared {
                let _ = writeln!(out, "- no longer declared: `{t}`");
            }
            for (set, n) in &s.below_min {
                let _ = writeln!(out, "- runner set `{set}` below min: {n} missing");
            }
            for f in &s.findings {
                let _ = writeln!(
                    out,
                    "- finding `{}` **{}**: {}",
                    f.code, f.subject, f.message
                );
            }
        }
        self.jobs_markdown(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::SitePolicy;
    use crate::plan::{Change, FindingSeverity, SiteKind};

    fn change(action: Action, kind: &str, name: &str, diff: Option<&str>) -> Change {
        Change {
            action,
            target: Target {
                kind: kind.into(),
                namespace: None,
                name: name.into(),
            },
            diff: diff.map(str::to_string),
            reason: None,
            runner: None,
        }
    }

    #[test]
    fn plan_changes_are_sorted_into_drift_kinds() {
        let mut site = SitePlan::new("hpc", SiteKind::Slurm, SitePolicy::Apply);
        site.changes = vec![
            change(Action::Update, "ConfigMap", "x", Some("-a: 1\n+a: 2\n")),
            change(Action::Create, "Namespace", "ci", None),
            change(Action::Delete, "ResourceQuota", "old", None),
            change(Action::Create, "SlurmJob", "gpu#0", None),
            change(Action::Create, "SlurmJob", "gpu#1", None),
            change(Action::Delete, "SlurmJob", "cpu#3", None),
            change(Action::Unchanged, "Role", "r", None),
        ];
        site.findings.push(Finding::new(
            FindingSeverity::Error,
            "partition-not-up",
            "gpu",
            "DOWN",
        ));
        let report = DriftReport::from_plan(&Plan {
            revision: None,
            sites: vec![site],
        });
        let s = &report.sites[0];
        assert_eq!(s.changed.len(), 1);
        assert_eq!(s.missing[0].name, "ci");
        assert_eq!(s.undeclared[0].name, "old");
        assert_eq!(s.below_min.get("gpu"), Some(&2));
        assert!(report.has_drift());
        let text = report.text();
        assert!(
            text.contains("changed out of band: ConfigMap x") && text.contains("+a: 2"),
            "{text}"
        );
        assert!(
            text.contains("runner set gpu below min: 2 runner(s) missing"),
            "{text}"
        );
        assert!(report.markdown().contains("| hpc | 1 | 1 | 1 | 2 | 1 |"));
    }

    #[test]
    fn an_apply_repairs_what_it_applied_and_leaves_what_failed() {
        let mut site = SitePlan::new("hpc", SiteKind::Slurm, SitePolicy::Apply);
        site.changes = vec![
            change(Action::Update, "PodTemplate", "a", Some("-x\n+y\n")),
            change(Action::Update, "PodTemplate", "b", Some("-x\n+y\n")),
            change(Action::Create, "Namespace", "ci", None),
            change(Action::Delete, "ResourceQuota", "old", None),
            change(Action::Create, "SlurmJob", "gpu#0", None),
            change(Action::Create, "SlurmJob", "gpu#1", None),
        ];
        let drift = SiteDrift::from_plan(&site);
        assert_eq!(drift.objects(), 6);
        let target = |i: usize| site.changes[i].target.clone();
        let report = ApplyReport {
            site: "hpc".into(),
            applied: vec![
                (Action::Update, target(0)),
                (Action::Create, target(2)),
                (Action::Create, target(4)),
            ],
            failed: vec![(Action::Update, target(1), "conflict".into())],
            refused: None,
        };
        let left = drift.remaining_after(&report);
        assert_eq!(left.changed.len(), 1);
        assert_eq!(left.changed[0].target.name, "b");
        assert!(left.missing.is_empty());
        assert_eq!(left.undeclared.len(), 1, "not pruned: still undeclared");
        assert_eq!(left.below_min.get("gpu"), Some(&1));
        let all = ApplyReport {
            applied: (0..6)
                .map(|i| (site.changes[i].action, target(i)))
                .collect(),
            ..report
        };
        assert!(!drift.remaining_after(&all).has_drift());
    }

    #[test]
    fn an_unchanged_site_has_no_drift_and_an_unknown_one_does() {
        let mut ok = SitePlan::new("eks", SiteKind::Kubernetes, SitePolicy::Apply);
        ok.changes
            .push(change(Action::Unchanged, "Namespace", "ci", None));
        let down = SitePlan::failed("hpc", SiteKind::Slurm, SitePolicy::Apply, "unreachable");
        let report = DriftReport::from_plan(&Plan {
            revision: None,
            sites: vec![ok, down],
        });
        assert!(!report.sites[0].has_drift());
        assert!(report.sites[1].has_drift());
        assert!(report.text().contains("site eks: no drift"));
    }
}
