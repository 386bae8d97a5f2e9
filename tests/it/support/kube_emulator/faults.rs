//! Fault injection (failures, rate limiting, latency, dropped connections) and the request
//! log that tests inspect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An injected HTTP failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// 500 InternalError.
    Status500,
    /// 503 ServiceUnavailable (kube's default client retries it).
    Status503,
    /// 504 Timeout (kube's default client retries it).
    Status504,
    /// 404 NotFound naming no object, as a server that does not serve the resource
    /// answers.
    Status404,
}

impl FaultKind {
    fn code(self) -> u16 {
        match self {
            FaultKind::Status500 => 500,
            FaultKind::Status503 => 503,
            FaultKind::Status504 => 504,
            FaultKind::Status404 => 404,
        }
    }
}

/// What to do with a request instead of serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this HTTP code and a Status body.
    Fail(u16),
    /// 429 with `Retry-After: secs`.
    RateLimit(u64),
    /// Close the connection without answering.
    Drop,
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    method: Option<String>,
    path_prefix: Option<String>,
}

impl RequestFilter {
    /// Every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Only requests with this HTTP method (e.g. `"PATCH"`).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path starts with `prefix` (e.g. `"/apis/apps/v1"`).
    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.path_prefix = Some(prefix.to_string());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

#[derive(Debug)]
struct Rule {
    filter: RequestFilter,
    remaining: usize,
    action: FaultAction,
}

#[derive(Debug, Default)]
struct FaultState {
    rules: Vec<Rule>,
    latency: Vec<(RequestFilter, Duration)>,
}

/// The fault-injection controls of one emulator (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

/// Fault controls restricted to requests matching a [`RequestFilter`].
pub struct ScopedFaults<'a> {
    faults: &'a Faults,
    filter: RequestFilter,
}

impl Faults {
    /// Restricts the following fault to matching requests.
    pub fn only(&self, filter: RequestFilter) -> ScopedFaults<'_> {
        ScopedFaults {
            faults: self,
            filter,
        }
    }

    /// The next `n` requests fail with `kind`.
    pub fn fail_next(&self, n: usize, kind: FaultKind) {
        self.only(RequestFilter::any()).fail_next(n, kind);
    }

    /// The next `n` requests get 429 TooManyRequests with `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        self.only(RequestFilter::any())
            .rate_limit_next(n, retry_after_secs);
    }

    /// The next `n` requests have their connection closed without a response.
    pub fn drop_next_connections(&self, n: usize) {
        self.only(RequestFilter::any()).drop_next_connections(n);
    }

    /// Every request waits `delay` before being served.
    pub fn latency(&self, delay: Duration) {
        self.only(RequestFilter::any()).latency(delay);
    }

    /// Removes every pending fault and latency.
    pub fn clear(&self) {
        *self.state.lock().unwrap() = FaultState::default();
    }

    fn push(&self, filter: RequestFilter, remaining: usize, action: FaultAction) {
        if remaining > 0 {
            self.state.lock().unwrap().rules.push(Rule {
                filter,
                remaining,
                action,
            });
        }
    }

    /// Consumes and returns the first pending fault matching this request.
    pub(crate) fn take(&self, method: &str, path: &str) -> Option<FaultAction> {
        let mut state = self.state.lock().unwrap();
        let index = state
            .rules
            .iter()
            .position(|r| r.filter.matches(method, path))?;
        let rule = &mut state.rules[index];
        rule.remaining -= 1;
        let action = rule.action;
        if rule.remaining == 0 {
            state.rules.remove(index);
        }
        Some(action)
    }

    /// Total latency configured for this request.
    pub(crate) fn delay_for(&self, method: &str, path: &str) -> Duration {
        let state = self.state.lock().unwrap();
        state
            .latency
            .iter()
            .filter(|(f, _)| f.matches(method, path))
            .map(|(_, d)| *d)
            .sum()
    }
}

impl ScopedFaults<'_> {
    /// The next `n` matching requests fail with `kind`.
    pub fn fail_next(&self, n: usize, kind: FaultKind) {
        self.faults
            .push(self.filter.clone(), n, FaultAction::Fail(kind.code()));
    }

    /// The next `n` matching requests get 429 with `Retry-After`.
    pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        self.faults.push(
            self.filter.clone(),
            n,
            FaultAction::RateLimit(retry_after_secs),
        );
    }

    /// The next `n` matching requests have their connection closed without a response.
    pub fn drop_next_connections(&self, n: usize) {
        self.faults.push(self.filter.clone(), n, FaultAction::Drop);
    }

    /// Matching requests wait `delay` before being served.
    pub fn latency(&self, delay: Duration) {
        self.faults
            .state
            .lock()
            .unwrap()
            .latency
            .push((self.filter.clone(), delay));
    }
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string ("" if none).
    pub query: String,
    /// The `fieldManager` query parameter, if given.
    pub field_manager: Option<String>,
    /// Whether `dryRun=All` was given.
    pub dry_run: bool,
    /// HTTP status answered (0 while it is being served, or when the connection was
    /// dropped).
    pub status: u16,
    /// When the request arrived (before any injected latency).
    pub at: std::time::Instant,
}

impl RequestRecord {
    /// POST, PUT, PATCH or DELETE (dry runs included).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// The shared request log.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    entries: Arc<Mutex<Vec<RequestRecord>>>,
}

impl RequestLog {
    /// Logs `record`; returns its index for [`RequestLog::set_status`].
    pub(crate) fn push(&self, record: RequestRecord) -> usize {
        let mut entries = self.entries.lock().unwrap();
        entries.push(record);
        entries.len() - 1
    }

    /// Records the answer's status of the request logged at `index`.
    pub(crate) fn set_status(&self, index: usize, status: u16) {
        if let Some(r) = self.entries.lock().unwrap().get_mut(index) {
            r.status = status;
        }
    }

    /// A copy of every record so far.
    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.entries.lock().unwrap().clone()
    }

    /// Forgets every record.
    pub fn clear(&self) {
        self.entries.lock().unwrap().clear();
    }
}
