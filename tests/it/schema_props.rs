//! Property tests: whatever the model can express, the published schemas accept, and it
//! survives a round trip through YAML text and the loader unchanged.

use std::collections::BTreeMap;
use std::path::Path;

use drover::fleet::load::{self, LoadOptions, Loaded};
use drover::fleet::model::*;
use drover::fleet::schema::Validators;
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;
use serde::Serialize;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,20}[a-z0-9]"
}

fn text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 ./:_-]{1,30}"
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("[a-z]{1,8}(\\.io/[a-z]{1,8})?", "[a-z0-9]{0,10}", 0..3)
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (name(), labels(), labels()).prop_map(|(name, labels, annotations)| Metadata {
        name,
        labels,
        annotations,
    })
}

fn vendor() -> impl Strategy<Value = GpuVendor> {
    prop_oneof![Just(GpuVendor::Nvidia), Just(GpuVendor::Amd)]
}

fn taint_effect() -> impl Strategy<Value = TaintEffect> {
    prop_oneof![
        Just(TaintEffect::NoSchedule),
        Just(TaintEffect::PreferNoSchedule),
        Just(TaintEffect::NoExecute)
    ]
}

fn kubernetes_site() -> impl Strategy<Value = KubernetesSite> {
    (
        of(name()),
        any::<bool>(),
        of(name()),
        of(name()),
        of((of("1\\.[0-9]{2}"), of("1\\.[0-9]{2}"))
            .prop_map(|(min, max)| VersionRange { min, max })),
        vec(name(), 0..3),
        vec(
            (name(), name()).prop_map(|(namespace, name)| DaemonSetRef { namespace, name }),
            0..2,
        ),
    )
        .prop_map(
            |(context, in_cluster, kubeconfig_ref, namespace, version, crds, device_plugins)| {
                KubernetesSite {
                    context,
                    in_cluster,
                    kubeconfig_ref,
                    namespace,
                    version,
                    requires: KubernetesRequirements {
                        device_plugins,
                        runtime_classes: crds.clone(),
                        crds,
                    },
                    arc: None,
                    shared_cluster: in_cluster,
                }
            },
        )
}

fn slurm_site() -> impl Strategy<Value = SlurmSite> {
    (
        any::<bool>(),
        name(),
        name(),
        of(name()),
        of(name()),
        of(name()),
        "/[a-z]{1,10}",
        container_defaults(),
    )
        .prop_map(
            |(
                use_rest,
                user,
                token_ref,
                default_partition,
                account,
                qos,
                scratch_dir,
                container,
            )| SlurmSite {
                rest: use_rest.then(|| SlurmRest {
                    url: "https://slurm.example.org:6820".into(),
                    user: user.clone(),
                    token_ref,
                }),
                cli: (!use_rest).then_some(SlurmCli {
                    user: Some(user),
                    ..SlurmCli::default()
                }),
                default_partition,
                account,
                qos,
                scratch_dir,
                container,
            },
        )
}

fn abs_path() -> impl Strategy<Value = String> {
    "(/[a-z0-9_-]{1,8}){1,3}"
}

fn bind_mount() -> impl Strategy<Value = BindMount> {
    (abs_path(), of(abs_path()), any::<bool>()).prop_map(|(source, target, read_only)| BindMount {
        source,
        target,
        read_only,
    })
}

fn container_defaults() -> impl Strategy<Value = SlurmContainerDefaults> {
    (vec(bind_mount(), 0..3), of(abs_path())).prop_map(|(binds, image_cache_dir)| {
        SlurmContainerDefaults {
            binds,
            image_cache_dir,
        }
    })
}

fn slurm_container() -> impl Strategy<Value = SlurmContainer> {
    (text(), vec(bind_mount(), 0..3), of(abs_path())).prop_map(|(image, binds, image_cache_dir)| {
        SlurmContainer {
            image,
            binds,
            image_cache_dir,
        }
    })
}

fn site() -> impl Strategy<Value = Site> {
    let driver = prop_oneof![
        kubernetes_site().prop_map(|k| (Some(k), None)),
        slurm_site().prop_map(|s| (None, Some(s))),
    ];
    (
        metadata(),
        driver,
        any::<bool>(),
        of(any::<bool>()),
        1u64..3600,
    )
        .prop_map(
            |(metadata, (kubernetes, slurm), report, heal, timeout_seconds)| Site {
                api_version: API_VERSION.into(),
                kind: "Site".into(),
                metadata,
                spec: SiteSpec {
                    kubernetes,
                    slurm,
                    policy: if report {
                        SitePolicy::ReportOnly
                    } else {
                        SitePolicy::Apply
                    },
                    drift: heal.map(|h| {
                        if h {
                            DriftPolicy::Heal
                        } else {
                            DriftPolicy::Report
                        }
                    }),
                    timeout_seconds,
                },
            },
        )
}

