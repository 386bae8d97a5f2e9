//! Diagnostics: what is wrong with a fleet repo, where, and what to do about it.
//!
//! Every problem has a stable [`Code`] (documented in `docs/errors.md`), a severity, a
//! file and position, a message and an optional hint. Rendering is plain text
//! (`path:line:col: error[E301]: message`) or JSON.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::yaml::Pos;

/// Stable diagnostic codes. The numbers never change meaning once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Code {
    /// E101: a file or directory could not be read.
    Io,
    /// E102: a file is larger than the size limit.
    FileTooLarge,
    /// E103: a file is not valid UTF-8.
    NotUtf8,
    /// E104: malformed YAML.
    YamlSyntax,
    /// E105: the same key twice in one mapping.
    DuplicateKey,
    /// E106: a YAML resource budget was exceeded (alias bomb, nesting, document count).
    YamlBudget,
    /// E107: a symlink points outside the repo.
    SymlinkEscape,
    /// E108: a document is not a mapping.
    NotAMapping,
    /// E109: a `*.yaml` entry is not a regular file (a FIFO, device node or socket).
    NotRegularFile,
    /// E201: missing or unsupported `apiVersion`.
    ApiVersion,
    /// E202: missing or unknown `kind`.
    UnknownKind,
    /// E203: a value has the wrong type.
    WrongType,
    /// E204: a field is not part of the model.
    UnknownField,
    /// E205: a required field is missing.
    MissingField,
    /// E206: a value is out of range, not allowed, or badly formatted.
    InvalidValue,
    /// E207: exactly one of several fields must be set.
    OneOf,
    /// E301: two objects of one kind share a name.
    DuplicateName,
    /// E302: a reference names an object that does not exist.
    DanglingReference,
    /// E303: `min` is greater than `max`.
    MinAboveMax,
    /// E304: a GPU request the pool cannot satisfy (vendor or count).
    GpuMismatch,
    /// E305: a runner set or pool does not fit its site's kind (Slurm vs Kubernetes).
    SiteKindMismatch,
    /// E306: two runner sets in one scope have the same labels, so job routing is ambiguous.
    AmbiguousLabels,
    /// E307: the fleet repo has no `Fleet` document, or more than one.
    FleetSingleton,
    /// E308: a Kubernetes runner set has no image.
    MissingImage,
    /// E309: two bind mounts of one container list have the same target.
    DuplicateBindTarget,
    /// E310: a GitHub App without its installation id.
    AppInstallationId,
    /// E311: a namespace or object name Kubernetes refuses (DNS-1123).
    KubernetesName,
    /// E312: a label or taint key or value Kubernetes refuses.
    KubernetesLabel,
    /// E313: an image that is not a container image reference.
    ImageReference,
    /// E314: a name drover derives would exceed a limit (ARC's 45-character scale set name).
    DerivedNameTooLong,
    /// E315: a runner group on a repository-scoped runner set (repositories have only
    /// `Default`).
    RepositoryRunnerGroup,
    /// E316: two sites reach the same place (one cluster context and runner namespace, or
    /// one Slurm endpoint as one user), so each would plan and prune the other's objects.
    SharedTarget,
    /// E401: a value looks like a secret; the repo must hold references only.
    InlineSecret,
    /// W501: a runner set can never start a runner (`max: 0`).
    MaxZero,
    /// W502: a pool has no runner sets.
    UnusedPool,
    /// W503: a SecretRef is never referenced.
    UnusedSecretRef,
    /// W504: a fleet directory holds no YAML files.
    EmptyFleet,
    /// W505: a Slurm runner set's container image is pulled, but no image cache outlives
    /// the job.
    UncachedImage,
}

