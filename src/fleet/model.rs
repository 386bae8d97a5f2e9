//! The fleet model, v1alpha1: the Rust types behind every document in a fleet repo.
//!
//! Every kind is a Kubernetes-style document (`apiVersion`, `kind`, `metadata`, `spec`).
//! The JSON Schemas in `schema/` are generated from these types (see [`super::schema`]),
//! so the types are the single source of truth for the published contract.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only API version this release understands.
pub const API_VERSION: &str = "drover.dev/v1alpha1";

/// Document metadata: a name that is unique per kind, plus free-form labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Name of the object, unique per kind (DNS-1123 label: lowercase letters, digits, `-`).
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// Free-form labels, for people and tooling; drover does not interpret them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How drover treats a site: change it, or only report what it would change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SitePolicy {
    /// Apply plans to the site.
    #[default]
    Apply,
    /// Plan and report only; never write to the site.
    ReportOnly,
}

/// What drover does about drift it finds during periodic drift detection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DriftPolicy {
    /// Report drift (metrics, status page, GitHub issue) and leave it.
    #[default]
    Report,
    /// Re-apply the desired state.
    Heal,
}

// ---------------------------------------------------------------------------------------------
// Fleet
// ---------------------------------------------------------------------------------------------

/// Fleet-wide settings: the GitHub connection, defaults and the reconcile policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetSpec {
    /// How drover reaches GitHub.
    pub github: GithubConnection,
    /// Defaults applied to every runner set that does not set the field itself.
    #[serde(default)]
    pub defaults: FleetDefaults,
    /// How and how often drover reconciles.
    #[serde(default)]
    pub reconcile: ReconcileSettings,
}

/// The GitHub connection: a base URL and either a GitHub App or a token, by reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["app"]}, {"required": ["tokenRef"]}]))]
pub struct GithubConnection {
    /// `https://github.com` or a GitHub Enterprise Server URL.
    #[serde(default = "default_github_url")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: String,
    /// GitHub App credentials (preferred).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<GithubApp>,
    /// A SecretRef holding a personal access token, when no App is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ref: Option<String>,
    /// A SecretRef holding the webhook HMAC secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_ref: Option<String>,
}

fn default_github_url() -> String {
    "https://github.com".to_string()
}

/// A GitHub App installation; the private key is a SecretRef.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GithubApp {
    /// The App's numeric id.
    #[schemars(range(min = 1))]
    pub app_id: u64,
    /// The installation id; drover looks it up per scope when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<u64>,
    /// A SecretRef holding the App's PEM private key.
    pub private_key_ref: String,
}

/// Defaults for runner sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetDefaults {
    /// Runner image used by Kubernetes runner sets that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_image: Option<String>,
    /// Namespace for runners on Kubernetes sites that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Runner group for runner sets that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_group: Option<String>,
}

/// Reconcile settings for the whole fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReconcileSettings {
    /// Seconds between full reconciliations of every site, even without commits.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 10))]
    pub interval_seconds: u64,
    /// Delete owned objects the fleet no longer declares. Off unless set.
    #[serde(default)]
    pub prune: bool,
    /// A prune deleting more than this percentage of a site's owned objects stops and
    /// asks for `--allow-mass-prune`.
    #[serde(default = "default_mass_prune")]
    #[schemars(range(min = 1, max = 100))]
    pub mass_prune_percent: u8,
    /// What to do about drift found between reconciles.
    #[serde(default)]
    pub drift: DriftPolicy,
    /// Seconds a runner Pod may take to come online with GitHub (scheduling, image pull,
    /// registration). A Kubernetes runner that is not online by then is replaced and
    /// reported (`runner-start-timeout`).
    #[serde(default = "default_runner_start_timeout")]
    #[schemars(range(min = 60))]
    pub runner_start_timeout_seconds: u64,
}

fn default_interval() -> u64 {
    300
}

fn default_runner_start_timeout() -> u64 {
    600
}

