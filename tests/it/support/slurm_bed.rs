//! One Slurm generation of the test beds that `scripts/slurm-testbed.sh up` starts, each in
//! its own Debian root: 22.05 (bookworm), 24.11 (trixie) and 26.05 (sid).
//!
//! A test that runs on every generation is written once, taking a [`Bed`], and listed in
//! [`per_generation!`](crate::per_generation), which makes one test per generation named
//! `slurm_22_05::NAME`, `slurm_24_11::NAME` and `slurm_26_05::NAME`. A missing test bed
//! fails the test loudly; nothing is skipped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// The generations the test beds run, oldest first.
pub const GENERATIONS: [&str; 3] = ["22.05", "24.11", "26.05"];

/// One running Slurm generation, read from `$DROVER_SLURM_BEDS/GEN/env`.
#[derive(Debug, Clone)]
pub struct Bed {
    /// `22.05`, `24.11` or `26.05`.
    pub generation: String,
    /// The Debian package version of slurmctld in the root, e.g. `24.11.5-4+deb13u1`.
    pub version: String,
    /// The main slurmrestd, e.g. `http://127.0.0.1:6922`.
    pub url: String,
    /// The Slurm user jobs are submitted as.
    pub user: String,
    /// A JWT for `user`, valid for a week.
    pub token: String,
    /// A real JWT for `user` that expired a second after `up` minted it.
    pub expired_token: String,
    /// slurm.conf, the same path inside the root and outside.
    pub conf: String,
    /// Wrappers that run this generation's sbatch/squeue/scancel/scontrol/sinfo in its root.
    pub bin: PathBuf,
    /// A directory every user can work in, the same path for jobs and tests.
    pub workdir: String,
    /// A slurmrestd whose slurmctld is stopped.
    pub ctld_down_url: String,
    /// A slurmrestd port with nothing listening (slurmrestd stopped).
    pub rest_down_url: String,
    /// Every setting of the env file, for generation-specific extras (`REST_URL_V0040`, …).
    pub extra: BTreeMap<String, String>,
}

impl Bed {
    /// The test bed of `generation`; panics with what to run when it is not up.
    pub fn load(generation: &str) -> Self {
        let base = std::env::var("DROVER_SLURM_BEDS").unwrap_or_else(|_| {
            panic!(
                "DROVER_SLURM_BEDS is not set: run `scripts/slurm-testbed.sh up` and \
                 `eval \"$(scripts/slurm-testbed.sh env)\"` first (these tests need the real Slurm test beds)"
            )
        });
        let path = PathBuf::from(base).join(generation).join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the Slurm {generation} test bed is not up ({}: {e}): run `scripts/slurm-testbed.sh up {generation}`",
                path.display()
            )
        });
        let extra: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let get = |key: &str| {
            extra
                .get(key)
                .cloned()
                .unwrap_or_else(|| panic!("{} has no {key}", path.display()))
        };
        Self {
            generation: get("GENERATION"),
            version: get("VERSION"),
            url: get("REST_URL"),
            user: get("USER"),
            token: get("TOKEN"),
            expired_token: get("EXPIRED_TOKEN"),
            conf: get("CONF"),
            bin: PathBuf::from(get("BIN")),
            workdir: get("WORKDIR"),
            ctld_down_url: get("FAULT_CTLD_DOWN_URL"),
            rest_down_url: get("FAULT_REST_DOWN_URL"),
            extra,
        }
    }

    /// The bed that single-generation tests use (`DROVER_SLURM_REST_URL` and friends name
    /// the same one).
    pub fn default_bed() -> Self {
        let url = std::env::var("DROVER_SLURM_REST_URL").unwrap_or_default();
        GENERATIONS
            .iter()
            .map(|g| Self::load(g))
            .find(|b| b.url == url)
            .unwrap_or_else(|| Self::load("24.11"))
    }

    /// A command running this generation's `tool` (sbatch, squeue, scancel, scontrol,
    /// sinfo) inside its root, with `SLURM_CONF` set.
    pub fn tool(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// Runs `scontrol ARGS` and panics when it fails.
    pub fn scontrol(&self, args: &[&str]) {
        let status = self
            .tool("scontrol")
            .args(args)
            .status()
            .expect("run scontrol");
        assert!(
            status.success(),
            "scontrol {args:?} failed on Slurm {}",
            self.generation
        );
    }

    /// Cancels every job whose name starts with `prefix` (as root).
    pub fn cancel_named(&self, prefix: &str) {
        let out = self
            .tool("squeue")
            .args(["-h", "-o", "%i %j"])
            .output()
            .expect("run squeue");
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, name)| name.starts_with(prefix))
            .map(|(id, _)| id.to_owned())
            .collect();
        if !ids.is_empty() {
            let _ = self.tool("scancel").args(&ids).status();
        }
    }
}

/// A command running `tool` (sbatch, squeue, …) of the default test bed, the one
/// `DROVER_SLURM_BIN` names, for tests that need one Slurm of any generation.
pub fn tool(tool: &str) -> Command {
    let bin = std::env::var("DROVER_SLURM_BIN").unwrap_or_else(|_| {
        panic!("DROVER_SLURM_BIN is not set: run `eval \"$(scripts/slurm-testbed.sh env)\"` first")
    });
    Command::new(PathBuf::from(bin).join(tool))
}

/// One test per Slurm generation for each listed `async fn NAME(bed: Bed)`:
/// `per_generation!(apply_works, scale_down);` gives `slurm_22_05::apply_works`, ….
#[macro_export]
macro_rules! per_generation {
    ($($name:ident),* $(,)?) => {
        $crate::per_generation!(@gen slurm_22_05, "22.05", $($name),*);
        $crate::per_generation!(@gen slurm_24_11, "24.11", $($name),*);
        $crate::per_generation!(@gen slurm_26_05, "26.05", $($name),*);
    };
    (@gen $module:ident, $generation:literal, $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::slurm_bed::Bed::load($generation)).await;
                }
            )*
        }
    };
}
