//! Container jobs for real: runner jobs that drover renders for a Slurm runner set with a
//! `container` run in Apptainer on the Slurm 26.05 test bed (Debian sid, Apptainer 1.4.5),
//! as the unprivileged submit user, with `--userns`.
//!
//! The images come from `scripts/slurm-testbed.sh up 26.05`, built without any registry: a
//! directory sandbox (`APPTAINER_SANDBOX`: dash, its libraries and a marker file
//! `/drover-sandbox`) and the same tree as an OCI archive (`APPTAINER_OCI_ARCHIVE`), which
//! Apptainer converts to SIF in its image cache.
//!
//! Each test writes a fleet (random name) whose runner set runs a shell command in the
//! container, renders it with drover, submits slot 1 through drover's CLI driver as the
//! bed's user, waits for the job to end and reads what the container printed
//! (`slurm-<id>.out` in the site's scratch directory). Needs `scripts/slurm-testbed.sh up`
//! and `eval "$(scripts/slurm-testbed.sh env)"`; a missing test bed fails the tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::slurm_bed::Bed;
use drover::fleet::{LoadOptions, Validation, validate_dir};
use drover::sites::slurm::cli::{CliConfig, CliDriver};
use drover::sites::slurm::render::{RunnerTemplate, render};
use drover::sites::slurm::{JobSpec, SlurmDriver};
use drover::sites::{RunOptions, SiteContext};

/// The generation whose root has Apptainer.
const GENERATION: &str = "26.05";

/// What the job runs inside the container (dash, the only shell in the images): each line
/// it prints is checked by the tests. `(: > FILE)` tries a write without any other binary.
const PROBE: &str = r#"read m < /drover-sandbox && echo "sandbox: $m"
if [ -e /usr/bin/apptainer ]; then echo "host /usr: visible"; else echo "host /usr: hidden"; fi
read t < /shared/tool.txt && echo "shared: $t"
if (: > /shared/probe) 2>/dev/null; then echo "shared: writable"; else echo "shared: read-only"; fi
read d < /data/in.txt && echo "data: $d"
if (: > /data/probe) 2>/dev/null; then echo "data: writable"; else echo "data: read-only"; fi
echo "written in the container" > /results/out.txt && echo "results: writable"
echo "work: $PWD"
"#;

fn random_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut x = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    (0..8)
        .map(|_| {
            let c = b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize];
            x /= 36;
            char::from(c)
        })
        .collect()
}

