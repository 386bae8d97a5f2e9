//! Proves the Kubernetes API emulator behaves like a real API server for the `kube` client:
//! discovery, CRUD, server-side apply with field ownership, watch, selectors, validation,
//! defaulting and fault injection. Each test starts its own emulator.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, Service};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::support::kube_emulator::{
    EmulatorConfig, FaultKind, KubeEmulator, NodeBuilder, RequestFilter, install_crypto_provider,
};

/// The `Status` of an API error, panicking on any other outcome.
fn api_status<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": data})
}

fn deployment(name: &str, replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app.kubernetes.io/managed-by": "drover"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "runner", "image": image}]},
            },
        },
    })
}

fn runner_set_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "autoscalingrunnersets.actions.github.com"},
        "spec": {
            "group": "actions.github.com",
            "scope": "Namespaced",
            "names": {"kind": "AutoscalingRunnerSet", "plural": "autoscalingrunnersets", "singular": "autoscalingrunnerset"},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "githubConfigUrl": {"type": "string"},
                        "minRunners": {"type": "integer"},
                        "maxRunners": {"type": "integer"},
                        "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    }},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                }}},
            }],
        },
    })
}

fn runner_set_api(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("actions.github.com", "v1alpha1", "AutoscalingRunnerSet");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "autoscalingrunnersets");
    Api::namespaced_with(client.clone(), "default", &resource)
}

async fn apply_json<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    body: &Value,
) -> Result<K, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::apply(manager), &Patch::Apply(body))
        .await
}

fn managers(obj: &impl ResourceExt) -> Vec<(String, String)> {
    obj.managed_fields()
        .iter()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn kubeconfig_over_plain_http_reaches_the_emulator() {
    let emu = KubeEmulator::start_with(EmulatorConfig {
        git_version: "v1.30.5".into(),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&path).unwrap();
    install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.cluster_url.scheme_str(), Some("http"));
    let client = Client::try_from(config).unwrap();
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, "v1.30.5");
    assert_eq!(info.minor, "30");
    let log = emu.request_log();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str(), log[0].status),
        ("GET", "/version", 200)
    );
}

