//! The OpenAPI document: committed, in step with the code, served, and
//! true of the live router (every route documented, every documented
//! operation answered).

use std::collections::{BTreeMap, BTreeSet};

use gantry_api::{AgentStatus, DeployRequest, Group, Health, Instance, ListenerSwitch, Machine, ServiceControl};
use gantry_client::PutOptions;
use reqwest::Method;
use serde_json::Value;

use super::TestServer;

pub(crate) fn document() -> Value {
    serde_json::from_str(gantry_server::openapi_document()).expect("the document is JSON")
}

/// Refreshed with `UPDATE_EXPECT=1 cargo test -p gantry-server --test tests openapi`.
#[test]
fn the_committed_document_is_the_one_the_code_generates() {
    expect_test::expect_file!["../../../openapi/gantry.json"].assert_eq(gantry_server::openapi_document());
}

#[tokio::test]
async fn the_server_serves_its_document() {
    let s = TestServer::embedded().await;
    let response = reqwest::get(format!("{}/v1/openapi.json", s.url)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), gantry_server::openapi_document());
    assert_eq!(document()["openapi"], "3.1.0");
}

/// The router's own list of routes (its paths as axum prints them in
/// `Debug`, the one view of them it offers) is the document's.
#[tokio::test]
async fn every_route_of_the_router_is_documented() {
    let s = TestServer::embedded().await;
    let debug = format!("{:?}", gantry_server::router(s.store.clone(), gantry_server::Acl::off()));
    // `Node { paths: {RouteId(0): "/v1/health", ...} }`: the path router's
    // table, before the fallback router's (which holds no paths).
    let table = debug.split("paths: {").nth(1).unwrap_or_else(|| panic!("no route table in {debug}"));
    let table = table.split("fallback_router").next().unwrap();
    let routed: BTreeSet<String> =
        table.split('"').filter(|s| s.starts_with('/')).map(|path| path.replace("{*", "{")).collect();
    let documented: BTreeSet<String> = document()["paths"].as_object().unwrap().keys().cloned().collect();
    assert!(routed.len() > 20, "the router's routes could not be read from {debug}");
    assert_eq!(routed, documented);
}

/// A plausible value for each path parameter; `{id}` names what the
/// segment before it holds.
pub(crate) fn fill(template: &str, lease: &str, accessor: &str) -> String {
    let mut out = Vec::new();
    let mut previous = "";
    for segment in template.split('/') {
        let value = match segment {
            "{machine}" => "m1",
            "{service}" => "api",
            "{name}" => "web",
            "{key}" => "probe/a",
            "{accessor}" => accessor,
            "{sha256}" => ARTIFACT_SHA256,
            "{version}" => "v1",
            "{id}" => match previous {
                "machines" | "instances" => "m1",
                "services" => "api",
                "leases" => lease,
                "allocations" => "a1",
                other => panic!("no plausible {{id}} after {other:?} in {template}: add one"),
            },
            s if s.starts_with('{') => panic!("no plausible value for {s} in {template}: add one"),
            s => s,
        };
        out.push(value);
        previous = segment;
    }
    out.join("/")
}

