//! TLS setup shared by every HTTP client drover builds (kube, slurmrestd, GitHub).
//!
//! drover links exactly one rustls crypto provider, ring, so no C toolchain is needed for
//! aws-lc. rustls panics when a client is built and no process-wide provider is installed
//! (or when two are linked and none is chosen), so every client constructor calls
//! [`install_crypto_provider`] first.

/// Installs ring as the process-wide rustls crypto provider; idempotent.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // A concurrent caller may win the race; either way ring is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