#[tokio::test]
async fn wrong_token_is_unauthorized() {
    let emu = KubeEmulator::start().await;
    let yaml = emu
        .kubeconfig_yaml("ctx")
        .replace("kube-emulator-token", "stolen");
    install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let status = api_status(
        Api::<ConfigMap>::default_namespaced(client)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
}

#[tokio::test]
async fn discovery_finds_builtins_and_crd_kinds_only_once_installed() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let find = |d: &Discovery, group: &str, kind: &str| {
        d.groups()
            .flat_map(|g| g.recommended_resources())
            .find(|(ar, _)| ar.group == group && ar.kind == kind)
    };
    for (group, kind) in [
        ("", "Namespace"),
        ("", "Pod"),
        ("apps", "DaemonSet"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("node.k8s.io", "RuntimeClass"),
        ("policy", "PodDisruptionBudget"),
        ("coordination.k8s.io", "Lease"),
    ] {
        assert!(
            find(&discovery, group, kind).is_some(),
            "{group}/{kind} not discovered"
        );
    }
    let (node, caps) = find(&discovery, "", "Node").unwrap();
    assert_eq!(
        (node.plural.as_str(), caps.scope.clone()),
        ("nodes", Scope::Cluster)
    );
    assert!(find(&discovery, "actions.github.com", "AutoscalingRunnerSet").is_none());

    let runner_sets = runner_set_api(&client);
    let status = api_status(runner_sets.list(&ListParams::default()).await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));

    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        )),
    );
    let crd = apply_json(
        &crds,
        "autoscalingrunnersets.actions.github.com",
        "drover",
        &runner_set_crd(),
    )
    .await
    .unwrap();
    assert_eq!(crd.data["status"]["conditions"][1]["type"], "Established");

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = find(&discovery, "actions.github.com", "AutoscalingRunnerSet")
        .expect("CRD kind discovered");
    assert_eq!(
        (ar.version.as_str(), caps.scope.clone()),
        ("v1alpha1", Scope::Namespaced)
    );

    let set = json!({"apiVersion": "actions.github.com/v1alpha1", "kind": "AutoscalingRunnerSet",
        "metadata": {"name": "gpu"}, "spec": {"githubConfigUrl": "https://github.com/o", "minRunners": 1}});
    let created = apply_json(&runner_sets, "gpu", "drover", &set)
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["minRunners"], 1);
    assert_eq!(created.metadata.generation, Some(1));

    let aggregated = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    assert!(find(&aggregated, "actions.github.com", "AutoscalingRunnerSet").is_some());
    let (pods, caps) = find(&aggregated, "", "Pod").expect("core group in aggregated discovery");
    assert_eq!(
        (pods.plural.as_str(), caps.scope.clone()),
        ("pods", Scope::Namespaced)
    );
    assert!(find(&aggregated, "apps", "Deployment").is_some());

    crds.delete(
        "autoscalingrunnersets.actions.github.com",
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    assert_eq!(api_status(runner_sets.get("gpu").await).code, 404);
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_is_idempotent() {
    let emu = KubeEmulator::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    let created = apply_json(
        &api,
        "runners",
        "drover",
        &config_map("runners", json!({"a": "1"})),
    )
    .await
    .unwrap();
    let rv = created.resource_version().unwrap();
    assert!(created.uid().is_some() && created.creation_timestamp().is_some());
    assert_eq!(
        managers(&created),
        vec![("drover".to_string(), "Apply".to_string())]
    );
    let fields = created.managed_fields()[0].fields_v1.clone().unwrap().0;
    assert_eq!(fields, json!({"f:data": {"f:a": {}}}));

    let writes_before = emu.resource_version();
    let again = apply_json(
        &api,
        "runners",
        "drover",
        &config_map("runners", json!({"a": "1"})),
    )
    .await
    .unwrap();
    assert_eq!(
        again.resource_version().unwrap(),
        rv,
        "no-op apply must not bump resourceVersion"
    );
    assert_eq!(emu.resource_version(), writes_before);

    let changed = apply_json(
        &api,
        "runners",
        "drover",
        &config_map("runners", json!({"a": "2"})),
    )
    .await
    .unwrap();
    assert_ne!(changed.resource_version().unwrap(), rv);
    assert_eq!(changed.data.unwrap()["a"], "2");
    assert_eq!(emu.write_count(), 3);
    assert!(
        emu.request_log()
            .iter()
            .all(|r| r.field_manager.as_deref() == Some("drover"))
    );
}

#[tokio::test]
async fn apply_conflicts_with_another_manager_until_forced() {
    let emu = KubeEmulator::start().await;
    let api: Api<Deployment> = Api::default_namespaced(emu.client().await);
    apply_json(
        &api,
        "runner",
        "drover",
        &deployment("runner", 2, "ghcr.io/runner:2.3"),
    )
    .await
    .unwrap();
    let mut edited = deployment("runner", 5, "ghcr.io/runner:2.3");
    edited["metadata"]["labels"]["team"] = json!("infra");
    emu.put_object_as("kubectl-edit", edited).unwrap();

    let status = api_status(
        apply_json(
            &api,
            "runner",
            "drover",
            &deployment("runner", 2, "ghcr.io/runner:2.3"),
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas"
    );

    let forced = api
        .patch(
            "runner",
            &PatchParams::apply("drover").force(),
            &Patch::Apply(deployment("runner", 2, "ghcr.io/runner:2.3")),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.replicas, Some(2));
    assert_eq!(
        forced.labels()["team"],
        "infra",
        "fields of the other manager stay"
    );
    let edit_entry = forced
        .managed_fields()
        .iter()
        .find(|m| m.manager.as_deref() == Some("kubectl-edit"))
        .unwrap();
    let owned = edit_entry.fields_v1.clone().unwrap().0;
    assert!(
        owned["f:spec"].get("f:replicas").is_none(),
        "force moved ownership: {owned}"
    );
    assert!(owned["f:metadata"]["f:labels"].get("f:team").is_some());
}

#[tokio::test]
async fn apply_removes_fields_the_manager_stopped_setting() {
    let emu = KubeEmulator::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    apply_json(
        &api,
        "cm",
        "drover",
        &config_map("cm", json!({"keep": "1", "drop": "2"})),
    )
    .await
    .unwrap();
    let mut other = api.get("cm").await.unwrap();
    other
        .data
        .as_mut()
        .unwrap()
        .insert("theirs".into(), "3".into());
    api.replace(
        "cm",
        &PostParams {
            field_manager: Some("helm".into()),
            ..Default::default()
        },
        &other,
    )
    .await
    .unwrap();
    let after = apply_json(
        &api,
        "cm",
        "drover",
        &config_map("cm", json!({"keep": "1"})),
    )
    .await
    .unwrap();
    let data = after.data.clone().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["keep", "theirs"]);
    assert_eq!(managers(&after).len(), 2);
}

#[tokio::test]
async fn replace_with_stale_resource_version_conflicts() {
    let emu = KubeEmulator::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    let mut cm: ConfigMap = serde_json::from_value(config_map("cm", json!({"a": "1"}))).unwrap();
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(
        api_status(api.create(&PostParams::default(), &cm).await).reason,
        "AlreadyExists"
    );

    cm.metadata.resource_version = created.resource_version();
    cm.data.as_mut().unwrap().insert("a".into(), "2".into());
    let replaced = api
        .replace("cm", &PostParams::default(), &cm)
        .await
        .unwrap();
    assert_ne!(replaced.resource_version(), created.resource_version());

    let status = api_status(api.replace("cm", &PostParams::default(), &cm).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn writes_into_a_missing_namespace_are_not_found() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "ghost");
    let mut body = config_map("cm", json!({}));
    body["metadata"]["namespace"] = json!("ghost");
    let status = api_status(
        api.create(
            &PostParams::default(),
            &serde_json::from_value(body.clone()).unwrap(),
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "namespaces \"ghost\" not found");
    assert_eq!(
        api_status(apply_json(&api, "cm", "drover", &body).await).code,
        404
    );

    let namespaces: Api<Namespace> = Api::all(client);
    apply_json(
        &namespaces,
        "ghost",
        "drover",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ghost"}}),
    )
    .await
    .unwrap();
    apply_json(&api, "cm", "drover", &body).await.unwrap();
    namespaces
        .delete("ghost", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        emu.get_object("v1", "ConfigMap", Some("ghost"), "cm")
            .is_none(),
        "namespace deletion cascades"
    );
}

#[tokio::test]
async fn strict_field_validation_refuses_unknown_fields() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    let mut body = deployment("runner", 1, "ghcr.io/runner:2.3");
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
    let strict = PatchParams::apply("drover").validation_strict();
    let status = api_status(api.patch("runner", &strict, &Patch::Apply(&body)).await);
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    assert!(
        status
            .message
            .contains("unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""),
        "{}",
        status.message
    );
    assert!(
        emu.get_object("apps/v1", "Deployment", Some("default"), "runner")
            .is_none()
    );

    // Without Strict the server drops the unknown field (and warns).
    let stored = apply_json(&api, "runner", "drover", &body).await.unwrap();
    let stored = serde_json::to_value(stored).unwrap();
    assert!(
        stored["spec"]["template"]["spec"]["containers"][0]
            .get("imagePullPolicyy")
            .is_none()
    );

    // Custom resources are checked against the CRD schema.
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        )),
    );
    apply_json(
        &crds,
        "autoscalingrunnersets.actions.github.com",
        "drover",
        &runner_set_crd(),
    )
    .await
    .unwrap();
    let set = json!({"apiVersion": "actions.github.com/v1alpha1", "kind": "AutoscalingRunnerSet",
        "metadata": {"name": "gpu"}, "spec": {"maxRunner": 3, "template": {"anything": {"goes": true}}}});
    let status = api_status(
        runner_set_api(&client)
            .patch("gpu", &strict, &Patch::Apply(&set))
            .await,
    );
    assert!(
        status.message.contains("unknown field \"spec.maxRunner\""),
        "{}",
        status.message
    );
    assert!(!status.message.contains("template"), "{}", status.message);
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let emu = KubeEmulator::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    let rv = emu.resource_version();
    let preview = api
        .patch(
            "cm",
            &PatchParams::apply("drover").dry_run(),
            &Patch::Apply(config_map("cm", json!({"a": "1"}))),
        )
        .await
        .unwrap();
    assert_eq!(preview.data.unwrap()["a"], "1");
    let cm: ConfigMap = serde_json::from_value(config_map("cm2", json!({}))).unwrap();
    api.create(
        &PostParams {
            dry_run: true,
            ..Default::default()
        },
        &cm,
    )
    .await
    .unwrap();
    assert_eq!(emu.resource_version(), rv);
    assert!(api.get_opt("cm").await.unwrap().is_none());
    assert!(api.get_opt("cm2").await.unwrap().is_none());

    apply_json(&api, "cm", "drover", &config_map("cm", json!({"a": "1"})))
        .await
        .unwrap();
    let rv = emu.resource_version();
    let preview = api
        .patch(
            "cm",
            &PatchParams::apply("drover").dry_run(),
            &Patch::Apply(config_map("cm", json!({"a": "9"}))),
        )
        .await
        .unwrap();
    assert_eq!(preview.data.unwrap()["a"], "9");
    api.delete("cm", &DeleteParams::default().dry_run())
        .await
        .unwrap();
    assert_eq!(emu.resource_version(), rv);
    assert_eq!(api.get("cm").await.unwrap().data.unwrap()["a"], "1");
    assert!(
        emu.request_log()
            .iter()
            .filter(|r| r.is_write())
            .filter(|r| r.dry_run)
            .count()
            == 4
    );
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    for (ns, name, labels) in [
        ("default", "a", json!({"tier": "gpu", "owner": "drover"})),
        ("default", "b", json!({"tier": "cpu", "owner": "drover"})),
        ("kube-system", "c", json!({"tier": "gpu"})),
        ("kube-system", "d", json!({"legacy": "yes"})),
    ] {
        let mut cm = config_map(name, json!({}));
        cm["metadata"]["namespace"] = json!(ns);
        cm["metadata"]["labels"] = labels;
        emu.put_object_as("test", cm).unwrap();
    }
    let all: Api<ConfigMap> = Api::all(client.clone());
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    let cases = [
        ("tier=gpu", vec!["a", "c"]),
        ("tier!=gpu", vec!["b", "d"]),
        ("owner", vec!["a", "b"]),
        ("!owner", vec!["c", "d"]),
        ("tier in (gpu,cpu),owner", vec!["a", "b"]),
        ("tier notin (gpu)", vec!["b", "d"]),
    ];
    for (selector, expected) in cases {
        let listed = all
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(names(listed), expected, "selector {selector}");
    }
    let listed = all
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert!(
        listed
            .metadata
            .resource_version
            .as_deref()
            .is_some_and(|rv| !rv.is_empty())
    );
    assert_eq!(names(listed), vec!["c"]);
    let in_default = Api::<ConfigMap>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(names(in_default), vec!["a", "b"]);
    let status = api_status(all.list(&ListParams::default().fields("data.x=1")).await);
    assert_eq!(status.code, 400);
    let paged = all.list(&ListParams::default().limit(3)).await.unwrap();
    let token = paged.metadata.continue_.clone().unwrap();
    let rest = all
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!((paged.items.len(), rest.items.len()), (3, 1));
}

