//! GitHub webhook intake: HMAC-SHA256 signature verification (constant time) and
//! de-duplication of deliveries by their `X-GitHub-Delivery` id. Pure; the HTTP layer
//! calls these.

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// Remembers the last `capacity` delivery ids; GitHub redelivers with the same id.
#[derive(Debug)]
pub struct Deliveries {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Deliveries {
    /// A de-duplicator remembering `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Records a delivery id; `false` when it was seen before.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
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
        let mut d = Deliveries::new(2);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        assert!(d.first_time("b"));
        assert!(d.first_time("c"));
        assert!(d.first_time("a"), "evicted ids are forgotten");
    }
}
