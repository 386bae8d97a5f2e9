//! slurmrestd driver: JWT auth headers, OpenAPI version negotiation, per-request timeouts,
//! and the reading of failed answers into [`Error`] kinds (see [`classify`]).

use std::error::Error as _;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::types::fill_partition_gres;
use super::wire::{self, ApiVersion};
use super::{
    ApiError, BoxFuture, Error, Job, JobSpec, Node, Partition, Result, Secret, SlurmDriver,
};

/// Slurm's generic `SLURM_ERROR`; 22.05 reports a rejected JWT on reads only as this.
const SLURM_ERROR: i64 = -1;
/// Codes with which slurmrestd passes on a failure whose cause it lost: `SLURM_ERROR`
/// (-1), `EPERM` (1, from `slurm_kill_jobs()`), `SLURM_UNEXPECTED_MSG_ERROR` (1000) and
/// `SLURM_PROTOCOL_SOCKET_ZERO_BYTES_SENT` (5005). Seen live when slurmctld is down (all
/// of them, after slurmrestd's retries) and, on Slurm 22.05, for a rejected token (at once).
const NONSPECIFIC: [i64; 4] = [SLURM_ERROR, 1, 1000, 5005];
/// The non-specific codes Slurm 22.05 answers a rejected token with, at once: -1 on reads,
/// 5005 on submit and cancel, 1000 on release (later versions say 1007).
const TOKEN_REJECTED_22_05: [i64; 3] = [SLURM_ERROR, 1000, 5005];
/// `SLURM_PROTOCOL_AUTHENTICATION_ERROR`: the token is missing, wrong, expired or for
/// another user (Slurm 23.11 and later, with HTTP 511).
const PROTOCOL_AUTH_ERROR: i64 = 1007;
/// `SLURMCTLD_COMMUNICATIONS_{CONNECTION,SEND,RECEIVE,SHUTDOWN}_ERROR`: "Unable to contact
/// slurm controller" (with HTTP 502, or 500). 1804 (rate limited) is not among them.
const CONTROLLER_UNREACHABLE: RangeInclusive<i64> = 1800..=1803;
/// A non-specific error that took at least this long is slurmctld not answering
/// slurmrestd, not a rejected token (which is answered at once); see `docs/slurm.md`.
const SLOW_NONSPECIFIC: Duration = Duration::from_secs(3);
/// `ESLURM_JOB_HELD`: "Job is in held state, pending scheduler release". slurmrestd
/// v0.0.38 lists it as an error next to the job id of a job submitted with `hold` (later
/// versions as a warning); it is not a failure.
const JOB_HELD: i64 = 2042;
/// The longest a connection attempt may take, whatever the request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach one slurmrestd.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Base URL, e.g. `http://127.0.0.1:6820`.
    pub url: String,
    /// User name sent as `X-SLURM-USER-NAME` (must match the token's user).
    pub user: String,
    /// JWT sent as `X-SLURM-USER-TOKEN`.
    pub token: Secret,
    /// Timeout of each HTTP request.
    pub timeout: Duration,
    /// Force an API version instead of negotiating it.
    pub version: Option<ApiVersion>,
}

impl RestConfig {
    /// A configuration with a 10 s timeout and version negotiation.
    pub fn new(url: impl Into<String>, user: impl Into<String>, token: Secret) -> Self {
        let url = url.into().trim_end_matches('/').to_owned();
        Self {
            url,
            user: user.into(),
            token,
            timeout: Duration::from_secs(10),
            version: None,
        }
    }
}

/// A [`SlurmDriver`] speaking slurmrestd's REST API.
#[derive(Debug)]
pub struct RestDriver {
    cfg: RestConfig,
    http: reqwest::Client,
    version: OnceCell<ApiVersion>,
}

