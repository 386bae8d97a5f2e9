//! Drift detection in the service, and one GitHub issue per drifting site.
//!
//! A new fleet revision, a push webhook, `POST /reconcile` and startup apply the fleet as
//! before. The schedule (`reconcileIntervalSeconds`) runs *drift checks*: each site is
//! planned with pruning on, as `drover drift` does, and its drift (objects changed out of
//! band, missing, no longer declared, runners below min, findings) is recorded in
//! `/status`, the page and the metrics. With drift policy `heal` (the site's `drift`, else
//! the Fleet's `reconcile.drift`) the leader then applies the site, taking back fields
//! another field manager changed (server-side apply with force); with `report` (the
//! default) nothing is written to the site. A site whose current revision was never
//! applied (its last apply failed) gets an ordinary apply instead of a check.
//!
//! With `driftIssues` configured, the leader keeps one open issue per drifting site in a
//! repository: found by a hidden marker among the open issues carrying the first
//! configured label, created when missing, its body replaced only when the drift changed,
//! closed (`completed`) when the site is clean; extra open issues for one site are closed
//! as duplicates (the oldest is kept). GitHub errors never stop reconciliation: they are
//! logged, counted and shown. The pure part ([`plan_issues`], [`issue_body`],
//! [`parse_marker`]) has no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Service;
use super::metrics::{DriftLabels, IssueLabels, OutcomeLabels, SiteLabels};
use super::site_worker::{DriftFound, Reconciled, SiteTrigger};
use crate::drift::{DriftReport, SiteDrift};
use crate::fleet::FleetRepo;
use crate::fleet::model::{DriftPolicy, SitePolicy};
use crate::github::{CloseReason, GithubClient, GithubError, Issue, RetryPolicy};

/// The label drift issues carry when none is configured.
pub const DEFAULT_LABEL: &str = "drover-drift";

/// GitHub's limit on an issue body is 65536 characters; drover stays below it.
const MAX_BODY: usize = 60_000;

/// A whole issue sync (list and writes) may take this long before it is abandoned.
const SYNC_LIMIT: Duration = Duration::from_secs(60);

/// Drift issues (config file key `driftIssues`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DriftIssues {
    /// The repository issues are opened in, `owner/name`, reached through the fleet's
    /// GitHub connection (`Fleet.spec.github`).
    pub repo: String,
    /// Labels of every drift issue; the first identifies them (issues are searched by it).
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
}

fn default_labels() -> Vec<String> {
    vec![DEFAULT_LABEL.into()]
}

impl DriftIssues {
    /// Checks the repository name and the labels.
    pub fn check(&self) -> Result<(), IssuesConfigError> {
        let parts: Vec<&str> = self.repo.split('/').collect();
        let name_ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if parts.len() != 2 || !parts.iter().all(|p| name_ok(p)) {
            return Err(IssuesConfigError::Repo(self.repo.clone()));
        }
        if self.labels.is_empty() {
            return Err(IssuesConfigError::NoLabel);
        }
        if let Some(bad) = self
            .labels
            .iter()
            .find(|l| l.trim().is_empty() || l.contains(','))
        {
            return Err(IssuesConfigError::Label(bad.clone()));
        }
        Ok(())
    }

    /// The label issues are found by.
    pub fn label(&self) -> &str {
        &self.labels[0]
    }
}

/// What is wrong with the `driftIssues` settings.
#[derive(Debug, thiserror::Error)]
pub enum IssuesConfigError {
    /// The repository is not `owner/name`.
    #[error("driftIssues.repo `{0}` is not `owner/name`")]
    Repo(String),
    /// No label is given.
    #[error("driftIssues.labels needs at least one label")]
    NoLabel,
    /// A label is empty or holds a comma.
    #[error("driftIssues.labels: `{0}` is empty or contains a comma")]
    Label(String),
}

/// Why a drift-issue sync failed (in part).
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("GitHub connection: {0}")]
    Connect(crate::github::connect::ConnectError),
    #[error("syncing drift issues took over {0}s")]
    TooSlow(u64),
    #[error(transparent)]
    Github(#[from] GithubError),
    #[error("site {site}: issue #{number}: {source}")]
    Unreadable {
        site: String,
        number: u64,
        source: GithubError,
    },
}

