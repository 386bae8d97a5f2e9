//! Mapping libgit2 failures to [`SourceError`] kinds, using what the callbacks observed
//! during the fetch (credentials asked for, refused, deadline passed).

use std::cell::Cell;
use std::time::Duration;

use git2::{ErrorClass, ErrorCode};

use super::error::SourceError;
use crate::redact::Redactor;

/// What happened in the remote callbacks of one fetch.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// How many times a secret was handed to libgit2.
    pub offered: Cell<u32>,
    /// The remote asked for credentials and none are configured (or none fit).
    pub missing: Cell<bool>,
    /// The remote (after a redirect) is another host; the secret was withheld.
    pub wrong_host: Cell<bool>,
    /// The deadline passed or the fetch was cancelled.
    pub timed_out: Cell<bool>,
}

/// Turns a libgit2 error of a network operation into a [`SourceError`].
pub(crate) fn network_error(
    err: &git2::Error,
    observed: &Observed,
    redactor: &Redactor,
    timeout: Duration,
) -> SourceError {
    let url = redactor.display_url().to_owned();
    let message = redactor.text(err.message());
    if observed.timed_out.get() {
        return SourceError::Unreachable {
            url,
            reason: format!("timed out after {}s", timeout.as_secs_f32()),
        };
    }
    if observed.wrong_host.get() {
        return SourceError::AuthFailed {
            url,
            reason: "the remote redirected to another host; credentials were not sent there".into(),
        };
    }
    if observed.missing.get() {
        return SourceError::AuthFailed {
            url,
            reason: "the remote requires credentials, and none that it accepts are configured"
                .into(),
        };
    }
    if observed.offered.get() > 1 {
        return SourceError::AuthFailed {
            url,
            reason: "the credentials were rejected".into(),
        };
    }
    let lower = message.to_ascii_lowercase();
    // libgit2's wording: "unexpected http status code: 401", "too many redirects or
    // authentication replays", "Failed to authenticate SSH session", ...
    let auth_words = [
        "status code: 401",
        "status code: 403",
        "authentication",
        "failed to authenticate",
        "permission denied",
        "unauthorized",
    ];
    if err.code() == ErrorCode::Auth || auth_words.iter().any(|w| lower.contains(w)) {
        return SourceError::AuthFailed {
            url,
            reason: message,
        };
    }
    if err.code() == ErrorCode::Locked {
        return SourceError::Io {
            url,
            context: "updating the cache".into(),
            source: std::io::Error::other(message),
        };
    }
    match err.class() {
        ErrorClass::Odb
        | ErrorClass::Zlib
        | ErrorClass::Object
        | ErrorClass::Indexer
        | ErrorClass::Tree
        | ErrorClass::Sha1 => SourceError::Corrupt {
            url,
            reason: message,
        },
        ErrorClass::Filesystem => SourceError::Io {
            url,
            context: "writing the cache".into(),
            source: std::io::Error::other(message),
        },
        _ => SourceError::Unreachable {
            url,
            reason: message,
        },
    }
}

/// Turns a libgit2 error of a local read of the cache into [`SourceError::Corrupt`].
pub(crate) fn local_error(err: &git2::Error, redactor: &Redactor) -> SourceError {
    SourceError::Corrupt {
        url: redactor.display_url().to_owned(),
        reason: redactor.text(err.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::GitAuth;

    fn classify(message: &str, class: ErrorClass) -> &'static str {
        let err = git2::Error::new(ErrorCode::GenericError, class, message);
        let redactor = GitAuth::None.redactor("http://127.0.0.1:40133/x");
        network_error(
            &err,
            &Observed::default(),
            &redactor,
            Duration::from_secs(1),
        )
        .label()
    }

    #[test]
    fn status_codes_not_port_numbers_mean_auth() {
        assert_eq!(
            classify(
                "failed to connect to 127.0.0.1:40133: Connection refused",
                ErrorClass::Net
            ),
            "unreachable"
        );
        assert_eq!(
            classify("unexpected http status code: 403", ErrorClass::Http),
            "auth_failed"
        );
        assert_eq!(
            classify("unexpected http status code: 404", ErrorClass::Http),
            "unreachable"
        );
        assert_eq!(classify("object not found", ErrorClass::Odb), "corrupt");
    }

    #[test]
    fn callbacks_decide_before_the_message() {
        let err = git2::Error::new(ErrorCode::User, ErrorClass::Callback, "callback failed");
        let redactor = GitAuth::None.redactor("https://h/x");
        let observed = Observed::default();
        observed.offered.set(2);
        assert_eq!(
            network_error(&err, &observed, &redactor, Duration::from_secs(1)).label(),
            "auth_failed"
        );
        observed.timed_out.set(true);
        assert_eq!(
            network_error(&err, &observed, &redactor, Duration::from_secs(1)).label(),
            "unreachable"
        );
    }
}
