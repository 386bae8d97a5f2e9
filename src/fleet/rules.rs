//! Semantic rules: what the schema cannot say. References resolve, `min ≤ max`, GPU
//! requests fit their pool, runner sets fit their site's kind, label sets do not make
//! GitHub's job routing ambiguous, and exactly one `Fleet` exists. Pure: a [`FleetRepo`]
//! in, diagnostics out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::diagnostic::{Code, Diagnostic};
use super::model::{DockerMode, Engine, Kind, NodePool, RunnerSet, Site};
use super::repo::{FleetRepo, Located};
use super::yaml::Pos;

/// Runs every rule and returns what they found.
pub fn check(repo: &FleetRepo) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    fleet_singleton(repo, &mut out);
    references(repo, &mut out);
    for set in repo.runner_sets.values() {
        runner_set(repo, set, &mut out);
    }
    for pool in repo.pools.values() {
        pool_fits_site(repo, pool, &mut out);
    }
    ambiguous_labels(repo, &mut out);
    if !repo.incomplete {
        unused(repo, &mut out);
    }
    out
}

fn fleet_singleton(repo: &FleetRepo, out: &mut Vec<Diagnostic>) {
    if repo.fleet_documents > 1 {
        if let Some(fleet) = &repo.fleet {
            out.push(
                fleet
                    .diag(
                        Code::FleetSingleton,
                        "",
                        format!(
                            "{} Fleet documents found; a fleet repo has exactly one",
                            repo.fleet_documents
                        ),
                    )
                    .with_hint("merge the Fleet documents into one"),
            );
        }
    } else if repo.fleet_documents == 0 && !repo.declared.is_empty() {
        out.push(
            Diagnostic::new(
                Code::FleetSingleton,
                PathBuf::from("."),
                Pos::default(),
                "no Fleet document found",
            )
            .with_hint("add a `kind: Fleet` document with the GitHub connection"),
        );
    }
}

/// Every reference (`kind`, pointer, name) an object makes.
fn refs_of_site(site: &Site) -> Vec<(Kind, &'static str, String)> {
    let mut refs = Vec::new();
    if let Some(r) = site
        .spec
        .kubernetes
        .as_ref()
        .and_then(|k| k.kubeconfig_ref.as_ref())
    {
        refs.push((Kind::SecretRef, "/spec/kubernetes/kubeconfigRef", r.clone()));
    }
    if let Some(rest) = site.spec.slurm.as_ref().and_then(|s| s.rest.as_ref()) {
        refs.push((
            Kind::SecretRef,
            "/spec/slurm/rest/tokenRef",
            rest.token_ref.clone(),
        ));
    }
    refs
}

fn references(repo: &FleetRepo, out: &mut Vec<Diagnostic>) {
    if let Some(fleet) = &repo.fleet {
        let gh = &fleet.value.spec.github;
        let mut refs = Vec::new();
        if let Some(app) = &gh.app {
            refs.push((
                "/spec/github/app/privateKeyRef".to_string(),
                app.private_key_ref.clone(),
            ));
        }
        if let Some(t) = &gh.token_ref {
            refs.push(("/spec/github/tokenRef".to_string(), t.clone()));
        }
        if let Some(w) = &gh.webhook_secret_ref {
            refs.push(("/spec/github/webhookSecretRef".to_string(), w.clone()));
        }
        for (pointer, name) in refs {
            expect(repo, fleet, &pointer, Kind::SecretRef, &name, out);
        }
    }
    for site in repo.sites.values() {
        for (kind, pointer, name) in refs_of_site(&site.value) {
            expect(repo, site, pointer, kind, &name, out);
        }
    }
    for pool in repo.pools.values() {
        let name = &pool.value.spec.site;
        expect(repo, pool, "/spec/site", Kind::Site, name, out);
    }
    for set in repo.runner_sets.values() {
        let name = &set.value.spec.pool;
        expect(repo, set, "/spec/pool", Kind::NodePool, name, out);
        for (i, env) in set.value.spec.env.iter().enumerate() {
            if let Some(name) = &env.secret_ref {
                let pointer = format!("/spec/env/{i}/secretRef");
                expect(repo, set, &pointer, Kind::SecretRef, name, out);
            }
        }
    }
    for secret in repo.secrets.values() {
        secret_sites(repo, secret, out);
    }
}

fn secret_sites(
    repo: &FleetRepo,
    secret: &Located<super::model::SecretRef>,
    out: &mut Vec<Diagnostic>,
) {
    let spec = &secret.value.spec;
    if let Some(site) = spec
        .kubernetes_secret
        .as_ref()
        .and_then(|k| k.site.as_ref())
    {
        expect(
            repo,
            secret,
            "/spec/kubernetesSecret/site",
            Kind::Site,
            site,
            out,
        );
    }
    if let Some(ext) = &spec.external_secret {
        match repo.sites.get(&ext.site) {
            None => expect(repo, secret, "/spec/externalSecret/site", Kind::Site, &ext.site, out),
            Some(site) if site.value.spec.kubernetes.is_none() => out.push(
                secret
                    .diag(Code::SiteKindMismatch, "/spec/externalSecret/site", format!("Site `{}` is not a Kubernetes site; ExternalSecrets live on Kubernetes", ext.site))
                    .with_hint("use an env or file SecretRef for Slurm sites"),
            ),
            Some(_) => {}
        }
    }
}