impl SyncError {
    /// GitHub refused the credentials (maybe a rotated token).
    fn unauthorized(&self) -> bool {
        let github = match self {
            SyncError::Github(e) | SyncError::Unreadable { source: e, .. } => e,
            SyncError::Connect(_) | SyncError::TooSlow(_) => return false,
        };
        matches!(
            github,
            GithubError::Status { status: 401, .. }
                | GithubError::RetriesExhausted { status: 401, .. }
        )
    }
}

/// A site's last drift check, in `/status` (`drift.NAME`).
#[derive(Debug, Clone, Serialize)]
pub struct DriftStatus {
    /// The site's drift policy.
    pub policy: DriftPolicy,
    /// When the check finished (Unix seconds).
    pub checked_at: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// `clean`, `drifted` (drift left as it is), `healed` (a heal repaired some), `failed`.
    pub outcome: String,
    /// Whether drift is left (findings included).
    pub drifted: bool,
    /// Objects changed, missing or undeclared plus runners below min, left now.
    pub objects: usize,
    /// Of those found, how many the heal repaired.
    pub healed: usize,
    /// Why the check failed (the drift is unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The drift left, with diffs (secret values masked).
    pub report: SiteDrift,
    /// The site's open drift issue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<IssueLink>,
}

/// An issue on GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssueLink {
    /// Issue number.
    pub number: u64,
    /// Its web page.
    pub url: String,
}

/// The drift issues' repository and the last sync, in `/status` (`drift_issues`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct IssuesStatus {
    /// `owner/name`.
    pub repo: String,
    /// The label issues are found by.
    pub label: String,
    /// When the last sync finished (Unix seconds).
    pub last_sync: Option<u64>,
    /// The last sync's first error, until a sync succeeds.
    pub error: Option<String>,
}

/// What a site's issue should be after a drift check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    /// The site drifts: an open issue with this body.
    Drifting(String),
    /// No drift: no open issue.
    Clean,
    /// Not known this round (the check failed, or the site was applied instead): leave
    /// its issue as it is.
    Unknown,
}

/// One write to drift issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueAction {
    /// Open an issue for the site.
    Create {
        /// Site name.
        site: String,
        /// Title.
        title: String,
        /// Body.
        body: String,
    },
    /// Replace the body of the site's issue.
    Update {
        /// Site name.
        site: String,
        /// Issue number.
        number: u64,
        /// New body.
        body: String,
    },
    /// Close an issue.
    Close {
        /// Site name.
        site: String,
        /// Issue number.
        number: u64,
        /// `completed` (clean, or the site left the fleet) or `duplicate`.
        reason: CloseReason,
    },
}

impl IssueAction {
    /// The site it concerns.
    pub fn site(&self) -> &str {
        match self {
            Self::Create { site, .. } | Self::Update { site, .. } | Self::Close { site, .. } => {
                site
            }
        }
    }
}

/// The hidden marker that ties an issue to a site.
pub fn marker(site: &str) -> String {
    format!("<!-- drover:drift site={site} -->")
}

/// The site named by an issue body's marker.
pub fn parse_marker(body: &str) -> Option<&str> {
    let rest = &body[body.find("<!-- drover:drift site=")? + "<!-- drover:drift site=".len()..];
    let end = rest.find("-->")?;
    let site = rest[..end].split_whitespace().next()?;
    Some(site)
}

/// The title of a site's drift issue.
pub fn issue_title(site: &str) -> String {
    format!("drover: drift on site {site}")
}

