//! The `drover serve` config file (YAML): its types, parsing, and turning it into the
//! fleet source and secrets. Flags and environment variables are merged over it by the
//! CLI (`src/cli/serve.rs`); every key is documented in `docs/serve.md`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::credentials::{self, CredentialError, Secret};
use crate::fleet::model::{EnvSource, FileSource, SecretRefSpec};
use crate::source::{GitAuth, GitReference, GitSource, GitSourceConfig, SourceError};

/// Why the config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid YAML, or has unknown or mistyped keys.
    #[error("invalid config file: {0}")]
    Parse(String),
    /// A secret it names cannot be read.
    #[error(transparent)]
    Secret(#[from] CredentialError),
    /// The git source cannot be set up.
    #[error("git source: {0}")]
    Git(#[from] SourceError),
    /// A `*From` secret names neither an env var nor a file, or both.
    #[error("{0}: set exactly one of `env` and `file`")]
    SecretFrom(String),
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFile {
    /// Where the fleet comes from.
    #[serde(default)]
    pub source: Option<SourceConfig>,
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Poll interval in seconds.
    pub poll_interval_seconds: Option<u64>,
    /// Full reconcile interval in seconds.
    pub reconcile_interval_seconds: Option<u64>,
    /// Webhook HMAC secret, from an env var or a file.
    pub webhook_secret_from: Option<SecretFrom>,
    /// Manual trigger token, from an env var or a file.
    pub trigger_token_from: Option<SecretFrom>,
    /// Kubeconfig path.
    pub kubeconfig: Option<PathBuf>,
    /// Leader election, for more than one replica.
    pub lease: Option<LeaseFile>,
    /// One GitHub issue per drifting site.
    pub drift_issues: Option<super::drift::DriftIssues>,
    /// Runner autoscaling from GitHub demand; off without this key.
    pub autoscale: Option<AutoscaleFile>,
}

/// Runner autoscaling settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutoscaleFile {
    /// drover's JIT endpoint as Slurm runner jobs reach it, e.g.
    /// `http://drover.example:8080/jit`.
    pub jit_url: Option<String>,
    /// Repositories (`owner/name`) polled for queued jobs besides those of
    /// repository-scoped runner sets and those seen in webhooks.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Seconds between polls of queued jobs [default: 30].
    pub poll_interval_seconds: Option<u64>,
    /// Seconds between reads of GitHub's runner list [default: 15].
    pub refresh_interval_seconds: Option<u64>,
    /// Seconds a registered runner may be offline with no pod or job before it is
    /// deregistered [default: 120].
    pub orphan_grace_seconds: Option<u64>,
}

impl AutoscaleFile {
    /// The autoscaler settings.
    pub fn settings(&self) -> crate::autoscale::Settings {
        let d = crate::autoscale::Settings::default();
        let secs = |v: Option<u64>, default: std::time::Duration| {
            v.map_or(default, |s| std::time::Duration::from_secs(s.max(1)))
        };
        crate::autoscale::Settings {
            jit_url: self.jit_url.clone(),
            repositories: self.repositories.clone(),
            poll_interval: secs(self.poll_interval_seconds, d.poll_interval),
            refresh_interval: secs(self.refresh_interval_seconds, d.refresh_interval),
            orphan_grace: secs(self.orphan_grace_seconds, d.orphan_grace),
            ..d
        }
    }
}

impl ConfigFile {
    /// Parses the YAML text of a config file (unknown keys are errors).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }
}

/// The Lease used for leader election.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaseFile {
    /// Namespace of the Lease (drover's own namespace).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// Seconds a leader keeps the lease without renewing [default: 15].
    #[serde(default = "default_lease_seconds")]
    pub duration_seconds: u64,
    /// Kubeconfig context of the cluster holding the Lease; without it (and without a
    /// top-level `kubeconfig`) the in-cluster configuration is used.
    pub context: Option<String>,
}

fn default_lease_seconds() -> u64 {
    15
}

/// The fleet source in the config file: a git remote or a local directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceConfig {
    /// A local directory.
    pub dir: Option<PathBuf>,
    /// A git remote.
    pub git: Option<GitConfig>,
}

