//! Plan renderers: plain text (optionally coloured, for terminals), markdown (pull request
//! comments, job summaries) and JSON (machines). All are pure functions of a [`Plan`].

use std::fmt::Write;

use crate::text::printable;

use super::{Action, Counts, FindingSeverity, Plan, SitePlan};

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Totals over every site.
pub fn totals(plan: &Plan) -> Counts {
    plan.sites
        .iter()
        .map(SitePlan::counts)
        .fold(Counts::default(), |a, c| Counts {
            create: a.create + c.create,
            update: a.update + c.update,
            delete: a.delete + c.delete,
            unchanged: a.unchanged + c.unchanged,
        })
}

fn summary_line(c: Counts) -> String {
    format!(
        "{} to create, {} to update, {} to delete, {} unchanged",
        c.create, c.update, c.delete, c.unchanged
    )
}

/// Plain text, as `drover plan` prints it. With `color`, ANSI colours mark the actions.
pub fn text(plan: &Plan, color: bool) -> String {
    let paint = |code: &str, s: &str| {
        if color {
            format!("{code}{s}{RESET}")
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    for site in &plan.sites {
        let header = format!(
            "site {} ({:?}, {})",
            printable(&site.site),
            site.kind,
            policy(site)
        )
        .to_lowercase();
        let _ = writeln!(out, "{}", paint(BOLD, &header));
        if let Some(api) = &site.api {
            let _ = writeln!(out, "  api: {}", printable(api));
        }
        if let Some(err) = &site.error {
            let _ = writeln!(
                out,
                "  {}",
                paint(RED, &format!("error: {}", printable(err)))
            );
            let _ = writeln!(out, "  plan unknown: nothing will be changed on this site");
        }
        for change in site
            .changes
            .iter()
            .filter(|c| c.action != Action::Unchanged)
        {
            let colour = match change.action {
                Action::Create => GREEN,
                Action::Delete => RED,
                _ => YELLOW,
            };
            let reason = change
                .reason
                .as_deref()
                .map(|r| format!(" ({})", printable(r)))
                .unwrap_or_default();
            let line = format!(
                "  {} {} {}{reason}",
                change.action.sign(),
                change.action.as_str(),
                printable(&change.target.to_string())
            );
            let _ = writeln!(out, "{}", paint(colour, &line));
            if let Some(diff) = &change.diff {
                for l in diff.lines() {
                    let l = printable(l);
                    let c = if l.starts_with('+') {
                        GREEN
                    } else if l.starts_with('-') {
                        RED
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        out,
                        "      {}",
                        if c.is_empty() {
                            l.to_string()
                        } else {
                            paint(c, &l)
                        }
                    );
                }
            }
        }
        for f in &site.findings {
            let colour = if f.severity == FindingSeverity::Error {
                RED
            } else {
                YELLOW
            };
            let line = format!(
                "  ! {:?} [{}] {}: {}",
                f.severity,
                printable(&f.code),
                printable(&f.subject),
                printable(&f.message)
            )
            .to_string();
            let _ = writeln!(
                out,
                "{}",
                paint(
                    colour,
                    &line
                        .replacen("Warning", "warning", 1)
                        .replacen("Error", "error", 1)
                )
            );
        }
        if site.error.is_none() {
            let _ = writeln!(out, "  {}", summary_line(site.counts()));
        }
    }
    // Sites that could not be planned count for nothing in the totals: say so, so that
    // "0 to create" is never read as "nothing to do" there.
    let mut total = format!("Plan: {}", summary_line(totals(plan)));
    let unknown = plan.sites.iter().filter(|s| s.error.is_some()).count();
    if unknown > 0 {
        let _ = write!(total, "; {unknown} site(s) unknown");
    }
    let _ = writeln!(out, "{}", paint(BOLD, &total));
    out
}

fn policy(site: &SitePlan) -> &'static str {
    match site.policy {
        crate::fleet::model::SitePolicy::Apply => "apply",
        crate::fleet::model::SitePolicy::ReportOnly => "report-only",
    }
}

/// Markdown: a summary table, then per site the changes with diffs in collapsible sections.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### drover plan: {}\n", summary_line(totals(plan)));
    if let Some(rev) = &plan.revision {
        let _ = writeln!(out, "Revision `{rev}`\n");
    }
    let _ = writeln!(
        out,
        "| Site | Kind | Policy | Create | Update | Delete | Unchanged | Findings |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|");
    for site in &plan.sites {
        let c = site.counts();
        if site.error.is_some() {
            let _ = writeln!(
                out,
                "| {} | {:?} | {} | ? | ? | ? | ? | error |",
                site.site,
                site.kind,
                policy(site)
            );
        } else {
            let _ = writeln!(
                out,
                "| {} | {:?} | {} | {} | {} | {} | {} | {} |",
                site.site,
                site.kind,
                policy(site),
                c.create,
                c.update,
                c.delete,
                c.unchanged,
                site.findings.len()
            );
        }
    }
    for site in &plan.sites {
        site_markdown(&mut out, site, PLAN_STYLE);
    }
    out
}