/// The body of a site's drift issue: the marker and the site's drift report in markdown.
/// No timestamps, so an unchanged drift gives an identical body (and no write).
pub fn issue_body(drift: &SiteDrift, policy: DriftPolicy) -> String {
    let render = |drift: &SiteDrift| {
        let report = DriftReport {
            sites: vec![drift.clone()],
            ..DriftReport::default()
        };
        let policy = match policy {
            DriftPolicy::Report => {
                "`report`: drover reports the drift and changes nothing; fix the site or the fleet repo"
            }
            DriftPolicy::Heal => {
                "`heal`: drover re-applied the site; what is listed here could not be repaired"
            }
        };
        format!(
            "{}\ndrover found drift between the fleet repo and site **{}**. Drift policy {policy}.\n\n{}\n---\n\
             <sub>Opened and updated by `drover serve`; closed when the site matches the fleet again. \
             `drover drift --site {}` shows the same report.</sub>\n",
            marker(&drift.site),
            drift.site,
            report.markdown().trim_end(),
            drift.site,
        )
    };
    let body = render(drift);
    if body.len() <= MAX_BODY {
        return body;
    }
    let mut short = drift.clone();
    for c in &mut short.changed {
        if c.diff.len() > 2000 {
            let cut = (0..=2000)
                .rev()
                .find(|i| c.diff.is_char_boundary(*i))
                .unwrap_or(0);
            c.diff = format!("{}\n… (diff cut; see `drover drift`)", &c.diff[..cut]);
        }
    }
    let mut body = render(&short);
    if body.len() > MAX_BODY {
        let cut = (0..=MAX_BODY)
            .rev()
            .find(|i| body.is_char_boundary(*i))
            .unwrap_or(0);
        body.truncate(cut);
        body.push_str("\n\n… (report cut; see `drover drift`)\n");
    }
    body
}

fn same_body(a: &str, b: &str) -> bool {
    a.replace("\r\n", "\n").trim_end() == b.replace("\r\n", "\n").trim_end()
}

/// The writes that bring the open drift issues (those carrying the label) to `desired`,
/// and each site's issue afterwards (`None` for an issue still to be created). Issues
/// without a marker are not drover's and are left alone. Per site the oldest open issue
/// is kept and the others are closed as duplicates; a site the fleet no longer has (absent
/// from `desired`) has its issue closed.
pub fn plan_issues(
    open: &[Issue],
    desired: &BTreeMap<String, Desired>,
) -> (Vec<IssueAction>, BTreeMap<String, Option<IssueLink>>) {
    let mut by_site: BTreeMap<&str, Vec<&Issue>> = BTreeMap::new();
    for issue in open {
        if let Some(site) = issue.body.as_deref().and_then(parse_marker) {
            by_site.entry(site).or_default().push(issue);
        }
    }
    let mut actions = Vec::new();
    let mut links = BTreeMap::new();
    for (site, issues) in &mut by_site {
        issues.sort_by_key(|i| i.number);
        let (keep, duplicates) = issues.split_first().expect("grouped issues are non-empty");
        for d in duplicates {
            actions.push(IssueAction::Close {
                site: site.to_string(),
                number: d.number,
                reason: CloseReason::Duplicate,
            });
        }
        let link = IssueLink {
            number: keep.number,
            url: keep.html_url.clone(),
        };
        match desired.get(*site) {
            None | Some(Desired::Clean) => actions.push(IssueAction::Close {
                site: site.to_string(),
                number: keep.number,
                reason: CloseReason::Completed,
            }),
            Some(Desired::Unknown) => {
                links.insert(site.to_string(), Some(link));
            }
            Some(Desired::Drifting(body)) => {
                if !same_body(keep.body.as_deref().unwrap_or_default(), body) {
                    actions.push(IssueAction::Update {
                        site: site.to_string(),
                        number: keep.number,
                        body: body.clone(),
                    });
                }
                links.insert(site.to_string(), Some(link));
            }
        }
    }
    for (site, want) in desired {
        if let Desired::Drifting(body) = want
            && !by_site.contains_key(site.as_str())
        {
            actions.push(IssueAction::Create {
                site: site.clone(),
                title: issue_title(site),
                body: body.clone(),
            });
            links.insert(site.clone(), None);
        }
    }
    (actions, links)
}

