//! The pure parts of access control: rule precedence, token lookup and
//! expiry, and what an agent's token may read.

use super::*;

fn rule(prefix: &str, access: Access) -> Rule {
    Rule { prefix: prefix.into(), access }
}

#[test]
fn the_longest_prefix_decides_and_deny_wins_a_tie() {
    let rules = [
        rule("", Access::Read),
        rule("kv/", Access::Write),
        rule("kv/datastores/", Access::Deny),
        rule("kv/datastores/PUBLIC", Access::Read),
        rule("services/", Access::Write),
        rule("services/", Access::Deny),
        rule("groups/", Access::Read),
        rule("groups/", Access::Write),
    ];
    assert_eq!(access_of(&rules, "machines/m1"), Access::Read);
    assert_eq!(access_of(&rules, "kv/app/x"), Access::Write);
    assert_eq!(access_of(&rules, "kv/datastores/DB_URL"), Access::Deny);
    assert_eq!(access_of(&rules, "kv/datastores/PUBLIC_URL"), Access::Read);
    assert_eq!(access_of(&rules, "services/api"), Access::Deny);
    assert_eq!(access_of(&rules, "groups/web"), Access::Write);
    assert_eq!(access_of(&[], "anything"), Access::Deny, "default deny");
}

#[test]
fn placeholders_are_the_names_in_braces() {
    assert_eq!(placeholders("{PRIMARY_DATABASE_URL}"), ["PRIMARY_DATABASE_URL"]);
    assert_eq!(placeholders("http://{HOST}:{PORT}/{{literal}}"), ["HOST", "PORT"]);
    assert!(placeholders("no braces").is_empty());
}

#[test]
fn hex_round_trips_and_rejects_what_is_not_32_bytes() {
    let bytes = random_256();
    assert_eq!(parse_hex32(&hex(&bytes)), Some(bytes));
    assert_eq!(parse_hex32("abc"), None);
    assert_eq!(parse_hex32(&"zz".repeat(32)), None);
}

fn view_with(tokens: &[(&StoredToken, &str)]) -> Acl {
    let acl = Acl { mode: AclMode::On, view: RwLock::default(), lease_ends: RwLock::default() };
    for (stored, _) in tokens {
        acl.note(&keys::acl_token(&stored.token.accessor), Some(&serde_json::to_vec(stored).unwrap()));
    }
    acl
}

#[test]
fn a_secret_resolves_to_its_token_until_revoked_or_expired() {
    let (ops, ops_secret) = new_token("ops".into(), vec!["ops".into()], None, None);
    let (short, short_secret) = new_token("short".into(), vec![], None, Some(Duration::from_millis(1)));
    let acl = view_with(&[(&ops, &ops_secret), (&short, &short_secret)]);
    let policy = Policy {
        name: "ops".into(),
        description: String::new(),
        rules: vec![rule("kv/", Access::Write)],
        federations: vec![],
    };
    acl.note(&keys::acl_policy("ops"), Some(&serde_json::to_vec(&policy).unwrap()));

    let known = acl.resolve(&ops_secret).unwrap();
    assert_eq!(known.token.accessor, ops.token.accessor);
    assert!(matches!(&*known.identity, Identity::Rules { rules, federations: None } if rules.len() == 1));
    assert_eq!(acl.resolve("not-a-secret").unwrap_err(), Unknown::NoSuchToken);
    // The stored hash is not a secret that works.
    assert_eq!(acl.resolve(&ops.secret_sha256).unwrap_err(), Unknown::NoSuchToken);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(acl.resolve(&short_secret).unwrap_err(), Unknown::Expired);

    acl.note(&keys::acl_token(&ops.token.accessor), None);
    assert_eq!(acl.resolve(&ops_secret).unwrap_err(), Unknown::NoSuchToken, "revoked");
}