/// A valid body for each operation that takes one.
pub(crate) fn body(method: &Method, template: &str) -> Vec<u8> {
    let json = |value: &dyn erased::Json| value.to_json();
    match (method.as_str(), template) {
        ("PUT", "/v1/machines/{id}") => json(&Machine {
            id: "m1".into(),
            hostname: "m1.local".into(),
            address: "127.0.0.2".into(),
            facts: Default::default(),
            labels: BTreeMap::new(),
            updated_at: 0,
            capacity: None,
        }),
        ("PUT", "/v1/groups/{name}") => {
            json(&Group { name: "web".into(), run_list: vec![], services: vec!["api".into()] })
        }
        ("PUT", "/v1/services/{id}") => br#"{"id": "api", "command": "exec sleep 100", "local_port": 1100}"#.to_vec(),
        ("PUT", "/v1/services/{service}/instances/{id}") => json(&Instance {
            service: "api".into(),
            id: "m1".into(),
            machine: "m1".into(),
            address: "127.0.0.2".into(),
            port: 1100,
            properties: BTreeMap::from([("master".to_string(), "true".to_string())]),
            health: Health::Passing,
            federation: "default".into(),
            public: false,
            provides: BTreeMap::new(),
        }),
        ("PUT", "/v1/agents/{machine}/status") => json(&AgentStatus {
            machine: "m1".into(),
            group: Some("web".into()),
            services: vec!["api".into()],
            listener: None,
            problems: vec![],
            last_deploy: None,
            // Nothing listens there: the log proxy answers 502.
            api: Some("http://127.0.0.1:9".into()),
            processes: BTreeMap::new(),
            lb: None,
            allocations: Default::default(),
            releases: Default::default(),
            server: Some("http://127.0.0.1:7400".into()),
            updated_at_ms: 1,
        }),
        ("PUT", "/v1/agents/{machine}/usage") => json(&gantry_api::NodeUsage {
            machine: "m1".into(),
            cpu: 0.5,
            memory_mb: 300,
            memory_total_mb: 1000,
            cpus: 2,
            load1: 0.1,
            processes: BTreeMap::new(),
            measured_at_ms: 1,
        }),
        ("PUT", "/v1/nodes/{machine}/allocations/{id}") => {
            let mut alloc = serde_json::from_str::<gantry_api::Allocation>(ALLOCATION).unwrap();
            alloc.machine = "m1".into();
            alloc.id = "a1".into();
            json(&alloc)
        }
        ("POST", "/v1/jobs/{service}/plan") => {
            br#"{"id": "api", "command": "exec sleep 100", "count": 2, "resources": {"cpu": 0.1, "memory_mb": 64}}"#
                .to_vec()
        }
        ("PUT", "/v1/jobs/{service}") => json(&gantry_api::JobStatus {
            service: "api".into(),
            version: 1,
            desired: 1,
            placed: 1,
            pending: 0,
            reason: None,
            evaluated_at_ms: 1,
        }),
        ("PUT", "/v1/nodes/{machine}/eligibility") => {
            json(&gantry_api::NodeEligibility { machine: "m1".into(), eligible: true, drain: false, updated_at_ms: 1 })
        }
        ("PUT", "/v1/agents/{machine}/listener") => json(&ListenerSwitch { enabled: true }),
        ("PUT", "/v1/agents/{machine}/deploy") => json(&DeployRequest { id: "d1".into(), requested_at_ms: 1 }),
        ("PUT", "/v1/agents/{machine}/services/{service}") => json(&ServiceControl { running: true, restart: None }),
        ("PUT", "/v1/kv/{key}") => b"value".to_vec(),
        ("PUT", "/v1/artifacts/{service}/{sha256}") => ARTIFACT.to_vec(),
        ("POST", "/v1/releases/{service}") => {
            format!(r#"{{"sha256": "{ARTIFACT_SHA256}", "message": "probe", "definition": {{"id": "api"}}}}"#)
                .into_bytes()
        }
        ("POST", "/v1/releases/{service}/rollback") => br#"{"to": 1}"#.to_vec(),
        ("POST", "/v1/leases") => br#"{"ttl_secs": 60}"#.to_vec(),
        ("PUT", "/v1/acl/policies/{name}") => {
            br#"{"name": "web", "rules": [{"prefix": "kv/app/", "access": "write"}]}"#.to_vec()
        }
        ("POST", "/v1/acl/tokens") => br#"{"name": "probe", "policies": ["web"]}"#.to_vec(),
        _ => Vec::new(),
    }
}

/// The artifact the probe uploads, and its SHA-256.
pub(crate) const ARTIFACT: &[u8] = b"an artifact";
pub(crate) const ARTIFACT_SHA256: &str = "326086a5d542fbb3f783c4d9182b3188caecd714d02d6c10cbdea982e2bfc409";

/// An allocation as the scheduler writes one.
const ALLOCATION: &str = r#"{"id": "a1", "service": "api", "federation": "default", "index": 0, "version": 1,
    "machine": "m1", "resources": {"cpu": 0.5, "memory_mb": 256}, "port": 20001, "desired": "run",
    "placement": {"reason": "new", "score": 0.5, "explanation": "binpack"}, "created_at_ms": 1}"#;