#[tokio::test]
async fn watch_streams_events_after_a_resource_version() {
    let emu = KubeEmulator::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    apply_json(&api, "a", "drover", &config_map("a", json!({})))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    apply_json(&api, "b", "drover", &config_map("b", json!({"x": "1"})))
        .await
        .unwrap();
    apply_json(&api, "b", "drover", &config_map("b", json!({"x": "2"})))
        .await
        .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();

    let stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap();
    let events: Vec<WatchEvent<ConfigMap>> =
        tokio::time::timeout(Duration::from_secs(5), stream.take(3).try_collect())
            .await
            .expect("events arrive")
            .unwrap_or_else(|e| panic!("watch failed: {e}"));
    let summary: Vec<String> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(c) => format!("ADDED {}", c.name_any()),
            WatchEvent::Modified(c) => format!("MODIFIED {}", c.name_any()),
            WatchEvent::Deleted(c) => format!("DELETED {}", c.name_any()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(summary, vec!["ADDED b", "MODIFIED b", "DELETED a"]);
}

#[tokio::test]
async fn live_watch_and_expired_resource_version() {
    let emu = KubeEmulator::start_with(EmulatorConfig {
        event_history: 2,
        ..Default::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    let rv = emu.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().labels("watched=yes"), &rv)
        .await
        .unwrap()
        .boxed();
    let mut cm = config_map("live", json!({}));
    emu.put_object_as("other", config_map("ignored", json!({})))
        .unwrap();
    cm["metadata"]["labels"] = json!({"watched": "yes"});
    emu.put_object_as("other", cm).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&first, WatchEvent::Added(c) if c.name_any() == "live"),
        "{first:?}"
    );

    for i in 0..3 {
        emu.put_object_as("other", config_map(&format!("filler{i}"), json!({})))
            .unwrap();
    }
    let stream = api.watch(&WatchParams::default(), &rv).await.unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(5), stream.take(1).collect())
        .await
        .unwrap();
    match &events[0] {
        Ok(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}

#[tokio::test]
async fn runtime_watcher_sees_objects_and_changes() {
    use kube::runtime::watcher::{self, Event};
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    apply_json(&api, "before", "drover", &config_map("before", json!({})))
        .await
        .unwrap();
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(&"apply after".to_string()) {
        assert!(
            Instant::now() < deadline,
            "watcher did not see the change: {seen:?}"
        );
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            Event::InitApply(c) => seen.push(format!("init {}", c.name_any())),
            Event::InitDone => {
                seen.push("init done".into());
                apply_json(&api, "after", "drover", &config_map("after", json!({})))
                    .await
                    .unwrap();
            }
            Event::Apply(c) => seen.push(format!("apply {}", c.name_any())),
            _ => {}
        }
    }
    assert_eq!(
        seen[..2],
        ["init before".to_string(), "init done".to_string()]
    );
}

