//! The autoscaler's metrics, registered into the service's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels: one runner set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SetLabels {
    /// Runner set name.
    pub runner_set: String,
}

/// Labels: a GitHub call and its outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `runners`, `queued_jobs`, `jitconfig`, `delete_runner`.
    pub call: String,
    /// `ok` or the error's label (`rate_limited`, `retries_exhausted`, ...).
    pub outcome: String,
}

/// Every autoscaler metric (cheap to clone: the families are shared).
#[derive(Clone)]
pub struct AutoscaleMetrics {
    /// Queued jobs matched to the set.
    pub queued: Family<SetLabels, Gauge>,
    /// The set's runners running a job.
    pub busy: Family<SetLabels, Gauge>,
    /// The set's runners online and idle.
    pub idle: Family<SetLabels, Gauge>,
    /// The set's live runners (pods, jobs) not yet online.
    pub pending: Family<SetLabels, Gauge>,
    /// The desired runner count.
    pub desired: Family<SetLabels, Gauge>,
    /// 1 when the decision was cut to the pool's capacity.
    pub pool_at_capacity: Family<SetLabels, Gauge>,
    /// Runners registered (JIT configs generated).
    pub created: Family<SetLabels, Counter>,
    /// Runners that failed to start: JIT config refused, or never online in time.
    pub failed_starts: Family<SetLabels, Counter>,
    /// Seconds from a job being queued to a runner taking it.
    pub queue_wait: Family<SetLabels, Histogram>,
    /// Queued jobs no runner set can serve.
    pub unmatched_jobs: Gauge,
    /// `workflow_job` deliveries and polls that changed demand, by source.
    pub demand_updates: Family<CallLabels, Counter>,
    /// GitHub calls by call and outcome.
    pub github_calls: Family<CallLabels, Counter>,
    /// GitHub rate-limit requests left, at the last response.
    pub rate_limit_remaining: Gauge,
    /// Leftover offline runners deregistered.
    pub deregistered: Counter,
}

impl AutoscaleMetrics {
    /// New, unregistered metrics.
    pub fn new() -> Self {
        Self {
            queued: Family::default(),
            busy: Family::default(),
            idle: Family::default(),
            pending: Family::default(),
            desired: Family::default(),
            pool_at_capacity: Family::default(),
            created: Family::default(),
            failed_starts: Family::default(),
            queue_wait: Family::new_with_constructor(|| {
                Histogram::new([1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0])
            }),
            unmatched_jobs: Gauge::default(),
            demand_updates: Family::default(),
            github_calls: Family::default(),
            rate_limit_remaining: Gauge::default(),
            deregistered: Counter::default(),
        }
    }

    /// Registers every metric under `autoscale_` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("autoscale");
        r.register(
            "queued_jobs",
            "Queued jobs matched to a runner set",
            self.queued.clone(),
        );
        r.register("busy_runners", "Runners running a job", self.busy.clone());
        r.register("idle_runners", "Runners online and idle", self.idle.clone());
        r.register(
            "pending_runners",
            "Live runners (pods, jobs) not yet online",
            self.pending.clone(),
        );
        r.register(
            "desired_runners",
            "Desired runner count",
            self.desired.clone(),
        );
        r.register(
            "pool_at_capacity",
            "1 when the decision was cut to the pool's capacity",
            self.pool_at_capacity.clone(),
        );
        r.register(
            "runners_created",
            "Runners registered (JIT configs generated)",
            self.created.clone(),
        );
        r.register(
            "failed_starts",
            "Runners that failed to start",
            self.failed_starts.clone(),
        );
        r.register(
            "queue_wait_seconds",
            "Seconds from a job being queued to a runner taking it",
            self.queue_wait.clone(),
        );
        r.register(
            "unmatched_jobs",
            "Queued jobs no runner set can serve",
            self.unmatched_jobs.clone(),
        );
        r.register(
            "demand_updates",
            "Changes to demand by source",
            self.demand_updates.clone(),
        );
        r.register(
            "github_calls",
            "GitHub calls by call and outcome",
            self.github_calls.clone(),
        );
        r.register(
            "github_rate_limit_remaining",
            "GitHub requests left in the rate-limit window",
            self.rate_limit_remaining.clone(),
        );
        r.register(
            "runners_deregistered",
            "Leftover offline runners deregistered",
            self.deregistered.clone(),
        );
    }

    /// Counts a GitHub call.
    pub fn call(&self, call: &str, outcome: &str) {
        self.github_calls
            .get_or_create(&CallLabels {
                call: call.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

impl Default for AutoscaleMetrics {
    fn default() -> Self {
        Self::new()
    }
}
