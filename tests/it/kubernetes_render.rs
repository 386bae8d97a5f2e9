//! Rendered Kubernetes objects of the example fleet (`fleet/`), snapshot-tested.

use std::path::Path;

use drover::fleet::LoadOptions;
use drover::sites::{RunOptions, SiteContext, kubernetes};

#[test]
fn example_fleet_sites_render_owned_objects() {
    let v = drover::fleet::validate_dir(Path::new("fleet"), &LoadOptions::default()).unwrap();
    assert!(v.is_valid(), "{:#?}", v.diagnostics);
    let options = RunOptions::default();
    for (name, site) in &v.repo.sites {
        if site.value.spec.kubernetes.is_none() {
            continue;
        }
        let ctx = SiteContext {
            repo: &v.repo,
            site,
            options: &options,
        };
        let objects = kubernetes::render_values(&ctx).unwrap();
        for o in &objects {
            let labels = &o["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/managed-by"], "drover", "{o}");
            assert_eq!(labels["drover.dev/owner"], "gpu-ci", "{o}");
            assert_ne!(o["kind"], "Pod", "runner pods are the autoscaler's");
        }
        insta::assert_yaml_snapshot!(format!("render_{name}"), objects);
    }
}

#[test]
fn render_is_pure_and_deterministic() {
    let v = drover::fleet::validate_dir(Path::new("fleet"), &LoadOptions::default()).unwrap();
    let options = RunOptions::default();
    let ctx = SiteContext {
        repo: &v.repo,
        site: &v.repo.sites["onprem-mi300"],
        options: &options,
    };
    assert_eq!(
        kubernetes::render_values(&ctx).unwrap(),
        kubernetes::render_values(&ctx).unwrap()
    );
}
