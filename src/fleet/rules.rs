//! Semantic rules: what the schema cannot say. References resolve, `min ≤ max`, GPU
//! requests fit their pool, runner sets fit their site's kind, label sets do not make
//! GitHub's job routing ambiguous, and exactly one `Fleet` exists. Pure: a [`FleetRepo`]
//! in, diagnostics out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::diagnostic::{Code, Diagnostic};
use super::model::{BindMount, DockerMode, Engine, Kind, NodePool, RunnerSet, Site};
use super::repo::{FleetRepo, Located};
use super::schema::dotted;
use super::yaml::Pos;

/// Runs every rule and returns what they found.
pub(crate) fn check(repo: &FleetRepo, errors_so_far: bool) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    fleet_singleton(repo, &mut out);
    references(repo, &mut out);
    for set in repo.runner_sets.values() {
        runner_set(repo, set, &mut out);
    }
    for pool in repo.pools.values() {
        pool_fits_site(repo, pool, &mut out);
    }
    for site in repo.sites.values() {
        slurm_site_container(site, &mut out);
    }
    ambiguous_labels(repo, &mut out);
    shared_targets(repo, &mut out);
    kubernetes_values(repo, &mut out);
    // A fleet with errors is not what its author means yet: "unused" would be noise
    // (a pool whose set failed its checks is not unused).
    if !repo.incomplete && !errors_so_far && !out.iter().any(Diagnostic::is_error) {
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
    if let (Some(repo_name), Some(group)) = (&spec.github.repo, &spec.github.runner_group) {
        out.push(
            set.diag(
                Code::RepositoryRunnerGroup,
                "/spec/github/runnerGroup",
                format!("runner group `{group}` on repository scope ({repo_name}): a repository's runners are all in the `Default` group, so no runner of this set could ever register"),
            )
            .with_hint("remove runnerGroup, or scope the set to the organization (github.org) where the group exists"),
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
    match spec.docker {
        DockerMode::None => {}
        DockerMode::Dind => out.push(
            set.diag(
                Code::SiteKindMismatch,
                "/spec/docker",
                "docker `dind` needs a privileged sidecar, which Slurm jobs cannot have",
            )
            .with_hint(NO_DOCKER_ON_SLURM),
        ),
        DockerMode::Rootless => out.push(
            set.diag(
                Code::SiteKindMismatch,
                "/spec/docker",
                "docker `rootless` runs a rootless Docker sidecar, which exists only on \
                 Kubernetes: a Slurm runner job would get no Docker daemon",
            )
            .with_hint(NO_DOCKER_ON_SLURM),
        ),
    }
    if let Some(container) = &spec.container {
        binds(set, "/spec/container", &container.binds, out);
        if let Some(dir) = &container.image_cache_dir {
            normal_path(set, "/spec/container/imageCacheDir", dir, out);
        }
        let site_cache = site
            .value
            .spec
            .slurm
            .as_ref()
            .and_then(|s| s.container.image_cache_dir.as_ref());
        if is_pulled(&container.image)
            && container.image_cache_dir.is_none()
            && site_cache.is_none()
        {
            out.push(
                set.diag(
                    Code::UncachedImage,
                    "/spec/container/image",
                    format!(
                        "Apptainer pulls and converts `{}`; without `imageCacheDir` its cache \
                         is under the job's HOME, the job directory, which is deleted when the \
                         job ends, so every job pulls the image again",
                        container.image
                    ),
                )
                .with_hint(
                    "set `container.imageCacheDir` on the runner set or on the Slurm site \
                     (a directory on the nodes that outlives the jobs)",
                ),
            );
        }
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

/// The hint for Docker modes on Slurm.
const NO_DOCKER_ON_SLURM: &str = "use `docker: none` on Slurm; `container:` runs the runner \
     and its steps in Apptainer instead (rootless, in a user namespace)";

/// Whether Apptainer pulls or converts the image (a `docker://`, `oras://`, … reference)
/// rather than opening a path on the node.
fn is_pulled(image: &str) -> bool {
    !image.starts_with('/')
}

/// The site-wide container defaults of a Slurm site.
fn slurm_site_container(site: &Located<Site>, out: &mut Vec<Diagnostic>) {
    let Some(slurm) = &site.value.spec.slurm else {
        return;
    };
    binds(site, "/spec/slurm/container", &slurm.container.binds, out);
    if let Some(dir) = &slurm.container.image_cache_dir {
        normal_path(site, "/spec/slurm/container/imageCacheDir", dir, out);
    }
}

/// One list of bind mounts (`POINTER/binds`): paths `--bind` can carry, no target twice.
fn binds<T>(obj: &Located<T>, pointer: &str, binds: &[BindMount], out: &mut Vec<Diagnostic>) {
    let mut targets: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, bind) in binds.iter().enumerate() {
        let at = format!("{pointer}/binds/{i}");
        let mut ok = bind_path(obj, &format!("{at}/source"), &bind.source, out);
        if let Some(target) = &bind.target {
            ok &= bind_path(obj, &format!("{at}/target"), target, out);
        }
        let target = bind.target();
        let target_at = if bind.target.is_some() {
            format!("{at}/target")
        } else {
            format!("{at}/source")
        };
        if ok && target == "/" {
            out.push(
                obj.diag(
                    Code::InvalidValue,
                    &target_at,
                    "a bind mount cannot target `/`: it would replace the container's root",
                )
                .with_hint("bind the directory the runner needs, e.g. `target: /data`"),
            );
        }
        match targets.get(target) {
            Some(first) => out.push(
                obj.diag(
                    Code::DuplicateBindTarget,
                    &target_at,
                    format!(
                        "`{}[{i}]` and `{}[{first}]` both mount at `{target}`",
                        dotted(&format!("{pointer}/binds")),
                        dotted(&format!("{pointer}/binds"))
                    ),
                )
                .with_hint("keep one of them (a runner set's bind replaces a site bind of the same target)"),
            ),
            None => {
                targets.insert(target, i);
            }
        }
    }
}

/// A bind path: a normal absolute path without `:` or `,` (`--bind`'s separators).
fn bind_path<T>(obj: &Located<T>, pointer: &str, path: &str, out: &mut Vec<Diagnostic>) -> bool {
    if path.contains([':', ',']) {
        out.push(
            obj.diag(
                Code::InvalidValue,
                pointer,
                format!(
                    "`{path}` contains `:` or `,`, which `apptainer --bind` reads as separators"
                ),
            )
            .with_hint("rename the directory, or bind a parent directory whose path has neither"),
        );
        return false;
    }
    normal_path(obj, pointer, path, out)
}

/// An absolute path written the one way: no empty, `.` or `..` component, no trailing `/`.
fn normal_path<T>(obj: &Located<T>, pointer: &str, path: &str, out: &mut Vec<Diagnostic>) -> bool {
    let normal = path == "/"
        || (path.starts_with('/')
            && path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."));
    if !normal {
        out.push(
            obj.diag(
                Code::InvalidValue,
                pointer,
                format!("`{path}` is not a normal absolute path"),
            )
            .with_hint("write it without `//`, `.` or `..` components and without a trailing `/`"),
        );
    }
    normal
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

/// Two sites that reach the same place would each plan, and prune, what the other
/// applied: refused. The second one (in file order) carries the error.
fn shared_targets(repo: &FleetRepo, out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<String, &Located<Site>> = BTreeMap::new();
    let mut sites: Vec<&Located<Site>> = repo.sites.values().collect();
    sites.sort_by(|a, b| (&a.file, a.node.pos).cmp(&(&b.file, b.node.pos)));
    for site in sites {
        let Some((target, pointer)) = target_of(repo, &site.value) else {
            continue;
        };
        if let Some(first) = seen.get(&target) {
            out.push(
                site.diag(
                    Code::SharedTarget,
                    pointer,
                    format!(
                        "Site `{}` reaches {target}, as Site `{}` does; each would plan and prune the other's objects",
                        site.value.metadata.name, first.value.metadata.name
                    ),
                )
                .with_hint(format!(
                    "give each site its own context and namespace (or Slurm endpoint or user); the other is defined at {}",
                    first.origin()
                )),
            );
        } else {
            seen.insert(target, site);
        }
    }
}

/// Where a site's objects live, in words, and the field that says so.
fn target_of(repo: &FleetRepo, site: &Site) -> Option<(String, &'static str)> {
    if let Some(k) = &site.spec.kubernetes {
        let cluster = if k.in_cluster {
            "the cluster drover runs in".to_owned()
        } else {
            let config = k
                .kubeconfig_ref
                .as_deref()
                .map_or("the default kubeconfig".to_owned(), |r| {
                    format!("the kubeconfig of SecretRef `{r}`")
                });
            let context = k
                .context
                .as_deref()
                .map_or("the current context".to_owned(), |c| {
                    format!("context `{c}`")
                });
            format!("{context} of {config}")
        };
        let namespace = repo.runner_namespace(site);
        return Some((
            format!("{cluster}, namespace `{namespace}`"),
            "/spec/kubernetes",
        ));
    }
    let slurm = site.spec.slurm.as_ref()?;
    if let Some(rest) = &slurm.rest {
        let url = rest.url.trim_end_matches('/');
        let target = format!("slurmrestd {url} as user `{}`", rest.user);
        return Some((target, "/spec/slurm/rest/url"));
    }
    let cli = slurm.cli.as_ref()?;
    let conf = cli
        .slurm_conf
        .as_deref()
        .unwrap_or("the default slurm.conf");
    let user = cli.user.as_deref().unwrap_or("drover's own user");
    let target = format!("the Slurm cluster of {conf} as {user}");
    Some((target, "/spec/slurm/cli"))
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

static DNS1123_LABEL: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap());
static DNS1123_SUBDOMAIN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
static QUALIFIED_NAME: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").unwrap()
});
/// The reference grammar of distribution/reference: `[domain[:port]/]path[:tag][@digest]`.
static IMAGE_REFERENCE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    let component = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
    let domain = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?";
    let tag = r"[\w][\w.-]{0,127}";
    let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    regex::Regex::new(&format!(
        r"^(?:{domain}/)?{component}(?:/{component})*(?::{tag})?(?:@{digest})?$"
    ))
    .unwrap()
});

/// The ARC chart's limit on a scale set's name.
pub(crate) const ARC_SCALE_SET_NAME_MAX: usize = 45;

/// Why `ns` is not a valid namespace name, if it is not.
pub(crate) fn namespace_problem(ns: &str) -> Option<String> {
    (ns.len() > 63 || !DNS1123_LABEL.is_match(ns)).then(|| {
        format!("`{}` is not a valid namespace: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit", shorten(ns))
    })
}

fn subdomain_problem(name: &str) -> Option<String> {
    (name.len() > 253 || !DNS1123_SUBDOMAIN.is_match(name)).then(|| {
        format!("`{}` is not a valid object name: at most 253 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", shorten(name))
    })
}

/// Why `key` is not a valid label (or annotation) key, if it is not.
pub(crate) fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && DNS1123_SUBDOMAIN.is_match(p));
    let name_ok = !name.is_empty() && name.len() <= 63 && QUALIFIED_NAME.is_match(name);
    (!(prefix_ok && name_ok)).then(|| {
        format!("`{}` is not a valid label key: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", shorten(key))
    })
}

