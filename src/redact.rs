//! The one redaction layer: keeping credentials out of every message drover shows (errors,
//! logs, `/status`, the page, plans and pull-request output).
//!
//! A [`Redactor`] replaces, in any text:
//! 1. every value the process knows to be secret: each credential drover resolved
//!    ([`remember`], called by [`crate::credentials::resolve`]) and each value given to
//!    [`Redactor::know`] (a remote's token, SSH key and URL userinfo);
//! 2. a URL given with [`Redactor::with_url`] by its display form ([`strip_credentials`]);
//! 3. everything shaped like a credential: private key blocks, GitHub tokens, AWS access
//!    keys, JWTs, `Authorization`/`X-SLURM-USER-TOKEN` header values, and token-like query
//!    parameters of URLs;
//! 4. the `value` of every `name`/`value` pair (and `NAME: value` environment line) whose
//!    name looks like a credential (`*PASSWORD*`, `*TOKEN*`, `*SECRET*`, `*API_KEY*`, ...).
//!
//! Secret `data`/`stringData` values are masked earlier still, by the Kubernetes plan
//! ([`crate::sites::kubernetes::normalize`]), and Slurm SecretRef env values by the Slurm
//! renderer. [`Redactor::plan`] applies the layer to every text of a plan before any
//! renderer sees it; pull-request output (world-readable on public repos) also passes its
//! final text through [`Redactor::text`].

use std::sync::{LazyLock, RwLock};

use regex::Regex;

use crate::plan::{ApplyReport, Plan, SitePlan};

/// What masked values are replaced with.
pub const MASK: &str = "<redacted>";

/// Every secret value this process has resolved: every [`Redactor`] masks them.
static REMEMBERED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers a secret value this process resolved, so that no text any [`Redactor`]
/// produces shows it (values shorter than 4 characters are ignored: they would mask
/// ordinary text).
pub fn remember(value: &str) {
    let v = value.trim();
    if v.chars().count() < 4 {
        return;
    }
    let mut known = REMEMBERED.write().unwrap_or_else(|e| e.into_inner());
    if !known.iter().any(|k| k == v) {
        known.push(v.to_owned());
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

static SHAPES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\z)",
        r"\b(gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        r#"(?i)(?P<keep>\bauthorization"?: *"?(bearer|basic|token) +)[^\s,;"']+"#,
        r#"(?i)(?P<keep>\bx-slurm-user-token"?: *"?)[^\s,;"']+"#,
        r#"(?i)(?P<keep>[?&](access_token|token|auth|key|sig|signature|password)=)[^&\s"'#]+"#,
    ]
    .iter()
    .map(|p| Regex::new(p).expect("valid mask pattern"))
    .collect()
});

/// `name: X` (YAML, possibly as a list item, possibly behind a diff or text prefix).
static NAME_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?P<pre>.*?)(?P<key>name): *"?(?P<name>[A-Za-z0-9_.-]+)"? *$"#).expect("valid")
});
/// Where a line's first key starts, and whether a list item starts there.
static KEY_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?P<pre>[ +-]*?)(?P<item>- )?(?P<key>[A-Za-z0-9_"])"#).expect("valid")
});
/// `value: X`.
static VALUE_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?P<pre>.*?)(?P<key>value): (?P<value>.+)$").expect("valid"));
/// `ENV_NAME: X` (an environment map, as Slurm job specs show it).
static ENV_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?P<pre>.*?)(?P<key>"?[A-Z][A-Z0-9_]*"?): (?P<value>.+)$"#).expect("valid")
});
/// Environment variable names that hold credentials.
static CREDENTIAL_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(passw(or)?d|passwd|secret|token|credential|api[_-]?key|private[_-]?key|access[_-]?key|auth)")
        .expect("valid")
});

/// The URL without embedded credentials: the userinfo of `scheme://user:pass@host/...` is
/// removed and a query string is replaced by `?<redacted>`. scp-like URLs
/// (`git@host:path`) and local paths carry no password and are returned unchanged.
pub fn strip_credentials(url: &str) -> String {
    let Some(u) = UrlParts::of(url) else {
        return url.to_owned();
    };
    let path = match u.rest.find(['?', '#']) {
        Some(i) if u.rest[i..].starts_with('?') => format!("{}?{MASK}", &u.rest[..i]),
        Some(i) => u.rest[..i].to_owned(),
        None => u.rest.to_owned(),
    };
    format!("{}{}{path}", u.scheme, u.host)
}

/// The host (and port) of a `scheme://` URL, lowercased; `None` for other forms.
pub fn host_of(url: &str) -> Option<String> {
    UrlParts::of(url).map(|u| u.host.to_ascii_lowercase())
}

