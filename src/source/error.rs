//! Errors of the git source. Every variant names the remote by its display URL
//! (credentials stripped) and no variant ever holds a secret.

use std::fmt;

/// Why a fetch or a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The remote could not be reached or did not answer in time.
    #[error("git remote {url} is unreachable: {reason}")]
    Unreachable {
        /// Display URL.
        url: String,
        /// What went wrong (secrets removed).
        reason: String,
    },
    /// The remote asked for credentials and refused the ones given (or none were given).
    #[error("git remote {url} refused authentication: {reason}")]
    AuthFailed {
        /// Display URL.
        url: String,
        /// What went wrong (secrets removed).
        reason: String,
    },
    /// The branch, tag or commit does not exist on the remote.
    #[error("git remote {url} has no {reference}")]
    ReferenceNotFound {
        /// Display URL.
        url: String,
        /// The reference, e.g. "branch `main`".
        reference: String,
    },
    /// The cached repository or the data the remote sent is damaged.
    #[error("git data of {url} is corrupt: {reason}")]
    Corrupt {
        /// Display URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The commit's tree holds something drover will not materialise.
    #[error("commit {commit} of {url} is refused: `{path}`: {refusal}")]
    Refused {
        /// Display URL.
        url: String,
        /// The commit id.
        commit: String,
        /// The offending path inside the tree ("." for the whole tree).
        path: String,
        /// Why.
        refusal: Refusal,
    },
    /// Local file system error in the cache directory.
    #[error("git source {url}: {context}: {source}")]
    Io {
        /// Display URL.
        url: String,
        /// What was being done.
        context: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work (bad reference name, empty URL, ...).
    #[error("git source {url}: invalid configuration: {reason}")]
    InvalidConfig {
        /// Display URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

impl SourceError {
    /// A stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::AuthFailed { .. } => "auth_failed",
            Self::ReferenceNotFound { .. } => "reference_not_found",
            Self::Corrupt { .. } => "corrupt",
            Self::Refused { .. } => "refused",
            Self::Io { .. } => "io",
            Self::InvalidConfig { .. } => "invalid_config",
        }
    }

    /// Whether trying again later may help (network trouble), as opposed to a problem
    /// that needs a person (credentials, references, content).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Io { .. })
    }
}

/// Why a tree entry is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A symlink whose target is absolute or resolves outside the tree.
    SymlinkEscapes {
        /// The link's target as committed.
        target: String,
    },
    /// Symlinks that resolve through each other without end.
    SymlinkLoop,
    /// A gitlink (submodule); its content is not part of the repository.
    Submodule,
    /// A name git itself would refuse (`..`, `.git`, containing `/` or NUL).
    BadName,
    /// The files add up to more than the limit.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// More tree entries than the limit.
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
    /// Directories nested deeper than the limit.
    TooDeep {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SymlinkEscapes { target } => {
                write!(f, "symlink to `{target}` points outside the repository")
            }
            Self::SymlinkLoop => f.write_str("symlinks form a loop"),
            Self::Submodule => f.write_str(
                "submodules (gitlinks) are not supported; commit the files into the fleet repo",
            ),
            Self::BadName => f.write_str("invalid file name in the tree"),
            Self::TooLarge { limit } => write!(f, "files add up to more than {limit} bytes"),
            Self::TooManyEntries { limit } => write!(f, "more than {limit} files and directories"),
            Self::TooDeep { limit } => write!(f, "directories nested more than {limit} deep"),
        }
    }
}
