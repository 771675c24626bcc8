//! `autoscale:run`, `autoscale:update` (the replacement, and its failures),
//! `autoscale:status`, with `instance:list` on what they launched.

use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_autoscaling::types::AutoScalingGroup;

use super::{GROUP, Moto, example_for_moto, packer_run, tags};
use crate::{Run, Scratch, block_on, eventually};

/// The example in moto with an AMI built and the group's dna written.
fn ready_to_launch(moto: &Moto) -> (Scratch, String) {
    let s = example_for_moto(moto);
    moto.gantry(s.dir.path(), &["autoscale:create", GROUP]).ok();
    let ami = packer_run(moto, &s, GROUP);
    (s, ami)
}

/// The ids of an autoscaling group's instances, sorted.
fn instance_ids(asg: &AutoScalingGroup) -> Vec<String> {
    let mut ids: Vec<String> = asg.instances().iter().map(|i| i.instance_id().unwrap().to_string()).collect();
    ids.sort();
    ids
}

/// The launch templates moto has: (name, versions), sorted.
fn templates(moto: &Moto) -> Vec<(String, i64)> {
    let out = block_on(moto.ec2().describe_launch_templates().send()).unwrap();
    let mut templates: Vec<(String, i64)> = out
        .launch_templates()
        .iter()
        .map(|t| (t.launch_template_name().unwrap().to_string(), t.latest_version_number().unwrap()))
        .collect();
    templates.sort();
    templates
}