impl Service {
    /// A scheduled drift round: sites whose current revision was applied are checked for
    /// drift (and healed where the policy says so); the others are applied. Then, on the
    /// leader, the drift issues are synced.
    pub(super) async fn drift_round(self: &Arc<Self>, revision: String, repo: Arc<FleetRepo>) {
        let (leader, applied) = {
            let st = self.status.read().expect("status lock");
            let applied: BTreeMap<String, Option<String>> = st
                .sites
                .iter()
                .map(|(n, s)| (n.clone(), s.revision.clone()))
                .collect();
            (st.leader, applied)
        };
        let mut tasks = Vec::new();
        for name in repo.sites.keys().cloned() {
            let stale = applied.get(&name).cloned().flatten().as_deref() != Some(&revision);
            let (service, repo, revision) = (self.clone(), repo.clone(), revision.clone());
            tasks.push(tokio::spawn(async move {
                if stale {
                    tracing::info!(site = %name, "revision not applied yet; applying instead of a drift check");
                    service
                        .apply_revision(revision, repo, name.clone(), leader)
                        .await;
                    (name, Desired::Unknown)
                } else {
                    let desired = service.check_site(&revision, &repo, &name, leader).await;
                    (name, desired)
                }
            }));
        }
        let mut desired = BTreeMap::new();
        for task in tasks {
            match task.await {
                Ok((name, d)) => {
                    desired.insert(name, d);
                }
                Err(err) => tracing::error!(error = %err, "a drift check task failed"),
            }
        }
        // A site whose task died is unknown, not clean.
        for name in repo.sites.keys() {
            desired.entry(name.clone()).or_insert(Desired::Unknown);
        }
        if leader && self.config.drift_issues.is_some() {
            self.sync_issues(&revision, &repo, &desired).await;
        }
    }

    /// Checks one site for drift; heals it when its policy is `heal` and this replica
    /// leads. Returns what the site's issue should be.
    async fn check_site(
        &self,
        revision: &str,
        repo: &FleetRepo,
        name: &str,
        leader: bool,
    ) -> Desired {
        let done = self
            .reconcile_site(repo, name, SiteTrigger::DriftCheck { leader })
            .await;
        let Reconciled {
            plan,
            report,
            drift,
            took,
        } = done;
        let DriftFound {
            policy,
            found,
            left,
            healed: heal,
        } = drift.expect("a drift check reports the drift it found");
        let site_outcome = if heal {
            super::outcome(&plan, report.as_ref())
        } else if plan.error.is_some() {
            "failed"
        } else if plan.policy == SitePolicy::ReportOnly {
            "report_only"
        } else if found.objects() > 0 {
            "drifted"
        } else {
            "ok"
        };
        self.record(revision, name, &plan, report.as_ref(), site_outcome, took);
        let healed = found.objects().saturating_sub(left.objects());
        let outcome = if found.error.is_some() {
            "failed"
        } else if healed > 0 {
            "healed"
        } else if left.has_drift() {
            "drifted"
        } else {
            "clean"
        };
        self.record_drift(name, policy, &left, healed, outcome, took);
        if found.error.is_some() {
            Desired::Unknown
        } else if left.has_drift() {
            Desired::Drifting(issue_body(&left, policy))
        } else {
            Desired::Clean
        }
    }

    fn record_drift(
        &self,
        name: &str,
        policy: DriftPolicy,
        left: &SiteDrift,
        healed: usize,
        outcome: &str,
        took: Duration,
    ) {
        let m = &self.metrics;
        m.drift_checks
            .get_or_create(&OutcomeLabels {
                site: name.into(),
                outcome: outcome.into(),
            })
            .inc();
        if left.error.is_none() {
            let below: usize = left.below_min.values().sum();
            for (kind, n) in [
                ("changed", left.changed.len()),
                ("missing", left.missing.len()),
                ("undeclared", left.undeclared.len()),
                ("runners_below_min", below),
            ] {
                m.drift_objects
                    .get_or_create(&DriftLabels {
                        site: name.into(),
                        kind: kind.into(),
                    })
                    .set(n as i64);
            }
            m.site_drifted
                .get_or_create(&SiteLabels { site: name.into() })
                .set(i64::from(left.has_drift()));
        }
        let mut st = self.status.write().expect("status lock");
        let previous = st.drift.get(name);
        if previous.is_none_or(|p| p.outcome != outcome || p.objects != left.objects()) {
            tracing::info!(site = %name, outcome, objects = left.objects(), healed, "drift check");
        }
        let issue = previous.and_then(|d| d.issue.clone());
        st.drift.insert(
            name.to_string(),
            DriftStatus {
                policy,
                checked_at: super::clock::now(),
                duration_ms: took.as_millis() as u64,
                outcome: outcome.into(),
                drifted: left.has_drift(),
                objects: left.objects(),
                healed,
                error: left.error.clone(),
                report: left.clone(),
                issue,
            },
        );
    }

