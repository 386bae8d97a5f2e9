//! Kubernetes plan benchmark: the pure plan of one site with 10,000 owned objects of which
//! 1% differ, then (against the API emulator) that applying an unchanged fleet makes zero
//! write requests. Prints peak RSS (VmHWM) at the end.

// The emulator tree is shared with the integration tests (it allows unused items itself).
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group};
use drover::fleet::model::SitePolicy;
use drover::sites::kubernetes::observe::Observed;
use drover::sites::kubernetes::plan::{PlanSettings, compute};
use drover::sites::kubernetes::render::{Rendered, owner_labels};
use drover::sites::{RunOptions, SiteContext, kubernetes};
use serde_json::{Value, json};

const OBJECTS: usize = 10_000;

fn template(i: usize, image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PodTemplate",
        "metadata": {"name": format!("set-{i}"), "namespace": "runners", "labels": owner_labels("ci", "bench", Some(&format!("set-{i}")))},
        "template": {"metadata": {"labels": {"app": "runner"}}, "spec": {
            "serviceAccountName": "drover-runner", "restartPolicy": "Never",
            "nodeSelector": {"pool": "cpu"},
            "containers": [{"name": "runner", "image": image,
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}],
        }},
    })
}

/// What the API server returns: the object plus server fields and defaults.
fn live(mut obj: Value, i: usize) -> Value {
    obj["metadata"]["uid"] = json!(format!("uid-{i}"));
    obj["metadata"]["resourceVersion"] = json!(i.to_string());
    obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    obj["metadata"]["managedFields"] =
        json!([{"manager": "drover", "operation": "Apply", "fieldsV1": {"f:template": {}}}]);
    let spec = &mut obj["template"]["spec"];
    spec["dnsPolicy"] = json!("ClusterFirst");
    spec["schedulerName"] = json!("default-scheduler");
    spec["terminationGracePeriodSeconds"] = json!(30);
    spec["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
    spec["containers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
    obj
}

fn inputs() -> (Rendered, Observed, PlanSettings) {
    let mut rendered = Rendered::default();
    let mut observed = Observed {
        server_version: Some("v1.31.2".into()),
        ..Observed::default()
    };
    for i in 0..OBJECTS {
        rendered
            .objects
            .push(template(i, "ghcr.io/actions/actions-runner:2.321.0"));
        let image = if i % 100 == 0 {
            "ghcr.io/actions/actions-runner:2.320.0"
        } else {
            "ghcr.io/actions/actions-runner:2.321.0"
        };
        observed.owned.push(live(template(i, image), i));
    }
    let settings = PlanSettings {
        site: "bench".into(),
        policy: SitePolicy::Apply,
        fleet: "ci".into(),
        prune: true,
        desired_complete: true,
    };
    (rendered, observed, settings)
}

fn bench_plan(c: &mut Criterion) {
    let (rendered, observed, settings) = inputs();
    let planned = compute(&rendered, &observed, &settings);
    assert_eq!(planned.plan.counts().update, OBJECTS / 100);
    c.bench_function("kube_plan_10k_objects_1pct_changed", |b| {
        b.iter(|| {
            compute(
                black_box(&rendered),
                black_box(&observed),
                black_box(&settings),
            )
        })
    });
}

criterion_group!(benches, bench_plan);

/// Applies a small fleet to the emulator twice and returns the second apply's write count.
fn unchanged_apply_writes() -> usize {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let emu = support::kube_emulator::KubeEmulator::start().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let mut yaml = std::fs::read_to_string("fleet/sites/mi300.yaml").unwrap();
        yaml.push_str("\n---\n");
        yaml.push_str(&std::fs::read_to_string("fleet/fleet.yaml").unwrap());
        yaml.push_str("\n---\n");
        yaml.push_str(&std::fs::read_to_string("fleet/secrets/github.yaml").unwrap());
        std::fs::write(&kubeconfig, emu.kubeconfig_yaml("mi300-admin")).unwrap();
        let fleet_dir = dir.path().join("fleet");
        std::fs::create_dir(&fleet_dir).unwrap();
        std::fs::write(fleet_dir.join("fleet.yaml"), yaml).unwrap();
        std::fs::copy("fleet/runners/gpu.yaml", fleet_dir.join("gpu.yaml")).unwrap();
        std::fs::copy("fleet/runners/cpu.yaml", fleet_dir.join("cpu.yaml")).unwrap();
        std::fs::copy("fleet/sites/eks-prod.yaml", fleet_dir.join("eks.yaml")).unwrap();
        std::fs::copy("fleet/sites/h100.yaml", fleet_dir.join("h100.yaml")).unwrap();
        std::fs::copy("fleet/sites/hpc-slurm.yaml", fleet_dir.join("hpc.yaml")).unwrap();
        let v = drover::fleet::validate_dir(&fleet_dir, &Default::default()).unwrap();
        let options = RunOptions {
            kubeconfig: Some(kubeconfig),
            ..RunOptions::default()
        };
        let ctx = SiteContext {
            repo: &v.repo,
            site: &v.repo.sites["onprem-mi300"],
            options: &options,
        };
        let (_, first) = kubernetes::apply(&ctx).await;
        assert!(first.failed.is_empty(), "{first:#?}");
        emu.clear_request_log();
        let (plan, _) = kubernetes::apply(&ctx).await;
        assert!(!plan.has_changes());
        emu.write_count()
    })
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "VmHWM: unknown".into())
}

/// Peak RSS of one plan in a fresh process: build the inputs, plan once, read VmHWM. This
/// runs before criterion, whose repeated samples would otherwise dominate the peak.
fn one_plan_peak_rss() {
    let (rendered, observed, settings) = inputs();
    let inputs_peak = peak_rss();
    let planned = compute(&rendered, &observed, &settings);
    println!(
        "one plan of {OBJECTS} objects ({} updates): {} (after building the inputs: {})",
        planned.plan.counts().update,
        peak_rss(),
        inputs_peak
    );
}

fn main() {
    one_plan_peak_rss();
    benches();
    Criterion::default().configure_from_args().final_summary();
    let writes = unchanged_apply_writes();
    println!("unchanged fleet re-apply against the emulator: {writes} write requests");
    assert_eq!(writes, 0);
    println!("peak RSS {}", peak_rss());
}