#[tokio::test]
async fn injected_server_errors_reach_the_client() {
    let emu = KubeEmulator::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    emu.faults().fail_next(1, FaultKind::Status500);
    let status = api_status(api.list(&ListParams::default()).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    api.list(&ListParams::default()).await.unwrap();

    emu.faults()
        .only(RequestFilter::any().method("PATCH").path_prefix("/api/v1"))
        .fail_next(1, FaultKind::Status500);
    api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        api_status(apply_json(&api, "cm", "drover", &config_map("cm", json!({}))).await).code,
        500
    );
    let statuses: Vec<u16> = emu.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 200, 200, 500]);
}

#[tokio::test]
async fn rate_limits_are_retried_by_default_and_visible_without_retry() {
    let emu = KubeEmulator::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    emu.faults().rate_limit_next(2, 0);
    api.list(&ListParams::default()).await.unwrap();
    let statuses: Vec<u16> = emu.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 429, 200], "kube retries 429 on its own");

    let mut config = emu.client_config().await;
    config.default_retry = false;
    let api: Api<ConfigMap> = Api::default_namespaced(Client::try_from(config).unwrap());
    emu.faults().rate_limit_next(1, 7);
    let status = api_status(api.list(&ListParams::default()).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (429, "TooManyRequests")
    );
    assert_eq!(status.details.unwrap().retry_after_seconds, 7);
}

#[tokio::test]
async fn dropped_connections_surface_as_transport_errors() {
    let emu = KubeEmulator::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    emu.faults().drop_next_connections(1);
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "expected a transport error, got {err:?}"
    );
    api.list(&ListParams::default()).await.unwrap();
    let statuses: Vec<u16> = emu.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![0, 200]);
}