/// How [`site_markdown`] writes a site's section.
#[derive(Debug, Clone, Copy)]
pub struct SiteStyle<'a> {
    /// Heading marks, e.g. `####`.
    pub heading: &'a str,
    /// What follows an observation error.
    pub unknown: &'a str,
    /// Escape names and messages ([`escape`]), for text from untrusted input such as a
    /// pull request's fleet.
    pub escape: bool,
}

/// The style of `drover plan --format markdown`.
const PLAN_STYLE: SiteStyle<'static> = SiteStyle {
    heading: "####",
    unknown: "The plan for this site is unknown; nothing will be changed.",
    escape: false,
};

/// One site's section: its error, each change (a diff in a collapsible `<details>`), its
/// findings. Nothing for a site without changes, findings or error.
pub fn site_markdown(out: &mut String, site: &SitePlan, style: SiteStyle<'_>) {
    if !site.has_changes() && site.findings.is_empty() && site.error.is_none() {
        return;
    }
    let text = |s: &str| {
        if style.escape {
            escape(s)
        } else {
            s.to_string()
        }
    };
    let _ = writeln!(out, "\n{} {}\n", style.heading, text(&site.site));
    if let Some(err) = &site.error {
        let _ = writeln!(out, "**Error:** {}  \n{}\n", text(err), style.unknown);
    }
    for change in site
        .changes
        .iter()
        .filter(|c| c.action != Action::Unchanged)
    {
        let reason = change
            .reason
            .as_deref()
            .map(|r| format!(" — {}", text(r)))
            .unwrap_or_default();
        let title = format!(
            "<code>{} {}</code> {}{reason}",
            change.action.sign(),
            text(&change.target.to_string()),
            change.action.as_str()
        );
        match &change.diff {
            Some(diff) if !diff.is_empty() => {
                let f = fence(diff);
                let nl = if diff.ends_with('\n') { "" } else { "\n" };
                let _ = writeln!(
                    out,
                    "<details><summary>{title}</summary>\n\n{f}diff\n{diff}{nl}{f}\n</details>\n"
                );
            }
            _ => {
                let _ = writeln!(out, "- {title}");
            }
        }
    }
    if !site.findings.is_empty() {
        let _ = writeln!(out, "\n**Findings**\n");
        for f in &site.findings {
            let icon = if f.severity == FindingSeverity::Error {
                "❌"
            } else {
                "⚠️"
            };
            let _ = writeln!(
                out,
                "- {icon} `{}` **{}**: {}",
                text(&f.code),
                text(&f.subject),
                text(&f.message)
            );
        }
    }
}

/// Escapes text shown outside code blocks, so names and messages cannot inject markup.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '|' => out.push_str("\\|"),
            '`' => out.push('\''),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A code fence longer than any run of backticks in `body` (at least three backticks).
pub fn fence(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat(longest.max(2) + 1)
}

