//! The labels a drover runner registers with.
//!
//! JIT runners get no default labels from the runner software (a `config.sh` runner
//! adds `self-hosted`, the OS and the architecture itself; a JIT config carries exactly the
//! labels it was generated with). So drover adds them: a runner set's runners carry the
//! set's labels plus `self-hosted`, `linux` and `x64`. GitHub compares labels
//! case-insensitively; drover keeps them lowercased.

use std::collections::BTreeSet;

use crate::fleet::model::RunnerSetSpec;

/// Labels every drover runner has besides its set's own: drover runs Linux x64 runners.
pub(crate) const DEFAULT_LABELS: [&str; 3] = ["self-hosted", "linux", "x64"];

/// A label in the form GitHub compares it: trimmed and lowercased.
pub(crate) fn normalize(label: &str) -> String {
    label.trim().to_lowercase()
}

/// The runner label set of a runner set: its labels ∪ {self-hosted, linux, x64},
/// normalized and de-duplicated (sorted, so the order is stable).
pub fn runner_labels(set: &RunnerSetSpec) -> BTreeSet<String> {
    set.labels
        .iter()
        .map(|l| normalize(l))
        .chain(DEFAULT_LABELS.iter().map(|l| (*l).to_string()))
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_defaults_and_lowercases() {
        let spec: RunnerSetSpec = serde_json::from_value(serde_json::json!({
            "github": {"org": "acme"}, "labels": ["GPU", "mi300x", "Linux"],
            "pool": "p", "max": 1
        }))
        .unwrap();
        let labels: Vec<_> = runner_labels(&spec).into_iter().collect();
        assert_eq!(labels, ["gpu", "linux", "mi300x", "self-hosted", "x64"]);
    }
}