fn default_mass_prune() -> u8 {
    50
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            interval_seconds: default_interval(),
            prune: false,
            mass_prune_percent: default_mass_prune(),
            drift: DriftPolicy::Report,
            runner_start_timeout_seconds: default_runner_start_timeout(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Site
// ---------------------------------------------------------------------------------------------

/// A Kubernetes cluster or a Slurm cluster: how to reach it and what must hold there.
/// Exactly one of `kubernetes` and `slurm` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["kubernetes"]}, {"required": ["slurm"]}]))]
pub struct SiteSpec {
    /// Set for a Kubernetes site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSite>,
    /// Set for a Slurm site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmSite>,
    /// `apply` (default) or `report-only`.
    #[serde(default)]
    pub policy: SitePolicy,
    /// Drift policy for this site; the fleet's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftPolicy>,
    /// Timeout in seconds for one observe or apply call against this site.
    #[serde(default = "default_site_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u64,
}

fn default_site_timeout() -> u64 {
    30
}

/// How to reach a Kubernetes cluster and what drover expects to find there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSite {
    /// The kubeconfig context to use; the current context when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Use the in-cluster service account instead of a kubeconfig.
    #[serde(default)]
    pub in_cluster: bool,
    /// A SecretRef holding a kubeconfig for this site (instead of drover's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_ref: Option<String>,
    /// Namespace for runners and drover's objects; the fleet default or `drover-runners`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Supported Kubernetes versions, e.g. `{min: "1.28", max: "1.32"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionRange>,
    /// What must exist on the cluster for runners to work.
    #[serde(default)]
    pub requires: KubernetesRequirements,
    /// actions-runner-controller on this cluster (for `engine: arc` runner sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arc: Option<ArcSite>,
    /// This site shares its cluster with other sites of the fleet (each in its own
    /// namespace). Without it, a site whose cluster (the UID of its `kube-system`
    /// Namespace) another site of the fleet also reaches is refused before anything is
    /// planned or written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_cluster: bool,
}

/// The actions-runner-controller (gha-runner-scale-set-controller) a site runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArcSite {
    /// The controller's version, e.g. `0.14.2`: rendered as each AutoscalingRunnerSet's
    /// `app.kubernetes.io/version` label (the controller deletes sets whose major.minor
    /// differs from its own). When unset, it is read from the controller's Deployment
    /// (label `app.kubernetes.io/version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+\.[0-9]+$"))]
    pub controller_version: Option<String>,
    /// The controller's ServiceAccount, bound to each set's manager Role (chart value
    /// `controllerServiceAccount`). When unset, it is read from the controller's
    /// Deployment (labels `actions.github.com/controller-service-account-{name,namespace}`),
    /// as the chart does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_service_account: Option<ArcServiceAccount>,
}

/// A ServiceAccount of the ARC controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArcServiceAccount {
    /// Its name, e.g. `arc-gha-rs-controller`.
    pub name: String,
    /// Its namespace, e.g. `arc-systems`.
    pub namespace: String,
}

/// An inclusive range of `MAJOR.MINOR` versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VersionRange {
    /// Lowest supported version, e.g. `1.28`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+$"))]
    pub min: Option<String>,
    /// Highest supported version, e.g. `1.32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+$"))]
    pub max: Option<String>,
}

/// Cluster prerequisites that are checked, reported as findings, and never installed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesRequirements {
    /// Device-plugin DaemonSets that must be ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_plugins: Vec<DaemonSetRef>,
    /// RuntimeClasses that must exist, e.g. `nvidia`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_classes: Vec<String>,
    /// CustomResourceDefinitions that must exist, e.g. `externalsecrets.external-secrets.io`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crds: Vec<String>,
}

/// A DaemonSet by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DaemonSetRef {
    /// Namespace of the DaemonSet.
    pub namespace: String,
    /// Name of the DaemonSet.
    pub name: String,
}

/// How to reach a Slurm cluster: slurmrestd (`rest`) or the CLI tools (`cli`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["rest"]}, {"required": ["cli"]}]))]
pub struct SlurmSite {
    /// slurmrestd with JWT auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<SlurmRest>,
    /// sbatch/squeue/scancel on the machine drover runs on (munge auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli: Option<SlurmCli>,
    /// Partition used by pools that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_partition: Option<String>,
    /// Account runner jobs are charged to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Quality of service for runner jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Node-local scratch directory under which each runner job gets its work directory.
    #[serde(default = "default_scratch")]
    pub scratch_dir: String,
    /// Apptainer settings for every runner set of the site that runs in a `container`:
    /// bind mounts all of them get, and the image cache. A runner set's own `container`
    /// settings add to these and override them.
    #[serde(default, skip_serializing_if = "SlurmContainerDefaults::is_empty")]
    pub container: SlurmContainerDefaults,
}

/// Apptainer defaults of a Slurm site, for runner sets that run in a `container`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlurmContainerDefaults {
    /// Host paths bound into every container on the site, e.g. `/cvmfs` (read-only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<BindMount>,
    /// Absolute path of Apptainer's image cache (`APPTAINER_CACHEDIR`) on the nodes: a
    /// directory that outlives the job directories, so that a `docker://` image is pulled
    /// and converted once, not by every job. The job creates it when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub image_cache_dir: Option<String>,
}

