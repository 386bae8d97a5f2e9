//! [`Grants`]: the one-time JIT grants of Slurm runner jobs. A job is submitted with a
//! grant (drover's endpoint and a random token, in its environment); when it starts it
//! redeems the token once for its JIT config. Only a hash of each token is kept, and a
//! grant older than its time to live is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{JitGrant, JitRequest, RegistryError};
use crate::credentials::Secret;

/// A Slurm JIT grant waiting to be redeemed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What it was issued for.
    pub request: JitRequest,
    /// When (Unix seconds).
    pub issued_at: u64,
}

/// The grants issued and not yet redeemed, by token hash.
#[derive(Debug)]
pub(crate) struct Grants {
    url: Option<String>,
    ttl: Duration,
    issued: Mutex<HashMap<[u8; 32], Grant>>,
}

impl Grants {
    /// Grants redeemed at `url` (`None`: no endpoint, so none can be issued) within `ttl`.
    pub(crate) fn new(url: Option<String>, ttl: Duration) -> Self {
        Self {
            url,
            ttl,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// Issues a grant for the job `request` describes.
    pub(crate) fn issue(&self, request: &JitRequest) -> Result<JitGrant, RegistryError> {
        let url = self.url.clone().ok_or_else(|| {
            RegistryError::new("drover serve has no JIT URL (`autoscale.jitUrl`)")
        })?;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| RegistryError::new(format!("no randomness: {e}")))?;
        let token = hex::encode(bytes);
        let grant = Grant {
            request: request.clone(),
            issued_at: now_secs(),
        };
        self.book().insert(hash(&token), grant);
        Ok(JitGrant {
            url,
            token: Secret::new(token),
        })
    }

    /// Takes (and so invalidates) the grant of `token`, if it is valid.
    pub(crate) fn take(&self, token: &str) -> Option<Grant> {
        let now = now_secs();
        let ttl = self.ttl.as_secs();
        let mut book = self.book();
        book.retain(|_, g| now.saturating_sub(g.issued_at) <= ttl);
        book.remove(&hash(token))
    }

    fn book(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Grant>> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> JitRequest {
        JitRequest {
            site: "hpc".into(),
            fleet: "f".into(),
            runner_set: "gpu".into(),
            slot: 3,
        }
    }

    #[test]
    fn grants_are_one_time_and_need_a_jit_url() {
        let none = Grants::new(None, Duration::from_secs(60));
        assert!(none.issue(&request()).is_err());
        let grants = Grants::new(
            Some("http://drover:8080/jit".into()),
            Duration::from_secs(60),
        );
        let grant = grants.issue(&request()).unwrap();
        assert_eq!(grant.url, "http://drover:8080/jit");
        assert_eq!(grant.token.expose().len(), 64);
        assert!(grants.take("forged").is_none());
        let taken = grants.take(grant.token.expose()).unwrap();
        assert_eq!(taken.request, request());
        assert!(grants.take(grant.token.expose()).is_none(), "used once");
        let other = grants.issue(&request()).unwrap();
        assert_ne!(other.token.expose(), grant.token.expose());
    }

    #[test]
    fn expired_grants_are_refused() {
        let grants = Grants::new(Some("http://d/jit".into()), Duration::ZERO);
        let grant = grants.issue(&request()).unwrap();
        grants.book().values_mut().for_each(|g| g.issued_at -= 5);
        assert!(grants.take(grant.token.expose()).is_none());
    }
}
