//! Cluster identity: which cluster a Kubernetes site's connection really reaches.
//!
//! Two Site documents can name the same cluster through different kubeconfig contexts (or
//! a context and in-cluster config), which `validate` cannot see. A cluster's identity is
//! the UID of its `kube-system` Namespace: created once with the cluster, never reused,
//! readable with one GET. Every site of a run records the identity it observed in one
//! [`Claims`] book (per CLI run; process-wide in `drover serve`), and a site whose cluster
//! another site of the fleet also reaches is refused before anything is planned or written,
//! unless the site opts in with `spec.kubernetes.sharedCluster: true`.
//!
//! An identity that cannot be read (RBAC refuses `get` on the namespace, the server has no
//! `kube-system`) is *unknown*: the site goes on with a finding that says the check could
//! not run, and an unknown identity never matches another.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject};

use super::client::{self, Error, RetryPolicy};
use super::kinds;
use super::observe::get_named;
use crate::fleet::FleetRepo;
use crate::sites::{RunOptions, SiteContext};

/// The namespace whose UID names a cluster.
pub const IDENTITY_NAMESPACE: &str = "kube-system";

/// How long a recorded identity counts as fresh: a site's own reconcile within this time
/// reuses it instead of reading it again.
const FRESH: Duration = Duration::from_secs(60);
/// How long a failed identity read is not retried by [`Claims::missing`] (the site's own
/// reconcile still reads it).
const RETRY_UNKNOWN: Duration = Duration::from_secs(300);

/// A cluster's identity: the UID of its `kube-system` Namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub String);

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads the identity of the cluster `client` reaches: `Ok(None)` when the server has no
/// `kube-system` namespace or it carries no UID (the identity is unknown, not absent).
pub async fn read(
    client: &kube::Client,
    timeout: Duration,
    retry: RetryPolicy,
) -> Result<Option<ClusterId>, Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kinds::NAMESPACE.api_resource());
    let what = format!("reading Namespace {IDENTITY_NAMESPACE} (the cluster's identity)");
    let found = client::call(what, timeout, retry, || get_named(&api, IDENTITY_NAMESPACE)).await?;
    Ok(found
        .and_then(|ns| ns.metadata.uid)
        .filter(|uid| !uid.is_empty())
        .map(ClusterId))
}

/// Reads the identity of every Kubernetes site of the fleet that [`Claims::missing`]
/// names, concurrently, each bounded by its site's timeout; failures are recorded as
/// unknown. Run before a run's sites are checked, so that `--site X` and the first round of
/// `drover serve` see every other site's cluster, not just those planned so far. Runners-only
/// rounds (the autoscaler's fast path) skip it.
pub async fn learn(repo: &FleetRepo, options: &RunOptions) {
    if options.runners_only {
        return;
    }
    let kubernetes = repo
        .sites
        .values()
        .filter(|s| s.value.spec.kubernetes.is_some())
        .map(|s| s.value.metadata.name.as_str());
    let missing = options.cluster_claims.missing(kubernetes);
    futures::future::join_all(missing.into_iter().map(|name| async move {
        let ctx = SiteContext {
            repo,
            site: &repo.sites[name],
            options,
        };
        let timeout = client::site_timeout(&ctx);
        let id = async {
            let client = match options.site_cache.as_deref() {
                Some(cache) => cache.client(&ctx).await,
                None => client::connect(&ctx).await,
            }
            .ok()?;
            read(&client, timeout, RetryPolicy::default())
                .await
                .ok()
                .flatten()
        };
        let id = tokio::time::timeout(timeout, id).await.ok().flatten();
        options.cluster_claims.record(name, id);
    }))
    .await;
}

/// What is known of one site's cluster identity.
#[derive(Debug, Clone)]
struct Claim {
    /// The identity, or `None` when it could not be read.
    id: Option<ClusterId>,
    /// When it was read (or the read failed).
    at: Instant,
}

/// The identities the sites of a fleet reached, by site name.
#[derive(Debug, Default)]
pub struct Claims {
    sites: Mutex<BTreeMap<String, Claim>>,
}

/// Why a site is refused: another site of the fleet reaches the same cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cluster identity {id} (the UID of Namespace kube-system) is also reached by site(s) {}; \
     two sites on one cluster must each set spec.kubernetes.sharedCluster: true",
    others.join(", ")
)]
pub struct SharedCluster {
    /// The cluster both sites reach.
    pub id: ClusterId,
    /// The other sites of the fleet that reach it, by name.
    pub others: Vec<String>,
}

