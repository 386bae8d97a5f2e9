//! The real Kubernetes apiextensions-apiserver that `scripts/kube-apiserver.sh up` starts
//! (CRDs and custom resources, real discovery, structural schemas, pruning, strict field
//! validation, server-side apply), and the test bed that routes CRD groups to it while the
//! built-in kinds stay on the emulator ([`combined`]).
//!
//! The server is shared by every test (one etcd): tests that use it pick namespaces and
//! fleet names of their own, and CRDs are created once and kept ([`RealApiServer::ensure_crd`]).
//! A missing server fails the test loudly; nothing is skipped.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::kube_emulator::upstream::Upstream;
use super::kube_emulator::{EmulatorConfig, KubeEmulator};

/// The upstream CRD files in `tests/data/upstream-crds` (see its README for provenance).
pub const UPSTREAM_CRDS: [&str; 4] = [
    "autoscalingrunnersets.actions.github.com",
    "externalsecrets.external-secrets.io",
    "secretstores.external-secrets.io",
    "clustersecretstores.external-secrets.io",
];

/// The vendored upstream file of CRD `name`, with its `source` (provenance).
pub fn upstream_file(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/upstream-crds")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

/// The `CustomResourceDefinition` of a vendored upstream CRD (see the data README for how).
pub fn upstream_crd(name: &str) -> Value {
    let file = upstream_file(name);
    let kind = file["kind"].as_str().expect("kind");
    let versions: Vec<Value> = file["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            let schema = v
                .get("openAPIV3Schema")
                .filter(|s| s.is_object())
                .cloned()
                .unwrap_or_else(
                    || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                );
            let mut version = json!({
                "name": v["name"],
                "served": v["served"],
                "storage": v["storage"],
                "schema": {"openAPIV3Schema": schema},
            });
            if v["deprecated"] == true {
                version["deprecated"] = json!(true);
            }
            if schema["properties"].get("status").is_some() {
                version["subresources"] = json!({"status": {}});
            }
            version
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": file["name"]},
        "spec": {
            "group": file["group"],
            "scope": file["scope"],
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": file["plural"],
                "singular": kind.to_lowercase(),
            },
            "versions": versions,
        },
    })
}

/// A connection to the running real server.
#[derive(Clone)]
pub struct RealApiServer {
    /// Base URL, e.g. `https://127.0.0.1:6973`.
    pub url: String,
    /// Bearer token (the server's stand-in accepts any).
    pub token: String,
    http: reqwest::Client,
}

impl RealApiServer {
    /// The server `scripts/kube-apiserver.sh up` started (from `$DROVER_KUBE_APISERVER_URL`
    /// and `..._TOKEN`); panics with what to run when it is not up.
    pub fn from_env() -> Self {
        let url = std::env::var("DROVER_KUBE_APISERVER_URL").unwrap_or_else(|_| {
            panic!(
                "DROVER_KUBE_APISERVER_URL is not set: run `scripts/kube-apiserver.sh up` and \
                 `eval \"$(scripts/kube-apiserver.sh env)\"` first (these tests need the real \
                 apiextensions-apiserver; scripts/test.sh does both)"
            )
        });
        let token = std::env::var("DROVER_KUBE_APISERVER_TOKEN").unwrap_or_default();
        super::kube_emulator::install_crypto_provider();
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client");
        Self { url, token, http }
    }

    /// Any API server at `url` (e.g. an emulator, to hold it to the same checks).
    pub fn at(url: &str, token: &str) -> Self {
        super::kube_emulator::install_crypto_provider();
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client");
        Self {
            url: url.to_string(),
            token: token.to_string(),
            http,
        }
    }

    /// The emulator's upstream setting for this server.
    pub fn upstream(&self) -> Upstream {
        Upstream {
            url: self.url.clone(),
            token: self.token.clone(),
        }
    }

    /// One request; returns the status code and the JSON body (`Null` when not JSON).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", content_type)
                .body(body.to_string());
        }
        let answer = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("the real API server at {} did not answer: {e}", self.url));
        let code = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None, "").await
    }

    /// Creates the CRD (or updates it to `crd`, when it exists) and waits until it is
    /// Established.
    pub async fn ensure_crd(&self, crd: &Value) {
        let name = crd["metadata"]["name"].as_str().expect("name");
        let base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
        let (code, body) = self
            .request("POST", base, Some(crd), "application/json")
            .await;
        match code {
            201 => {}
            409 => {
                let (_, live) = self.get(&format!("{base}/{name}")).await;
                if live["spec"]["versions"] != crd["spec"]["versions"] {
                    let mut updated = crd.clone();
                    updated["metadata"]["resourceVersion"] =
                        live["metadata"]["resourceVersion"].clone();
                    let (code, body) = self
                        .request(
                            "PUT",
                            &format!("{base}/{name}"),
                            Some(&updated),
                            "application/json",
                        )
                        .await;
                    assert_eq!(code, 200, "updating CRD {name}: {body}");
                }
            }
            _ => panic!("creating CRD {name}: {code} {body}"),
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, live) = self.get(&format!("{base}/{name}")).await;
            let established = live["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            if established {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "CRD {name} not Established: {live}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates every vendored upstream CRD ([`UPSTREAM_CRDS`]).
    pub async fn ensure_upstream_crds(&self) {
        for name in UPSTREAM_CRDS {
            self.ensure_crd(&upstream_crd(name)).await;
        }
    }

    /// Deletes every object of a resource (`/apis/<group>/<version>/...<plural>`) in
    /// `namespace` (what an earlier run of the same test left behind).
    pub async fn delete_all(&self, group: &str, version: &str, plural: &str, namespace: &str) {
        let path = format!("/apis/{group}/{version}/namespaces/{namespace}/{plural}");
        let (code, body) = self.request("DELETE", &path, None, "").await;
        assert!(matches!(code, 200 | 404), "DELETE {path}: {code} {body}");
    }
}

/// An emulator whose custom-resource groups are served by the real server, with the
/// upstream CRDs created there.
pub async fn combined() -> (KubeEmulator, RealApiServer) {
    let real = RealApiServer::from_env();
    real.ensure_upstream_crds().await;
    let emu = KubeEmulator::start_with(EmulatorConfig {
        upstream: Some(real.upstream()),
        ..EmulatorConfig::default()
    })
    .await;
    (emu, real)
}
