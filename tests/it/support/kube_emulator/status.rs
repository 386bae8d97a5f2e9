//! `metav1.Status` error bodies: every failure the emulator returns is one of these,
//! with the HTTP code and `reason` a real API server uses for the same failure.

use serde_json::{Value, json};

/// A failed API call: rendered as a `metav1.Status` body with HTTP code `code`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// Machine-readable `Status.reason`, e.g. `NotFound`, `Conflict`, `Invalid`.
    pub reason: &'static str,
    /// Human-readable `Status.message`.
    pub message: String,
    /// `Status.details`: name, group, kind and causes, when known.
    pub details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// Attaches `details {name, group, kind}`.
    pub fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        let mut details = json!({ "name": name, "group": group, "kind": kind });
        if let Some(Value::Object(old)) = self.details.take() {
            for (k, v) in old {
                details[k] = v;
            }
        }
        self.details = Some(details);
        self
    }

    /// Attaches `details.causes` (one per offending field).
    pub fn with_causes(mut self, causes: Vec<Value>) -> Self {
        let mut details = self.details.take().unwrap_or_else(|| json!({}));
        details["causes"] = Value::Array(causes);
        self.details = Some(details);
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 404 NotFound for a named object: `pods "x" not found`; `details.kind` is the
    /// plural resource name, as the real server reports it.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let resource = qualified(plural, group);
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .with_details(group, plural, name)
    }

    /// 404 for a path or resource type the server does not serve.
    pub fn no_such_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_causes(vec![])
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let resource = qualified(plural, group);
        Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .with_details(group, plural, name)
    }

    /// 409 Conflict for a stale `resourceVersion` or failed precondition.
    pub fn conflict_modified(group: &str, plural: &str, name: &str) -> Self {
        let resource = qualified(plural, group);
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
        .with_details(group, plural, name)
    }

    /// 409 Conflict from server-side apply; the message follows the real server's format.
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        Self::new(409, "Conflict", message).with_causes(causes)
    }

    /// 410 Expired (resourceVersion too old).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: \
                 application/json, application/yaml, application/merge-patch+json, application/apply-patch+yaml"
            ),
        )
    }

    /// 422 Invalid: `Kind "name" is invalid: field: message`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let summary: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let subject = qualified(kind, group);
        let message = if summary.len() == 1 {
            format!("{subject} \"{name}\" is invalid: {}", summary[0])
        } else {
            format!("{subject} \"{name}\" is invalid: [{}]", summary.join(", "))
        };
        let causes = causes
            .into_iter()
            .map(|(field, message)| json!({ "reason": "FieldValueInvalid", "message": message, "field": field }))
            .collect();
        Self::new(422, "Invalid", message)
            .with_details(group, kind, name)
            .with_causes(causes)
    }

    /// 403 Forbidden from admission: `pods "x" is forbidden: <why>`.
    pub fn forbidden(group: &str, plural: &str, name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: {why}",
                qualified(plural, group)
            ),
        )
        .with_details(group, plural, name)
    }

    /// 429 TooManyRequests.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        )
        .with_causes(vec![])
        .with_retry_after(retry_after_secs)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// An injected failure with an arbitrary code.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            404 => "NotFound",
            _ => "Unknown",
        };
        Self::new(code, reason, format!("injected fault: HTTP {code}"))
    }

    fn with_retry_after(mut self, secs: u64) -> Self {
        let mut details = self.details.take().unwrap_or_else(|| json!({}));
        details["retryAfterSeconds"] = json!(secs);
        self.details = Some(details);
        self
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// A successful `metav1.Status` (e.g. for deleting a namespace-less collection).
pub fn success_status(group: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": { "name": name, "group": group, "kind": kind, "uid": uid },
    })
}

/// `deployments.apps` (or `Deployment.apps`) for grouped resources, `pods` for the core group.
fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}
