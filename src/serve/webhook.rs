//! GitHub webhook intake: HMAC-SHA256 signature verification (constant time) and
//! de-duplication of deliveries by their `X-GitHub-Delivery` id. Pure; the HTTP layer
//! calls these.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Largest webhook body accepted, in bytes (GitHub caps payloads at 25 MB; push events
/// for a fleet repo are far smaller).
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// The header is not `sha256=<hex>`.
    #[error("malformed X-Hub-Signature-256 header")]
    Malformed,
    /// The signature does not match the body.
    #[error("signature does not match")]
    Mismatch,
}

/// Verifies `X-Hub-Signature-256: sha256=<hex>` over the raw body, in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_sig = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The signature header value for a body (used by tests and tools that send deliveries).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long a delivery id is remembered: GitHub redelivers (automatically or by hand from
/// the App's settings) with the same id, usually within minutes.
pub const DELIVERY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Most delivery ids remembered at once (32 bytes each: a bound in memory, whatever the
/// ids' length).
pub const DELIVERY_CAPACITY: usize = 100_000;

/// Remembers delivery ids for a time window, up to a number of them: bounded in memory (a
/// fixed-size digest per id, at most `capacity`) and in time (forgotten after `window`).
/// GitHub redelivers with the same id; the id is not covered by the signature (see
/// docs/serve.md, "Webhooks", for what that means for replays).
#[derive(Debug)]
pub struct Deliveries {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<([u8; 32], Instant)>,
    capacity: usize,
    window: Duration,
}

impl Deliveries {
    /// A de-duplicator remembering at most `capacity` ids, each for `window`.
    pub fn new(capacity: usize, window: Duration) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
            window,
        }
    }

    /// Records a delivery id arriving now; `false` when it was seen within the window.
    pub fn first_time(&mut self, id: &str) -> bool {
        self.first_time_at(id, Instant::now())
    }

    /// [`Deliveries::first_time`] at a given instant.
    pub fn first_time_at(&mut self, id: &str, now: Instant) -> bool {
        while let Some((old, at)) = self.order.front() {
            if now.duration_since(*at) < self.window && self.order.len() < self.capacity {
                break;
            }
            self.seen.remove(old);
            self.order.pop_front();
        }
        let digest: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        if self.seen.contains(&digest) {
            return false;
        }
        if self.capacity > 0 {
            self.seen.insert(digest);
            self.order.push_back((digest, now));
        }
        true
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_its_own_signature_and_refuses_others() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let header = sign(b"s3cret", body);
        assert_eq!(verify(b"s3cret", body, Some(&header)), Ok(()));
        assert_eq!(
            verify(b"other", body, Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", b"tampered", Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"s3cret", body, None), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"s3cret", body, Some("sha1=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"s3cret", body, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn deliveries_are_deduplicated_within_capacity() {
        let mut d = Deliveries::new(2, DELIVERY_WINDOW);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        assert!(d.first_time("b"));
        assert!(d.first_time("c"));
        assert!(d.first_time("a"), "evicted ids are forgotten");
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn deliveries_are_forgotten_after_the_window() {
        let window = Duration::from_secs(60);
        let mut d = Deliveries::new(10, window);
        let t0 = Instant::now();
        assert!(d.first_time_at("a", t0));
        assert!(!d.first_time_at("a", t0 + Duration::from_secs(59)));
        assert!(d.first_time_at("b", t0 + Duration::from_secs(30)));
        assert!(
            d.first_time_at("a", t0 + window),
            "expired ids are forgotten"
        );
        assert_eq!(d.len(), 2, "the expired entry was dropped, a and b remain");
    }

    #[test]
    fn memory_does_not_grow_with_the_length_of_ids() {
        let mut d = Deliveries::new(3, DELIVERY_WINDOW);
        for n in 0..1000 {
            assert!(d.first_time(&format!("{n}{}", "x".repeat(10_000))));
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.seen.len(), 3);
    }
}