impl SlurmContainerDefaults {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.binds.is_empty() && self.image_cache_dir.is_none()
    }
}

/// A host path bound into a runner's Apptainer container (`--bind SOURCE:TARGET[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BindMount {
    /// Absolute path on the node, e.g. `/cvmfs` or `/datasets/imagenet`.
    #[schemars(regex(pattern = r"^/"))]
    pub source: String,
    /// Absolute path inside the container; the same as `source` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub target: Option<String>,
    /// Mount read-only (`:ro`). Off unless set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl BindMount {
    /// Where the path appears inside the container: `target`, else `source`.
    pub fn target(&self) -> &str {
        self.target.as_deref().unwrap_or(&self.source)
    }
}

fn default_scratch() -> String {
    "/tmp".to_string()
}

/// slurmrestd connection; the JWT comes from a SecretRef.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlurmRest {
    /// Base URL, e.g. `https://slurm.example.org:6820`.
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: String,
    /// The Slurm user the token belongs to (`X-SLURM-USER-NAME`).
    pub user: String,
    /// A SecretRef holding the JWT (`X-SLURM-USER-TOKEN`).
    pub token_ref: String,
}

/// CLI mode: the Slurm client tools run as `user` on the host drover runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlurmCli {
    /// Run the tools as this user (via `runuser`); drover's own user when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Absolute path of the directory holding `sbatch`, `squeue`, `scancel`, `scontrol` and
    /// `sinfo`, e.g. `/opt/slurm/bin`; found on drover's `PATH` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub bin_dir: Option<String>,
    /// Absolute path of the cluster's slurm.conf, passed to the tools as `SLURM_CONF`, for a
    /// host that reaches several clusters; the tools' default (or drover's own `SLURM_CONF`)
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub slurm_conf: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// NodePool
// ---------------------------------------------------------------------------------------------

/// Nodes of one site that runners are placed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodePoolSpec {
    /// The Site these nodes belong to.
    pub site: String,
    /// How many nodes the pool is expected to have; fewer is a finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<u32>,
    /// GPUs on each node of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<PoolGpu>,
    /// Kubernetes placement; only on Kubernetes sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesPool>,
    /// Slurm placement; only on Slurm sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmPool>,
}

/// GPU vendor; decides the extended resource name on Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    /// `nvidia.com/gpu`
    Nvidia,
    /// `amd.com/gpu`
    Amd,
}

impl GpuVendor {
    /// The Kubernetes extended resource name for this vendor's GPUs.
    pub fn resource_name(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia.com/gpu",
            GpuVendor::Amd => "amd.com/gpu",
        }
    }
}

impl std::fmt::Display for GpuVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Amd => "amd",
        })
    }
}

/// The GPUs on each node of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolGpu {
    /// `nvidia` or `amd`.
    pub vendor: GpuVendor,
    /// Model name, e.g. `MI300X`, `H100`, `a100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// GPUs per node.
    #[schemars(range(min = 1, max = 64))]
    pub per_node: u32,
}

/// Kubernetes placement for a pool's runners and what drover keeps on its nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesPool {
    /// Selects the pool's nodes, and is the runner pods' nodeSelector.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Labels drover keeps on the pool's nodes (server-side apply, only these keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Taints drover keeps on the pool's nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Tolerations added to runner pods on this pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// RuntimeClass for runner pods, e.g. `nvidia`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
}

/// Taint effect, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    /// Do not schedule pods without a toleration.
    NoSchedule,
    /// Avoid scheduling pods without a toleration.
    PreferNoSchedule,
    /// Evict pods without a toleration.
    NoExecute,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Taint effect.
    pub effect: TaintEffect,
}

/// Toleration operator, as in Kubernetes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TolerationOperator {
    /// Key and value must match.
    #[default]
    Equal,
    /// Key must exist.
    Exists,
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Toleration {
    /// Taint key to tolerate.
    pub key: String,
    /// `Equal` (default) or `Exists`.
    #[serde(default)]
    pub operator: TolerationOperator,
    /// Value to match with `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Effect to tolerate; all effects when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
}

/// Slurm placement for a pool's runner jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlurmPool {
    /// Partition runner jobs are submitted to; the site's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// GRES each node offers, e.g. `gpu:a100:4`; checked against the live partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]+(:[A-Za-z0-9_.-]+)?(:[0-9]+)?$"))]
    pub gres: Option<String>,
    /// Node feature constraint for runner jobs (`--constraint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// RunnerSet
