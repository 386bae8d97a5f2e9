//! Shared helpers for drover's integration tests.
//!
//! Each integration test binary compiles this tree on its own and uses only part of it,
//! so unused items are expected here.
#![allow(dead_code, unused_imports)]

pub mod git_server;
pub mod github_emulator;
pub mod kube_emulator;
pub mod kubelet;
pub mod registry;
