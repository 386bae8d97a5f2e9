//! Keeping credentials out of messages: URLs without userinfo or query, and messages
//! from libgit2 scrubbed of every secret value the source knows.

use super::GitAuth;

const REDACTED: &str = "<redacted>";

/// The URL without embedded credentials: the userinfo of `scheme://user:pass@host/...` is
/// removed and a query string is replaced by `?<redacted>`. scp-like URLs
/// (`git@host:path`) and local paths carry no password and are returned unchanged.
pub fn strip_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let path = match path.find(['?', '#']) {
        Some(i) if path[i..].starts_with('?') => format!("{}?{REDACTED}", &path[..i]),
        Some(i) => path[..i].to_owned(),
        None => path.to_owned(),
    };
    format!("{scheme}{host}{path}")
}

/// The host (and port) of a `scheme://` URL, lowercased; `None` for other forms.
pub(crate) fn host_of(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    Some(host.to_ascii_lowercase())
}

/// Replaces every known secret (and the raw URL) in a message.
#[derive(Clone)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
    raw_url: String,
    display_url: String,
}

impl Redactor {
    pub(crate) fn new(raw_url: &str, auth: &GitAuth) -> Self {
        let mut secrets = Vec::new();
        match auth {
            GitAuth::None => {}
            GitAuth::Token(token) => secrets.push(token.expose().to_owned()),
            GitAuth::SshKey {
                private_key,
                passphrase,
            } => {
                secrets.push(private_key.expose().to_owned());
                // A message quoting part of a key would still leak it: redact every
                // line long enough to matter.
                secrets.extend(
                    private_key
                        .expose()
                        .lines()
                        .map(str::trim)
                        .filter(|l| l.len() >= 8 && !l.starts_with("-----"))
                        .map(str::to_owned),
                );
                if let Some(p) = passphrase {
                    secrets.push(p.expose().to_owned());
                }
            }
        }
        // The userinfo of the URL (user:password) is a secret too.
        if let Some(rest) = raw_url.split_once("://").map(|(_, r)| r) {
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                secrets.push(userinfo.to_owned());
                if let Some((_, password)) = userinfo.split_once(':') {
                    secrets.push(password.to_owned());
                }
            }
        }
        secrets.retain(|s| !s.is_empty());
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self {
            secrets,
            raw_url: raw_url.to_owned(),
            display_url: strip_credentials(raw_url),
        }
    }

    /// The URL to show.
    pub(crate) fn display_url(&self) -> &str {
        &self.display_url
    }

    /// The message with the raw URL replaced by the display URL and every secret removed.
    pub(crate) fn redact(&self, message: &str) -> String {
        let mut out = message.replace(&self.raw_url, &self.display_url);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Secret;

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
    fn messages_lose_every_secret() {
        let auth = GitAuth::Token(Secret::new("ghs_TOPSECRET"));
        let url = "https://user:hunter22@example.com/fleet.git";
        let r = Redactor::new(url, &auth);
        let msg = r.redact(&format!("failed {url} with ghs_TOPSECRET and hunter22"));
        assert!(
            !msg.contains("TOPSECRET") && !msg.contains("hunter22"),
            "{msg}"
        );
        assert!(msg.contains("https://example.com/fleet.git"), "{msg}");
    }
}