/// The one autoscaling group moto has, which must be `name` with its
/// instances running and in service.
fn assert_serving(moto: &Moto, name: &str, instances: &[String]) {
    let asgs = moto.asgs();
    assert_eq!(moto.asg_names(), [name]);
    assert_eq!(instance_ids(&asgs[0]), instances);
    assert!(asgs[0].instances().iter().all(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService")));
    for instance in moto.instances(instances) {
        assert_eq!(instance.state().and_then(|s| s.name()).map(|n| n.as_str()), Some("running"));
    }
}

#[test]
fn autoscale_run_launches_the_group_from_its_newest_ami() {
    let moto = Moto::start();
    let s = example_for_moto(&moto);
    let dir = s.dir.path();
    let err = moto.gantry(dir, &["autoscale:run", GROUP]).bad_input();
    assert!(
        err.contains("dna/asg/12_04-bee.json does not exist") && err.contains("`gantry autoscale:create 12_04-bee`"),
        "{err}"
    );
    moto.gantry(dir, &["autoscale:create", GROUP]).ok();
    let run = moto.gantry(dir, &["autoscale:run", GROUP]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("group 12_04-bee has no AMI in us-east-1: build one with `gantry packer:run 12_04-bee`"),
        "{run:?}"
    );
    let err = moto.gantry(dir, &["autoscale:run", "12_04-api"]).bad_input();
    assert!(err.contains("group \"12_04-api\" is not autoscaled"), "{err}");
    assert!(moto.asgs().is_empty());

    let older = packer_run(&moto, &s, GROUP);
    let ami = packer_run(&moto, &s, GROUP);
    assert_ne!(older, ami);
    let run = moto.gantry(dir, &["autoscale:run", GROUP, "--server", "http://127.0.0.2:7400"]);
    assert!(run.stderr.contains("created autoscaling group 12_04-bee-v1 in us-east-1: 2 node(s) (2..2)"), "{run:?}");
    assert_eq!(run.ok(), "12_04-bee-v1\n");

    // The autoscaling group: sized from nodes.json, tagged, from version 1.
    let asg = moto.asgs().remove(0);
    assert_eq!(asg.auto_scaling_group_name(), Some("12_04-bee-v1"));
    let sizes = (asg.min_size(), asg.max_size(), asg.desired_capacity(), asg.health_check_grace_period());
    assert_eq!(sizes, (Some(2), Some(2), Some(2), Some(120)), "node_min, node_max, desired, timeout");
    assert!(asg.tags().iter().any(|t| t.key() == Some("group") && t.value() == Some(GROUP)));
    let template = asg.launch_template().unwrap();
    assert_eq!((template.launch_template_name(), template.version()), (Some("gantry-12_04-bee-v1"), Some("1")));

    // Its instances: the newest AMI, the group's type and security groups, tagged.
    let ids = instance_ids(&asg);
    assert_eq!(ids.len(), 2);
    let security_groups = moto.security_group_ids(&["external", "internal", "bee"]);
    for instance in moto.instances(&ids) {
        assert_eq!(instance.image_id(), Some(ami.as_str()));
        assert_eq!(instance.instance_type().map(|t| t.as_str()), Some("m1.large"));
        let tags = tags(instance.tags());
        assert!(
            tags.contains(&("group".into(), GROUP.into())) && tags.contains(&("Name".into(), GROUP.into())),
            "{tags:?}"
        );
        let mut groups: Vec<&str> = instance.security_groups().iter().filter_map(|g| g.group_id()).collect();
        groups.sort();
        let mut expected: Vec<&str> = security_groups.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(groups, expected);
    }

    // The user data writes the dna autoscale:create wrote and starts the agent.
    let versions =
        block_on(moto.ec2().describe_launch_template_versions().launch_template_name("gantry-12_04-bee-v1").send())
            .unwrap();
    let data = versions.launch_template_versions()[0].launch_template_data().unwrap();
    let user_data = String::from_utf8(aws_smithy_types::base64::decode(data.user_data().unwrap()).unwrap()).unwrap();
    assert!(user_data.contains(&s.read("dna/asg/12_04-bee.json")), "{user_data}");
    assert!(user_data.contains("agent \\\n  --server 'http://127.0.0.2:7400' --group 12_04-bee "), "{user_data}");

    // A second run refuses: the group exists.
    let again = moto.gantry(dir, &["autoscale:run", GROUP]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.stderr.contains("group 12_04-bee already has autoscaling group 12_04-bee-v1: replace it with `gantry autoscale:update 12_04-bee`"),
        "{again:?}"
    );
    assert_eq!(moto.asg_names(), ["12_04-bee-v1"]);

    // What exists, for people and for scripts.
    let status: serde_json::Value =
        serde_json::from_str(&moto.gantry(dir, &["autoscale:status", "--json"]).ok()).unwrap();
    assert_eq!(status.as_array().unwrap().len(), 1, "{status}");
    assert_eq!((&status[0]["name"], &status[0]["in_service"]), (&"12_04-bee-v1".into(), &2.into()), "{status}");
    assert_eq!(status[0]["launch_template"], "gantry-12_04-bee-v1:1");
    let table = moto.gantry(dir, &["autoscale:status"]).ok();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["12_04-bee", "12_04-bee-v1", "active", "2..2", "2", "2", "gantry-12_04-bee-v1:1"], "{table}");
    let listed: serde_json::Value =
        serde_json::from_str(&moto.gantry(dir, &["instance:list", GROUP, "--json"]).ok()).unwrap();
    let listed: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["autoscaling_group"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, ids.iter().map(|id| (id.as_str(), "12_04-bee-v1")).collect::<Vec<_>>());
    assert_eq!(moto.gantry(dir, &["instance:list", "12_04-www"]).ok(), "no instances\n");
}

#[test]
fn autoscale_update_replaces_the_group_then_deletes_the_old_one() {
    let moto = Moto::start();
    let (s, first_ami) = ready_to_launch(&moto);
    let dir = s.dir.path();
    let run = moto.gantry(dir, &["autoscale:update", GROUP]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(
        "group 12_04-bee has no autoscaling group to update: create one with `gantry autoscale:run 12_04-bee`"
    ));
    moto.gantry(dir, &["autoscale:run", GROUP]).ok();
    let old_ids = instance_ids(&moto.asgs()[0]);
    for instance in moto.instances(&old_ids) {
        assert_eq!(instance.image_id(), Some(first_ami.as_str()));
    }

    // A new AMI and a bigger instance type.
    let ami = packer_run(&moto, &s, GROUP);
    s.edit(
        "nodes.json",
        "\"instance_type\": \"m1.large\",\n    \"security_groups\": [\"bee\"]",
        "\"instance_type\": \"m3.large\",\n    \"security_groups\": [\"bee\"]",
    );
    let started = Instant::now();
    let run =
        moto.gantry(dir, &["autoscale:update", GROUP, "--poll", "200ms", "--settle", "2s", "--wait", "60s", "--json"]);
    let took = started.elapsed();
    for step in [
        "created autoscaling group 12_04-bee-v2 (2 node(s) of m3.large",
        "12_04-bee-v2: 2/2 in service",
        "all nodes of 12_04-bee-v2 are in service; both groups serve for 2s so other nodes can update",
        "deleted the old autoscaling group 12_04-bee-v1",
    ] {
        assert!(run.stderr.contains(step), "no {step:?} in:\n{}", run.stderr);
    }
    let report: serde_json::Value = serde_json::from_str(&run.ok()).unwrap();
    assert_eq!(report["autoscaling_group"], "12_04-bee-v2", "{report}");
    assert_eq!(report["deleted"], serde_json::json!(["12_04-bee-v1"]), "{report}");
    assert_eq!(report["image_id"], ami.as_str());
    assert!(took >= Duration::from_secs(2), "the settle time is waited: {took:?}");

    // Only the new group is left, running the new AMI and type; the old nodes are gone.
    let new = moto.asgs().remove(0);
    assert_eq!(moto.asg_names(), ["12_04-bee-v2"]);
    let new_ids = instance_ids(&new);
    assert_eq!(new_ids.len(), 2);
    assert_serving(&moto, "12_04-bee-v2", &new_ids);
    for instance in moto.instances(&new_ids) {
        assert_eq!(instance.image_id(), Some(ami.as_str()));
        assert_eq!(instance.instance_type().map(|t| t.as_str()), Some("m3.large"));
        assert!(tags(instance.tags()).contains(&("group".into(), GROUP.into())));
    }
    for instance in moto.instances(&old_ids) {
        assert_eq!(instance.state().and_then(|s| s.name()).map(|n| n.as_str()), Some("terminated"));
    }
    assert_eq!(
        templates(&moto),
        [("gantry-12_04-bee-v2".to_string(), 1)],
        "the old generation's launch template went with it"
    );
}

#[test]
fn autoscale_update_failures_leave_the_old_group_serving() {
    let moto = Moto::start();
    let (s, _) = ready_to_launch(&moto);
    let dir = s.dir.path();
    moto.gantry(dir, &["autoscale:run", GROUP]).ok();
    let serving = instance_ids(&moto.asgs()[0]);

    // An AMI that does not exist: refused before anything is created.
    let run = moto.gantry(dir, &["autoscale:update", GROUP, "--ami", "ami-0123456789abcdef0"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("AMI ami-0123456789abcdef0 not found in us-east-1"), "{run:?}");
    assert_serving(&moto, "12_04-bee-v1", &serving);
    let first = templates(&moto);
    assert_eq!(first, [("gantry-12_04-bee-v1".to_string(), 1)]);

    // New nodes that never pass their health checks: the new group is
    // deleted once --wait is over. Moto's instances are healthy at once,
    // so the test marks them unhealthy, as EC2's checks would, within the
    // first --poll.
    let child = moto
        .command(dir, &["autoscale:update", GROUP, "--poll", "3s", "--wait", "5s", "--settle", "0s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let autoscaling = moto.autoscaling();
    let new_group = eventually("the new autoscaling group has its instances", Duration::from_secs(20), || {
        moto.asgs()
            .into_iter()
            .find(|g| g.auto_scaling_group_name() != Some("12_04-bee-v1") && g.instances().len() == 2)
    });
    for id in instance_ids(&new_group) {
        block_on(autoscaling.set_instance_health().instance_id(id).health_status("Unhealthy").send()).unwrap();
    }
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 1, "{run:?}");
    let new_name = new_group.auto_scaling_group_name().unwrap();
    for said in [
        format!(
            "autoscale:update of 12_04-bee failed: not every node was in service after 5s: {new_name}: 0/2 in service"
        ),
        "InService/Unhealthy".to_string(),
        format!("deleted the new autoscaling group {new_name}; 12_04-bee-v1 keeps serving"),
    ] {
        assert!(run.stderr.contains(&said), "no {said:?} in:\n{}", run.stderr);
    }
    assert_serving(&moto, "12_04-bee-v1", &serving);
    assert_eq!(templates(&moto), first, "the new generation's launch template is gone too");

    // AWS's instance refresh, which moto lacks: a clear refusal, nothing changed.
    let started = Instant::now();
    let run = moto.gantry(dir, &["autoscale:update", GROUP, "--strategy", "instance-refresh"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("instance refresh is not available at this endpoint: use --strategy replace (the default); nothing was changed"),
        "{run:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "it does not hang: {:?}", started.elapsed());
    assert_eq!(templates(&moto), first);
    assert_serving(&moto, "12_04-bee-v1", &serving);
}
