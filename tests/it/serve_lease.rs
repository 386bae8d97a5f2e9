//! Leader election against the Kubernetes API emulator: one leader among electors, takeover
//! after expiry or release, no double leadership from a race on an expired Lease; and in
//! the service, a follower replica plans without writing and says so in `/status`.

use std::time::{Duration, Instant};

use crate::serve_support::{config, fleet_header, kube_site, start, unique};
use crate::support::kube_emulator::{KubeEmulator, RequestFilter};
use drover::serve::LocalDir;
use drover::serve::lease::{Elector, LeaseConfig, Role};
use drover::sites::RunOptions;
use serde_json::json;

const NS: &str = "drover-system";
const LEASE: &str = "drover-leader";

fn lease_config(identity: &str, secs: u64) -> LeaseConfig {
    LeaseConfig {
        namespace: NS.into(),
        name: LEASE.into(),
        identity: identity.into(),
        duration: Duration::from_secs(secs),
        kubeconfig: None,
        context: None,
    }
}

async fn emulator() -> KubeEmulator {
    let emu = KubeEmulator::start().await;
    emu.put_object_as(
        "test",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .unwrap();
    emu
}

fn holder(emu: &KubeEmulator) -> Option<String> {
    emu.get_object("coordination.k8s.io/v1", "Lease", Some(NS), LEASE)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

#[tokio::test]
async fn one_leader_then_takeover_after_expiry_or_release() {
    let emu = emulator().await;
    let a = Elector::new(emu.client().await, lease_config("a", 1));
    let b = Elector::new(emu.client().await, lease_config("b", 1));

    assert_eq!(a.round().await.unwrap(), Role::Leader);
    assert_eq!(
        b.round().await.unwrap(),
        Role::Follower { holder: "a".into() }
    );
    assert_eq!(a.round().await.unwrap(), Role::Leader, "the holder renews");
    assert_eq!(
        b.round().await.unwrap(),
        Role::Follower { holder: "a".into() }
    );
    assert_eq!(holder(&emu).as_deref(), Some("a"));

    // `a` stops renewing: `b` takes over once the lease expired, not before.
    let stopped = Instant::now();
    loop {
        match b.round().await.unwrap() {
            Role::Leader => break,
            Role::Follower { holder } => assert_eq!(holder, "a"),
        }
        assert!(stopped.elapsed() < Duration::from_secs(10), "no takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped.elapsed() >= Duration::from_secs(1),
        "taken over before the lease expired"
    );
    assert_eq!(holder(&emu).as_deref(), Some("b"));
    assert_eq!(
        a.round().await.unwrap(),
        Role::Follower { holder: "b".into() },
        "the old leader steps down"
    );

    // A release hands over at once.
    b.release().await.unwrap();
    assert_eq!(holder(&emu), None);
    assert_eq!(a.round().await.unwrap(), Role::Leader);
    let lease = emu
        .get_object("coordination.k8s.io/v1", "Lease", Some(NS), LEASE)
        .unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 2, "{lease:#}");
}

#[tokio::test]
async fn a_race_on_an_expired_lease_makes_one_leader() {
    let emu = emulator().await;
    let gone = Elector::new(emu.client().await, lease_config("gone", 1));
    assert_eq!(gone.round().await.unwrap(), Role::Leader);
    for round in 0..5 {
        // Wait until the current holder's lease expired.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let a = Elector::new(emu.client().await, lease_config(&format!("a{round}"), 1));
        let b = Elector::new(emu.client().await, lease_config(&format!("b{round}"), 1));
        // Both read the expired lease before either writes: reads are slowed down.
        emu.faults()
            .only(RequestFilter::any().method("GET"))
            .latency(Duration::from_millis(300));
        let (ra, rb) = tokio::join!(a.round(), b.round());
        emu.faults().clear();
        let leaders: Vec<&str> = [(&ra, "a"), (&rb, "b")]
            .into_iter()
            .filter(|(r, _)| matches!(r, Ok(Role::Leader)))
            .map(|(_, who)| who)
            .collect();
        assert_eq!(leaders.len(), 1, "round {round}: {ra:?} {rb:?}");
        let loser = if matches!(ra, Ok(Role::Leader)) {
            &rb
        } else {
            &ra
        };
        match loser {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
            other => panic!("round {round}: the loser should get a conflict: {other:?}"),
        }
        let expected = format!("{}{round}", leaders[0]);
        assert_eq!(holder(&emu), Some(expected));
    }
}

#[tokio::test]
async fn a_follower_replica_only_plans_and_says_so() {
    let emu = emulator().await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    emu.put_object_as(
        "other-replica",
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": NS},
            "spec": {"holderIdentity": "other", "leaseDurationSeconds": 3600,
                     "acquireTime": now, "renewTime": now}}),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, emu.kubeconfig_yaml("lab-ctx")).unwrap();
    let fleet = dir.path().join("fleet");
    std::fs::create_dir(&fleet).unwrap();
    let name = unique("lease");
    std::fs::write(
        fleet.join("fleet.yaml"),
        fleet_header(&name) + &kube_site("lab", "lab-ctx", "runners", 2, "2.321.0"),
    )
    .unwrap();
    emu.clear_request_log();

    let mut cfg = config(RunOptions {
        kubeconfig: Some(kubeconfig.clone()),
        ..RunOptions::default()
    });
    cfg.lease = Some(LeaseConfig {
        kubeconfig: Some(kubeconfig.clone()),
        context: Some("lab-ctx".into()),
        ..lease_config("me", 3)
    });
    let svc = start(cfg, Box::new(LocalDir(fleet.clone()))).await;
    let status = svc
        .wait_for("the first reconcile", Duration::from_secs(30), |s| {
            s["ready"] == true
        })
        .await;
    assert_eq!(status["leader"], false, "{status:#}");
    let site = &status["sites"]["lab"];
    assert_eq!(site["outcome"], "changed", "planned, not applied: {site:#}");
    assert!(site["changes"]["create"].as_u64().unwrap() > 0, "{site:#}");
    // A second reconcile on request: still no writes.
    svc.service.trigger(drover::serve::Trigger::Full);
    let reads_before = emu.request_log().len();
    crate::serve_support::eventually("a second plan", Duration::from_secs(30), || {
        emu.request_log()
            .iter()
            .skip(reads_before)
            .filter(|r| r.path.contains("podtemplates"))
            .count()
            > 0
    })
    .await;
    assert_eq!(
        emu.write_count(),
        0,
        "a follower never writes: {:#?}",
        emu.request_log()
            .into_iter()
            .filter(|r| r.is_write())
            .collect::<Vec<_>>()
    );
    assert!(svc.metrics().await.contains("drover_leader 0"));
    assert!(svc.get("/").await.1.contains("follower"));

    // The other replica gives the lease up: this one takes over and applies.
    emu.edit_object("coordination.k8s.io/v1", "Lease", Some(NS), LEASE, |l| {
        l["spec"]["holderIdentity"] = serde_json::Value::Null;
        true
    });
    svc.wait_for("leadership", Duration::from_secs(20), |s| {
        s["leader"] == true
    })
    .await;
    svc.service.trigger(drover::serve::Trigger::Full);
    crate::serve_support::eventually("objects applied", Duration::from_secs(30), || {
        emu.list_objects("v1", "PodTemplate", Some("runners")).len() == 2
    })
    .await;
    assert_eq!(holder(&emu).as_deref(), Some("me"));
    svc.shutdown().await;
    assert_eq!(holder(&emu), None, "the lease is released on shutdown");
}