/// A `scheme://[userinfo@]host[/path?query#fragment]` URL taken apart.
struct UrlParts<'a> {
    /// `scheme://`.
    scheme: &'a str,
    /// `user:password`, when given.
    userinfo: Option<&'a str>,
    /// Host and port.
    host: &'a str,
    /// Path, query and fragment.
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    /// `None` for scp-like URLs (`git@host:path`) and local paths.
    fn of(url: &'a str) -> Option<Self> {
        let (scheme, rest) = url.split_at(url.find("://")? + 3);
        let (authority, rest) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        Some(Self {
            scheme,
            userinfo,
            host,
            rest,
        })
    }
}

/// Whether an environment variable name looks like it holds a credential.
pub fn is_credential_name(name: &str) -> bool {
    CREDENTIAL_NAME.is_match(name)
}

/// Scrubs text of known secret values and credential shapes.
#[derive(Clone, Default)]
pub struct Redactor {
    known: Vec<String>,
    /// A URL to show by its display form: (raw, display).
    url: Option<(String, String)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} known values)", self.known.len())
    }
}

impl Redactor {
    /// A redactor with no known values (shapes and credential names only).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value that must never be shown (ignored when shorter than 4 characters,
    /// which would mask ordinary text).
    pub fn know(&mut self, value: &str) {
        let v = value.trim();
        if v.chars().count() >= 4 && !self.known.iter().any(|k| k == v) {
            self.known.push(v.to_string());
            // Longest first, so a value containing another is replaced whole.
            self.known.sort_by_key(|k| std::cmp::Reverse(k.len()));
        }
    }

    /// Also shows `raw_url` by its display form, and never shows its userinfo.
    pub fn with_url(mut self, raw_url: &str) -> Self {
        if let Some(userinfo) = UrlParts::of(raw_url).and_then(|u| u.userinfo) {
            self.know(userinfo);
            if let Some((_, password)) = userinfo.split_once(':') {
                self.know(password);
            }
        }
        self.url = Some((raw_url.to_owned(), strip_credentials(raw_url)));
        self
    }

    /// The display form of the URL given to [`Redactor::with_url`] ("" without one).
    pub fn display_url(&self) -> &str {
        self.url.as_ref().map_or("", |(_, d)| d.as_str())
    }

    /// `text` with the URL shown by its display form, and known values, credential shapes
    /// and values of credential-named `name`/`value` pairs masked.
    pub fn text(&self, text: &str) -> String {
        let mut out = match &self.url {
            Some((raw, display)) => text.replace(raw.as_str(), display),
            None => text.to_string(),
        };
        for k in &self.known {
            if out.contains(k.as_str()) {
                out = out.replace(k.as_str(), MASK);
            }
        }
        for k in REMEMBERED.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if out.contains(k.as_str()) {
                out = out.replace(k.as_str(), MASK);
            }
        }
        for re in SHAPES.iter() {
            if re.is_match(&out) {
                // Shapes with a `keep` group (a header name, `?token=`) keep it.
                out = re
                    .replace_all(&out, format!("${{keep}}{MASK}").as_str())
                    .into_owned();
            }
        }
        mask_named_values(&out)
    }

    /// Masks every text of a plan in place (diffs, reasons, findings, errors).
    pub fn plan(&self, plan: &mut Plan) {
        for site in &mut plan.sites {
            self.site_plan(site);
            for c in &mut site.changes {
                if let Some(d) = &mut c.diff {
                    *d = self.text(d);
                }
            }
        }
    }

    /// Masks the texts of a site's plan that can carry what a remote said: its error, the
    /// reasons of its changes and its findings. (Diffs come from the fleet and the live
    /// objects, whose secret values the planners mask; [`Redactor::plan`] masks them too.)
    pub fn site_plan(&self, plan: &mut SitePlan) {
        if let Some(e) = &mut plan.error {
            *e = self.text(e);
        }
        for c in &mut plan.changes {
            if let Some(r) = &mut c.reason {
                *r = self.text(r);
            }
        }
        for f in &mut plan.findings {
            f.message = self.text(&f.message);
            f.subject = self.text(&f.subject);
        }
    }

    /// Masks the texts of an apply report (failed changes, the refusal).
    pub fn report(&self, report: &mut ApplyReport) {
        for (_, _, error) in &mut report.failed {
            *error = self.text(error);
        }
        if let Some(r) = &mut report.refused {
            *r = self.text(r);
        }
    }
}