fn node_pool() -> impl Strategy<Value = NodePool> {
    let gpu = (vendor(), of(text()), 1u32..=64).prop_map(|(vendor, model, per_node)| PoolGpu {
        vendor,
        model,
        per_node,
    });
    let taint = (name(), of(name()), taint_effect()).prop_map(|(key, value, effect)| Taint {
        key,
        value,
        effect,
    });
    let toleration =
        (name(), any::<bool>(), of(taint_effect())).prop_map(|(key, exists, effect)| Toleration {
            key,
            operator: if exists {
                TolerationOperator::Exists
            } else {
                TolerationOperator::Equal
            },
            value: None,
            effect,
        });
    let k8s = (
        labels(),
        labels(),
        vec(taint, 0..2),
        vec(toleration, 0..2),
        of(name()),
    )
        .prop_map(
            |(node_selector, labels, taints, tolerations, runtime_class_name)| KubernetesPool {
                node_selector,
                labels,
                taints,
                tolerations,
                runtime_class_name,
            },
        );
    let slurm = (
        of(name()),
        of("gpu(:[a-z0-9]{1,6})?(:[0-9]{1,2})?"),
        of(name()),
    )
        .prop_map(|(partition, gres, constraint)| SlurmPool {
            partition,
            gres,
            constraint,
        });
    (
        metadata(),
        name(),
        of(0u32..100),
        of(gpu),
        of(k8s),
        of(slurm),
    )
        .prop_map(
            |(metadata, site, node_count, gpu, kubernetes, slurm)| NodePool {
                api_version: API_VERSION.into(),
                kind: "NodePool".into(),
                metadata,
                spec: NodePoolSpec {
                    site,
                    node_count,
                    gpu,
                    kubernetes,
                    slurm,
                },
            },
        )
}

fn scope() -> impl Strategy<Value = RunnerScope> {
    let target = prop_oneof![
        name().prop_map(|e| (Some(e), None, None)),
        name().prop_map(|o| (None, Some(o), None)),
        (name(), name()).prop_map(|(o, r)| (None, None, Some(format!("{o}/{r}")))),
    ];
    (target, of(text())).prop_map(|((enterprise, org, repo), runner_group)| RunnerScope {
        enterprise,
        org,
        repo,
        runner_group,
    })
}

fn resources() -> impl Strategy<Value = Resources> {
    (
        of("[1-9][0-9]{0,2}m?"),
        of("[1-9][0-9]{0,3}(Mi|Gi)"),
        of((vendor(), 1u32..=8).prop_map(|(vendor, count)| GpuRequest { vendor, count })),
    )
        .prop_map(|(cpu, memory, gpu)| Resources { cpu, memory, gpu })
}

fn env_var() -> impl Strategy<Value = EnvVar> {
    (
        "[A-Z_][A-Z0-9_]{0,10}",
        any::<bool>(),
        "[a-z ]{0,12}",
        name(),
    )
        .prop_map(|(name, literal, value, secret)| EnvVar {
            name,
            value: literal.then_some(value),
            secret_ref: (!literal).then_some(secret),
        })
}

fn runner_set() -> impl Strategy<Value = RunnerSet> {
    let engine = prop_oneof![Just(Engine::Drover), Just(Engine::Arc)];
    let docker = prop_oneof![
        Just(DockerMode::None),
        Just(DockerMode::Dind),
        Just(DockerMode::Rootless)
    ];
    (
        (
            metadata(),
            scope(),
            vec(name(), 1..6),
            name(),
            engine,
            0u32..50,
            0u32..10000,
            0u32..5,
        ),
        (
            resources(),
            of(text()),
            vec(text(), 0..3),
            docker,
            vec(env_var(), 0..3),
            of(1u32..1000),
            of(slurm_container()),
        ),
    )
        .prop_map(
            |(
                (metadata, github, labels, pool, engine, min, max, idle_buffer),
                (resources, image, command, docker, env, time_limit_minutes, container),
            )| RunnerSet {
                api_version: API_VERSION.into(),
                kind: "RunnerSet".into(),
                metadata,
                spec: RunnerSetSpec {
                    github,
                    labels,
                    pool,
                    engine,
                    min,
                    max,
                    idle_buffer,
                    resources,
                    image,
                    command,
                    docker,
                    env,
                    time_limit_minutes,
                    container,
                },
            },
        )
}

