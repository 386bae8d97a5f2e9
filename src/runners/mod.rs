//! Runners as drover plans them: which runner of which runner set a plan line is about.
//!
//! A runner's plan target is named `<set>#<slot>` ([`RunnerId`]): on Slurm the slot is the
//! job's slot number, and a Kubernetes runner Pod about to be created is `<set>#new-<n>`.
//! That name is built and taken apart here and nowhere else.

mod id;

pub use id::{ParseRunnerIdError, RunnerId, Slot};