impl RestDriver {
    /// Builds a driver; no request is made until the first call.
    pub fn new(cfg: RestConfig) -> Result<Self> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.timeout.min(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| Error::Protocol {
                url: cfg.url.clone(),
                endpoint: String::new(),
                detail: format!("cannot build HTTP client: {e}"),
            })?;
        let version = cfg
            .version
            .map_or_else(OnceCell::new, |v| OnceCell::new_with(Some(v)));
        Ok(Self { cfg, http, version })
    }

    /// The API version in use, negotiated with the server on first use.
    pub async fn version(&self) -> Result<ApiVersion> {
        self.version
            .get_or_try_init(|| self.negotiate())
            .await
            .copied()
    }

    /// The API version in use, if it is known yet (forced, or negotiated by a call).
    pub fn negotiated(&self) -> Option<ApiVersion> {
        self.version.get().copied()
    }

    /// Reads the paths the server offers from `/openapi/v3` and picks the newest we speak.
    async fn negotiate(&self) -> Result<ApiVersion> {
        let endpoint = "/openapi/v3";
        let body = self.request(Method::GET, endpoint, None).await?;
        let doc: Value = serde_json::from_slice(&body).map_err(|e| self.protocol(endpoint, e))?;
        let offered = wire::offered_versions(&doc);
        let chosen = wire::choose_version(&offered).ok_or_else(|| Error::UnsupportedVersions {
            url: self.cfg.url.clone(),
            offered: offered.clone(),
            supported: ApiVersion::PREFERENCE
                .iter()
                .map(|v| v.as_str().to_owned())
                .collect(),
        })?;
        tracing::debug!(url = %self.cfg.url, version = %chosen, ?offered, "slurmrestd API version chosen");
        Ok(chosen)
    }

    async fn path(&self, rest: &str) -> Result<String> {
        Ok(self.version().await?.path(rest))
    }

    async fn list_path(&self, what: &str) -> Result<String> {
        Ok(self.version().await?.list_path(what))
    }

    /// Sends one request and returns the body of a successful answer.
    async fn request(
        &self,
        method: Method,
        endpoint: &str,
        body: Option<Value>,
    ) -> Result<Vec<u8>> {
        self.request_allowing(method, endpoint, body, &[]).await
    }

    /// [`Self::request`], ignoring Slurm errors whose code is in `allowed`.
    async fn request_allowing(
        &self,
        method: Method,
        endpoint: &str,
        body: Option<Value>,
        allowed: &[i64],
    ) -> Result<Vec<u8>> {
        let mut req = self
            .http
            .request(method, format!("{}{endpoint}", self.cfg.url))
            .timeout(self.cfg.timeout)
            .header("X-SLURM-USER-NAME", &self.cfg.user)
            .header("X-SLURM-USER-TOKEN", self.cfg.token.expose());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(&e))?
            .to_vec();
        let answer = Answer {
            status,
            body: &bytes,
            elapsed: started.elapsed(),
        };
        classify(&self.cfg.url, endpoint, &answer, allowed)?;
        let warnings = wire::warnings_of(&bytes);
        if !warnings.is_empty() {
            tracing::debug!(url = %self.cfg.url, endpoint, ?warnings, "slurmrestd warnings");
        }
        Ok(bytes)
    }

    fn unreachable(&self, e: &reqwest::Error) -> Error {
        let mut reason = if e.is_connect() {
            "cannot connect to slurmrestd".to_owned()
        } else if e.is_timeout() {
            format!(
                "slurmrestd gave no answer within {} s (a slurmrestd whose slurmctld is down \
                 answers only after its own retries, about 10 s)",
                self.cfg.timeout.as_secs()
            )
        } else {
            "the request to slurmrestd failed".to_owned()
        };
        let mut source = e.source();
        while let Some(s) = source {
            reason.push_str(&format!(": {s}"));
            source = s.source();
        }
        Error::RestUnreachable {
            url: self.cfg.url.clone(),
            reason,
        }
    }

    fn protocol(&self, endpoint: &str, detail: impl ToString) -> Error {
        Error::Protocol {
            url: self.cfg.url.clone(),
            endpoint: endpoint.to_owned(),
            detail: detail.to_string(),
        }
    }

    async fn list<T>(&self, what: &str, parse: fn(&[u8]) -> serde_json::Result<T>) -> Result<T> {
        let endpoint = self.list_path(what).await?;
        let body = self.request(Method::GET, &endpoint, None).await?;
        parse(&body).map_err(|e| self.protocol(&endpoint, e))
    }

    async fn submit_job(&self, spec: &JobSpec, hold: bool) -> Result<u64> {
        let endpoint = self.path("job/submit").await?;
        let body = wire::submit_body(spec, self.version().await?, hold);
        let allowed: &[i64] = if hold { &[JOB_HELD] } else { &[] };
        let answer = self
            .request_allowing(Method::POST, &endpoint, Some(body), allowed)
            .await?;
        match wire::parse_submit(&answer) {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(self.protocol(&endpoint, "the answer has no job_id")),
            Err(e) => Err(self.protocol(&endpoint, e)),
        }
    }

    async fn cancel_job(&self, id: u64) -> Result<()> {
        let endpoint = self.path(&format!("job/{id}")).await?;
        let answer = self.request(Method::DELETE, &endpoint, None).await?;
        let failures = wire::cancel_failures(&answer);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Api {
                url: self.cfg.url.clone(),
                endpoint,
                errors: failures,
            })
        }
    }

    async fn release_job(&self, id: u64) -> Result<()> {
        let endpoint = self.path(&format!("job/{id}")).await?;
        self.request(Method::POST, &endpoint, Some(wire::release_body()))
            .await
            .map(drop)
    }

    async fn list_partitions(&self) -> Result<Vec<Partition>> {
        let mut parts = self.list("partitions", wire::parse_partitions).await?;
        let nodes = self.list("nodes", wire::parse_nodes).await?;
        fill_partition_gres(&mut parts, &nodes);
        Ok(parts)
    }
}