impl Code {
    /// Every code, in number order.
    pub const ALL: [Code; 37] = [
        Code::Io,
        Code::FileTooLarge,
        Code::NotUtf8,
        Code::YamlSyntax,
        Code::DuplicateKey,
        Code::YamlBudget,
        Code::SymlinkEscape,
        Code::NotAMapping,
        Code::NotRegularFile,
        Code::ApiVersion,
        Code::UnknownKind,
        Code::WrongType,
        Code::UnknownField,
        Code::MissingField,
        Code::InvalidValue,
        Code::OneOf,
        Code::DuplicateName,
        Code::DanglingReference,
        Code::MinAboveMax,
        Code::GpuMismatch,
        Code::SiteKindMismatch,
        Code::AmbiguousLabels,
        Code::FleetSingleton,
        Code::MissingImage,
        Code::DuplicateBindTarget,
        Code::AppInstallationId,
        Code::KubernetesName,
        Code::KubernetesLabel,
        Code::ImageReference,
        Code::DerivedNameTooLong,
        Code::RepositoryRunnerGroup,
        Code::InlineSecret,
        Code::MaxZero,
        Code::UnusedPool,
        Code::UnusedSecretRef,
        Code::EmptyFleet,
        Code::UncachedImage,
    ];

    /// The printed code, e.g. `E301`.
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            Io => "E101",
            FileTooLarge => "E102",
            NotUtf8 => "E103",
            YamlSyntax => "E104",
            DuplicateKey => "E105",
            YamlBudget => "E106",
            SymlinkEscape => "E107",
            NotAMapping => "E108",
            NotRegularFile => "E109",
            ApiVersion => "E201",
            UnknownKind => "E202",
            WrongType => "E203",
            UnknownField => "E204",
            MissingField => "E205",
            InvalidValue => "E206",
            OneOf => "E207",
            DuplicateName => "E301",
            DanglingReference => "E302",
            MinAboveMax => "E303",
            GpuMismatch => "E304",
            SiteKindMismatch => "E305",
            AmbiguousLabels => "E306",
            FleetSingleton => "E307",
            MissingImage => "E308",
            DuplicateBindTarget => "E309",
            AppInstallationId => "E310",
            KubernetesName => "E311",
            KubernetesLabel => "E312",
            ImageReference => "E313",
            DerivedNameTooLong => "E314",
            RepositoryRunnerGroup => "E315",
            SharedTarget => "E316",
            InlineSecret => "E401",
            MaxZero => "W501",
            UnusedPool => "W502",
            UnusedSecretRef => "W503",
            EmptyFleet => "W504",
            UncachedImage => "W505",
        }
    }

    /// Warnings start with `W`; they never make a fleet invalid.
    pub fn severity(self) -> Severity {
        if self.as_str().starts_with('W') {
            Severity::Warning
        } else {
            Severity::Error
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Makes the fleet invalid.
    Error,
    /// Worth a look; the fleet is still valid.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem in a fleet repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Stable code.
    #[serde(serialize_with = "ser_code")]
    pub code: Code,
    /// Error or warning (derived from the code).
    pub severity: Severity,
    /// File, relative to the fleet root.
    pub file: PathBuf,
    /// Line, 1-based (0 when the problem concerns the whole file).
    pub line: u32,
    /// Column, 1-based (0 when unknown).
    pub column: u32,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

fn ser_code<S: serde::Serializer>(code: &Code, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str())
}

impl Diagnostic {
    /// A diagnostic at a position in a file.
    pub fn new(code: Code, file: impl Into<PathBuf>, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            code,
            severity: code.severity(),
            file: file.into(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether this makes the fleet invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::Printable;
        write!(f, "{}", Printable(&self.file.to_string_lossy()))?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        write!(
            f,
            ": {}[{}]: {}",
            self.severity.as_str(),
            self.code,
            Printable(&self.message)
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {}", Printable(hint))?;
        }
        Ok(())
    }
}

/// Sorts diagnostics by file, position and code, so output is stable.
pub(crate) fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.code, &a.message)
            .cmp(&(&b.file, b.line, b.column, b.code, &b.message))
    });
}
