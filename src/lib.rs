//! drover: a GitOps reconciler for self-hosted CI runner fleets.
//!
//! Data flows one way: a fleet repo is loaded and validated ([`fleet`]), each site is
//! observed ([`sites`]), a pure plan is computed, and site drivers apply it.

pub mod autoscale;
pub mod credentials;
pub mod drift;
pub mod fleet;
pub mod github;
pub mod plan;
pub mod pr;
pub mod reconcile;
pub mod redact;
pub mod runners;
pub mod serve;
pub mod sites;
pub mod source;
pub mod text;
pub mod tls;
