//! Every wire type, serialised and parsed back, is what it was.

use std::fmt::Debug;

use gantry_api::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::samples;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T) {
    let json = serde_json::to_string(&value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(back, value, "{json}");
}

#[test]
fn inventory() {
    round_trip(samples::machine());
    round_trip(Machine { id: "bare".into(), capacity: None, ..samples::machine() });
    round_trip(samples::group());
    round_trip(samples::instance());
    for health in [Health::Passing, Health::Failing, Health::Unknown] {
        round_trip(health);
    }
    round_trip(Listing { revision: 9, items: vec![samples::machine()] });
    round_trip(Listing { revision: 9, items: vec![samples::instance()] });
}

#[test]
fn service_definitions() {
    round_trip(samples::service_definition());
    for command in [
        CommandSpec::External(true),
        CommandSpec::Shell("exec x".into()),
        CommandSpec::Argv(vec!["python3".into(), "x.py".into()]),
    ] {
        round_trip(ServiceDefinition { command: Some(command), ..samples::service_definition() });
    }
    round_trip(ServiceDefinition {
        id: "bare".into(),
        description: None,
        command: None,
        user: None,
        on_delete: None,
        run_list: vec![],
        environment: Default::default(),
        requires: Default::default(),
        provides: Default::default(),
        local_port: None,
        public: None,
        federation: None,
        check: None,
        resources: None,
        count: None,
        constraints: vec![],
        spread: vec![],
        strategy: None,
        reschedule: None,
        artifact: None,
        deploy: None,
        shutdown_delay: None,
        update: None,
        metrics: None,
        alerts: None,
    });
    round_trip(samples::scheduled_definition());
    // Fixed and derived bounds (an untagged enum: each must come back as itself).
    round_trip(AlertsSpec {
        error_ratio: Some(BoundSpec::Fixed(serde_json::Number::from_f64(0.05).unwrap())),
        latency: None,
        restarts: Some(BoundSpec::Fixed(3.into())),
        memory_growth: Some(BoundSpec::Derived {
            derived: DerivedSpec {
                baseline: "7d".into(),
                sigma: Some(4.into()),
                shift: Some("2h".into()),
                floor: Some(100.into()),
            },
        }),
        request_rate_drop: None,
    });
    round_trip(StatusSpec::Code(200));
}

#[test]
fn kv_leases_and_watches() {
    round_trip(KvEntry {
        key: "datastores/DB".into(),
        value: "mysql://db".into(),
        create_revision: 1,
        mod_revision: 2,
        version: 2,
        lease: Some("7f".into()),
    });
    round_trip(KvList { revision: 3, entries: vec![], more: true });
    round_trip(WriteResult { revision: 4 });
    round_trip(DeleteResult { revision: 5, deleted: 1 });
    round_trip(LeaseRequest { ttl_secs: 10 });
    round_trip(LeaseGrant { id: "7f".into(), ttl_secs: 10 });
    round_trip(HealthStatus { status: "ok".into(), store: "embedded".into(), revision: 6 });
    round_trip(WatchEvent { kind: WatchKind::Put, key: "kv/x".into(), value: Some("1".into()), revision: 7 });
    round_trip(WatchEvent { kind: WatchKind::Delete, key: "kv/x".into(), value: None, revision: 8 });
    round_trip(ResetEvent { oldest_available: 9, message: "compacted".into() });
}

#[test]
fn agent_documents() {
    round_trip(samples::agent_status());
    round_trip(AgentStatus { listener: None, lb: None, last_deploy: None, api: None, ..samples::agent_status() });
    round_trip(samples::agent_control());
    round_trip(samples::release_target());
    round_trip(samples::release());
    round_trip(samples::rollout());
    round_trip(samples::node_usage());
    round_trip(samples::allocation());
    round_trip(Allocation {
        desired: DesiredState::Stop,
        stop_reason: Some("node lost".into()),
        ..samples::allocation()
    });
    round_trip(samples::job_status());
    round_trip(NodeEligibility { machine: "web-1".into(), eligible: false, drain: true, updated_at_ms: 1 });
    for state in [AllocState::Pending, AllocState::Running, AllocState::Failed, AllocState::Lost, AllocState::Complete]
    {
        round_trip(state);
    }
    round_trip(AgentControl::default());
    round_trip(samples::run_record());
    for state in [RunState::Idle, RunState::Running, RunState::Queued, RunState::Throttled] {
        round_trip(state);
    }
    for state in ProcState::ALL {
        round_trip(state);
        assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{}\"", state.as_str()));
    }
    round_trip(ListenerSwitch { enabled: true });
    round_trip(ServiceControl { running: false, restart: None });
}

#[test]
fn errors() {
    for &code in ErrorCode::ALL {
        round_trip(ErrorBody::new(code, "what is wrong, and how to fix it"));
    }
}

/// Inputs refuse what they do not know, so a typo is an error, not ignored.
#[test]
fn input_types_reject_unknown_fields() {
    assert!(serde_json::from_str::<ListenerSwitch>(r#"{"enabled":true,"enable":false}"#).is_err());
    assert!(serde_json::from_str::<ServiceControl>(r#"{"running":true,"restrat":"1"}"#).is_err());
    assert!(serde_json::from_str::<DeployRequest>(r#"{"id":"1","requested_at_ms":1,"x":1}"#).is_err());
    assert!(serde_json::from_str::<ServiceDefinition>(r#"{"id":"api","comand":"x"}"#).is_err());
    assert!(serde_json::from_str::<Machine>(r#"{"id":"m","adress":"x"}"#).is_err());
}

/// The example repository's service files are valid wire definitions, and
/// the typed form writes back the same JSON (numbers stay integers).
#[test]
fn example_services_parse_as_definitions_and_write_back_the_same_json() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut seen = 0;
    for example in std::fs::read_dir(dir).unwrap() {
        let services = example.unwrap().path().join("data_bags/service");
        let Ok(files) = std::fs::read_dir(&services) else { continue };
        for file in files {
            let path = file.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let typed: ServiceDefinition =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let written: serde_json::Value = serde_json::to_value(&typed).unwrap();
            let original: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(written, original, "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 4, "found only {seen} example service files");
}