#[tokio::test]
async fn latency_delays_responses() {
    let emu = KubeEmulator::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    emu.faults()
        .only(RequestFilter::any().method("GET"))
        .latency(Duration::from_millis(150));
    let started = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn server_defaults_appear_and_are_not_conflicts() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let body = deployment("runner", 1, "ghcr.io/runner:2.3");
    let created = apply_json(&deployments, "runner", "drover", &body)
        .await
        .unwrap();
    let spec = created.spec;
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(pod.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(
        pod.containers[0].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    assert_eq!(
        pod.containers[0].termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert_eq!(spec.revision_history_limit, Some(10));
    let rv = created.metadata.resource_version;
    let again = apply_json(&deployments, "runner", "drover", &body)
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version, rv,
        "defaults are not drift"
    );

    let ns: Namespace = Api::all(client.clone()).get("default").await.unwrap();
    assert_eq!(ns.spec.unwrap().finalizers.unwrap(), vec!["kubernetes"]);
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));

    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"}, "stringData": {"t": "hi"}});
    let secret = apply_json(&secrets, "token", "drover", &secret)
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(secret.data.unwrap()["t"].0, b"hi");

    let services: Api<Service> = Api::default_namespaced(client.clone());
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "metrics"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 9090}]}});
    let svc = apply_json(&services, "metrics", "drover", &svc)
        .await
        .unwrap()
        .spec
        .unwrap();
    assert!(svc.cluster_ip.unwrap().starts_with("10.96."));
    assert_eq!(svc.session_affinity.as_deref(), Some("None"));
    assert_eq!(svc.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));
}

#[tokio::test]
async fn invalid_objects_are_unprocessable() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let bad: ConfigMap = serde_json::from_value(config_map("Bad_Name", json!({}))).unwrap();
    let status = api_status(api.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"),
        "{}",
        status.message
    );
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "has.dot"}});
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert_eq!(
        api_status(apply_json(&namespaces, "has.dot", "drover", &ns).await).code,
        422
    );

    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let mut mismatched = deployment("runner", 1, "img:1");
    mismatched["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
    let status = api_status(apply_json(&deployments, "runner", "drover", &mismatched).await);
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("selector` does not match template `labels`"),
        "{}",
        status.message
    );

    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "job-"}})).unwrap();
    let created = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(created.name_any().starts_with("job-") && created.name_any().len() == 9);
}

#[tokio::test]
async fn status_is_only_writable_through_the_subresource() {
    let emu = KubeEmulator::start().await;
    let api: Api<DaemonSet> = Api::default_namespaced(emu.client().await);
    let mut ds = deployment("plugin", 1, "rocm/k8s-device-plugin:1.31");
    ds["kind"] = json!("DaemonSet");
    ds["spec"].as_object_mut().unwrap().remove("replicas");
    ds["status"] = json!({"numberReady": 99});
    let created = apply_json(&api, "plugin", "drover", &ds).await.unwrap();
    assert!(created.status.is_none_or(|s| s.number_ready == 0));

    emu.set_status(
        "apps/v1",
        "DaemonSet",
        Some("default"),
        "plugin",
        json!({"numberReady": 3, "desiredNumberScheduled": 3}),
    )
    .unwrap();
    let mut fetched = api.get("plugin").await.unwrap();
    assert_eq!(fetched.status.as_ref().unwrap().number_ready, 3);
    fetched.status.as_mut().unwrap().number_ready = 0;
    let replaced = api
        .replace("plugin", &PostParams::default(), &fetched)
        .await
        .unwrap();
    assert_eq!(replaced.status.unwrap().number_ready, 3);

    let patched = api
        .patch_status(
            "plugin",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"numberReady": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.status.unwrap().number_ready, 2);
}

#[tokio::test]
async fn merge_patch_records_an_update_manager_and_strategic_merge_is_unsupported() {
    let emu = KubeEmulator::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client().await);
    apply_json(&api, "cm", "drover", &config_map("cm", json!({"a": "1"})))
        .await
        .unwrap();
    let params = PatchParams {
        field_manager: Some("human".into()),
        ..Default::default()
    };
    let patched = api
        .patch("cm", &params, &Patch::Merge(json!({"data": {"b": "2"}})))
        .await
        .unwrap();
    assert_eq!(
        managers(&patched),
        vec![
            ("drover".to_string(), "Apply".to_string()),
            ("human".to_string(), "Update".to_string())
        ]
    );
    let status = api_status(
        api.patch(
            "cm",
            &params,
            &Patch::Strategic(json!({"data": {"c": "3"}})),
        )
        .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
}