/// One HTTP answer of slurmrestd.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// HTTP status.
    pub status: StatusCode,
    /// Body as received.
    pub body: &'a [u8],
    /// How long the request took.
    pub elapsed: Duration,
}

/// Reads one answer of slurmrestd at `url` to `endpoint`: `Ok` when it succeeded, else the
/// [`Error`] kind that says what happened. Slurm errors with a code in `allowed` are not
/// failures.
///
/// Coded errors come first, from every entry of the error list: 1007 is
/// [`Error::Auth`]; 1800-1803 are [`Error::ControllerUnreachable`]; a list of only
/// non-specific codes (-1, 1, 1000, 5005) is [`Error::ControllerUnreachable`] when it took
/// slurmrestd's retry time, and [`Error::Auth`] when it came at once with a code Slurm
/// 22.05 refuses tokens with (-1, 1000, 5005). Any other coded error is
/// [`Error::Api`]. Only an answer without codes is read by its HTTP status: 511, 401 and
/// 403 are [`Error::Auth`], and a 502/503/504 is [`Error::ControllerUnreachable`] when
/// slurmrestd sent it, [`Error::RestUnreachable`] when something in front of slurmrestd
/// did. Anything else is [`Error::Protocol`].
pub fn classify(url: &str, endpoint: &str, answer: &Answer<'_>, allowed: &[i64]) -> Result<()> {
    let status = answer.status;
    let mut errors = wire::errors_of(answer.body);
    errors.retain(|e| !e.code.is_some_and(|c| allowed.contains(&c)));
    if status.is_success() && errors.is_empty() {
        return Ok(());
    }
    let auth = |detail: String, code: Option<i64>| Error::Auth {
        url: url.to_owned(),
        endpoint: endpoint.to_owned(),
        detail,
        code,
    };
    let controller = |detail: String, code: Option<i64>| Error::ControllerUnreachable {
        url: url.to_owned(),
        endpoint: endpoint.to_owned(),
        detail,
        code,
    };
    let with_code = |pred: &dyn Fn(i64) -> bool| -> Option<&ApiError> {
        errors.iter().find(|e| e.code.is_some_and(pred))
    };
    if let Some(e) = with_code(&|c| c == PROTOCOL_AUTH_ERROR) {
        return Err(auth(format!("HTTP {status}: {e}"), e.code));
    }
    if let Some(e) = with_code(&|c| CONTROLLER_UNREACHABLE.contains(&c)) {
        return Err(controller(format!("HTTP {status}: {e}"), e.code));
    }
    let all_in = |codes: &[i64]| {
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.code.is_some_and(|c| codes.contains(&c)))
    };
    if all_in(&NONSPECIFIC) {
        // slurmrestd lost the cause. When slurmctld does not answer, slurmrestd says so only
        // after its connection retries (~9-10 s); Slurm 22.05 refuses a token at once.
        let e = &errors[0];
        if answer.elapsed >= SLOW_NONSPECIFIC {
            return Err(controller(
                format!(
                    "slurmrestd answered only after {:.0} s, with a non-specific error ({e})",
                    answer.elapsed.as_secs_f64()
                ),
                e.code,
            ));
        }
        if all_in(&TOKEN_REJECTED_22_05) {
            return Err(auth(format!("HTTP {status}: {e}"), e.code));
        }
    }
    if !errors.is_empty() {
        // The code says more than the status slurmrestd derived from it (26.05 answers a
        // quick "Operation not permitted" with 403).
        return Err(Error::Api {
            url: url.to_owned(),
            endpoint: endpoint.to_owned(),
            errors,
        });
    }
    if matches!(status.as_u16(), 401 | 403 | 511) {
        return Err(auth(format!("HTTP {status}"), None));
    }
    if matches!(status.as_u16(), 502..=504) {
        if wire::is_slurm_answer(answer.body) {
            return Err(controller(
                format!("HTTP {status} without error details"),
                None,
            ));
        }
        return Err(Error::RestUnreachable {
            url: url.to_owned(),
            reason: format!(
                "HTTP {status} from something in front of slurmrestd (a proxy?), not from slurmrestd"
            ),
        });
    }
    let snippet: String = String::from_utf8_lossy(answer.body)
        .chars()
        .take(200)
        .collect();
    Err(Error::Protocol {
        url: url.to_owned(),
        endpoint: endpoint.to_owned(),
        detail: format!("HTTP {status} without an error list: {snippet}"),
    })
}