fn secret_ref() -> impl Strategy<Value = SecretRef> {
    let source = prop_oneof![
        (of(name()), name(), name(), text()).prop_map(|(site, namespace, name, key)| {
            SecretRefSpec {
                kubernetes_secret: Some(KubernetesSecretSource {
                    site,
                    namespace,
                    name,
                    key,
                }),
                ..SecretRefSpec::default()
            }
        }),
        (name(), name(), any::<bool>(), text(), of(text())).prop_map(
            |(site, store, cluster, remote_key, property)| SecretRefSpec {
                external_secret: Some(ExternalSecretSource {
                    site,
                    store,
                    store_kind: if cluster {
                        StoreKind::ClusterSecretStore
                    } else {
                        StoreKind::SecretStore
                    },
                    remote_key,
                    property,
                }),
                ..SecretRefSpec::default()
            }
        ),
        "[A-Z_][A-Z0-9_]{0,10}".prop_map(|name| SecretRefSpec {
            env: Some(EnvSource { name }),
            ..SecretRefSpec::default()
        }),
        "/[a-z/]{1,20}".prop_map(|path| SecretRefSpec {
            file: Some(FileSource { path }),
            ..SecretRefSpec::default()
        }),
    ];
    (metadata(), source).prop_map(|(metadata, spec)| SecretRef {
        api_version: API_VERSION.into(),
        kind: "SecretRef".into(),
        metadata,
        spec,
    })
}

fn fleet() -> impl Strategy<Value = Fleet> {
    let auth = prop_oneof![
        (1u64..1_000_000, of(1u64..1_000_000), name()).prop_map(
            |(app_id, installation_id, key)| (
                Some(GithubApp {
                    app_id,
                    installation_id,
                    private_key_ref: key
                }),
                None
            )
        ),
        name().prop_map(|t| (None, Some(t))),
    ];
    (
        metadata(),
        auth,
        of(name()),
        of(text()),
        10u64..100_000,
        any::<bool>(),
        1u8..=100,
    )
        .prop_map(
            |(
                metadata,
                (app, token_ref),
                webhook_secret_ref,
                runner_image,
                interval_seconds,
                prune,
                mass_prune_percent,
            )| Fleet {
                api_version: API_VERSION.into(),
                kind: "Fleet".into(),
                metadata,
                spec: FleetSpec {
                    github: GithubConnection {
                        url: "https://github.example.com".into(),
                        app,
                        token_ref,
                        webhook_secret_ref,
                    },
                    defaults: FleetDefaults {
                        runner_image,
                        ..FleetDefaults::default()
                    },
                    reconcile: ReconcileSettings {
                        interval_seconds,
                        prune,
                        mass_prune_percent,
                        drift: DriftPolicy::Report,
                        ..ReconcileSettings::default()
                    },
                },
            },
        )
}

/// The value is accepted by its kind's schema, and parsing its YAML text gives it back.
fn check<T>(kind: Kind, value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    thread_local!(static VALIDATORS: Validators = Validators::new());
    let json = serde_json::to_value(value).unwrap();
    let issues = VALIDATORS.with(|v| v.validate(kind, &json));
    prop_assert!(issues.is_empty(), "{issues:?}\n{json:#}");
    let yaml = serde_saphyr::to_string(value).unwrap();
    let mut loaded = Loaded::default();
    load::load_text(
        &yaml,
        Path::new("x.yaml"),
        &LoadOptions::default(),
        &mut loaded,
    );
    prop_assert!(
        loaded.diagnostics.is_empty(),
        "{:?}\n{yaml}",
        loaded.diagnostics
    );
    let back: T = serde_json::from_value(loaded.docs[0].node.to_json()).unwrap();
    prop_assert_eq!(&back, value);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fleets_are_accepted(v in fleet()) { check(Kind::Fleet, &v)?; }

    #[test]
    fn sites_are_accepted(v in site()) { check(Kind::Site, &v)?; }

    #[test]
    fn node_pools_are_accepted(v in node_pool()) { check(Kind::NodePool, &v)?; }

    #[test]
    fn runner_sets_are_accepted(v in runner_set()) { check(Kind::RunnerSet, &v)?; }

    #[test]
    fn secret_refs_are_accepted(v in secret_ref()) { check(Kind::SecretRef, &v)?; }
}