    /// The GitHub client of the fleet's connection, built once per revision.
    fn issues_client(
        &self,
        revision: &str,
        repo: &FleetRepo,
    ) -> Result<Arc<GithubClient>, SyncError> {
        let mut cached = self.issues_client.lock().expect("issues client lock");
        if let Some((rev, client)) = cached.as_ref()
            && rev == revision
        {
            return Ok(client.clone());
        }
        let policy = RetryPolicy {
            max_retries: 2,
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
            reserve: 50,
            ..RetryPolicy::default()
        };
        let client =
            Arc::new(crate::github::connect::client(repo, policy).map_err(SyncError::Connect)?);
        *cached = Some((revision.to_string(), client.clone()));
        Ok(client)
    }

    /// Brings the drift issues in line with `desired`; errors are logged, counted and
    /// shown, never returned.
    async fn sync_issues(
        &self,
        revision: &str,
        repo: &FleetRepo,
        desired: &BTreeMap<String, Desired>,
    ) {
        let Some(cfg) = self.config.drift_issues.clone() else {
            return;
        };
        let result = match self.issues_client(revision, repo) {
            Ok(client) => {
                match tokio::time::timeout(SYNC_LIMIT, self.sync_with(&client, &cfg, desired)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(SyncError::TooSlow(SYNC_LIMIT.as_secs())),
                }
            }
            Err(err) => Err(err),
        };
        if let Err(err) = &result {
            self.metrics.drift_issue_errors.inc();
            tracing::warn!(error = %err, repo = %cfg.repo, "syncing drift issues failed");
            if err.unauthorized() {
                // Maybe a rotated token: read the connection again next time.
                *self.issues_client.lock().expect("issues client lock") = None;
            }
        }
        let mut st = self.status.write().expect("status lock");
        st.drift_issues = Some(IssuesStatus {
            repo: cfg.repo.clone(),
            label: cfg.label().to_string(),
            last_sync: Some(super::clock::now()),
            error: result.err().map(|e| e.to_string()),
        });
    }

