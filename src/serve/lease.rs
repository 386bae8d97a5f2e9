//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one applies (the others keep planning and serving status).
//!
//! The protocol is the one client-go's leaderelection uses: read the Lease; create it when
//! absent (a concurrent creator gets 409 AlreadyExists); take it over when its holder has
//! not renewed within `leaseDurationSeconds`; renew it while holding it. Every write is a
//! replace carrying the `resourceVersion` that was read, so two replicas racing for an
//! expired Lease cannot both win: the loser gets 409 Conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

/// Verbs the elector uses on Leases in its namespace: `get` (every round), `create` (the
/// first replica) and `update` (renew, take over, release: replaces carrying the
/// resourceVersion read). `deploy/kubernetes/rbac.yaml` grants exactly these.
pub const LEASE_VERBS: &[&str] = &["create", "get", "update"];

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a holder keeps the lease without renewing.
    pub duration: Duration,
    /// Kubeconfig to reach the cluster holding the Lease; `None` uses the default
    /// (`$KUBECONFIG`, `~/.kube/config`, else in-cluster).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Kubeconfig context (the current context when `None`).
    pub context: Option<String>,
}

impl LeaseConfig {
    /// A client for the cluster holding the Lease.
    pub async fn client(&self) -> Result<kube::Client, LeaseClientError> {
        crate::tls::install_crypto_provider();
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    LeaseClientError::Read {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                let options = kube::config::KubeConfigOptions {
                    context: self.context.clone(),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None => kube::Config::infer().await?,
        };
        Ok(kube::Client::try_from(config)?)
    }
}

/// Why no client for the lease's cluster could be built.
#[derive(Debug, thiserror::Error)]
pub enum LeaseClientError {
    /// The kubeconfig file cannot be read.
    #[error("kubeconfig {path}: {source}")]
    Read {
        /// Its path.
        path: String,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig has no usable context.
    #[error(transparent)]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// No kubeconfig and not in a cluster.
    #[error(transparent)]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built.
    #[error(transparent)]
    Client(#[from] kube::Error),
}

/// What one election round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This replica holds the lease.
    Leader,
    /// Another replica holds it.
    Follower {
        /// The holder's identity.
        holder: String,
    },
}

/// Runs election rounds against one Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Elector {
    /// An elector using `client`.
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self { api, config }
    }

    /// One round: acquire, renew, or observe the holder. Errors (including losing a race)
    /// mean "not leader" for this round.
    pub async fn round(&self) -> Result<Role, kube::Error> {
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            self.api
                .create(&PostParams::default(), &self.fresh(now, 0))
                .await?;
            return Ok(Role::Leader);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder == self.config.identity {
            self.replace(lease, now, spec.lease_transitions.unwrap_or(0))
                .await?;
            return Ok(Role::Leader);
        }
        if !holder.is_empty() && !expired(&spec, now) {
            return Ok(Role::Follower { holder });
        }
        self.replace(lease, now, spec.lease_transitions.unwrap_or(0) + 1)
            .await?;
        Ok(Role::Leader)
    }

    /// Gives the lease up (on shutdown), so a follower takes over without waiting.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    fn fresh(&self, now: Timestamp, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(self.spec(now, transitions)),
        }
    }

    fn spec(&self, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Replaces the lease read (its resourceVersion makes the write conditional).
    async fn replace(
        &self,
        mut lease: Lease,
        now: Timestamp,
        transitions: i32,
    ) -> Result<(), kube::Error> {
        let keep_acquired = lease
            .spec
            .as_ref()
            .filter(|s| s.holder_identity.as_deref() == Some(self.config.identity.as_str()))
            .and_then(|s| s.acquire_time.clone());
        let mut spec = self.spec(now, transitions);
        if let Some(acquired) = keep_acquired {
            spec.acquire_time = Some(acquired);
        }
        lease.spec = Some(spec);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

/// Whether the holder failed to renew within the lease duration.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    now.as_second() - renewed.0.as_second() > duration
}