#[tokio::test]
async fn apply_without_field_manager_is_invalid() {
    let emu = KubeEmulator::start().await;
    drover::tls::install_crypto_provider();
    let response = reqwest::Client::new()
        .patch(format!(
            "{}/api/v1/namespaces/default/configmaps/cm",
            emu.url()
        ))
        .bearer_auth("kube-emulator-token")
        .header("content-type", "application/apply-patch+yaml")
        .body(config_map("cm", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Invalid");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("fieldManager: Required value")
    );
}

#[tokio::test]
async fn nodes_carry_labels_taints_and_gpu_capacity() {
    let emu = KubeEmulator::start().await;
    emu.add_node(
        NodeBuilder::new("mi300-1")
            .label("amd.com/gpu.product", "MI300X")
            .taint("amd.com/gpu", "present", "NoSchedule")
            .allocatable("amd.com/gpu", "8"),
    );
    emu.add_node(NodeBuilder::new("cpu-1"));
    let nodes: Api<Node> = Api::all(emu.client().await);
    let gpu = nodes
        .list(&ListParams::default().labels("amd.com/gpu.product=MI300X"))
        .await
        .unwrap();
    assert_eq!(gpu.items.len(), 1);
    let node = &gpu.items[0];
    assert_eq!(
        node.spec.as_ref().unwrap().taints.as_ref().unwrap()[0].effect,
        "NoSchedule"
    );
    assert_eq!(
        node.status.as_ref().unwrap().allocatable.as_ref().unwrap()["amd.com/gpu"].0,
        "8"
    );
    let pods: Api<Pod> = Api::all(nodes.into_client());
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn conflicts_name_list_map_keys_and_every_field() {
    let emu = KubeEmulator::start().await;
    let api: Api<Deployment> = Api::default_namespaced(emu.client().await);
    apply_json(
        &api,
        "runner",
        "drover",
        &deployment("runner", 2, "ghcr.io/runner:2.3"),
    )
    .await
    .unwrap();
    emu.put_object_as(
        "kubectl-edit",
        deployment("runner", 4, "ghcr.io/runner:9.9"),
    )
    .unwrap();
    let status = api_status(
        apply_json(
            &api,
            "runner",
            "drover",
            &deployment("runner", 2, "ghcr.io/runner:2.3"),
        )
        .await,
    );
    assert_eq!(
        status.message,
        "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using apps/v1:\n\
         - .spec.replicas\n- .spec.template.spec.containers[name=\"runner\"].image"
    );
    let causes = status.details.unwrap().causes;
    assert_eq!(causes.len(), 2);
    assert_eq!(causes[0].reason, "FieldManagerConflict");

    // Applying the other manager's values is shared ownership, not a conflict.
    let shared = apply_json(
        &api,
        "runner",
        "drover",
        &deployment("runner", 4, "ghcr.io/runner:9.9"),
    )
    .await
    .unwrap();
    assert_eq!(managers(&shared).len(), 2);
}

#[tokio::test]
async fn generation_and_resource_version_follow_real_changes_only() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    let created = apply_json(&api, "runner", "drover", &deployment("runner", 1, "img:1"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    // A PUT that leaves out server defaults changes nothing.
    let bare: Deployment = serde_json::from_value(deployment("runner", 1, "img:1")).unwrap();
    let replaced = api
        .replace("runner", &PostParams::default(), &bare)
        .await
        .unwrap();
    assert_eq!(
        managers(&replaced),
        managers(&created),
        "no field changed hands"
    );
    assert_eq!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );

    let mut labelled = deployment("runner", 1, "img:1");
    labelled["metadata"]["labels"]["extra"] = json!("x");
    let relabelled = apply_json(&api, "runner", "drover", &labelled)
        .await
        .unwrap();
    assert_ne!(
        relabelled.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(
        relabelled.metadata.generation,
        Some(1),
        "metadata changes keep generation"
    );
    let rescaled = apply_json(&api, "runner", "drover", &deployment("runner", 3, "img:1"))
        .await
        .unwrap();
    assert_eq!(rescaled.metadata.generation, Some(2));
    assert!(
        !rescaled.labels().contains_key("extra"),
        "dropped label is removed"
    );

    let services: Api<Service> = Api::default_namespaced(client.clone());
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m"},
        "spec": {"ports": [{"port": 80}]}});
    let first = apply_json(&services, "m", "drover", &svc).await.unwrap();
    let mut bare: Service = serde_json::from_value(svc).unwrap();
    bare.metadata.resource_version = first.metadata.resource_version.clone();
    let again = services
        .replace("m", &PostParams::default(), &bare)
        .await
        .unwrap();
    assert_eq!(
        again.spec.unwrap().cluster_ip,
        first.spec.unwrap().cluster_ip
    );

    let mut with_rv: ConfigMap = serde_json::from_value(config_map("cm", json!({}))).unwrap();
    with_rv.metadata.resource_version = Some("12".into());
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    assert_eq!(
        api_status(cms.create(&PostParams::default(), &with_rv).await).code,
        400
    );
}

#[tokio::test]
async fn typed_pods_across_namespaces_and_cluster_wide_watch() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let all: Api<Pod> = Api::all(client.clone());
    let rv = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for ns in ["default", "kube-system"] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "runner-0", "namespace": ns},
            "spec": {"containers": [{"name": "runner", "image": "ghcr.io/runner"}]},
        }))
        .unwrap();
        let created = Api::<Pod>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        let spec = created.spec.unwrap();
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
    }
    let pods = all
        .list(&ListParams::default().fields("metadata.namespace=kube-system"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1);
    let stream = all.watch(&WatchParams::default(), &rv).await.unwrap();
    let events: Vec<_> = tokio::time::timeout(
        Duration::from_secs(5),
        stream.take(2).try_collect::<Vec<_>>(),
    )
    .await
    .unwrap()
    .unwrap();
    let namespaces: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(p) => p.namespace(),
            _ => None,
        })
        .collect();
    assert_eq!(namespaces, vec!["default", "kube-system"]);
    let bad_pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "empty"}, "spec": {"containers": []}}))
            .unwrap();
    let status = api_status(
        Api::<Pod>::default_namespaced(client)
            .create(&PostParams::default(), &bad_pod)
            .await,
    );
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            422,
            "Pod \"empty\" is invalid: spec.containers: Required value"
        )
    );
}