impl SlurmDriver for RestDriver {
    fn submit<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.submit_job(spec, false))
    }

    fn submit_held<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.submit_job(spec, true))
    }

    fn release(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.release_job(id))
    }

    fn jobs(&self) -> BoxFuture<'_, Result<Vec<Job>>> {
        Box::pin(self.list("jobs", wire::parse_jobs))
    }

    fn cancel(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.cancel_job(id))
    }

    fn partitions(&self) -> BoxFuture<'_, Result<Vec<Partition>>> {
        Box::pin(self.list_partitions())
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>>> {
        Box::pin(self.list("nodes", wire::parse_nodes))
    }

    fn api(&self) -> Option<String> {
        self.negotiated().map(|v| format!("slurmrestd {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sites::slurm::observe::more_telling;
    use crate::sites::slurm::testdata::{CAPTURED, NEWEST, exchange};

    const URL: &str = "http://slurm.example:6820";

    /// [`classify`] of a captured answer.
    fn classify_live(path: &str, allowed: &[i64]) -> Result<()> {
        let ex = exchange(path);
        let answer = Answer {
            status: StatusCode::from_u16(ex.status).unwrap(),
            body: &ex.body,
            elapsed: Duration::from_millis(ex.elapsed_ms),
        };
        classify(URL, "/endpoint", &answer, allowed)
    }

    fn classify_raw(status: u16, body: &str, elapsed_ms: u64) -> Result<()> {
        let answer = Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.as_bytes(),
            elapsed: Duration::from_millis(elapsed_ms),
        };
        classify(URL, "/endpoint", &answer, &[])
    }

    /// The captured error answers `fixtures/live/<slurm>/errors/<v>-<case>-<what>.json`,
    /// as (what, path): reads on every generation; submit, cancel and release where captured.
    fn error_fixtures(slurm: &str, v: ApiVersion, case: &str) -> Vec<(String, String)> {
        let dir = format!(
            "{}/src/sites/slurm/fixtures/live/{slurm}/errors",
            env!("CARGO_MANIFEST_DIR")
        );
        let prefix = format!("{v}-{case}-");
        let mut found: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|f| {
                let what = f.strip_prefix(&prefix)?.strip_suffix(".json")?.to_owned();
                Some((what, format!("{slurm}/errors/{f}")))
            })
            .collect();
        found.sort();
        for read in ["jobs", "nodes", "partitions"] {
            assert!(
                found.iter().any(|(w, _)| w == read),
                "{dir}: no {prefix}{read}"
            );
        }
        found
    }

    #[test]
    fn bad_tokens_are_auth_errors_on_every_generation() {
        for (slurm, v) in NEWEST {
            for token in ["expired", "garbage"] {
                let found = error_fixtures(slurm, v, &format!("auth-{token}"));
                assert_eq!(found.len(), 6, "{found:?}");
                for (what, path) in found {
                    let err = classify_live(&path, &[]).unwrap_err();
                    let Error::Auth { code, .. } = &err else {
                        panic!("{path}: {err:?}");
                    };
                    // 22.05 refuses the token at once with a non-specific code (HTTP 500);
                    // later versions say 511 and 1007, but the partitions endpoint sends
                    // 511 with an empty error list.
                    let want = match (slurm, what.as_str()) {
                        ("22.05", "submit" | "cancel") => Some(5005),
                        ("22.05", "release") => Some(1000),
                        ("22.05", _) => Some(SLURM_ERROR),
                        (_, "partitions") => None,
                        _ => Some(PROTOCOL_AUTH_ERROR),
                    };
                    assert_eq!(*code, want, "{path}");
                    assert!(err.to_string().contains("wrong or expired"), "{err}");
                }
            }
        }
    }

    #[test]
    fn a_stopped_slurmctld_is_controller_unreachable_on_every_generation() {
        for (slurm, v) in NEWEST {
            let found = error_fixtures(slurm, v, "ctld-down");
            assert_eq!(found.len(), 6, "{found:?}");
            for (what, path) in found {
                let err = classify_live(&path, &[]).unwrap_err();
                let Error::ControllerUnreachable { code, .. } = &err else {
                    panic!("{path}: {err:?}");
                };
                // What slurmrestd says varies (all after its ~9-10 s of retries): 1800 where
                // it kept the cause; -1 (22.05 reads), 1000 (release) or 1 "Operation not
                // permitted" (24.11+ cancel, with HTTP 403 on 26.05) where it lost it; and
                // an empty error list with HTTP 502 on 24.11+ partitions.
                let want = match (slurm, what.as_str()) {
                    (_, "release") => Some(1000),
                    ("22.05", "submit" | "cancel") => Some(1800),
                    ("22.05", _) => Some(SLURM_ERROR),
                    (_, "partitions") => None,
                    (_, "cancel") => Some(1),
                    _ => Some(1800),
                };
                assert_eq!(*code, want, "{path}");
                let text = err.to_string();
                assert!(text.contains("slurmctld is down or unreachable"), "{text}");
            }
        }
    }

    #[test]
    fn quick_nonspecific_errors_are_not_read_as_a_down_controller() {
        // A quick EPERM is a refusal, not a token problem and not a dead controller.
        let eperm = classify_raw(
            500,
            r#"{"errors": [{"error_number": 1, "error": "Operation not permitted"}]}"#,
            20,
        )
        .unwrap_err();
        assert_eq!(eperm.label(), "api", "{eperm:?}");
        let eperm_403 = classify_raw(
            403,
            r#"{"errors": [{"error_number": 1, "error": "Operation not permitted"}]}"#,
            20,
        )
        .unwrap_err();
        assert_eq!(
            eperm_403.label(),
            "api",
            "the code, not the status: {eperm_403:?}"
        );
        let slow = classify_raw(
            403,
            r#"{"errors": [{"error_number": 1, "error": "Operation not permitted"}]}"#,
            9_500,
        )
        .unwrap_err();
        assert_eq!(slow.label(), "controller_unreachable", "{slow:?}");
    }

    #[test]
    fn the_coded_error_of_parallel_reads_wins() {
        for (slurm, v) in NEWEST {
            for case in ["auth-expired", "ctld-down"] {
                let errors: Vec<Error> = ["partitions", "jobs", "nodes"]
                    .iter()
                    .map(|what| {
                        classify_live(&format!("{slurm}/errors/{v}-{case}-{what}.json"), &[])
                            .unwrap_err()
                    })
                    .collect();
                let best = errors.into_iter().reduce(more_telling).unwrap();
                assert!(best.code().is_some(), "{slurm} {case}: {best:?}");
                assert_eq!(
                    best.label(),
                    if case == "ctld-down" {
                        "controller_unreachable"
                    } else {
                        "auth"
                    }
                );
            }
        }
    }

    #[test]
    fn successful_answers_pass_and_slurm_errors_are_api_errors() {
        for (slurm, v) in CAPTURED {
            let dir = format!("{slurm}/{v}");
            for name in ["jobs", "partitions", "nodes", "submit", "release", "cancel"] {
                classify_live(&format!("{dir}/{name}.json"), &[])
                    .unwrap_or_else(|e| panic!("{dir}/{name}: {e}"));
            }
            let bad = classify_live(&format!("{dir}/submit-bad-partition.json"), &[]).unwrap_err();
            assert!(
                matches!(&bad, Error::Api { errors, .. } if errors[0].code == Some(2000)),
                "{dir}: {bad:?}"
            );
            // A held submit's 2042 is accepted (v0.0.38 lists it as an error).
            classify_live(&format!("{dir}/submit-held.json"), &[JOB_HELD]).unwrap();
        }
        let held = classify_live("22.05/v0.0.38/submit-held.json", &[]).unwrap_err();
        assert!(matches!(held, Error::Api { .. }), "{held:?}");
    }

    #[test]
    fn answers_without_codes_are_read_by_their_status() {
        let auth = classify_raw(401, "Authentication failure", 5).unwrap_err();
        assert!(matches!(auth, Error::Auth { code: None, .. }), "{auth:?}");
        let forbidden = classify_raw(403, "", 5).unwrap_err();
        assert_eq!(forbidden.label(), "auth");
        let proxy = classify_raw(502, "<html>Bad Gateway</html>", 5).unwrap_err();
        assert!(matches!(proxy, Error::RestUnreachable { .. }), "{proxy:?}");
        let odd = classify_raw(500, "not json", 5).unwrap_err();
        assert!(matches!(odd, Error::Protocol { .. }), "{odd:?}");
        assert!(odd.to_string().contains("unexpected answer"), "{odd}");
        // A coded error is never "unexpected", whatever the status.
        let coded = classify_raw(
            200,
            r#"{"errors": [{"error_number": 1800, "error": "Unable to contact slurm controller (connect failure)"}]}"#,
            5,
        )
        .unwrap_err();
        assert_eq!(coded.label(), "controller_unreachable");
        let rate_limited = classify_raw(
            502,
            r#"{"errors": [{"error_number": 1804, "error": "Rate limit exceeded, please retry momentarily"}]}"#,
            5,
        )
        .unwrap_err();
        assert_eq!(rate_limited.label(), "api", "{rate_limited}");
        // 22.05: -1 mixed with a real error is that error, not a token problem.
        let mixed = classify_raw(
            500,
            r#"{"errors": [{"errno": -1, "error": "Unspecified error"}, {"error_code": 2000, "error": "Invalid partition name specified"}]}"#,
            5,
        )
        .unwrap_err();
        assert_eq!(mixed.label(), "api");
    }

    #[test]
    fn config_debug_hides_token() {
        let cfg = RestConfig::new(
            "http://127.0.0.1:6820/",
            "ci",
            Secret::new("eyJ.secret.jwt"),
        );
        assert_eq!(cfg.url, "http://127.0.0.1:6820");
        assert!(!format!("{cfg:?}").contains("eyJ.secret.jwt"));
    }
}