fn expect<T>(
    repo: &FleetRepo,
    obj: &Located<T>,
    pointer: &str,
    kind: Kind,
    name: &str,
    out: &mut Vec<Diagnostic>,
) {
    if !repo.declared.contains(&(kind, name.to_string())) {
        out.push(
            obj.diag(
                Code::DanglingReference,
                pointer,
                format!("{kind} `{name}` does not exist"),
            )
            .with_hint(format!(
                "declare a `kind: {kind}` named `{name}`, or fix the name"
            )),
        );
    }
}

fn site_of<'a>(repo: &'a FleetRepo, pool: &NodePool) -> Option<&'a Located<Site>> {
    repo.sites.get(&pool.spec.site)
}

fn runner_set(repo: &FleetRepo, set: &Located<RunnerSet>, out: &mut Vec<Diagnostic>) {
    let spec = &set.value.spec;
    if spec.min > spec.max {
        out.push(
            set.diag(
                Code::MinAboveMax,
                "/spec/min",
                format!("min ({}) is greater than max ({})", spec.min, spec.max),
            )
            .with_hint("lower min or raise max"),
        );
    }
    if spec.max == 0 {
        out.push(set.diag(
            Code::MaxZero,
            "/spec/max",
            "max is 0: this runner set never starts a runner",
        ));
    }
    let Some(pool) = repo.pools.get(&spec.pool) else {
        return;
    };
    gpu_fits(set, pool, out);
    match site_of(repo, &pool.value) {
        Some(site) if site.value.spec.slurm.is_some() => slurm_runner_set(set, pool, site, out),
        Some(_) => kubernetes_runner_set(repo, set, out),
        None => {}
    }
}

fn gpu_fits(set: &Located<RunnerSet>, pool: &Located<NodePool>, out: &mut Vec<Diagnostic>) {
    let Some(request) = &set.value.spec.resources.gpu else {
        return;
    };
    let pointer = "/spec/resources/gpu";
    let pool_name = &pool.value.metadata.name;
    match &pool.value.spec.gpu {
        None => out.push(
            set.diag(
                Code::GpuMismatch,
                pointer,
                format!(
                    "requests {} GPU(s) but NodePool `{pool_name}` has no GPUs",
                    request.count
                ),
            )
            .with_hint("pick a GPU pool, or declare `gpu:` on the pool"),
        ),
        Some(gpu) if gpu.vendor != request.vendor => out.push(
            set.diag(
                Code::GpuMismatch,
                "/spec/resources/gpu/vendor",
                format!(
                    "requests {} GPUs but NodePool `{pool_name}` has {} GPUs",
                    request.vendor, gpu.vendor
                ),
            )
            .with_hint(format!(
                "use `vendor: {}` or a {} pool",
                gpu.vendor, request.vendor
            )),
        ),
        Some(gpu) if request.count > gpu.per_node => out.push(
            set.diag(
                Code::GpuMismatch,
                "/spec/resources/gpu/count",
                format!(
                    "requests {} GPUs per runner but nodes of NodePool `{pool_name}` have {}",
                    request.count, gpu.per_node
                ),
            )
            .with_hint("a runner runs on one node; request at most the GPUs of one node"),
        ),
        Some(_) => {}
    }
}

fn slurm_runner_set(
    set: &Located<RunnerSet>,
    pool: &Located<NodePool>,
    site: &Located<Site>,
    out: &mut Vec<Diagnostic>,
) {
    let spec = &set.value.spec;
    let pool_name = &pool.value.metadata.name;
    if spec.engine == Engine::Arc {
        out.push(
            set.diag(Code::SiteKindMismatch, "/spec/engine", format!("engine `arc` needs a Kubernetes site, but NodePool `{pool_name}` is on a Slurm site"))
                .with_hint("use `engine: drover` on Slurm"),
        );
    }
    if spec.docker == DockerMode::Dind {
        out.push(
            set.diag(
                Code::SiteKindMismatch,
                "/spec/docker",
                "docker `dind` needs a privileged sidecar, which Slurm jobs cannot have",
            )
            .with_hint("use `rootless` or `none` on Slurm"),
        );
    }
    let partition = pool
        .value
        .spec
        .slurm
        .as_ref()
        .and_then(|s| s.partition.as_ref());
    let default = site
        .value
        .spec
        .slurm
        .as_ref()
        .and_then(|s| s.default_partition.as_ref());
    if partition.or(default).is_none() {
        out.push(
            set.diag(Code::SiteKindMismatch, "/spec/pool", format!("NodePool `{pool_name}` is on a Slurm site but names no partition, and the site has no defaultPartition"))
                .with_hint("set `slurm.partition` on the pool"),
        );
    }
}

