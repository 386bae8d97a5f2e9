//! Unified diffs of normalised YAML, for plans and drift reports.

use similar::TextDiff;

/// A unified diff from `before` to `after` with three lines of context, headed
/// `--- live` / `+++ desired`. Empty when the texts are equal.
pub(crate) fn unified(before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header("live", "desired")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_only_the_changed_lines_with_context() {
        let diff = unified("a: 1\nb: 2\n", "a: 1\nb: 3\n");
        assert!(diff.starts_with("--- live\n+++ desired\n"), "{diff}");
        assert!(diff.contains("-b: 2\n+b: 3\n"), "{diff}");
        assert!(unified("x\n", "x\n").is_empty());
    }
}
