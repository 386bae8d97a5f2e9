//! Benchmark: validate a generated fleet of 1,000 Kubernetes sites (one NodePool each) and
//! 9,000 runner sets — 11,001 documents in 1,000 files. Goal: under 1 s.
//!
//! The fleet is written to `target/bench-fleet/` so `scripts/bench.sh` can also measure the
//! `drover validate` binary end to end (wall time and peak RSS).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use drover::fleet::{self, LoadOptions};

const SITES: usize = 1_000;
const SETS_PER_SITE: usize = 9;

fn site_file(i: usize) -> String {
    let mut text = format!(
        "apiVersion: drover.dev/v1alpha1\nkind: Site\nmetadata:\n  name: site-{i}\nspec:\n  \
         kubernetes:\n    context: ctx-{i}\n    namespace: runners\n    version: {{min: \"1.28\", max: \"1.33\"}}\n\
         ---\napiVersion: drover.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: pool-{i}\nspec:\n  \
         site: site-{i}\n  nodeCount: 4\n  gpu: {{vendor: amd, model: MI300X, perNode: 8}}\n  kubernetes:\n    \
         nodeSelector: {{pool: p{i}}}\n    tolerations:\n      - {{key: amd.com/gpu, operator: Exists, effect: NoSchedule}}\n"
    );
    for j in 0..SETS_PER_SITE {
        write!(
            text,
            "---\napiVersion: drover.dev/v1alpha1\nkind: RunnerSet\nmetadata:\n  name: rs-{i}-{j}\nspec:\n  \
             github: {{org: org-{}, runnerGroup: gpu}}\n  labels: [self-hosted, linux, x64, site-{i}, size-{j}]\n  \
             pool: pool-{i}\n  min: 0\n  max: 16\n  resources:\n    cpu: \"{}\"\n    memory: {}Gi\n    \
             gpu: {{vendor: amd, count: 1}}\n  image: ghcr.io/acme/runner:2.321.0\n  env:\n    \
             - {{name: RUNNER_SIZE, value: size-{j}}}\n",
            i % 50,
            2 + j,
            4 * (j + 1)
        )
        .unwrap();
    }
    text
}

fn generate(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("sites")).unwrap();
    std::fs::write(
        dir.join("fleet.yaml"),
        "apiVersion: drover.dev/v1alpha1\nkind: Fleet\nmetadata:\n  name: bench\nspec:\n  github:\n    \
         tokenRef: gh\n---\napiVersion: drover.dev/v1alpha1\nkind: SecretRef\nmetadata:\n  name: gh\nspec:\n  \
         env: {name: GITHUB_TOKEN}\n",
    )
    .unwrap();
    for i in 0..SITES {
        std::fs::write(dir.join(format!("sites/site-{i:04}.yaml")), site_file(i)).unwrap();
    }
}

fn bench_validate(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-fleet");
    generate(&dir);
    let check = fleet::validate_dir(&dir, &LoadOptions::default()).unwrap();
    assert!(
        check.is_valid(),
        "{:?}",
        &check.diagnostics[..check.diagnostics.len().min(5)]
    );
    assert_eq!(check.documents, 2 + SITES * (2 + SETS_PER_SITE));
    let mut group = c.benchmark_group("validate");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("11k_documents", |b| {
        b.iter(|| fleet::validate_dir(&dir, &LoadOptions::default()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_validate);
criterion_main!(benches);