fn kubernetes_runner_set(repo: &FleetRepo, set: &Located<RunnerSet>, out: &mut Vec<Diagnostic>) {
    let spec = &set.value.spec;
    let default_image = repo
        .fleet
        .as_ref()
        .and_then(|f| f.value.spec.defaults.runner_image.as_ref());
    if spec.image.is_none() && default_image.is_none() {
        out.push(
            set.diag(
                Code::MissingImage,
                "/spec",
                "a Kubernetes runner set needs an image",
            )
            .with_hint("set `image:`, or `defaults.runnerImage` on the Fleet"),
        );
    }
    if spec.container.is_some() || spec.time_limit_minutes.is_some() {
        let pointer = if spec.container.is_some() {
            "/spec/container"
        } else {
            "/spec/timeLimitMinutes"
        };
        out.push(
            set.diag(Code::SiteKindMismatch, pointer, "`container` and `timeLimitMinutes` are Slurm settings, but this runner set is on a Kubernetes site")
                .with_hint("remove them, or move the runner set to a Slurm pool"),
        );
    }
}

fn pool_fits_site(repo: &FleetRepo, pool: &Located<NodePool>, out: &mut Vec<Diagnostic>) {
    let Some(site) = site_of(repo, &pool.value) else {
        return;
    };
    let is_slurm = site.value.spec.slurm.is_some();
    let site_name = &site.value.metadata.name;
    if is_slurm && pool.value.spec.kubernetes.is_some() {
        out.push(
            pool.diag(
                Code::SiteKindMismatch,
                "/spec/kubernetes",
                format!(
                    "Site `{site_name}` is a Slurm site; `kubernetes` placement does not apply"
                ),
            )
            .with_hint("use `slurm:` (partition, gres, constraint)"),
        );
    }
    if !is_slurm && pool.value.spec.slurm.is_some() {
        out.push(
            pool.diag(
                Code::SiteKindMismatch,
                "/spec/slurm",
                format!(
                    "Site `{site_name}` is a Kubernetes site; `slurm` placement does not apply"
                ),
            )
            .with_hint("use `kubernetes:` (nodeSelector, tolerations, runtimeClassName)"),
        );
    }
}

/// Two runner sets in the same GitHub scope and runner group with the same labels
/// (GitHub compares labels case-insensitively): a job asking for those labels could be
/// served by either, so neither drover nor a reader can tell where it runs.
fn ambiguous_labels(repo: &FleetRepo, out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<(String, String, BTreeSet<String>), &Located<RunnerSet>> =
        BTreeMap::new();
    let mut sets: Vec<&Located<RunnerSet>> = repo.runner_sets.values().collect();
    sets.sort_by(|a, b| (&a.file, a.node.pos).cmp(&(&b.file, b.node.pos)));
    for set in sets {
        let spec = &set.value.spec;
        let Some(scope) = spec.github.key() else {
            continue;
        };
        let group = spec.github.runner_group.clone().unwrap_or_default();
        let labels: BTreeSet<String> = spec.labels.iter().map(|l| l.to_lowercase()).collect();
        match seen.get(&(scope.clone(), group.clone(), labels.clone())) {
            Some(first) => out.push(
                set.diag(Code::AmbiguousLabels, "/spec/labels", format!("RunnerSet `{}` has the same labels as `{}` in {scope}; jobs could land on either", set.value.metadata.name, first.value.metadata.name))
                    .with_hint(format!("add a label that tells them apart (first defined at {})", first.origin())),
            ),
            None => {
                seen.insert((scope, group, labels), set);
            }
        }
    }
}

fn unused(repo: &FleetRepo, out: &mut Vec<Diagnostic>) {
    let used_pools: BTreeSet<&String> = repo
        .runner_sets
        .values()
        .map(|s| &s.value.spec.pool)
        .collect();
    for (name, pool) in &repo.pools {
        if !used_pools.contains(name) {
            out.push(pool.diag(
                Code::UnusedPool,
                "/metadata/name",
                format!("NodePool `{name}` has no runner sets"),
            ));
        }
    }
    let used = used_secret_names(repo);
    for (name, secret) in &repo.secrets {
        if !used.contains(name.as_str()) {
            out.push(secret.diag(
                Code::UnusedSecretRef,
                "/metadata/name",
                format!("SecretRef `{name}` is never referenced"),
            ));
        }
    }
}

fn used_secret_names(repo: &FleetRepo) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    if let Some(fleet) = &repo.fleet {
        let gh = &fleet.value.spec.github;
        used.extend(gh.app.as_ref().map(|a| a.private_key_ref.clone()));
        used.extend(gh.token_ref.clone());
        used.extend(gh.webhook_secret_ref.clone());
    }
    for site in repo.sites.values() {
        used.extend(refs_of_site(&site.value).into_iter().map(|(_, _, n)| n));
    }
    for set in repo.runner_sets.values() {
        used.extend(
            set.value
                .spec
                .env
                .iter()
                .filter_map(|e| e.secret_ref.clone()),
        );
    }
    used
}
