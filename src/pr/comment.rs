//! The pull-request comment and job summary: markdown, pure.
//!
//! One sticky comment per pull request, found again by the hidden [`MARKER`] on its first
//! line and edited in place on every push. It holds a summary table per site (create /
//! update / delete / unchanged / findings, and whether the site was planned against live
//! state or offline), then per site the changes with their diffs in collapsible
//! `<details>` sections, and findings. An invalid fleet gets the list of errors instead.
//! [`truncate`] keeps a body within GitHub's 65,536-character limit.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::trust::SiteMode;
use super::{Annotation, PrContext};
pub use crate::plan::render::escape;
use crate::plan::render::{SiteStyle, site_markdown, totals};
use crate::plan::{Plan, SitePlan};

/// The hidden marker that identifies drover's plan comment.
pub const MARKER: &str = "<!-- drover:plan -->";
/// GitHub's limit on a comment body (and a check run's summary), in characters.
pub const COMMENT_LIMIT: usize = 65_536;

/// Everything the comment is made of.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// The pull request.
    pub context: &'a PrContext,
    /// The fleet directory relative to the repository root, for display.
    pub fleet_path: &'a str,
    /// The plan, or `None` when the fleet is invalid (nothing is planned).
    pub plan: Option<&'a Plan>,
    /// How each site was planned.
    pub modes: &'a BTreeMap<String, SiteMode>,
    /// Validation errors and warnings (repo-relative paths).
    pub annotations: &'a [Annotation],
    /// A note on the whole plan (e.g. no base checkout given).
    pub note: Option<&'a str>,
}

impl Report<'_> {
    /// Whether the outcome is a failure: an invalid fleet, or a site that could not be
    /// planned.
    pub fn failed(&self) -> bool {
        self.plan.is_none_or(Plan::has_errors)
    }

    /// One line for a check run title or a commit status.
    pub fn title(&self) -> String {
        match self.plan {
            None => {
                let errors = self
                    .annotations
                    .iter()
                    .filter(|a| a.annotation_level == "failure")
                    .count();
                format!("The fleet is invalid: {errors} error(s)")
            }
            Some(plan) => {
                let c = totals(plan);
                let failed = plan.sites.iter().filter(|s| s.error.is_some()).count();
                let mut t = format!(
                    "{} to create, {} to update, {} to delete",
                    c.create, c.update, c.delete
                );
                if failed > 0 {
                    let _ = write!(t, "; {failed} site(s) could not be planned");
                }
                t
            }
        }
    }
}

fn mode_cell(mode: Option<&SiteMode>) -> &'static str {
    match mode {
        Some(SiteMode::Live) => "live state",
        Some(SiteMode::Offline(_)) => "base branch (offline)",
        None => "—",
    }
}

