//! Credentials drover itself uses (Slurm JWTs, GitHub keys, webhook secrets), resolved from
//! `SecretRef`s, and the [`Secret`] type that keeps their values out of every log and report.
//!
//! Only the sources readable by drover's own process are resolved here: environment
//! variables and files. Kubernetes Secrets are read by the Kubernetes site driver, and
//! External Secrets are rendered for the cluster, never read by drover.

use std::fmt;
use std::path::PathBuf;

use crate::fleet::model::SecretRefSpec;

/// A secret string whose `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret could not be resolved. Never contains the value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The SecretRef names an environment variable that is unset or not UTF-8.
    #[error("SecretRef `{name}`: environment variable {var} is not set")]
    MissingEnv {
        /// SecretRef name.
        name: String,
        /// Variable name.
        var: String,
    },
    /// The SecretRef names a file that cannot be read.
    #[error("SecretRef `{name}`: cannot read {path}: {source}")]
    File {
        /// SecretRef name.
        name: String,
        /// File path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The SecretRef's source is not readable by drover's own process.
    #[error(
        "SecretRef `{name}`: {source_kind} secrets are not readable by drover itself; use an env or file SecretRef"
    )]
    Unsupported {
        /// SecretRef name.
        name: String,
        /// What kind of source it is.
        source_kind: &'static str,
    },
    /// No SecretRef with that name.
    #[error("SecretRef `{0}` does not exist")]
    Unknown(String),
}

/// Resolves a SecretRef readable by drover's own process (env or file). Trailing newlines
/// of files are trimmed (secrets are usually written with `echo`). The value is remembered
/// by the redaction layer ([`crate::redact::remember`]), so no output shows it.
pub fn resolve(name: &str, spec: &SecretRefSpec) -> Result<Secret, CredentialError> {
    let secret = read(name, spec)?;
    crate::redact::remember(secret.expose());
    Ok(secret)
}

fn read(name: &str, spec: &SecretRefSpec) -> Result<Secret, CredentialError> {
    if let Some(env) = &spec.env {
        return std::env::var(&env.name).map(Secret::new).map_err(|_| {
            CredentialError::MissingEnv {
                name: name.into(),
                var: env.name.clone(),
            }
        });
    }
    if let Some(file) = &spec.file {
        return std::fs::read_to_string(&file.path)
            .map(|v| Secret::new(v.trim_end_matches(['\n', '\r'])))
            .map_err(|source| CredentialError::File {
                name: name.into(),
                path: PathBuf::from(&file.path),
                source,
            });
    }
    let source_kind = if spec.kubernetes_secret.is_some() {
        "Kubernetes Secret"
    } else {
        "External Secrets"
    };
    Err(CredentialError::Unsupported {
        name: name.into(),
        source_kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::{FileSource, SecretRefSpec};

    #[test]
    fn file_secrets_are_trimmed_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let spec = SecretRefSpec {
            file: Some(FileSource {
                path: path.display().to_string(),
            }),
            ..SecretRefSpec::default()
        };
        let secret = resolve("jwt", &spec).unwrap();
        assert_eq!(secret.expose(), "s3cr3t");
        assert!(!format!("{secret:?} {secret}").contains("s3cr3t"));
    }

    #[test]
    fn missing_file_names_the_ref_and_path() {
        let spec = SecretRefSpec {
            file: Some(FileSource {
                path: "/nonexistent/jwt".into(),
            }),
            ..SecretRefSpec::default()
        };
        let err = resolve("hpc-jwt", &spec).unwrap_err().to_string();
        assert!(
            err.contains("hpc-jwt") && err.contains("/nonexistent/jwt"),
            "{err}"
        );
    }
}