#[test]
fn the_management_policy_is_everything_and_an_agent_token_is_its_machine() {
    let (root, root_secret) = new_token("root".into(), vec![MANAGEMENT_POLICY.into()], None, None);
    let agent = AgentIdentity { machine: "web-1".into(), federation: "blue".into(), services: vec![] };
    let (node, node_secret) = new_token("node".into(), vec![], Some(agent.clone()), None);
    let acl = view_with(&[(&root, &root_secret), (&node, &node_secret)]);
    assert!(matches!(&*acl.resolve(&root_secret).unwrap().identity, Identity::Management));
    assert!(matches!(&*acl.resolve(&node_secret).unwrap().identity, Identity::Agent(a) if *a == agent));
}

#[test]
fn an_agent_reads_exactly_the_datastores_its_services_require() {
    let acl = Acl { mode: AclMode::On, view: RwLock::default(), lease_ends: RwLock::default() };
    let put = |key: String, value: serde_json::Value| acl.note(&key, Some(value.to_string().as_bytes()));
    put(keys::service("api"), serde_json::json!({"id": "api", "federation": "blue", "requires": {"DB": "{BLUE_DB}"}}));
    put(keys::service("www"), serde_json::json!({"id": "www", "federation": "blue", "requires": {"API": "{API_URL}"}}));
    put(
        keys::service("green"),
        serde_json::json!({"id": "green", "federation": "green", "requires": {"DB": "{GREEN_DB}"}}),
    );
    put(keys::group("web"), serde_json::json!({"name": "web", "services": ["www"]}));
    put(keys::group("api"), serde_json::json!({"name": "api", "services": ["api", "green"]}));
    put(keys::machine("m1"), serde_json::json!({"id": "m1", "address": "10.0.0.1", "labels": {"group": "api"}}));
    put(keys::machine("m2"), serde_json::json!({"id": "m2", "address": "10.0.0.2", "labels": {"group": "web"}}));
    let m1 = AgentIdentity { machine: "m1".into(), federation: "blue".into(), services: vec![] };
    let m2 = AgentIdentity { machine: "m2".into(), federation: "blue".into(), services: vec![] };
    assert!(acl.agent_may_read_datastore(&m1, "BLUE_DB"));
    // Its group names `green`, but green is another federation's.
    assert!(!acl.agent_may_read_datastore(&m1, "GREEN_DB"));
    assert!(!acl.agent_may_read_datastore(&m2, "BLUE_DB"));
    assert_eq!(acl.machine_address("m2").as_deref(), Some("10.0.0.2"));
    assert!(acl.agent_runs(&m2, "www") && !acl.agent_runs(&m2, "api"));
    // What an agent reports running grants nothing.
    put(
        gantry_api::keys::AgentKey::Status.of("m2"),
        serde_json::json!({"machine": "m2", "services": ["api"], "updated_at_ms": 0}),
    );
    assert!(!acl.agent_runs(&m2, "api") && !acl.agent_may_read_datastore(&m2, "BLUE_DB"));
    // A service its token names does (`gantry agent --service api`)...
    let named = AgentIdentity { services: vec!["api".into()], ..m2.clone() };
    assert!(acl.agent_runs(&named, "api") && acl.agent_may_read_datastore(&named, "BLUE_DB"));
    // ...and so does one the scheduler placed on it, while it is placed.
    let alloc = keys::alloc("m2", "api-0001");
    put(
        alloc.clone(),
        serde_json::json!({
            "id": "api-0001", "service": "api", "federation": "blue", "index": 0, "version": 1, "machine": "m2",
            "resources": {"cpu": 0.1, "memory_mb": 64}, "port": 8000, "desired": "run",
            "placement": {"reason": "new", "score": 1.0, "explanation": ""}, "created_at_ms": 0
        }),
    );
    assert!(acl.agent_runs(&m2, "api") && acl.agent_may_read_datastore(&m2, "BLUE_DB"));
    acl.note(&alloc, None);
    assert!(!acl.agent_runs(&m2, "api"));
}
