//! The status page as a person sees it: rendered by headless Chromium (Debian's
//! `chromium`; `scripts/test.sh` installs it) from a running service, checked for the
//! site names, revision, states and validation error text, and screenshotted to
//! `target/serve-status-page.png` for review. Fails loudly when Chromium is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::serve_support::{config, fleet_header, kube_site, start, unique};
use crate::support::kube_emulator::KubeEmulator;
use drover::serve::{LocalDir, Trigger};
use drover::sites::RunOptions;

const UNREACHABLE_SLURM: &str = r#"---
apiVersion: drover.dev/v1alpha1
kind: SecretRef
metadata: {name: jwt}
spec: {file: {path: /nonexistent/jwt}}
---
apiVersion: drover.dev/v1alpha1
kind: Site
metadata: {name: hpc-cluster}
spec:
  slurm:
    rest: {url: "http://127.0.0.1:9", user: ci, tokenRef: jwt}
    defaultPartition: cpu
  timeoutSeconds: 2
"#;

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!(
        "chromium is not installed: `apt-get install -y chromium` (scripts/test.sh does this); \
         this test renders the status page in a real browser and is never skipped"
    );
}

fn run_chromium(profile: &Path, extra: &[&str], url: &str) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text a person reads: tags dropped, entities decoded, whitespace collapsed.
fn visible_text(dom: &str) -> String {
    let body = dom.split("<body").nth(1).unwrap_or(dom);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_reads_well_in_a_real_browser() {
    let browser = chromium();
    let emu = KubeEmulator::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, emu.kubeconfig_yaml("lab-ctx")).unwrap();
    let fleet_dir = tmp.path().join("fleet");
    std::fs::create_dir(&fleet_dir).unwrap();
    let good = fleet_header(&unique("page"))
        + &kube_site("gpu-lab", "lab-ctx", "runners", 2, "2.321.0")
        + UNREACHABLE_SLURM;
    std::fs::write(fleet_dir.join("fleet.yaml"), &good).unwrap();

    let svc = start(
        config(RunOptions {
            kubeconfig: Some(kubeconfig),
            ..RunOptions::default()
        }),
        Box::new(LocalDir(fleet_dir.clone())),
    )
    .await;
    let first = svc
        .wait_for("the first reconcile", Duration::from_secs(30), |s| {
            s["ready"] == true
        })
        .await;
    let revision = first["source"]["good_revision"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        fleet_dir.join("fleet.yaml"),
        good.replace("max: 4", "max: four"),
    )
    .unwrap();
    svc.service.trigger(Trigger::Full);
    svc.wait_for("the refusal", Duration::from_secs(30), |s| {
        s["source"]["validation_errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })
    .await;

    let url = format!("{}/", svc.base);
    let profile = tempfile::tempdir().unwrap();
    let dom = tokio::task::spawn_blocking({
        let (profile, url) = (profile.path().to_path_buf(), url.clone());
        move || run_chromium(&profile, &["--dump-dom"], &url)
    })
    .await
    .unwrap();
    let text = visible_text(&dom);
    for expected in [
        "drover",
        "gpu-lab",
        "hpc-cluster",
        &revision[..12],
        "leader: applies changes",
        "failed validation",
        "Still applying the last good revision",
        "fleet.yaml:",
        "failed: ",
        "Kubernetes",
        "Slurm",
    ] {
        assert!(
            text.contains(expected),
            "the page does not show {expected:?}:\n{text}"
        );
    }
    // The site outcome a person reads: the Kubernetes site changed (applied), the
    // Slurm site failed with its reason.
    assert!(text.contains("changed") || text.contains("ok"), "{text}");
    assert!(
        text.contains("cannot read its token"),
        "the failure says why: {text}"
    );

    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("serve-status-page.png");
    let _ = std::fs::remove_file(&shot);
    let profile2 = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking({
        let (profile, url, shot) = (profile2.path().to_path_buf(), url, shot.clone());
        move || {
            run_chromium(
                &profile,
                &[
                    &format!("--screenshot={}", shot.display()),
                    "--window-size=1280,900",
                ],
                &url,
            )
        }
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        browser.display()
    );
    svc.shutdown().await;
}