// ---------------------------------------------------------------------------------------------

/// Ephemeral GitHub Actions runners with one label set, on one pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunnerSetSpec {
    /// Where on GitHub the runners register.
    pub github: RunnerScope,
    /// Runner labels; jobs whose `runs-on` labels are all in this set match it.
    #[schemars(length(min = 1, max = 100))]
    pub labels: Vec<String>,
    /// The NodePool the runners run on.
    pub pool: String,
    /// `drover` (drover manages runners itself) or `arc` (render an
    /// actions-runner-controller AutoscalingRunnerSet; Kubernetes only).
    #[serde(default)]
    pub engine: Engine,
    /// Fewest runners kept, even without demand.
    #[serde(default)]
    pub min: u32,
    /// Most runners ever run at once.
    #[schemars(range(max = 10000))]
    pub max: u32,
    /// Idle runners kept above demand, still bounded by `max`.
    #[serde(default)]
    pub idle_buffer: u32,
    /// Resources of one runner.
    #[serde(default)]
    pub resources: Resources,
    /// Runner container image (Kubernetes; Slurm with `container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command that starts the runner, replacing the image's entrypoint or the default
    /// Slurm runner script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Docker for jobs: `none`, `dind` (privileged sidecar) or `rootless` (rootless
    /// sidecar). Kubernetes only: Slurm runner sets take `none`.
    #[serde(default)]
    pub docker: DockerMode,
    /// Environment for the runner; values are plain text, secrets by `secretRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Slurm only: job time limit in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub time_limit_minutes: Option<u32>,
    /// Slurm only: run the runner in an Apptainer container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<SlurmContainer>,
}

/// A runner's GitHub scope and runner group. Exactly one of `enterprise`, `org`, `repo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["enterprise"]}, {"required": ["org"]}, {"required": ["repo"]}]))]
pub struct RunnerScope {
    /// Enterprise slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<String>,
    /// Organization login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Repository as `owner/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"))]
    pub repo: Option<String>,
    /// Runner group (organization and enterprise scope only: a repository's runners are
    /// all in `Default`); the fleet default or `Default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_group: Option<String>,
}

/// GitHub's one runner group of repository runners (and every scope's fallback).
pub const DEFAULT_RUNNER_GROUP: &str = "Default";

impl RunnerScope {
    /// The runner group its runners join: the set's, else `fleet_default`, else `Default`.
    /// Repository-scoped runners have only `Default` (validate refuses a group there, E315),
    /// so the fleet default does not apply to them.
    pub fn effective_runner_group(&self, fleet_default: Option<&str>) -> String {
        if self.repo.is_some() {
            return DEFAULT_RUNNER_GROUP.to_string();
        }
        self.runner_group
            .as_deref()
            .or(fleet_default)
            .unwrap_or(DEFAULT_RUNNER_GROUP)
            .to_string()
    }

    /// A stable text form, e.g. `org/acme` or `repo/acme/widgets`, or `None` when the scope
    /// names zero or several targets.
    pub fn key(&self) -> Option<String> {
        match (&self.enterprise, &self.org, &self.repo) {
            (Some(e), None, None) => Some(format!("enterprise/{e}")),
            (None, Some(o), None) => Some(format!("org/{o}")),
            (None, None, Some(r)) => Some(format!("repo/{r}")),
            _ => None,
        }
    }
}

/// Which engine manages a runner set's runners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// drover creates and removes runners itself.
    #[default]
    Drover,
    /// An actions-runner-controller AutoscalingRunnerSet does (Kubernetes only).
    Arc,
}

/// How jobs on a runner get Docker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DockerMode {
    /// No Docker.
    #[default]
    None,
    /// A privileged docker:dind sidecar.
    Dind,
    /// A rootless Docker sidecar.
    Rootless,
}

/// Resources of one runner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// CPU as a Kubernetes quantity: `2`, `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?m?$"))]
    pub cpu: Option<String>,
    /// Memory as a Kubernetes quantity: `8Gi`, `512Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub memory: Option<String>,
    /// GPUs for one runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequest>,
}

/// GPUs requested by one runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GpuRequest {
    /// Must match the pool's GPU vendor.
    pub vendor: GpuVendor,
    /// GPUs per runner; at most the pool's GPUs per node.
    #[schemars(range(min = 1, max = 64))]
    pub count: u32,
}