    async fn sync_with(
        &self,
        client: &GithubClient,
        cfg: &DriftIssues,
        desired: &BTreeMap<String, Desired>,
    ) -> Result<(), SyncError> {
        let mut open = client.open_issues(&cfg.repo, cfg.label()).await?;
        // An issue drover knows (it made or kept it) but the listing lacks: the listing may
        // lag behind a create, or someone removed the label. Look it up before anything
        // could create a second one.
        let known: Vec<(String, u64)> = {
            let st = self.status.read().expect("status lock");
            st.drift
                .iter()
                .filter_map(|(site, d)| Some((site.clone(), d.issue.as_ref()?.number)))
                .filter(|(_, n)| !open.iter().any(|i| i.number == *n))
                .collect()
        };
        // One issue that cannot be read is that site's failure alone: the site is left as
        // it is this round (nothing created, so no duplicate), and the others go on.
        let mut first_error: Option<SyncError> = None;
        let mut unreadable: BTreeSet<String> = BTreeSet::new();
        for (site, number) in known {
            match client.issue(&cfg.repo, number).await {
                Ok(issue) => {
                    if issue.state == "open"
                        && issue.body.as_deref().and_then(parse_marker) == Some(site.as_str())
                    {
                        open.push(issue);
                    }
                }
                Err(err) => {
                    self.metrics.drift_issue_errors.inc();
                    tracing::warn!(site = %site, issue = number, error = %err, "reading drift issue failed; site skipped this round");
                    unreadable.insert(site.clone());
                    first_error.get_or_insert(SyncError::Unreadable {
                        site,
                        number,
                        source: err,
                    });
                }
            }
        }
        let (mut actions, mut links) = plan_issues(&open, desired);
        actions.retain(|a| !unreadable.contains(a.site()));
        {
            let st = self.status.read().expect("status lock");
            for site in &unreadable {
                let kept = st.drift.get(site).and_then(|d| d.issue.clone());
                links.insert(site.clone(), kept);
            }
        }
        for action in actions {
            let (what, site, result): (&str, String, Result<Option<Issue>, GithubError>) =
                match action {
                    IssueAction::Create { site, title, body } => {
                        let r = client
                            .create_issue(&cfg.repo, &title, &body, &cfg.labels)
                            .await
                            .map(Some);
                        ("created", site, r)
                    }
                    IssueAction::Update { site, number, body } => {
                        let r = client
                            .update_issue_body(&cfg.repo, number, &body)
                            .await
                            .map(|_| None);
                        ("updated", site, r)
                    }
                    IssueAction::Close {
                        site,
                        number,
                        reason,
                    } => {
                        let r = client
                            .close_issue(&cfg.repo, number, reason)
                            .await
                            .map(|_| None);
                        ("closed", site, r)
                    }
                };
            match result {
                Ok(created) => {
                    tracing::info!(site = %site, action = what, repo = %cfg.repo, "drift issue");
                    self.metrics
                        .drift_issue_writes
                        .get_or_create(&IssueLabels {
                            action: what.into(),
                        })
                        .inc();
                    if let Some(issue) = created {
                        links.insert(
                            site,
                            Some(IssueLink {
                                number: issue.number,
                                url: issue.html_url,
                            }),
                        );
                    }
                }
                Err(err) => {
                    self.metrics.drift_issue_errors.inc();
                    tracing::warn!(site = %site, action = what, error = %err, "drift issue write failed");
                    first_error.get_or_insert(err.into());
                }
            }
        }
        let mut st = self.status.write().expect("status lock");
        for (site, drift) in st.drift.iter_mut() {
            drift.issue = links.get(site).cloned().flatten();
        }
        drop(st);
        first_error.map_or(Ok(()), Err)
    }
}

