//! Inline-secret detection: the fleet repo holds references to secrets, never their values.
//!
//! Every string in every document is checked for the shapes real credentials have
//! (private key blocks, GitHub tokens, AWS access keys, JWTs such as Slurm's). Values of
//! runner `env` entries are also checked for high entropy, since that is where people paste
//! tokens of shapes we cannot know. The finding never contains the value itself.

use std::sync::LazyLock;

use regex::RegexSet;

/// What kind of secret a value looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretKind {
    /// `-----BEGIN ... PRIVATE KEY-----`
    PrivateKey,
    /// `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` tokens and fine-grained `github_pat_` tokens.
    GithubToken,
    /// `AKIA…` / `ASIA…` access key ids.
    AwsAccessKey,
    /// A JSON Web Token (Slurm's `scontrol token`, GitHub App JWTs, ...).
    Jwt,
    /// A long random-looking value in an environment variable.
    HighEntropy,
}

impl SecretKind {
    /// A short description for messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            SecretKind::PrivateKey => "a private key",
            SecretKind::GithubToken => "a GitHub token",
            SecretKind::AwsAccessKey => "an AWS access key",
            SecretKind::Jwt => "a JSON Web Token (e.g. a Slurm JWT)",
            SecretKind::HighEntropy => "a random secret (high-entropy value)",
        }
    }
}

/// The secret shapes, in one [`RegexSet`] so each string is scanned once; `KINDS[i]` is
/// what pattern `i` finds.
static KINDS: [SecretKind; 4] = [
    SecretKind::PrivateKey,
    SecretKind::GithubToken,
    SecretKind::AwsAccessKey,
    SecretKind::Jwt,
];

static PATTERNS: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----",
        r"\b(gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    ])
    .expect("valid secret patterns")
});

/// Checks one string. `entropy_check` turns on the high-entropy heuristic (used for env
/// values, where nothing legitimate is both long and random).
pub(crate) fn scan(value: &str, entropy_check: bool) -> Option<SecretKind> {
    if let Some(i) = PATTERNS.matches(value).iter().next() {
        return Some(KINDS[i]);
    }
    (entropy_check && looks_random(value)).then_some(SecretKind::HighEntropy)
}

/// A value of 20+ characters drawn from a token alphabet (base64, base64url, hex), mixing
/// character classes, with more than 3.5 bits of entropy per character. Image references,
/// paths and URLs contain `:` `.` or start with `/`, so they never qualify.
fn looks_random(value: &str) -> bool {
    let token_alphabet = |c: char| c.is_ascii_alphanumeric() || "+/=_-".contains(c);
    if value.len() < 20 || value.starts_with('/') || !value.chars().all(token_alphabet) {
        return false;
    }
    // Names like `my-runner-set-01` are words joined by separators; tokens rarely are.
    let separators = value.chars().filter(|c| *c == '-' || *c == '_').count();
    if separators * 10 > value.len() {
        return false;
    }
    let classes = [
        value.chars().any(|c| c.is_ascii_lowercase()),
        value.chars().any(|c| c.is_ascii_uppercase()),
        value.chars().any(|c| c.is_ascii_digit()),
    ];
    classes.iter().filter(|c| **c).count() >= 2 && shannon_entropy(value) > 3.5
}

fn shannon_entropy(value: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in value.bytes() {
        counts[b as usize] += 1;
    }
    let len = value.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_shapes() {
        let ghp = format!("ghp_{}", "a1B2c3D4e5".repeat(4));
        assert_eq!(scan(&ghp, false), Some(SecretKind::GithubToken));
        let pat = format!("github_pat_{}", "11ABCDEFG0abcdefghij_K".repeat(3));
        assert_eq!(scan(&pat, false), Some(SecretKind::GithubToken));
        assert_eq!(
            scan("AKIAIOSFODNN7EXAMPLE", false),
            Some(SecretKind::AwsAccessKey)
        );
        assert_eq!(
            scan("-----BEGIN RSA PRIVATE KEY-----\nMIIE...", false),
            Some(SecretKind::PrivateKey)
        );
        assert_eq!(
            scan(
                "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2lnbmF0dXJlLXZhbHVl",
                false
            ),
            Some(SecretKind::Jwt)
        );
    }

    #[test]
    fn ordinary_values_pass() {
        for v in [
            "ghcr.io/actions/actions-runner:2.321.0",
            "https://github.com",
            "self-hosted",
            "gpu:a100:4",
            "RUNNER_ALLOW_RUNASROOT",
            "/var/run/secrets/drover/app.pem",
            "0123456789012345678901234",
            "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",
            "my-runner-set-with-a-long-name-01",
        ] {
            assert_eq!(scan(v, true), None, "{v}");
        }
    }

    #[test]
    fn random_env_values_are_flagged() {
        assert_eq!(
            scan("x9F2kLq8Zr4Tt7Vb1Nm3Qw6Ye0", true),
            Some(SecretKind::HighEntropy)
        );
        assert_eq!(scan("x9F2kLq8Zr4Tt7Vb1Nm3Qw6Ye0", false), None);
    }
}
