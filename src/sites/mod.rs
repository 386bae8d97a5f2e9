//! Site drivers: everything that talks to a Kubernetes cluster or a Slurm cluster.

pub mod slurm;
