//! Shared helpers for drover's integration tests.
//!
//! Compiled once into the one integration-test binary (`tests/it`) and, through `#[path]`,
//! into benchmarks that use only part of it, so unused items are expected here.
#![allow(dead_code, unused_imports)]

pub mod arc;
pub mod flood;
pub mod git_server;
pub mod github_emulator;
pub mod kube_emulator;
pub mod kubelet;
pub mod outage;
pub mod registry;

/// A Slurm test-bed setting from the environment (`DROVER_SLURM_*`); fails loudly, saying
/// how to bring the bed up, when it is missing: these tests need the real Slurm test bed.
pub fn testbed_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run `scripts/slurm-testbed.sh up` and \
             `eval \"$(scripts/slurm-testbed.sh env)\"` first (scripts/test.sh does)"
        )
    })
}

/// The stand-in runner binary, built by `scripts/test.sh` (`cargo build --example
/// fake_runner`) before the tests run. A test must not run cargo itself: under the test
/// runner's environment that rebuilds dependencies.
pub fn fake_runner() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let bin = target.join("debug/examples/fake_runner");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --example fake_runner` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A copy of [`fake_runner`] in `dir`, readable and executable by everyone, for Slurm jobs:
/// they run as the test bed's CI user inside a Slurm root, where the checkout (and a target
/// directory anywhere else) may be out of reach.
pub fn fake_runner_in(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let copy = dir.join("fake_runner");
    std::fs::copy(fake_runner(), &copy).expect("copy fake_runner");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .expect("chmod fake_runner");
    copy
}
pub mod real_apiserver;
pub mod slurm_bed;