/// One environment variable: a literal value, or a reference to a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["value"]}, {"required": ["secretRef"]}]))]
pub struct EnvVar {
    /// Variable name.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Literal value; never a secret (drover refuses values that look like one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A SecretRef whose value is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

/// Run a Slurm runner in an Apptainer container (`apptainer exec --userns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlurmContainer {
    /// The image, as `apptainer exec` takes it: the path of a `.sif` file or a sandbox
    /// directory on the nodes, or a reference such as `docker://…` (pulled into the image
    /// cache).
    pub image: String,
    /// Host paths bound into the container, besides the site's `container.binds`; one with
    /// the same target as a site bind replaces it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<BindMount>,
    /// Apptainer's image cache for this runner set; the site's `container.imageCacheDir`
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub image_cache_dir: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// SecretRef
// ---------------------------------------------------------------------------------------------

/// Where a secret lives; never its value. Exactly one source is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["kubernetesSecret"]}, {"required": ["externalSecret"]}, {"required": ["env"]}, {"required": ["file"]}]))]
pub struct SecretRefSpec {
    /// A key of a Kubernetes Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_secret: Option<KubernetesSecretSource>,
    /// A remote key in an External Secrets store; drover renders an ExternalSecret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret: Option<ExternalSecretSource>,
    /// An environment variable of drover's own process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvSource>,
    /// A file readable by drover's own process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
}

/// A key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSecretSource {
    /// The Site whose cluster holds the Secret; drover's own cluster when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// A key in an External Secrets Operator store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalSecretSource {
    /// The Site where the ExternalSecret is rendered.
    pub site: String,
    /// The (Cluster)SecretStore name.
    pub store: String,
    /// `SecretStore` or `ClusterSecretStore` (default).
    #[serde(default)]
    pub store_kind: StoreKind,
    /// The key in the remote store.
    pub remote_key: String,
    /// A property within the remote value (e.g. a JSON field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
}

/// Kind of External Secrets store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StoreKind {
    /// A namespaced SecretStore.
    SecretStore,
    /// A cluster-wide ClusterSecretStore.
    #[default]
    ClusterSecretStore,
}

impl StoreKind {
    /// The kind's name, as an ExternalSecret's `secretStoreRef.kind` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::SecretStore => "SecretStore",
            StoreKind::ClusterSecretStore => "ClusterSecretStore",
        }
    }
}

/// An environment variable of drover's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvSource {
    /// Variable name.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
}

/// A file readable by drover's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileSource {
    /// Absolute path.
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
}

// ---------------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------------

macro_rules! document {
    ($(#[$doc:meta])* $name:ident, $spec:ty, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        #[schemars(title = $kind)]
        pub struct $name {
            /// Always `drover.dev/v1alpha1`.
            #[schemars(regex(pattern = r"^drover\.dev/v1alpha1$"))]
            pub api_version: String,
            #[doc = concat!("Always `", $kind, "`.")]
            #[schemars(regex(pattern = concat!("^", $kind, "$")))]
            pub kind: String,
            /// Name and labels.
            pub metadata: Metadata,
            /// The desired state.
            pub spec: $spec,
        }

        impl $name {
            /// The kind name as written in documents.
            pub const KIND: &'static str = $kind;
        }
    };
}

document!(
    /// Fleet-wide settings (exactly one per fleet repo).
    Fleet, FleetSpec, "Fleet"
);
document!(
    /// A Kubernetes or Slurm cluster.
    Site, SiteSpec, "Site"
);
document!(
    /// Nodes of one site.
    NodePool, NodePoolSpec, "NodePool"
);
document!(
    /// Runners with one label set on one pool.
    RunnerSet, RunnerSetSpec, "RunnerSet"
);
document!(
    /// Where a secret lives.
    SecretRef, SecretRefSpec, "SecretRef"
);

/// The kinds of the fleet model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// [`Fleet`]
    Fleet,
    /// [`Site`]
    Site,
    /// [`NodePool`]
    NodePool,
    /// [`RunnerSet`]
    RunnerSet,
    /// [`SecretRef`]
    SecretRef,
}

impl Kind {
    /// Every kind, in dependency order.
    pub const ALL: [Kind; 5] = [
        Kind::Fleet,
        Kind::SecretRef,
        Kind::Site,
        Kind::NodePool,
        Kind::RunnerSet,
    ];

    /// The kind as written in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fleet => Fleet::KIND,
            Kind::Site => Site::KIND,
            Kind::NodePool => NodePool::KIND,
            Kind::RunnerSet => RunnerSet::KIND,
            Kind::SecretRef => SecretRef::KIND,
        }
    }

    /// Parses a kind name, case-sensitively, as Kubernetes does.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
