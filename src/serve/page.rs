//! The status page: one table row per site (revision, last reconcile, drift, findings,
//! runners), the source state, and validation errors, readable at a glance. Plain HTML with
//! inline CSS, no scripts; it reloads itself every 30 seconds.

use std::fmt::Write;

use super::status::Status;

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn short(rev: Option<&str>) -> String {
    rev.map_or_else(
        || "—".to_string(),
        |r| esc(&r.chars().take(12).collect::<String>()),
    )
}

fn ago(then: u64) -> String {
    let secs = super::clock::now().saturating_sub(then);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// Renders the page.
pub(crate) fn render(status: &Status) -> String {
    let mut out = String::from(HEAD);
    let role = if status.leader {
        "<span class=\"pill good\">leader: applies changes</span>"
    } else {
        "<span class=\"pill warn\">follower: plans only, another replica applies</span>"
    };
    let ready = if status.ready {
        ""
    } else {
        "<span class=\"pill warn\">starting: first reconcile not finished</span>"
    };
    let _ = write!(out, "<p class=\"role\">{role} {ready}</p>");
    let src = &status.source;
    let health = if !src.validation_errors.is_empty() || src.fetch_error.is_some() {
        "bad"
    } else {
        "good"
    };
    let _ = write!(
        out,
        "<section class=\"source {health}\"><h2>Fleet source</h2><p><b>{}</b></p>\
         <p>Applied revision <code>{}</code> · fetched <code>{}</code>{}</p>",
        esc(&src.location),
        short(src.good_revision.as_deref()),
        short(src.fetched_revision.as_deref()),
        src.last_fetch
            .map(|t| format!(" · {}", ago(t)))
            .unwrap_or_default()
    );
    if let Some(err) = &src.fetch_error {
        let _ = write!(out, "<p class=\"err\">Fetch failed: {}</p>", esc(err));
    }
    if !src.validation_errors.is_empty() {
        let _ = write!(
            out,
            "<p class=\"err\">Revision {} refused: it failed validation. Still applying the last good revision.</p><ul>",
            short(src.fetched_revision.as_deref())
        );
        for e in &src.validation_errors {
            let _ = write!(out, "<li><code>{}</code></li>", esc(e));
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
    sites_table(&mut out, status);
    super::drift::render_section(&mut out, &status.drift, status.drift_issues.as_ref());
    if let Some(autoscale) = &status.autoscale {
        autoscale_table(&mut out, autoscale);
    }
    out.push_str("</main></body></html>\n");
    out
}

fn sites_table(out: &mut String, status: &Status) {
    out.push_str(
        "<h2>Sites</h2><table><thead><tr><th>Site</th><th>Kind</th><th>Policy</th><th>State</th>\
         <th>Revision</th><th>Last reconcile</th><th>Drift</th><th>Findings</th><th>Runners</th></tr></thead><tbody>",
    );
    if status.sites.is_empty() {
        out.push_str("<tr><td colspan=\"9\">No site reconciled yet.</td></tr>");
    }
    for (name, site) in &status.sites {
        // A site that could not be observed has unknown drift, never 0.
        let drift = site.changes.map(|c| c.create + c.update + c.delete);
        let findings: Vec<String> = site
            .findings
            .iter()
            .map(|f| format!("{}: {}", esc(&f.subject), esc(&f.message)))
            .collect();
        let runners: Vec<String> = site
            .runner_states
            .iter()
            .map(|(set, states)| {
                let states: Vec<String> = states
                    .iter()
                    .map(|(s, n)| format!("{n} {}", esc(s)))
                    .collect();
                format!("<b>{}</b>: {}", esc(set), states.join(", "))
            })
            .collect();
        let state = site.error.as_ref().map_or_else(
            || format!("<b>{}</b>", esc(&site.outcome.replace('_', "-"))),
            |e| format!("<b class=\"err\">failed:</b> {}", esc(e)),
        );
        let _ = write!(
            out,
            "<tr class=\"{}\"><td><b>{}</b></td><td>{:?}{}</td><td>{}</td><td>{state}</td><td><code>{}</code></td><td class=\"nw\">{} ({} ms)</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            if site.error.is_some() || site.outcome == "failed" {
                "bad"
            } else if drift != Some(0) || !site.findings.is_empty() {
                "warn"
            } else {
                "good"
            },
            esc(name),
            site.kind,
            site.api
                .as_deref()
                .map(|a| format!("<br><small>{}</small>", esc(a)))
                .unwrap_or_default(),
            esc(&site.policy),
            short(site.revision.as_deref()),
            ago(site.last_reconcile),
            site.duration_ms,
            drift.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
            if findings.is_empty() {
                "none".into()
            } else {
                findings.join("<br>")
            },
            if runners.is_empty() {
                "—".into()
            } else {
                runners.join("<br>")
            },
        );
    }
    out.push_str("</tbody></table>");
}

fn autoscale_table(out: &mut String, a: &crate::serve::status::AutoscaleStatus) {
    out.push_str("<h2>Autoscaling</h2>");
    if let Some(err) = &a.error {
        let _ = write!(
            out,
            "<p class=\"err\">Autoscaling is stopped: {}</p>",
            esc(err)
        );
    }
    out.push_str(
        "<table><thead><tr><th>Runner set</th><th>Site</th><th>Queued</th><th>Busy</th><th>Idle</th>\
         <th>Pending</th><th>Desired</th><th>Why</th></tr></thead><tbody>",
    );
    if a.sets.is_empty() {
        out.push_str("<tr><td colspan=\"8\">No runner set scaled yet.</td></tr>");
    }
    for (name, r) in &a.sets {
        let class = if r.pool_at_capacity { "warn" } else { "good" };
        let _ = write!(
            out,
            "<tr class=\"{class}\"><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            esc(&r.site),
            r.queued,
            r.busy,
            r.idle,
            r.pending,
            r.desired,
            esc(&r.explain),
        );
    }
    out.push_str("</tbody></table>");
    if !a.unserved.is_empty() {
        let _ = write!(
            out,
            "<p class=\"err\">{} queued job(s) no runner set can serve:</p><ul>",
            a.unserved.len()
        );
        for j in a.unserved.iter().take(50) {
            let _ = write!(
                out,
                "<li><code>{}</code> job {} [{}]: {}</li>",
                esc(&j.repo),
                j.job_id,
                esc(&j.labels.join(", ")),
                esc(&j.reason)
            );
        }
        out.push_str("</ul>");
    }
}

const HEAD: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"30\"><title>drover status</title><style>\
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1c1e21}\
header{background:#1f2937;color:#fff;padding:12px 24px}main{padding:16px 24px}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:6px 10px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}\
tr.bad td:first-child{border-left:6px solid #dc2626}tr.warn td:first-child{border-left:6px solid #d97706}tr.good td:first-child{border-left:6px solid #16a34a}\
section.source{background:#fff;padding:8px 16px;margin-bottom:16px;border-left:6px solid #16a34a}section.source.bad{border-left-color:#dc2626}\
.err{color:#b91c1c}code{font-size:90%}td:first-child,td code,td.nw{white-space:nowrap}\
.pill{display:inline-block;padding:2px 10px;border-radius:999px;font-size:90%;font-weight:600}.pill.good{background:#dcfce7;color:#166534}.pill.warn{background:#fef3c7;color:#92400e}</style></head><body><header><h1>drover</h1></header><main>";