fn pod(name: &str, extra_spec: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "runner", "image": "busybox:1.36"}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

fn owned_secret(name: &str, owner: &str, uid: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "default",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": owner, "uid": uid}]},
        "stringData": {"k": "v"},
    }))
    .unwrap()
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let owner = pods.create(&pp, &pod("owner", json!({}))).await.unwrap();
    let uid = owner.uid().unwrap();
    secrets
        .create(&pp, &owned_secret("dep", "owner", &uid))
        .await
        .unwrap();
    secrets
        .create(&pp, &owned_secret("unrelated", "owner", "some-other-uid"))
        .await
        .unwrap();
    // A dependent whose owner does not exist is collected (the "absent owner" case).
    assert!(secrets.get_opt("unrelated").await.unwrap().is_none());
    assert!(secrets.get_opt("dep").await.unwrap().is_some());
    // Dry-run deletes collect nothing.
    let dry = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    pods.delete("owner", &dry).await.unwrap();
    assert!(secrets.get_opt("dep").await.unwrap().is_some());
    pods.delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        secrets.get_opt("dep").await.unwrap().is_none(),
        "the Secret owned by the Pod is gone with it"
    );

    // Orphan propagation keeps the dependent and drops the reference.
    let owner = pods.create(&pp, &pod("owner2", json!({}))).await.unwrap();
    secrets
        .create(&pp, &owned_secret("kept", "owner2", &owner.uid().unwrap()))
        .await
        .unwrap();
    pods.delete("owner2", &DeleteParams::orphan())
        .await
        .unwrap();
    let kept = secrets.get("kept").await.unwrap();
    assert!(kept.metadata.owner_references.is_none());
}

#[tokio::test]
async fn owner_references_must_be_complete() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let status = api_status(
        secrets
            .create(&PostParams::default(), &owned_secret("s", "owner", ""))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .contains("metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty"),
        "{}",
        status.message
    );
    let mut two: Secret = owned_secret("s", "a", "u1");
    let mut refs = two.metadata.owner_references.take().unwrap();
    refs[0].controller = Some(true);
    let mut second = refs[0].clone();
    second.uid = "u2".into();
    refs.push(second);
    two.metadata.owner_references = Some(refs);
    let status = api_status(secrets.create(&PostParams::default(), &two).await);
    assert!(
        status
            .message
            .contains("Only one reference can have Controller set to true"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn pods_start_pending_and_are_admitted_like_a_real_server() {
    let emu = KubeEmulator::start().await;
    let client = emu.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let created = pods.create(&pp, &pod("p", json!({}))).await.unwrap();
    let status = created.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));

    // Missing ServiceAccount and PriorityClass are refused by admission (403).
    let status = api_status(
        pods.create(&pp, &pod("sa", json!({"serviceAccountName": "runner"})))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert!(
        status
            .message
            .contains("serviceaccount \"runner\" not found"),
        "{}",
        status.message
    );
    let status = api_status(
        pods.create(&pp, &pod("pc", json!({"priorityClassName": "runners"})))
            .await,
    );
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("no PriorityClass with name runners was found"),
        "{}",
        status.message
    );

    // A quota scoped to a PriorityClass caps that class's live Pods.
    emu.put_object_as(
        "test",
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "runners"}, "value": 5}),
    )
    .unwrap();
    emu.put_object_as(
        "test",
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "runners", "namespace": "default"},
            "spec": {"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In", "values": ["runners"]}]}}}),
    )
    .unwrap();
    let first = pods
        .create(&pp, &pod("q1", json!({"priorityClassName": "runners"})))
        .await
        .unwrap();
    assert_eq!(first.spec.unwrap().priority, Some(5));
    let status = api_status(
        pods.create(&pp, &pod("q2", json!({"priorityClassName": "runners"})))
            .await,
    );
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("exceeded quota: runners, requested: pods=1, used: pods=1, limited: pods=1"),
        "{}",
        status.message
    );
    // Pods of other classes are not counted; finished Pods free their slot.
    pods.create(&pp, &pod("other", json!({}))).await.unwrap();
    emu.set_status(
        "v1",
        "Pod",
        Some("default"),
        "q1",
        json!({"phase": "Succeeded"}),
    )
    .unwrap();
    pods.create(&pp, &pod("q2", json!({"priorityClassName": "runners"})))
        .await
        .unwrap();
}