impl Claims {
    fn book(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Claim>> {
        self.sites.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what `site` reached (`None`: its identity could not be read).
    pub fn record(&self, site: &str, id: Option<ClusterId>) {
        self.book().insert(
            site.to_string(),
            Claim {
                id,
                at: Instant::now(),
            },
        );
    }

    /// The identity recorded for `site` within the last minute, if any.
    pub fn fresh(&self, site: &str) -> Option<ClusterId> {
        self.book()
            .get(site)
            .filter(|c| c.at.elapsed() < FRESH)
            .and_then(|c| c.id.clone())
    }

    /// The identity recorded for `site`, however old.
    pub fn known(&self, site: &str) -> Option<ClusterId> {
        self.book().get(site).and_then(|c| c.id.clone())
    }

    /// Of `sites`, those with nothing recorded yet, or whose last read failed more than
    /// five minutes ago: the ones to read before a run's sites are checked.
    pub fn missing<'a>(&self, sites: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let book = self.book();
        sites
            .into_iter()
            .filter(|s| match book.get(*s) {
                None => true,
                Some(c) => c.id.is_none() && c.at.elapsed() >= RETRY_UNKNOWN,
            })
            .collect()
    }

    /// Checks `site` of `repo`, which reached `id`: refused when another Kubernetes site
    /// of the fleet reaches the same cluster and `site` does not opt in with
    /// `sharedCluster`. Sites no longer in the fleet are not counted.
    pub fn check(&self, repo: &FleetRepo, site: &str, id: &ClusterId) -> Result<(), SharedCluster> {
        if shares_cluster(repo, site) {
            return Ok(());
        }
        let others: Vec<String> = self
            .book()
            .iter()
            .filter(|(name, claim)| {
                name.as_str() != site
                    && claim.id.as_ref() == Some(id)
                    && repo
                        .sites
                        .get(name.as_str())
                        .is_some_and(|s| s.value.spec.kubernetes.is_some())
            })
            .map(|(name, _)| name.clone())
            .collect();
        if others.is_empty() {
            Ok(())
        } else {
            Err(SharedCluster {
                id: id.clone(),
                others,
            })
        }
    }
}

/// Whether site `name` declares that it shares its cluster with other sites.
fn shares_cluster(repo: &FleetRepo, name: &str) -> bool {
    repo.sites
        .get(name)
        .and_then(|s| s.value.spec.kubernetes.as_ref())
        .is_some_and(|k| k.shared_cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(shared: &[(&str, bool)]) -> FleetRepo {
        let mut text = String::new();
        for (name, flag) in shared {
            text.push_str(&format!(
                "apiVersion: drover.dev/v1alpha1\nkind: Site\nmetadata: {{name: {name}}}\n\
                 spec:\n  kubernetes: {{context: {name}, sharedCluster: {flag}}}\n---\n"
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sites.yaml"), text).unwrap();
        crate::fleet::validate_dir(dir.path(), &Default::default())
            .unwrap()
            .repo
    }

    fn id(text: &str) -> ClusterId {
        ClusterId(text.into())
    }

    #[test]
    fn a_second_site_on_one_cluster_is_refused_unless_it_opts_in() {
        let repo = repo(&[("a", false), ("b", false), ("c", true)]);
        let claims = Claims::default();
        claims.record("a", Some(id("uid-1")));
        assert_eq!(claims.check(&repo, "a", &id("uid-1")), Ok(()));
        claims.record("b", Some(id("uid-1")));
        claims.record("c", Some(id("uid-1")));
        let refused = claims.check(&repo, "a", &id("uid-1")).unwrap_err();
        assert_eq!(refused.others, ["b", "c"]);
        assert!(refused.to_string().contains("sharedCluster"));
        assert_eq!(
            claims.check(&repo, "b", &id("uid-1")).unwrap_err().others,
            ["a", "c"]
        );
        // c opted in: it goes on, whoever else is there.
        assert_eq!(claims.check(&repo, "c", &id("uid-1")), Ok(()));
        // Another cluster is no conflict.
        assert_eq!(claims.check(&repo, "a", &id("uid-2")), Ok(()));
    }

    #[test]
    fn unknown_identities_and_sites_outside_the_fleet_never_match() {
        let repo = repo(&[("a", false), ("b", false)]);
        let claims = Claims::default();
        claims.record("b", None);
        claims.record("gone", Some(id("uid-1")));
        assert_eq!(claims.check(&repo, "a", &id("uid-1")), Ok(()));
        assert_eq!(claims.missing(["a", "b"]), ["a"]);
        claims.record("a", Some(id("uid-1")));
        assert_eq!(claims.fresh("a"), Some(id("uid-1")));
        assert!(claims.missing(["a", "b"]).is_empty());
    }
}