/// Pretty JSON.
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).expect("plans serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::SitePolicy;
    use crate::plan::{Change, Finding, SiteKind, Target};

    fn sample() -> Plan {
        let mut site = SitePlan::new("eks", SiteKind::Kubernetes, SitePolicy::Apply);
        site.changes.push(Change {
            action: Action::Update,
            target: Target {
                kind: "ConfigMap".into(),
                namespace: Some("ci".into()),
                name: "x".into(),
            },
            diff: Some(crate::plan::diff::unified("a: 1\n", "a: 2\n")),
            reason: None,
            runner: None,
        });
        site.changes.push(Change {
            action: Action::Unchanged,
            target: Target {
                kind: "Namespace".into(),
                namespace: None,
                name: "ci".into(),
            },
            diff: None,
            reason: None,
            runner: None,
        });
        site.findings.push(Finding::new(
            FindingSeverity::Error,
            "runtime-class-missing",
            "RuntimeClass nvidia",
            "not found",
        ));
        let down = SitePlan::failed(
            "hpc",
            SiteKind::Slurm,
            SitePolicy::Apply,
            "slurmrestd unreachable",
        );
        Plan {
            revision: Some("abc123".into()),
            sites: vec![site, down],
        }
    }

    #[test]
    fn text_lists_changes_findings_and_unknown_sites() {
        let out = text(&sample(), false);
        assert!(out.contains("  ~ update ConfigMap ci/x\n"), "{out}");
        assert!(out.contains("+a: 2"), "{out}");
        assert!(out.contains("! error [runtime-class-missing]"), "{out}");
        assert!(
            out.contains("plan unknown: nothing will be changed on this site"),
            "{out}"
        );
        assert!(
            out.ends_with(
                "Plan: 0 to create, 1 to update, 0 to delete, 1 unchanged; 1 site(s) unknown\n"
            ),
            "{out}"
        );
        assert!(!out.contains('\x1b'));
        assert!(text(&sample(), true).contains('\x1b'));
        assert!(!out.contains("api:"), "no API line without an API: {out}");
    }

    #[test]
    fn text_escapes_control_characters_from_the_fleet_and_remotes() {
        let mut plan = sample();
        plan.sites[1].error = Some("down\nPlan: 0 to create\u{1b}[2K".into());
        plan.sites[0].findings[0].message = "x\r\n! error [forged] y".into();
        let out = text(&plan, false);
        assert!(!out.contains('\x1b') && !out.contains('\r'), "{out:?}");
        assert!(
            out.lines().all(|l| !l.starts_with("Plan: 0 to create\\")),
            "{out}"
        );
        assert!(
            out.lines().all(|l| !l.starts_with("! error [forged]")),
            "{out}"
        );
        assert!(out.contains("down\\nPlan: 0 to create\\u{1b}[2K"), "{out}");
    }

    #[test]
    fn text_and_json_name_the_api_a_site_was_spoken_to_with() {
        let mut plan = sample();
        plan.sites[1].api = Some("slurmrestd v0.0.42".into());
        let out = text(&plan, false);
        assert!(
            out.contains("site hpc (slurm, apply)\n  api: slurmrestd v0.0.42\n  error: "),
            "{out}"
        );
        assert!(json(&plan).contains("\"api\": \"slurmrestd v0.0.42\""));
        assert!(!json(&sample()).contains("\"api\""));
    }

    #[test]
    fn markdown_has_a_table_and_collapsible_diffs() {
        let out = markdown(&sample());
        assert!(
            out.contains("| eks | Kubernetes | apply | 0 | 1 | 0 | 1 | 1 |"),
            "{out}"
        );
        assert!(
            out.contains("| hpc | Slurm | apply | ? | ? | ? | ? | error |"),
            "{out}"
        );
        assert!(
            out.contains("<details><summary><code>~ ConfigMap ci/x</code> update</summary>"),
            "{out}"
        );
        assert!(out.contains("```diff\n--- live\n+++ desired\n"), "{out}");
    }
}
