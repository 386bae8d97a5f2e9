//! Runners as drover plans them: which runner of which runner set a plan line is about.
//!
//! A runner has two names, each built and taken apart here and nowhere else: its GitHub
//! name ([`runner_name`], `drover-<fleet>-<set>-<suffix>`) and its plan target.
//!
//! A runner's plan target is named `<set>#<slot>` ([`RunnerId`]): on Slurm the slot is the
//! job's slot number, and a Kubernetes runner Pod about to be created is `<set>#new-<n>`.
//!
//! Site drivers reach GitHub's view of runners only through [`RunnerRegistry`], which
//! the autoscaler implements.
//!
//! Which runners go when a set scales down is decided once, by [`scale_down`], for both
//! site kinds.

pub mod grants;
mod id;
mod name;
mod registry;
pub(crate) mod scale_down;

pub use id::{ParseRunnerIdError, RunnerId, Slot};
pub use name::{runner_name, runner_prefix, set_of_runner};
pub use registry::{
    JitGrant, JitRequest, RegisteredRunner, RegistryError, Removal, RunnerRegistry,
};