/// Why `value` is not a valid label value, if it is not.
pub(crate) fn label_value_problem(value: &str) -> Option<String> {
    (!value.is_empty() && (value.len() > 63 || !QUALIFIED_NAME.is_match(value))).then(|| {
        format!("`{}` ({} characters) is not a valid label value: at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", shorten(value), value.chars().count())
    })
}

/// Why `image` is not a container image reference, if it is not.
pub(crate) fn image_problem(image: &str) -> Option<String> {
    (image.len() > 4096 || !IMAGE_REFERENCE.is_match(image)).then(|| {
        format!("`{}` is not a container image reference ([registry/]path[:tag][@digest], lower-case path)", shorten(image))
    })
}

/// A value as quoted in a message: at most 80 characters.
fn shorten(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// What Kubernetes would refuse at apply time, found at `validate` time: namespaces, Secret
/// names, label and taint keys and values, images, a GitHub App's installation id (ARC
/// needs it), and the names drover derives (ARC's scale set name).
fn kubernetes_values(repo: &FleetRepo, out: &mut Vec<Diagnostic>) {
    if let Some(fleet) = &repo.fleet {
        let spec = &fleet.value.spec;
        if let Some(app) = &spec.github.app
            && app.installation_id.is_none()
        {
            out.push(
                fleet
                    .diag(
                        Code::AppInstallationId,
                        "/spec/github/app",
                        "a GitHub App needs its installationId: actions-runner-controller reads github_app_installation_id from its config Secret, and drover's own client needs it",
                    )
                    .with_hint("add `installationId:` (the number in the App installation's settings URL)"),
            );
        }
        if let Some(ns) = &spec.defaults.namespace
            && let Some(why) = namespace_problem(ns)
        {
            out.push(fleet.diag(Code::KubernetesName, "/spec/defaults/namespace", why));
        }
        if let Some(image) = &spec.defaults.runner_image
            && let Some(why) = image_problem(image)
        {
            out.push(fleet.diag(Code::ImageReference, "/spec/defaults/runnerImage", why));
        }
    }
    for site in repo.sites.values() {
        if let Some(ns) = site
            .value
            .spec
            .kubernetes
            .as_ref()
            .and_then(|k| k.namespace.as_ref())
            && let Some(why) = namespace_problem(ns)
        {
            out.push(site.diag(Code::KubernetesName, "/spec/kubernetes/namespace", why));
        }
    }
    for secret in repo.secrets.values() {
        if let Some(ks) = &secret.value.spec.kubernetes_secret {
            if let Some(why) = namespace_problem(&ks.namespace) {
                out.push(secret.diag(
                    Code::KubernetesName,
                    "/spec/kubernetesSecret/namespace",
                    why,
                ));
            }
            if let Some(why) = subdomain_problem(&ks.name) {
                out.push(secret.diag(Code::KubernetesName, "/spec/kubernetesSecret/name", why));
            }
        }
    }
    for pool in repo.pools.values() {
        let Some(kp) = &pool.value.spec.kubernetes else {
            continue;
        };
        for (field, map) in [("labels", &kp.labels), ("nodeSelector", &kp.node_selector)] {
            for (key, value) in map {
                let pointer = format!(
                    "/spec/kubernetes/{field}/{}",
                    key.replace('~', "~0").replace('/', "~1")
                );
                if let Some(why) = label_key_problem(key) {
                    out.push(pool.diag(Code::KubernetesLabel, &pointer, why));
                }
                if let Some(why) = label_value_problem(value) {
                    out.push(pool.diag(Code::KubernetesLabel, &pointer, why));
                }
            }
        }
        for (i, taint) in kp.taints.iter().enumerate() {
            let pointer = format!("/spec/kubernetes/taints/{i}");
            if let Some(why) = label_key_problem(&taint.key) {
                out.push(pool.diag(Code::KubernetesLabel, &format!("{pointer}/key"), why));
            }
            if let Some(why) = taint.value.as_deref().and_then(label_value_problem) {
                out.push(pool.diag(Code::KubernetesLabel, &format!("{pointer}/value"), why));
            }
        }
    }
    for set in repo.runner_sets.values() {
        let spec = &set.value.spec;
        if let Some(image) = &spec.image
            && spec.container.is_none()
            && let Some(why) = image_problem(image)
        {
            out.push(set.diag(Code::ImageReference, "/spec/image", why));
        }
        let name = &set.value.metadata.name;
        if spec.engine == Engine::Arc && name.len() > ARC_SCALE_SET_NAME_MAX {
            out.push(
                set.diag(
                    Code::DerivedNameTooLong,
                    "/metadata/name",
                    format!("an engine: arc runner set's name is its scale set name, at most {ARC_SCALE_SET_NAME_MAX} characters; `{name}` has {}", name.len()),
                )
                .with_hint("shorten the runner set's name"),
            );
        }
    }
}