/// `serde::Serialize` is not object-safe; this is the one call the table needs.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap()
        }
    }
}

/// Access decisions so far (`access::authorize`'s calls), from `/metrics`;
/// reading them is one more.
async fn decisions(http: &reqwest::Client, url: &str) -> u64 {
    let text = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let counts = text.lines().filter(|l| l.starts_with("gantry_authorizations_total{"));
    counts.map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap()).sum()
}

/// Every documented operation answers on a live server (writes first, so
/// that reads find something, deletes last) and asks the access seam first
/// (all but the document itself, which reads nothing), and every method a
/// path does not document is a JSON 405 whose `Allow` header lists exactly
/// the documented ones.
#[tokio::test]
async fn every_documented_operation_answers_and_no_other_method_does() {
    let s = TestServer::embedded_with_acl().await;
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", s.token.as_deref().unwrap());
    headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().unwrap());
    let http = reqwest::Client::builder().default_headers(headers).build().unwrap();
    let lease = s.client.grant_lease(std::time::Duration::from_secs(60)).await.unwrap().id;
    let probe = gantry_api::TokenRequest {
        name: "revoked by the probe".into(),
        policies: vec!["management".into()],
        ..Default::default()
    };
    let accessor = s.client.create_token(&probe).await.unwrap().token.accessor;
    s.client.kv_put("probe/seed", "x", PutOptions::default()).await.unwrap();
    let doc = document();
    let paths = doc["paths"].as_object().unwrap();
    let order = [Method::PUT, Method::POST, Method::GET, Method::DELETE];
    let mut answered = 0;
    for method in &order {
        for (template, item) in paths {
            let Some(operation) = item.get(method.as_str().to_lowercase()) else { continue };
            let url = format!("{}{}", s.url, fill(template, &lease, &accessor));
            let decided = decisions(&http, &s.url).await;
            let response = http.request(method.clone(), &url).body(body(method, template)).send().await.unwrap();
            let status = response.status().as_u16();
            assert!(status != 404 && status != 405, "{method} {template} ({url}): {status}");
            // The second read of the metrics counts itself too.
            let asked = decisions(&http, &s.url).await - decided - 1;
            if template != "/v1/openapi.json" {
                assert!(asked > 0, "{method} {template} was not authorized");
            }
            if !response.status().is_success() {
                let error: gantry_api::ErrorBody = response.json().await.unwrap();
                assert!(
                    operation["responses"].get(format!("{}XX", status / 100)).is_some(),
                    "{method} {template}: {status} {error:?}, an answer it does not document"
                );
            }
            answered += 1;
        }
    }
    assert_eq!(answered, paths.values().map(|item| item.as_object().unwrap().len()).sum::<usize>());

    for (template, item) in paths {
        let documented: BTreeSet<String> = item.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        let mut allowed = documented.clone();
        if allowed.contains("GET") {
            allowed.insert("HEAD".into());
        }
        for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS] {
            if documented.contains(method.as_str()) {
                continue;
            }
            let response = http
                .request(method.clone(), format!("{}{}", s.url, fill(template, &lease, &accessor)))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 405, "{method} {template}");
            let allow: BTreeSet<String> =
                response.headers()["allow"].to_str().unwrap().split(',').map(|m| m.trim().to_owned()).collect();
            assert_eq!(allow, allowed, "{method} {template}: Allow");
            let error: gantry_api::ErrorBody = response.json().await.unwrap();
            assert_eq!(error.error.code, gantry_api::ErrorCode::MethodNotAllowed, "{method} {template}");
            assert!(error.error.message.contains(template.split('{').next().unwrap()), "{}", error.error.message);
        }
    }
}