/// A git remote: URL, one reference, credentials by env var or file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitConfig {
    /// `https://…`, `ssh://…`, `git://…` or `file://…`.
    pub url: String,
    /// Branch to follow [default: main].
    pub branch: Option<String>,
    /// Tag to follow instead.
    pub tag: Option<String>,
    /// A fixed commit instead.
    pub commit: Option<String>,
    /// HTTPS token (sent as `x-access-token`).
    pub token_from: Option<SecretFrom>,
    /// SSH deploy key (PEM/OpenSSH).
    pub ssh_key_from: Option<SecretFrom>,
    /// Where clones and snapshots are kept [default: /var/cache/drover].
    pub cache_dir: Option<PathBuf>,
}

impl GitConfig {
    /// The reference followed: the tag, else the commit, else the branch (`main`).
    pub fn reference(&self) -> GitReference {
        match (&self.tag, &self.commit) {
            (Some(tag), _) => GitReference::Tag(tag.clone()),
            (None, Some(commit)) => GitReference::Commit(commit.clone()),
            (None, None) => {
                GitReference::Branch(self.branch.clone().unwrap_or_else(|| "main".into()))
            }
        }
    }

    /// The git source, with its credentials read.
    pub fn source(&self) -> Result<GitSource, ConfigError> {
        let auth = match (&self.token_from, &self.ssh_key_from) {
            (Some(token), _) => GitAuth::Token(token.resolve("git token")?),
            (None, Some(key)) => GitAuth::SshKey {
                private_key: key.resolve("git deploy key")?,
                passphrase: None,
            },
            (None, None) => GitAuth::None,
        };
        let cache = self
            .cache_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/cache/drover"));
        Ok(GitSource::new(GitSourceConfig {
            auth,
            ..GitSourceConfig::new(&self.url, self.reference(), cache)
        })?)
    }
}

/// A secret of drover's own: an environment variable or a file, never a value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretFrom {
    /// Environment variable name.
    pub env: Option<String>,
    /// File path.
    pub file: Option<String>,
}

impl SecretFrom {
    /// A secret held in environment variable `var`.
    pub fn env(var: &str) -> Self {
        Self {
            env: Some(var.into()),
            file: None,
        }
    }

    /// Reads the secret; `what` names it in errors.
    pub fn resolve(&self, what: &str) -> Result<Secret, ConfigError> {
        if self.env.is_some() == self.file.is_some() {
            return Err(ConfigError::SecretFrom(what.into()));
        }
        let spec = SecretRefSpec {
            env: self.env.clone().map(|name| EnvSource { name }),
            file: self.file.clone().map(|path| FileSource { path }),
            ..SecretRefSpec::default()
        };
        Ok(credentials::resolve(what, &spec)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let err = ConfigFile::parse("listen: 127.0.0.1:1\npollIntervalSecs: 3\n").unwrap_err();
        assert!(err.to_string().contains("pollIntervalSecs"), "{err}");
    }

    #[test]
    fn a_full_file_parses() {
        let file = ConfigFile::parse(
            "source: {git: {url: 'file:///x', tag: v1}}\nlease: {namespace: a, name: b}\n",
        )
        .unwrap();
        let git = file.source.unwrap().git.unwrap();
        assert_eq!(git.reference(), GitReference::Tag("v1".into()));
        assert_eq!(file.lease.unwrap().duration_seconds, 15);
    }

    #[test]
    fn drift_issues_parse_with_a_default_label() {
        let file = ConfigFile::parse("driftIssues: {repo: acme/fleet}\n").unwrap();
        let issues = file.drift_issues.unwrap();
        assert_eq!(issues.repo, "acme/fleet");
        assert_eq!(issues.labels, vec!["drover-drift".to_string()]);
        let err = ConfigFile::parse("driftIssues: {repo: a/b, label: x}\n").unwrap_err();
        assert!(err.to_string().contains("label"), "{err}");
    }

    #[test]
    fn a_secret_needs_exactly_one_place() {
        let both = SecretFrom {
            env: Some("A".into()),
            file: Some("/b".into()),
        };
        assert!(matches!(both.resolve("x"), Err(ConfigError::SecretFrom(_))));
    }
}