/// The emulator's own CRD handling and the real apiextensions-apiserver answer the same
/// requests alike on the upstream CRDs: served versions (discovery included), structural
/// defaults, and what schema validation refuses.
#[tokio::test]
async fn the_emulator_agrees_with_the_real_server_on_the_upstream_crds() {
    use crate::support::real_apiserver::{RealApiServer, UPSTREAM_CRDS, upstream_crd};
    let real = RealApiServer::from_env();
    real.ensure_upstream_crds().await;
    let emu = KubeEmulator::start().await;
    let emulated = RealApiServer::at(&emu.url(), &EmulatorConfig::default().token);
    for name in UPSTREAM_CRDS {
        emulated.ensure_crd(&upstream_crd(name)).await;
    }
    let ns = "agree";
    emu.put_object_as(
        "kubectl",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .unwrap();
    real.delete_all("external-secrets.io", "v1", "externalsecrets", ns)
        .await;
    real.delete_all(
        "actions.github.com",
        "v1alpha1",
        "autoscalingrunnersets",
        ns,
    )
    .await;
    let es = |name: &str| {
        json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
                "target": {"name": name},
                "data": [{"secretKey": "value", "remoteRef": {"key": "ci/x"}}]}})
    };
    let ars = json!({"apiVersion": "actions.github.com/v1alpha1", "kind": "AutoscalingRunnerSet",
        "metadata": {"name": "s", "namespace": ns},
        "spec": {"githubConfigUrl": "https://github.com/acme", "githubConfigSecret": "gh", "maxRunners": 2,
            "template": {"spec": {"containers": [{"name": "runner", "image": "r:1"}]}}}});
    let es_path = format!("/apis/external-secrets.io/v1/namespaces/{ns}/externalsecrets");
    let ars_path =
        format!("/apis/actions.github.com/v1alpha1/namespaces/{ns}/autoscalingrunnersets");
    let strict = "?fieldValidation=Strict";
    for (server, who) in [(&real, "real"), (&emulated, "emulator")] {
        // Served versions only, discovery included.
        let (code, group) = server.get("/apis/external-secrets.io").await;
        assert_eq!(code, 200, "{who}");
        let versions: Vec<&str> = group["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, vec!["v1"], "{who}");
        for path in [
            "/apis/external-secrets.io/v1beta1".to_string(),
            format!("/apis/external-secrets.io/v1beta1/namespaces/{ns}/externalsecrets"),
        ] {
            assert_eq!(server.get(&path).await.0, 404, "{who} {path}");
        }
        // Created, with the schema's defaults filled in.
        let (code, created) = server
            .request(
                "POST",
                &format!("{es_path}{strict}"),
                Some(&es("ok")),
                "application/json",
            )
            .await;
        assert_eq!(code, 201, "{who}: {created}");
        assert_eq!(
            created["spec"]["refreshInterval"], "1h0m0s",
            "{who}: {created}"
        );
        assert_eq!(
            created["spec"]["target"]["creationPolicy"], "Owner",
            "{who}"
        );
        assert_eq!(
            created["spec"]["target"]["deletionPolicy"], "Retain",
            "{who}"
        );
        let (code, created) = server
            .request(
                "POST",
                &format!("{ars_path}{strict}"),
                Some(&ars),
                "application/json",
            )
            .await;
        assert_eq!(code, 201, "{who}: {created}");

        // Refused alike: an enum, a type, a required field, an unknown field.
        let mut bad_enum = es("bad-enum");
        bad_enum["spec"]["target"]["creationPolicy"] = json!("Bogus");
        let mut bad_required = es("bad-required");
        bad_required["spec"]["data"][0]
            .as_object_mut()
            .unwrap()
            .remove("secretKey");
        let mut bad_type = ars.clone();
        bad_type["metadata"]["name"] = json!("bad-type");
        bad_type["spec"]["maxRunners"] = json!("two");
        let mut unknown = es("unknown");
        unknown["spec"]["refreshIntervall"] = json!("1h");
        for (path, body, code, field) in [
            (&es_path, &bad_enum, 422, "spec.target.creationPolicy"),
            (&es_path, &bad_required, 422, "spec.data[0].secretKey"),
            (&ars_path, &bad_type, 422, "spec.maxRunners"),
            (&es_path, &unknown, 400, "spec.refreshIntervall"),
        ] {
            let (got, status) = server
                .request(
                    "POST",
                    &format!("{path}{strict}"),
                    Some(body),
                    "application/json",
                )
                .await;
            assert_eq!(got, code, "{who}: {status}");
            assert!(
                status["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(field),
                "{who}: {status}"
            );
        }
    }
}
