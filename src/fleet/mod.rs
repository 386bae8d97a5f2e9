//! The desired state: the fleet model, loading a fleet repo, and validating it.
//!
//! [`validate_dir`] is the whole pipeline: read every YAML file ([`load`]), check each
//! document's kind, schema and inline secrets and build the typed [`FleetRepo`]
//! ([`repo`]), then run the semantic rules ([`rules`]). Nothing here does network I/O.

pub(crate) mod diagnostic;
pub mod load;
pub mod model;
pub(crate) mod quantity;
pub(crate) mod repo;
pub(crate) mod rules;
pub mod schema;
pub(crate) mod secrets;
pub(crate) mod yaml;

use std::path::Path;

pub use diagnostic::{Code, Diagnostic, Severity};
pub use load::{LoadError, LoadOptions};
pub use repo::{FleetRepo, Located};

/// The outcome of validating a fleet repo.
#[derive(Debug)]
pub struct Validation {
    /// Every object that passed its document checks (even when other objects failed).
    pub repo: FleetRepo,
    /// Errors and warnings, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// YAML files read.
    pub files: usize,
    /// Documents read.
    pub documents: usize,
}

impl Validation {
    /// Whether the fleet has no errors (warnings are allowed).
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// Loads and validates the fleet repo at `root`.
pub fn validate_dir(root: &Path, options: &LoadOptions) -> Result<Validation, LoadError> {
    let loaded = load::load_dir(root, options)?;
    Ok(validate_loaded(loaded))
}

/// Validates documents that were already loaded.
pub fn validate_loaded(loaded: load::Loaded) -> Validation {
    let mut diagnostics = loaded.diagnostics;
    let documents = loaded.docs.len();
    if loaded.files == 0 && diagnostics.is_empty() {
        diagnostics.push(
            Diagnostic::new(
                Code::EmptyFleet,
                ".",
                yaml::Pos::default(),
                "no *.yaml or *.yml files found",
            )
            .with_hint("is this the fleet repo's root directory?"),
        );
    }
    let validators = schema::Validators::new();
    let repo = repo::build(loaded.docs, &validators, &mut diagnostics);
    let errors_so_far = diagnostics.iter().any(Diagnostic::is_error);
    diagnostics.extend(rules::check(&repo, errors_so_far));
    diagnostic::sort(&mut diagnostics);
    Validation {
        repo,
        diagnostics,
        files: loaded.files,
        documents,
    }
}
