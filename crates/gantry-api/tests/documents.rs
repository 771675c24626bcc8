//! Golden JSON of the documents agents publish and operators write: a
//! change to their shape is a change every reader sees, so it shows here.

use expect_test::expect_file;
use gantry_api::*;

use crate::samples;

fn pretty<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}

#[test]
fn agent_status() {
    expect_file!["golden/agent_status.json"].assert_eq(&pretty(&samples::agent_status()));
}

#[test]
fn agent_status_without_listener_or_balancer() {
    let bare = AgentStatus {
        listener: None,
        lb: None,
        processes: Default::default(),
        allocations: Default::default(),
        releases: Default::default(),
        ..samples::agent_status()
    };
    expect_file!["golden/agent_status_bare.json"].assert_eq(&pretty(&bare));
}

/// A machine record as agents of issue 16 publish it (capacity for the
/// scheduler), and the usage document beside its status.
#[test]
fn capacity_and_usage() {
    expect_file!["golden/machine.json"].assert_eq(&pretty(&samples::machine()));
    expect_file!["golden/node_usage.json"].assert_eq(&pretty(&samples::node_usage()));
}

/// What the scheduler writes: an allocation and a service's evaluation.
#[test]
fn scheduled_work() {
    expect_file!["golden/allocation.json"].assert_eq(&pretty(&samples::allocation()));
    expect_file!["golden/job_status.json"].assert_eq(&pretty(&samples::job_status()));
    expect_file!["golden/scheduled_service.json"].assert_eq(&pretty(&samples::scheduled_definition()));
}

#[test]
fn control_documents() {
    expect_file!["golden/agent_control.json"].assert_eq(&pretty(&samples::agent_control()));
    expect_file!["golden/listener_switch.json"].assert_eq(&pretty(&ListenerSwitch { enabled: true }));
    expect_file!["golden/service_control.json"]
        .assert_eq(&pretty(&ServiceControl { running: false, restart: Some("18d".into()) }));
    expect_file!["golden/deploy_request.json"]
        .assert_eq(&pretty(&DeployRequest { id: "18c".into(), requested_at_ms: 1_700_000_000_000 }));
}

#[test]
fn error_body() {
    expect_file!["golden/error_body.json"]
        .assert_eq(&pretty(&ErrorBody::new(ErrorCode::CasFailed, "key \"x\" changed: its mod revision is not 3")));
}