/// Masks the `value:` line that belongs to the same item as a credential-named `name:`
/// line (same column of the key), line by line, whatever prefix (diff sign, indentation)
/// the lines carry.
fn mask_named_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Column of the `name` key of the current credential-named item.
    let mut armed: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        // Leaving the item (a new list item, or a key of a parent) disarms.
        if let (Some(col), Some(k)) = (armed, KEY_START.captures(body)) {
            let key = k.name("key").expect("group");
            if k.name("item").is_some() || display_column(body, key.start()) < col {
                armed = None;
            }
        }
        if let Some(c) = NAME_LINE.captures(body) {
            let column = display_column(body, c.name("key").map_or(0, |m| m.start()));
            armed = is_credential_name(&c["name"]).then_some(column);
            out.push_str(line);
            continue;
        }
        if let (Some(col), Some(c)) = (armed, VALUE_LINE.captures(body)) {
            let key = c.name("key").expect("group");
            if display_column(body, key.start()) == col
                && c["value"].trim() != format!("\"{MASK}\"")
            {
                out.push_str(&body[..key.end()]);
                out.push_str(&format!(": \"{MASK}\""));
                out.push_str(ending);
                continue;
            }
        }
        if let Some(c) = ENV_LINE.captures(body) {
            let key = c.name("key").expect("group");
            let value = c["value"].trim_start_matches('"');
            if is_credential_name(key.as_str()) && !value.starts_with('<') {
                out.push_str(&body[..key.end()]);
                out.push_str(&format!(": \"{MASK}\""));
                out.push_str(ending);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// The column of a byte offset, with a leading `- ` list marker counted as indentation and
/// a one-character diff sign ignored, so `- name:` and `  value:` of one item line up.
fn display_column(line: &str, offset: usize) -> usize {
    let before = &line[..offset];
    let before = before.strip_prefix(['+', '-', ' ']).unwrap_or(before);
    before.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_query_are_stripped() {
        assert_eq!(
            strip_credentials("https://x-access-token:ghs_abc@github.com/org/fleet.git"),
            "https://github.com/org/fleet.git"
        );
        assert_eq!(
            strip_credentials("https://github.com/org/fleet.git?token=abc#frag"),
            "https://github.com/org/fleet.git?<redacted>"
        );
        assert_eq!(
            strip_credentials("git@github.com:org/fleet.git"),
            "git@github.com:org/fleet.git"
        );
        assert_eq!(strip_credentials("file:///srv/fleet"), "file:///srv/fleet");
        assert_eq!(strip_credentials("http://u:p@h:8080"), "http://h:8080");
    }

    #[test]
    fn hosts_compare_without_userinfo_or_case() {
        assert_eq!(
            host_of("https://tok@GitHub.com:443/org/x").as_deref(),
            Some("github.com:443")
        );
        assert_eq!(host_of("git@github.com:org/x"), None);
    }

    #[test]
    fn urls_show_without_userinfo_and_headers_without_values() {
        let url = "https://user:hunter22@example.com/fleet.git";
        let r = Redactor::new().with_url(url);
        let msg = r.text(&format!("failed {url}; retried with hunter22"));
        assert!(!msg.contains("hunter22"), "{msg}");
        assert!(msg.contains("https://example.com/fleet.git"), "{msg}");
        assert_eq!(r.display_url(), "https://example.com/fleet.git");
        let headers = "Authorization: Bearer abc.def-123, X-SLURM-USER-TOKEN: t0ken1234 GET /x?a=1&token=zzz9&b=2";
        let out = Redactor::new().text(headers);
        assert_eq!(
            out,
            "Authorization: Bearer <redacted>, X-SLURM-USER-TOKEN: <redacted> GET /x?a=1&token=<redacted>&b=2"
        );
    }

    #[test]
    fn credential_shapes_and_known_values_are_masked() {
        let mut m = Redactor::new();
        m.know("s3cr3t-value");
        let token = format!("ghp_{}", "a1B2".repeat(9));
        let out = m.text(&format!("x {token} y s3cr3t-value AKIAABCDEFGHIJKLMNOP"));
        assert_eq!(out, "x <redacted> y <redacted> <redacted>");
    }

    #[test]
    fn credential_named_env_values_are_masked_in_diffs_and_text() {
        let diff = "--- base\n+++ pull request\n@@ -1 +1 @@\n           env:\n-          - name: DB_PASSWORD\n-            value: hunter2\n+          - name: DB_PASSWORD\n+            value: hunter3\n           - name: LOG_LEVEL\n             value: debug\n";
        let out = Redactor::new().text(diff);
        assert!(!out.contains("hunter"), "{out}");
        assert!(
            out.contains("+            value: \"<redacted>\"\n"),
            "{out}"
        );
        assert!(out.contains("value: debug"), "{out}");
        // A later `value:` of another item at the same column is not a credential.
        let tolerations = " - name: API_TOKEN\n   valueFrom: {}\n - key: gpu\n   value: \"true\"\n";
        assert!(
            Redactor::new()
                .text(tolerations)
                .contains("value: \"true\"")
        );
        // Text plan output indents the diff by six spaces.
        let text = "      +  - name: API_TOKEN\n      +    value: abc\n";
        assert!(!Redactor::new().text(text).contains("abc"));
        let env_map = "+    environment:\n+      DB_PASSWORD: hunter2\n+      GITHUB_TOKEN: <secret from SecretRef gh>\n+      LEVEL: debug\n";
        let out = Redactor::new().text(env_map);
        assert!(
            !out.contains("hunter2") && out.contains("<secret from SecretRef gh>"),
            "{out}"
        );
        assert!(out.contains("LEVEL: debug"), "{out}");
    }
}