/// The full markdown (job summary, artifact); the comment is [`comment_body`].
pub fn markdown(report: &Report<'_>) -> String {
    let mut out = String::new();
    let ctx = report.context;
    let mut at = ctx
        .short_sha()
        .map(|s| format!(" at `{s}`"))
        .unwrap_or_default();
    if ctx.fork {
        at.push_str(" (from a fork)");
    }
    let Some(plan) = report.plan else {
        let _ = writeln!(out, "## drover plan: ❌ {}\n", escape(&report.title()));
        let _ = writeln!(
            out,
            "Pull request #{}{at}, fleet `{}`. Nothing was planned: fix these and push again.\n",
            ctx.number,
            escape(report.fleet_path)
        );
        diagnostics(&mut out, report.annotations);
        footer(&mut out);
        return out;
    };
    let c = totals(plan);
    let icon = if report.failed() {
        "❌"
    } else if plan.has_changes() {
        "📝"
    } else {
        "✅"
    };
    let _ = writeln!(
        out,
        "## drover plan: {icon} {} to create, {} to update, {} to delete, {} unchanged\n",
        c.create, c.update, c.delete, c.unchanged
    );
    let _ = writeln!(
        out,
        "Pull request #{}{at}, fleet `{}`. Nothing is applied from a pull request: merging applies.\n",
        ctx.number,
        escape(report.fleet_path)
    );
    if let Some(note) = report.note {
        let _ = writeln!(out, "> [!NOTE]\n> {}\n", escape(note));
    }
    // Sites planned offline, grouped by why.
    let mut offline: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (site, m) in report.modes {
        if let SiteMode::Offline(why) = m {
            offline
                .entry(why.as_str())
                .or_default()
                .push(format!("`{}`", escape(site)));
        }
    }
    if !offline.is_empty() {
        let _ = writeln!(
            out,
            "> [!IMPORTANT]\n> **Offline plan**: no site was contacted for the sites below. They \
             show the pull request's desired state compared with the base branch's, not with \
             what runs on the site; drift and site findings do not show.\n>"
        );
        for (why, sites) in &offline {
            let _ = writeln!(out, "> - {}: {}", sites.join(", "), escape(why));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "| Site | Kind | Policy | Planned against | Create | Update | Delete | Unchanged | Findings |"
    );
    let _ = writeln!(out, "|---|---|---|---|---:|---:|---:|---:|---:|");
    for site in &plan.sites {
        let c = site.counts();
        let policy = match site.policy {
            crate::fleet::model::SitePolicy::Apply => "apply",
            crate::fleet::model::SitePolicy::ReportOnly => "report-only",
        };
        let head = format!(
            "| {} | {:?} | {policy} | {} |",
            escape(&site.site),
            site.kind,
            mode_cell(report.modes.get(&site.site))
        );
        if site.error.is_some() {
            let _ = writeln!(out, "{head} ? | ? | ? | ? | error |");
        } else {
            let _ = writeln!(
                out,
                "{head} {} | {} | {} | {} | {} |",
                c.create,
                c.update,
                c.delete,
                c.unchanged,
                site.findings.len()
            );
        }
    }
    for site in &plan.sites {
        site_section(&mut out, site);
    }
    if !report.annotations.is_empty() {
        let _ = writeln!(out, "\n#### Validation warnings\n");
        diagnostics(&mut out, report.annotations);
    }
    footer(&mut out);
    out
}

fn diagnostics(out: &mut String, annotations: &[Annotation]) {
    for a in annotations {
        let level = if a.annotation_level == "failure" {
            "error"
        } else {
            "warning"
        };
        let mut lines = a.message.lines();
        let message = lines.next().unwrap_or_default();
        let _ = write!(
            out,
            "- `{}:{}` **{level}[{}]**: {}",
            a.path.replace('`', "'"),
            a.start_line,
            escape(&a.title),
            escape(message)
        );
        for rest in lines {
            let _ = write!(out, "<br>_{}_", escape(rest));
        }
        out.push('\n');
    }
}

fn footer(out: &mut String) {
    let _ = writeln!(
        out,
        "\n<sub>drover plans pull requests read-only; this comment is updated on every push.</sub>"
    );
}

fn site_section(out: &mut String, site: &SitePlan) {
    let style = SiteStyle {
        heading: "###",
        unknown: "The plan for this site is unknown.",
        escape: true,
    };
    site_markdown(out, site, style);
}

/// The comment: [`MARKER`], then the markdown truncated to [`COMMENT_LIMIT`] with a note
/// saying where the full plan is.
pub fn comment_body(markdown: &str, full_plan_at: &str) -> String {
    let note = format!(
        "> [!WARNING]\n> This plan is too long for a comment and was truncated. The full plan is \
         in {full_plan_at}."
    );
    truncate(&format!("{MARKER}\n{markdown}"), COMMENT_LIMIT, &note)
}

/// `text` if it has at most `limit` characters; otherwise as many whole lines as fit,
/// with open code fences and `<details>` closed, followed by `note`. Never splits a
/// character, and the result (note included) never exceeds `limit` characters.
pub fn truncate(text: &str, limit: usize, note: &str) -> String {
    if text.chars().count() <= limit {
        return text.to_string();
    }
    // Room for the note and the closing of what is open (a fence is at most a line).
    let reserve = note.chars().count() + 256;
    let budget = limit.saturating_sub(reserve);
    let mut out = String::new();
    let mut used = 0;
    let mut open_fence: Option<String> = None;
    let mut open_details = 0usize;
    for line in text.split_inclusive('\n') {
        let n = line.chars().count();
        if used + n > budget {
            if used == 0 {
                // A single huge line: cut it on a character boundary.
                out.extend(line.chars().take(budget));
                out.push('\n');
            }
            break;
        }
        used += n;
        out.push_str(line);
        let trimmed = line.trim_end();
        match &open_fence {
            Some(f) if trimmed == f => open_fence = None,
            Some(_) => {}
            None => {
                if trimmed.starts_with("```") {
                    let ticks = trimmed.chars().take_while(|c| *c == '`').count();
                    open_fence = Some("`".repeat(ticks));
                } else {
                    open_details += trimmed.matches("<details>").count();
                    open_details =
                        open_details.saturating_sub(trimmed.matches("</details>").count());
                }
            }
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    if let Some(f) = open_fence {
        let _ = writeln!(out, "{f}");
    }
    for _ in 0..open_details.min(8) {
        out.push_str("</details>\n");
    }
    let _ = write!(out, "\n{note}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::render::fence;

    #[test]
    fn truncation_respects_the_limit_closes_blocks_and_keeps_characters_whole() {
        let mut text = String::from("<details><summary>x</summary>\n\n```diff\n");
        for i in 0..2000 {
            text.push_str(&format!("+ line {i} ünïcödé ✓\n"));
        }
        text.push_str("```\n</details>\n");
        let out = truncate(&text, 4000, "NOTE: truncated");
        assert!(out.chars().count() <= 4000, "{}", out.chars().count());
        assert!(out.ends_with("NOTE: truncated\n"));
        assert!(out.contains("```\n</details>\n\nNOTE"), "{out}");
        assert_eq!(truncate("short", 10, "n"), "short");
        let long = "é".repeat(5000);
        let cut = truncate(&long, 1000, "n");
        assert!(cut.chars().count() <= 1000);
    }

    #[test]
    fn fences_outgrow_backticks_in_the_diff() {
        assert_eq!(fence("a ``` b"), "````");
        assert_eq!(fence("plain"), "```");
    }
}