/// The drift section of the status page: one row per site (`drift`) with its last check
/// and issue, after the issue sync's state (`issues`).
pub fn render_section(
    out: &mut String,
    drift: &BTreeMap<String, DriftStatus>,
    issues: Option<&IssuesStatus>,
) {
    if drift.is_empty() && issues.is_none() {
        return;
    }
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    out.push_str("<h2>Drift</h2>");
    if let Some(issues) = issues {
        let _ = write!(
            out,
            "<p>Drift issues in <code>{}</code> (label <code>{}</code>)",
            esc(&issues.repo),
            esc(&issues.label)
        );
        if let Some(err) = &issues.error {
            let _ = write!(
                out,
                " · <span class=\"err\">sync failed: {}</span>",
                esc(err)
            );
        }
        out.push_str("</p>");
    }
    out.push_str(
        "<table class=\"drift\"><thead><tr><th>Site</th><th>Policy</th><th>Last check</th><th>Changed</th>\
         <th>Missing</th><th>Undeclared</th><th>Runners below min</th><th>Healed</th><th>Issue</th></tr></thead><tbody>",
    );
    for (name, d) in drift {
        let class = match d.outcome.as_str() {
            "failed" => "bad",
            _ if d.drifted => "warn",
            _ => "good",
        };
        let state = match &d.error {
            Some(e) => format!("<span class=\"err\">failed: {}</span>", esc(e)),
            None if d.drifted && d.healed > 0 => "<b>drifted</b> (partly healed)".into(),
            None if d.drifted => "<b>drifted</b>".into(),
            None if d.healed > 0 => "healed".into(),
            None => "clean".into(),
        };
        let changed: Vec<String> = d
            .report
            .changed
            .iter()
            .map(|c| format!("<code>{}</code>", esc(&c.target.to_string())))
            .collect();
        let list = |ts: &[crate::plan::Target]| {
            if ts.is_empty() {
                "0".to_string()
            } else {
                ts.iter()
                    .map(|t| format!("<code>{}</code>", esc(&t.to_string())))
                    .collect::<Vec<_>>()
                    .join("<br>")
            }
        };
        let below: Vec<String> = d
            .report
            .below_min
            .iter()
            .map(|(set, n)| format!("{} ({n})", esc(set)))
            .collect();
        let issue = d.issue.as_ref().map_or_else(
            || "—".to_string(),
            |i| format!("<a href=\"{}\">#{}</a>", esc(&i.url), i.number),
        );
        let _ = write!(
            out,
            "<tr class=\"{class}\"><td><b>{}</b></td><td>{}</td><td>{state}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{issue}</td></tr>",
            esc(name),
            match d.policy {
                DriftPolicy::Report => "report",
                DriftPolicy::Heal => "heal",
            },
            if changed.is_empty() {
                "0".into()
            } else {
                changed.join("<br>")
            },
            list(&d.report.missing),
            list(&d.report.undeclared),
            if below.is_empty() {
                "0".into()
            } else {
                below.join("<br>")
            },
            d.healed,
        );
    }
    out.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::Changed;
    use crate::plan::Target;

    fn issue(number: u64, body: &str) -> Issue {
        Issue {
            number,
            title: "t".into(),
            body: Some(body.into()),
            state: "open".into(),
            html_url: format!("https://github.com/o/r/issues/{number}"),
        }
    }

    fn drift(site: &str, diff: &str) -> SiteDrift {
        SiteDrift {
            site: site.into(),
            changed: vec![Changed {
                target: Target {
                    kind: "PodTemplate".into(),
                    namespace: Some("ci".into()),
                    name: "a".into(),
                },
                diff: diff.into(),
            }],
            ..SiteDrift::default()
        }
    }

    #[test]
    fn markers_round_trip_and_foreign_bodies_have_none() {
        let body = issue_body(&drift("lab", "-a\n+b\n"), DriftPolicy::Report);
        assert!(body.starts_with("<!-- drover:drift site=lab -->"), "{body}");
        assert_eq!(parse_marker(&body), Some("lab"));
        assert_eq!(
            parse_marker("see <!-- drover:drift site=h100  --> x"),
            Some("h100")
        );
        assert_eq!(parse_marker("a hand-written issue"), None);
        assert_eq!(parse_marker("<!-- drover:drift site=x"), None);
    }

    #[test]
    fn the_body_holds_the_diff_and_no_timestamp() {
        let d = drift("lab", "-image: a\n+image: b\n");
        let body = issue_body(&d, DriftPolicy::Heal);
        assert!(
            body.contains("```diff\n-image: a\n+image: b\n```"),
            "{body}"
        );
        assert!(body.contains("`heal`"));
        assert_eq!(body, issue_body(&d, DriftPolicy::Heal), "deterministic");
        let huge = drift("lab", &"+x\n".repeat(40_000));
        let body = issue_body(&huge, DriftPolicy::Report);
        assert!(body.len() <= MAX_BODY + 100, "{}", body.len());
        assert!(body.contains("diff cut"));
    }

    #[test]
    fn issues_are_created_updated_kept_and_closed() {
        let lab = issue_body(&drift("lab", "-a\n+b\n"), DriftPolicy::Report);
        let hpc = issue_body(&drift("hpc", "-a\n+b\n"), DriftPolicy::Report);
        let desired: BTreeMap<String, Desired> = [
            ("lab".to_string(), Desired::Drifting(lab.clone())),
            ("hpc".to_string(), Desired::Drifting(hpc.clone())),
            ("eks".to_string(), Desired::Clean),
            ("h100".to_string(), Desired::Unknown),
        ]
        .into();
        let open = vec![
            issue(3, &lab),
            issue(4, "<!-- drover:drift site=eks -->\nold"),
            issue(5, "<!-- drover:drift site=h100 -->\nold"),
            issue(6, "<!-- drover:drift site=gone -->\nold"),
            issue(7, "not ours"),
        ];
        let (actions, links) = plan_issues(&open, &desired);
        assert_eq!(
            actions,
            vec![
                IssueAction::Close {
                    site: "eks".into(),
                    number: 4,
                    reason: CloseReason::Completed
                },
                IssueAction::Close {
                    site: "gone".into(),
                    number: 6,
                    reason: CloseReason::Completed
                },
                IssueAction::Create {
                    site: "hpc".into(),
                    title: "drover: drift on site hpc".into(),
                    body: hpc
                },
            ]
        );
        assert_eq!(
            links["lab"].as_ref().unwrap().number,
            3,
            "unchanged: no write"
        );
        assert_eq!(
            links["h100"].as_ref().unwrap().number,
            5,
            "unknown: left alone"
        );
        assert_eq!(links["hpc"], None);
        assert!(!links.contains_key("eks"));
    }

    #[test]
    fn the_oldest_issue_is_kept_and_the_others_closed_as_duplicates() {
        let new = issue_body(&drift("lab", "-a\n+c\n"), DriftPolicy::Report);
        let desired: BTreeMap<String, Desired> =
            [("lab".to_string(), Desired::Drifting(new.clone()))].into();
        let open = vec![
            issue(9, "<!-- drover:drift site=lab -->\nby hand"),
            issue(2, "<!-- drover:drift site=lab -->\nold"),
        ];
        let (actions, links) = plan_issues(&open, &desired);
        assert_eq!(
            actions,
            vec![
                IssueAction::Close {
                    site: "lab".into(),
                    number: 9,
                    reason: CloseReason::Duplicate
                },
                IssueAction::Update {
                    site: "lab".into(),
                    number: 2,
                    body: new
                },
            ]
        );
        assert_eq!(links["lab"].as_ref().unwrap().number, 2);
    }

    #[test]
    fn the_page_section_shows_drift_and_the_issue() {
        let mut sites = BTreeMap::new();
        let mut report = drift("lab", "-a\n+b\n");
        report.below_min.insert("gpu<x>".into(), 2);
        sites.insert(
            "lab".into(),
            DriftStatus {
                policy: DriftPolicy::Report,
                checked_at: 0,
                duration_ms: 3,
                outcome: "drifted".into(),
                drifted: true,
                objects: 3,
                healed: 0,
                error: None,
                report,
                issue: Some(IssueLink {
                    number: 7,
                    url: "https://github.com/o/r/issues/7".into(),
                }),
            },
        );
        let issues = Some(IssuesStatus {
            repo: "o/r".into(),
            label: "drover-drift".into(),
            last_sync: Some(1),
            error: Some("GitHub GET /x: HTTP 502".into()),
        });
        let mut out = String::new();
        render_section(&mut out, &sites, issues.as_ref());
        assert!(
            out.contains(
                "<tr class=\"warn\"><td><b>lab</b></td><td>report</td><td><b>drifted</b></td>"
            ),
            "{out}"
        );
        assert!(
            out.contains("<a href=\"https://github.com/o/r/issues/7\">#7</a>"),
            "{out}"
        );
        assert!(out.contains("gpu&lt;x&gt; (2)"), "escaped: {out}");
        assert!(
            out.contains("sync failed: GitHub GET /x: HTTP 502"),
            "{out}"
        );
        let mut empty = String::new();
        render_section(&mut empty, &BTreeMap::new(), None);
        assert!(empty.is_empty(), "no section before any check");
    }

    #[test]
    fn config_checks_repo_and_labels() {
        let ok = DriftIssues {
            repo: "acme/fleet".into(),
            labels: default_labels(),
        };
        assert!(ok.check().is_ok());
        assert_eq!(ok.label(), "drover-drift");
        for repo in ["acme", "a/b/c", "a b/c", "/x"] {
            let bad = DriftIssues {
                repo: repo.into(),
                ..ok.clone()
            };
            assert!(bad.check().is_err(), "{repo}");
        }
        let bad = DriftIssues {
            labels: vec!["a,b".into()],
            ..ok
        };
        assert!(bad.check().is_err());
    }
}
