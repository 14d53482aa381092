//! Deployments signed by deploy keys: a host runs only those its own
//! anchor trusts.

use std::time::Duration;

use forgeone::SigningKey;
use forgeone::cluster;

use super::{Lab, NatsServer, of_kind, start, until};

const ONE: &str = r#"
[[workload]]
name = "w"
component = "hello.wasm"
tenant = "acme"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_refuse_deployments_not_signed_by_a_deploy_key_they_trust() {
    let nats = NatsServer::start();
    let lab = Lab::new();
    let (west, log) = lab.host("eu-west-1", "eu-west", lab.anchor());
    let agents = start(&nats.url, vec![west]);
    let cluster = nats.connect().await;
    let unsigned = lab.deployment("unsigned", ONE);
    cluster::deploy(&cluster, &unsigned, "unsigned", &[])
        .await
        .unwrap();
    let stranger = SigningKey::generate();
    let forged = lab.deployment("forged", ONE);
    cluster::deploy(&cluster, &forged, "forged", &[&stranger])
        .await
        .unwrap();
    let good = lab.deployment("good", ONE);
    lab.deploy(&cluster, &good, "good").await;
    let view = until(
        &cluster,
        Duration::from_secs(30),
        "good ran, the others refused",
        |v| {
            let status = |d: &str| v.replica(d, "w", 0).map(|r| r.status.clone());
            status("good").as_deref() == Some("exited")
                && status("unsigned").as_deref() == Some("refused")
                && status("forged").as_deref() == Some("refused")
        },
    )
    .await;
    let reason = |d: &str| view.replica(d, "w", 0).unwrap().reason.clone().unwrap();
    assert!(
        reason("unsigned").contains("not signed by a deploy key this host trusts: it is unsigned"),
        "{}",
        reason("unsigned")
    );
    assert!(
        reason("forged").contains("not signed by a deploy key this host trusts"),
        "{}",
        reason("forged")
    );
    for a in agents {
        a.drain().await;
    }
    let refused: Vec<String> = of_kind(&log, "cluster.refused")
        .iter()
        .map(|r| r["details"]["key"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = refused.clone();
    sorted.sort();
    assert_eq!(sorted, ["forged.w.0", "unsigned.w.0"], "{refused:?}");
    // Only the signed deployment's component was even fetched and run.
    assert_eq!(of_kind(&log, "container.started").len(), 1);
    assert_eq!(of_kind(&log, "boot.component.verified").len(), 1);
}

#[test]
fn an_anchor_lists_deploy_keys_with_a_threshold_and_without_them_reads_as_before() {
    use forgeone::boot::{AnchorDocument, Role, TrustAnchor};
    let lab = Lab::new();
    // No deploy key: the document does not mention the deploy threshold,
    // so anchors made before deploy keys existed hash the same.
    let plain = lab.world.anchor_doc();
    let text = String::from_utf8(plain.to_payload()).unwrap();
    assert!(!text.contains("deploy"), "{text}");
    assert!(TrustAnchor::from_file(lab.world.write_anchor(&plain, &[&lab.world.root])).is_ok());
    // Two deploy keys, threshold 2: accepted, and the threshold is kept.
    let mut doc: AnchorDocument = lab.world.anchor_doc();
    doc.add_key(Role::Deploy, SigningKey::generate().public())
        .add_key(Role::Deploy, SigningKey::generate().public());
    doc.thresholds.deploy = 2;
    let anchor = TrustAnchor::from_file(lab.world.write_anchor(&doc, &[&lab.world.root])).unwrap();
    assert_eq!(anchor.thresholds().deploy, 2);
    assert_eq!(anchor.keys_of(Role::Deploy).count(), 2);
    // A threshold above the deploy keys listed is refused.
    doc.thresholds.deploy = 3;
    let err = TrustAnchor::from_file(lab.world.write_anchor(&doc, &[&lab.world.root])).unwrap_err();
    assert!(err.to_string().contains("deploy"), "{err}");
}
