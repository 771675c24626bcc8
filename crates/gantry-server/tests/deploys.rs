//! Deploys (issue 17) through the API: artifacts stored once and only
//! whole, releases numbered and refused while a rollout runs (naming who
//! deploys what), and who may not: read-only operators, agents of other
//! services, agents writing releases, callers without a token.

use gantry_api::{ErrorCode, ReleaseRequest, ReleaseStatus, RollbackRequest};
use gantry_client::{Client, PutOptions};
use sha2::Digest as _;

use super::TestServer;
use super::acl::{agent, code, fleet, read_only};

fn sha(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn request(sha256: &str) -> ReleaseRequest {
    ReleaseRequest {
        sha256: sha256.into(),
        git: None,
        message: Some("probe".into()),
        os_user: Some("alice".into()),
        definition: None,
    }
}

#[tokio::test]
async fn artifacts_are_stored_once_whole_and_releases_are_numbered() {
    let s = TestServer::embedded_with_acl().await;
    fleet(&s).await;
    let c = &s.client;
    let bytes = b"release one".to_vec();
    let one = sha(&bytes);
    assert!(!c.artifact_stat("api", &one).await.unwrap().stored);
    // Bytes that do not hash to the name are refused and nothing is kept.
    let wrong = c.upload_artifact("api", &one, b"release one, changed on the way".to_vec()).await;
    assert_eq!(code(wrong), Some(ErrorCode::ArtifactMismatch));
    assert!(!c.artifact_stat("api", &one).await.unwrap().stored);
    assert_eq!(c.upload_artifact("api", &one, bytes.clone()).await.unwrap().size, bytes.len() as u64);
    assert!(c.artifact_stat("api", &one).await.unwrap().stored);
    // A release of an artifact that is not stored is refused.
    let missing = c.create_release("api", &request(&sha(b"never uploaded"))).await;
    assert_eq!(code(missing), Some(ErrorCode::ArtifactMissing));

    // No node runs api yet: v1 succeeds at once, for nodes that start it later.
    let v1 = c.create_release("api", &request(&one)).await.unwrap();
    assert_eq!((v1.version, v1.status), (1, ReleaseStatus::Succeeded));
    assert_eq!(v1.who, "bootstrap", "the token's name, not the OS user");
    // m1 now reports running api: v2 has a rollout, and a third release waits for it.
    s.client.put_agent_status(&status("m1", "api"), PutOptions::default()).await.unwrap();
    let v2 = c.create_release("api", &request(&one)).await.unwrap();
    assert_eq!((v2.version, v2.status), (2, ReleaseStatus::Running));
    let busy = c.create_release("api", &request(&one)).await.unwrap_err();
    assert_eq!(busy.code(), Some(ErrorCode::RolloutInProgress));
    assert!(busy.to_string().contains("bootstrap is deploying api v2"), "{busy}");
    let rollout = c.rollout_status("api").await.unwrap().rollout.unwrap();
    assert_eq!(rollout.nodes.iter().map(|n| n.machine.as_str()).collect::<Vec<_>>(), ["m1"]);
    assert_eq!(rollout.stable.map(|t| t.version), Some(1));
    let history = c.release_history("api").await.unwrap();
    assert_eq!(history.items.iter().map(|r| r.version).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(history.stable, Some(1));
    let shown = c.release("api", 2).await.unwrap();
    assert_eq!(shown.previous, Some(1));
    // The same bytes downloaded.
    let (length, body) = c.download_artifact("api", &one).await.unwrap();
    let got: Vec<u8> = futures::StreamExt::collect::<Vec<_>>(body).await.into_iter().flat_map(|c| c.unwrap()).collect();
    assert_eq!((length, got), (Some(bytes.len() as u64), bytes));
    // Abort: it is marked, and no rollout of www is there to promote.
    assert!(c.abort_rollout("api").await.unwrap().aborted);
    assert_eq!(code(c.promote("www").await), Some(ErrorCode::NoRollout));
}

fn status(machine: &str, service: &str) -> gantry_api::AgentStatus {
    serde_json::from_value(serde_json::json!({"machine": machine, "services": [service], "updated_at_ms": 1})).unwrap()
}

/// Who may not: a read-only operator writes nothing; an agent never
/// writes a release and reads only what it runs; no token, nothing.
#[tokio::test]
async fn only_operators_who_may_write_the_service_deploy_it() {
    let s = TestServer::embedded_with_acl().await;
    fleet(&s).await;
    let bytes = b"api code".to_vec();
    let hash = sha(&bytes);
    s.client.upload_artifact("api", &hash, bytes.clone()).await.unwrap();
    s.client.create_release("api", &request(&hash)).await.unwrap();
    let auditor = read_only(&s).await;
    let m1 = agent(&s, "m1", "blue").await;
    let m2 = agent(&s, "m2", "green").await;
    let before = s.client.health().await.unwrap().revision;

    assert!(auditor.release_history("api").await.is_ok(), "read-only may read the history");
    assert_eq!(code(auditor.upload_artifact("api", &sha(b"x"), b"x".to_vec()).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(auditor.create_release("api", &request(&hash)).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(auditor.rollback("api", &RollbackRequest::default()).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(auditor.promote("api").await), Some(ErrorCode::Forbidden));
    assert_eq!(code(auditor.abort_rollout("api").await), Some(ErrorCode::Forbidden));

    // m1 runs api: it reads api's releases and artifact, and writes nothing.
    assert!(m1.release_history("api").await.is_ok());
    assert!(m1.download_artifact("api", &hash).await.is_ok());
    assert_eq!(code(m1.create_release("api", &request(&hash)).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(m1.upload_artifact("api", &sha(b"y"), b"y".to_vec()).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(m1.rollback("api", &RollbackRequest::default()).await), Some(ErrorCode::Forbidden));
    // m2 runs www, not api: none of api's releases or artifacts.
    assert_eq!(code(m2.release_history("api").await), Some(ErrorCode::Forbidden));
    assert_eq!(code(m2.download_artifact("api", &hash).await.map(|_| ())), Some(ErrorCode::Forbidden));
    assert_eq!(code(m2.artifact_stat("api", &hash).await), Some(ErrorCode::Forbidden));
    // Without a token: nothing.
    let anonymous = Client::new(&s.url);
    assert_eq!(code(anonymous.release_history("api").await), Some(ErrorCode::Unauthorized));
    assert_eq!(code(anonymous.download_artifact("api", &hash).await.map(|_| ())), Some(ErrorCode::Unauthorized));

    assert_eq!(s.client.health().await.unwrap().revision, before, "a refused request changed the store");
}
