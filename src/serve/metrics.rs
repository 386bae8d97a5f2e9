//! Prometheus metrics of the service (prometheus-client), one registry, text exposition.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels: one site.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabels {
    /// Site name.
    pub site: String,
}

/// Labels: a site and an outcome (`ok`, `changed`, `failed`, `refused`, `report_only`,
/// `drifted`; drift checks: `clean`, `drifted`, `healed`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Site name.
    pub site: String,
    /// Outcome of the reconcile.
    pub outcome: String,
}

/// Labels: a site and the revision applied there.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    /// Site name.
    pub site: String,
    /// Commit id (or working-directory digest).
    pub revision: String,
}

/// Labels: a site and a finding severity.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    /// Site name.
    pub site: String,
    /// `warning` or `error`.
    pub severity: String,
}

/// Labels: a webhook event and what happened to it. Both come from fixed sets
/// ([`WEBHOOK_EVENTS`], [`WEBHOOK_OUTCOMES`]), never from the request as sent, so no
/// delivery can add a series: every series exists from the start.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// GitHub event name: one of [`WEBHOOK_EVENTS`].
    pub event: String,
    /// One of [`WEBHOOK_OUTCOMES`].
    pub outcome: String,
}

/// The `event` label values: the events drover acts on, and `other` for the rest.
pub const WEBHOOK_EVENTS: [&str; 4] = ["push", "workflow_job", "ping", "other"];

/// The `outcome` label values.
pub const WEBHOOK_OUTCOMES: [&str; 6] = [
    "accepted",
    "duplicate",
    "bad_signature",
    "ignored",
    "malformed",
    "too_large",
];

/// The `event` label for an `X-GitHub-Event` header value.
pub fn webhook_event_label(event: &str) -> &'static str {
    WEBHOOK_EVENTS
        .into_iter()
        .find(|e| *e == event)
        .unwrap_or("other")
}

/// Labels: runners of one runner set on a site in one state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerLabels {
    /// Site name.
    pub site: String,
    /// Runner set name.
    pub runner_set: String,
    /// `pending`, `running`, `completing`, `held`, or `missing` (declared but not yet
    /// submitted, e.g. on a follower or a report-only site).
    pub state: String,
}

/// Labels: a site and a kind of drift (`changed`, `missing`, `undeclared`,
/// `runners_below_min`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    /// Site name.
    pub site: String,
    /// Kind of drift.
    pub kind: String,
}

/// Labels: what was done to a drift issue (`created`, `updated`, `closed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssueLabels {
    /// The write.
    pub action: String,
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// Seconds per site reconcile.
    pub reconcile_duration: Family<SiteLabels, Histogram>,
    /// Reconciles per site and outcome.
    pub reconciles: Family<OutcomeLabels, Counter>,
    /// 1 for the revision currently applied to a site.
    pub applied_revision: Family<RevisionLabels, Gauge>,
    /// Objects that differ from the fleet, per site (at the last plan).
    pub drifted_objects: Family<SiteLabels, Gauge>,
    /// Site check findings per site and severity.
    pub findings: Family<FindingLabels, Gauge>,
    /// Fleet revisions refused because they failed validation.
    pub validation_failures: Counter,
    /// Failed fetches of the fleet source.
    pub source_errors: Counter,
    /// Webhook deliveries per event and outcome.
    pub webhook_deliveries: Family<WebhookLabels, Counter>,
    /// Triggers merged into an already pending reconcile.
    pub triggers_coalesced: Counter,
    /// Runners per site, runner set and state (at the last plan and apply).
    pub runners: Family<RunnerLabels, Gauge>,
    /// Change bursts seen by the directory watcher (`--dir` mode).
    pub watch_events: Counter,
    /// 1 while this replica holds the lease (or runs without one), else 0.
    pub leader: Gauge,
    /// Drift found by the last drift check, per site and kind (after a heal: what is left).
    pub drift_objects: Family<DriftLabels, Gauge>,
    /// 1 when the site drifted at its last drift check (findings included), else 0.
    pub site_drifted: Family<SiteLabels, Gauge>,
    /// Drift checks per site and outcome (`clean`, `drifted`, `healed`, `failed`).
    pub drift_checks: Family<OutcomeLabels, Counter>,
    /// Writes to drift issues, per action.
    pub drift_issue_writes: Family<IssueLabels, Counter>,
    /// Failed GitHub calls while syncing drift issues.
    pub drift_issue_errors: Counter,
    /// The autoscaler's metrics (`drover_autoscale_*`).
    pub autoscale: crate::autoscale::metrics::AutoscaleMetrics,
}

impl Metrics {
    /// Creates and registers every metric under the `drover` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("drover");
        let reconcile_duration = Family::<SiteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0])
        });
        let m = Self {
            reconcile_duration,
            reconciles: Family::default(),
            applied_revision: Family::default(),
            drifted_objects: Family::default(),
            findings: Family::default(),
            validation_failures: Counter::default(),
            source_errors: Counter::default(),
            webhook_deliveries: Family::default(),
            triggers_coalesced: Counter::default(),
            runners: Family::default(),
            watch_events: Counter::default(),
            leader: Gauge::default(),
            drift_objects: Family::default(),
            site_drifted: Family::default(),
            drift_checks: Family::default(),
            drift_issue_writes: Family::default(),
            drift_issue_errors: Counter::default(),
            autoscale: crate::autoscale::metrics::AutoscaleMetrics::new(),
            registry: Registry::default(),
        };
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one site reconcile",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconciles",
            "Site reconciles by outcome",
            m.reconciles.clone(),
        );
        registry.register(
            "applied_revision",
            "Fleet revision applied to a site (1 = current)",
            m.applied_revision.clone(),
        );
        registry.register(
            "drifted_objects",
            "Objects that differ from the fleet at the last plan",
            m.drifted_objects.clone(),
        );
        registry.register(
            "site_findings",
            "Site check findings at the last plan",
            m.findings.clone(),
        );
        registry.register(
            "validation_failures",
            "Fleet revisions refused by validation",
            m.validation_failures.clone(),
        );
        registry.register(
            "source_errors",
            "Failed fetches of the fleet source",
            m.source_errors.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by event and outcome",
            m.webhook_deliveries.clone(),
        );
        for event in WEBHOOK_EVENTS {
            for outcome in WEBHOOK_OUTCOMES {
                let _ = m.webhook_deliveries.get_or_create(&WebhookLabels {
                    event: event.into(),
                    outcome: outcome.into(),
                });
            }
        }
        registry.register(
            "triggers_coalesced",
            "Triggers merged into a pending reconcile",
            m.triggers_coalesced.clone(),
        );
        registry.register(
            "runners",
            "Runners by site, runner set and state",
            m.runners.clone(),
        );
        registry.register(
            "watch_events",
            "Change bursts seen by the fleet directory watcher",
            m.watch_events.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica applies (holds the lease)",
            m.leader.clone(),
        );
        registry.register(
            "drift_objects",
            "Drift at the last drift check by kind",
            m.drift_objects.clone(),
        );
        registry.register(
            "site_drifted",
            "1 when the site drifted at its last drift check",
            m.site_drifted.clone(),
        );
        registry.register(
            "drift_checks",
            "Drift checks by outcome",
            m.drift_checks.clone(),
        );
        registry.register(
            "drift_issue_writes",
            "Drift issue writes by action",
            m.drift_issue_writes.clone(),
        );
        registry.register(
            "drift_issue_errors",
            "Failed GitHub calls while syncing drift issues",
            m.drift_issue_errors.clone(),
        );
        m.autoscale.register(&mut registry);
        Self { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