fn mkdir(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// A fleet with one containerised runner set on the 26.05 bed, and the host directories
/// its binds and caches use. Cancels its jobs when dropped.
struct ContainerFleet {
    bed: Bed,
    name: String,
    validation: Validation,
    /// The site's `scratchDir` (job directories and Slurm's `slurm-<id>.out`).
    scratch: PathBuf,
    /// Bound read-only at `/shared` by the site.
    shared: PathBuf,
    /// Bound read-only at `/data` by the runner set.
    data: PathBuf,
    /// Bound read-write at `/results` by the runner set.
    results: PathBuf,
    /// The site's `imageCacheDir` (not created beforehand: the job creates it).
    site_cache: PathBuf,
    /// The runner set's own `imageCacheDir`, when it has one.
    set_cache: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// Rootless Apptainer (`--userns`) needs unprivileged user namespaces on the node; says
/// so plainly when this machine refuses them to `user`, rather than failing in a job log.
fn assert_user_namespaces(user: &str) {
    let out = Command::new("runuser")
        .args([
            "-u",
            user,
            "--",
            "unshare",
            "--user",
            "--map-root-user",
            "true",
        ])
        .output()
        .expect("run runuser");
    assert!(
        out.status.success(),
        "this machine refuses unprivileged user namespaces to {user}, which rootless Apptainer \
         (--userns) needs (kernel.unprivileged_userns_clone, user.max_user_namespaces, an \
         AppArmor or seccomp policy): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl ContainerFleet {
    /// `image` is the runner set's `container.image`; `own_cache` gives the set its own
    /// `imageCacheDir` instead of the site's.
    fn new(tag: &str, image: &str, own_cache: bool) -> Self {
        let bed = Bed::load(GENERATION);
        assert_user_namespaces(&bed.user);
        let name = format!("c{tag}-{}", random_suffix());
        // Under /tmp, which is the same path inside the test bed's root.
        let dir = tempfile::tempdir().unwrap();
        mkdir(dir.path(), 0o755);
        let scratch = mkdir(&dir.path().join("scratch"), 0o1777);
        let shared = mkdir(&dir.path().join("site-shared"), 0o755);
        write(&shared.join("tool.txt"), "site tool\n");
        let data = mkdir(&dir.path().join("datasets"), 0o755);
        write(&data.join("in.txt"), "dataset v1\n");
        let results = mkdir(&dir.path().join("results"), 0o777);
        let persist = mkdir(&dir.path().join("persist"), 0o1777);
        let site_cache = persist.join("site-cache");
        let set_cache = own_cache.then(|| persist.join("set-cache"));
        let fleet_dir = mkdir(&dir.path().join("fleet"), 0o755);
        let set_cache_line = set_cache
            .as_ref()
            .map(|c| format!("    imageCacheDir: {}\n", c.display()))
            .unwrap_or_default();
        let yaml = format!(
            r#"apiVersion: drover.dev/v1alpha1
kind: Fleet
metadata: {{name: {name}}}
spec:
  github: {{tokenRef: gh}}
---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {{name: gh}}
spec: {{env: {{name: DROVER_TEST_UNUSED_GITHUB_TOKEN}}}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {{name: bed}}
spec:
  slurm:
    cli: {{user: {user}}}
    defaultPartition: cpu
    scratchDir: {scratch}
    container:
      imageCacheDir: {site_cache}
      binds:
        - {{source: {shared}, target: /shared, readOnly: true}}
---
apiVersion: drover.dev/v1alpha1
kind: NodePool
metadata: {{name: cpu}}
spec: {{site: bed, nodeCount: 1, slurm: {{partition: cpu}}}}
---
apiVersion: drover.dev/v1alpha1
kind: RunnerSet
metadata: {{name: probe}}
spec:
  github: {{org: acme}}
  labels: [self-hosted, apptainer-{name}]
  pool: cpu
  max: 2
  resources: {{cpu: "1", memory: 256Mi}}
  timeLimitMinutes: 5
  command: [sh, -c, {probe}]
  container:
    image: "{image}"
{set_cache_line}    binds:
      - {{source: {data}, target: /data, readOnly: true}}
      - {{source: {results}, target: /results}}
"#,
            user = bed.user,
            scratch = scratch.display(),
            site_cache = site_cache.display(),
            shared = shared.display(),
            data = data.display(),
            results = results.display(),
            probe = serde_json::to_string(PROBE).unwrap(),
        );
        std::fs::write(fleet_dir.join("fleet.yaml"), yaml).unwrap();
        let validation = validate_dir(&fleet_dir, &LoadOptions::default()).unwrap();
        assert!(
            validation.is_valid() && validation.diagnostics.is_empty(),
            "{:#?}",
            validation.diagnostics
        );
        Self {
            bed,
            name,
            validation,
            scratch,
            shared,
            data,
            results,
            site_cache,
            set_cache,
            _dir: dir,
        }
    }

    /// drover's job spec for the runner set's slot `slot`.
    fn job(&self, slot: u32) -> JobSpec {
        let options = RunOptions::default();
        let ctx = SiteContext {
            repo: &self.validation.repo,
            site: &self.validation.repo.sites["bed"],
            options: &options,
        };
        let templates: Vec<RunnerTemplate> = render(&ctx).unwrap();
        let mut spec = templates[0].job(slot);
        // Inside the job (in the root), the root's own tools and apptainer.
        spec.environment
            .insert("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into());
        spec
    }

    /// Submits slot `slot` through drover's CLI driver as the bed's user, waits until the
    /// job has ended and returns (job id, final state, what the job printed).
    async fn run(&self, slot: u32) -> (u64, String, String) {
        let driver = CliDriver::new(CliConfig {
            run_as: Some(self.bed.user.clone()),
            slurm_conf: Some(PathBuf::from(&self.bed.conf)),
            bin_dir: Some(self.bed.bin.clone()),
            timeout: Duration::from_secs(30),
        });
        let spec = self.job(slot);
        assert!(
            spec.script.contains("apptainer exec --userns"),
            "{}",
            spec.script
        );
        let id = driver.submit(&spec).await.expect("sbatch through drover");
        let start = Instant::now();
        let state = loop {
            let state = job_state(&self.bed, id);
            if !matches!(
                state.as_str(),
                "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING" | ""
            ) {
                break state;
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "job {id} still {state} after 3 minutes"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let out_file = self.scratch.join(format!("slurm-{id}.out"));
        let output = std::fs::read_to_string(&out_file)
            .unwrap_or_else(|e| panic!("{}: {e}", out_file.display()));
        (id, state, output)
    }

    /// The job directory a job had (`<scratchDir>/drover-<id>`).
    fn job_dir(&self, id: u64) -> PathBuf {
        self.scratch.join(format!("drover-{id}"))
    }
}

impl Drop for ContainerFleet {
    fn drop(&mut self) {
        self.bed.cancel_named(&format!("drover-{}-", self.name));
    }
}

/// `JobState` of a job (`scontrol show job`, as root); empty when Slurm has not listed it yet.
fn job_state(bed: &Bed, id: u64) -> String {
    let out = bed
        .tool("scontrol")
        .args(["show", "job", &id.to_string(), "--oneliner"])
        .output()
        .expect("run scontrol");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("JobState="))
        .unwrap_or_default()
        .to_owned()
}

fn assert_lines(output: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            output.lines().any(|l| l == *line),
            "missing {line:?} in the job's output:\n{output}"
        );
    }
}

/// A runner job with the site's and the set's binds runs in a real Apptainer container
/// from a directory sandbox: it reads the sandbox's own file and not the host's /usr, sees
/// every bind at its target, read-only where asked, writes through the read-write bind, and
/// ends with its job directory removed while the site's image cache stays.
#[tokio::test]
async fn sandbox_job_sees_its_binds_and_the_cache_outlives_it() {
    let bed = Bed::load(GENERATION);
    let sandbox = bed.extra.get("APPTAINER_SANDBOX").cloned().expect(
        "the 26.05 env file names APPTAINER_SANDBOX: run `scripts/slurm-testbed.sh up 26.05`",
    );
    let f = ContainerFleet::new("sbx", &sandbox, false);
    let spec = f.job(1);
    for bind in [
        format!("--bind {}:/shared:ro", f.shared.display()),
        format!("--bind {}:/data:ro", f.data.display()),
        format!("--bind {}:/results\n", f.results.display()),
        format!("export APPTAINER_CACHEDIR={}\n", f.site_cache.display()),
    ] {
        assert!(spec.script.contains(&bind), "{bind:?} in\n{}", spec.script);
    }

    let (id, state, output) = f.run(1).await;
    assert_eq!(state, "COMPLETED", "{output}");
    assert_lines(
        &output,
        &[
            "sandbox: drover apptainer test sandbox",
            "host /usr: hidden",
            "shared: site tool",
            "shared: read-only",
            "data: dataset v1",
            "data: read-only",
            "results: writable",
            &format!("work: {}", f.job_dir(id).display()),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(f.results.join("out.txt")).unwrap(),
        "written in the container\n"
    );
    assert!(!f.data.join("probe").exists() && !f.shared.join("probe").exists());
    assert!(
        !f.job_dir(id).exists(),
        "the job directory {} outlived the job",
        f.job_dir(id).display()
    );
    assert!(
        f.site_cache.is_dir(),
        "the image cache {} did not outlive the job",
        f.site_cache.display()
    );
}

/// An image Apptainer must convert (an OCI archive, as a `docker://` image would be) lands
/// in the runner set's own image cache: the first job converts it, its job directory goes,
/// the converted SIF stays, and the next job of the set runs from the cache.
#[tokio::test]
async fn converted_image_is_cached_once_and_reused_by_the_next_job() {
    let bed = Bed::load(GENERATION);
    let archive = bed.extra.get("APPTAINER_OCI_ARCHIVE").cloned().expect(
        "the 26.05 env file names APPTAINER_OCI_ARCHIVE: run `scripts/slurm-testbed.sh up 26.05`",
    );
    let f = ContainerFleet::new("oci", &format!("oci-archive:{archive}"), true);
    let set_cache = f.set_cache.clone().unwrap();

    let (first, state, output) = f.run(1).await;
    assert_eq!(state, "COMPLETED", "{output}");
    assert!(
        output.contains("Converting OCI blobs to SIF format"),
        "{output}"
    );
    assert_lines(
        &output,
        &[
            "sandbox: drover apptainer test sandbox",
            "data: read-only",
            "results: writable",
        ],
    );
    assert!(!f.job_dir(first).exists(), "job directory left behind");
    let sifs: Vec<_> = std::fs::read_dir(set_cache.join("cache/oci-tmp"))
        .unwrap_or_else(|e| panic!("{}: {e}", set_cache.display()))
        .collect();
    assert_eq!(
        sifs.len(),
        1,
        "one converted image in {}",
        set_cache.display()
    );
    assert!(
        !f.site_cache.exists(),
        "the set's imageCacheDir replaces the site's"
    );

    let (second, state, output) = f.run(2).await;
    assert_eq!(state, "COMPLETED", "{output}");
    assert!(output.contains("Using cached SIF image"), "{output}");
    assert!(!output.contains("Converting OCI blobs"), "{output}");
    assert_lines(&output, &["sandbox: drover apptainer test sandbox"]);
    assert!(!f.job_dir(second).exists(), "job directory left behind");
}
