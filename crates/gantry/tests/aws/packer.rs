//! `packer:run`, `packer:clean`, `packer:delete`.

use std::process::{Command, Stdio};

use aws_sdk_ec2::types::{Filter, Tag};

use super::{GROUP, MOTO_SOURCE_AMI, Moto, aws_command, example_for_moto, packer_run};
use crate::{Run, Scratch, block_on};

#[test]
fn packer_run_builds_tags_records_and_prints_the_ami() {
    let moto = Moto::start();
    let s = Scratch::example();
    // No template yet: bad input, with the command that writes it.
    let err = moto.gantry(s.dir.path(), &["packer:run", GROUP]).bad_input();
    assert!(
        err.contains("packer/12_04-bee.json does not exist") && err.contains("gantry packer:create 12_04-bee"),
        "{err}"
    );

    let s = example_for_moto(&moto);
    let git = |args: &[&str]| {
        let status = Command::new("git").arg("-C").arg(s.dir.path()).args(args).stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "x"]);
    let head = String::from_utf8(
        Command::new("git").arg("-C").arg(s.dir.path()).args(["rev-parse", "HEAD"]).output().unwrap().stdout,
    )
    .unwrap();

    let run = moto.gantry(s.dir.path(), &["packer:run", GROUP]);
    assert!(run.stderr.contains("Creating AMI"), "packer's steps are shown: {}", run.stderr);
    let id = run.ok();
    let id = id.trim();
    assert_eq!(
        moto.own_images(),
        vec![(
            id.to_string(),
            vec![("git_commit".to_string(), head.trim().to_string()), ("group".to_string(), GROUP.to_string())]
        )]
    );
    let record: serde_json::Value = serde_json::from_str(&s.read(".gantry/amis/12_04-bee.json")).unwrap();
    assert_eq!(record[0]["id"], id);
    assert_eq!(record[0]["region"], "us-east-1");
    assert!(s.read(".gantry/logs/packer-12_04-bee.log").contains("artifact,0,id,us-east-1:"));
}

#[test]
fn packer_clean_keeps_the_newest_amis() {
    let moto = Moto::start();
    let s = example_for_moto(&moto);
    let built: Vec<String> = (0..3).map(|_| packer_run(&moto, &s, GROUP)).collect();
    assert_eq!(moto.group_image_ids(GROUP).len(), 3);
    let doomed = block_on(moto.ec2().describe_images().image_ids(&built[0]).send()).unwrap();
    let doomed_snapshots: Vec<String> = doomed.images()[0]
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string))
        .collect();
    assert!(!doomed_snapshots.is_empty());

    let out = moto.gantry(s.dir.path(), &["packer:clean", GROUP, "-n", "2", "--dry-run"]).ok();
    assert!(out.starts_with(&format!("would deregister {} (12_04-bee ", built[0])), "{out}");
    assert_eq!(out.matches("would deregister").count(), 1, "{out}");
    assert_eq!(moto.group_image_ids(GROUP).len(), 3, "a dry run changes nothing");
    let plan = moto.gantry(s.dir.path(), &["packer:clean", GROUP, "-n", "2", "--dry-run", "--json"]).ok();
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["kept"], serde_json::json!([built[2], built[1]]), "{plan}");
    assert_eq!(plan["deregistered"][0]["id"], built[0].as_str(), "{plan}");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(recorded(&s), built, "a dry run leaves the record alone");

    let out = moto.gantry(s.dir.path(), &["packer:clean", GROUP, "-n", "2"]).ok();
    assert!(out.starts_with(&format!("deregistered {} ", built[0])), "{out}");
    assert_eq!(recorded(&s), built[1..], "the record lists what exists");
    let mut kept = built[1..].to_vec();
    kept.sort();
    assert_eq!(moto.group_image_ids(GROUP), kept);
    let snapshots: Vec<String> = block_on(moto.ec2().describe_snapshots().owner_ids("self").send())
        .unwrap()
        .snapshots()
        .iter()
        .filter_map(|snap| snap.snapshot_id().map(str::to_string))
        .collect();
    assert!(
        !snapshots.iter().any(|snap| doomed_snapshots.contains(snap)),
        "the deregistered AMI's snapshots are deleted"
    );

    let out = moto.gantry(s.dir.path(), &["packer:clean", GROUP, "-n", "2"]).ok();
    assert!(out.starts_with("nothing to clean: group 12_04-bee has 2 AMI(s)"), "{out}");
}

#[test]
fn packer_delete_removes_the_groups_amis_and_template_only() {
    let moto = Moto::start();
    let s = example_for_moto(&moto);
    let ec2 = moto.ec2();
    // Things that are not the group's: an instance, another group's AMI, an untagged AMI.
    let instance = block_on(ec2.run_instances().image_id(MOTO_SOURCE_AMI).min_count(1).max_count(1).send()).unwrap();
    let instance_id = instance.instances()[0].instance_id().unwrap().to_string();
    let other = block_on(ec2.create_image().instance_id(&instance_id).name("other").send()).unwrap();
    let other = other.image_id().unwrap().to_string();
    block_on(ec2.create_tags().resources(&other).tags(Tag::builder().key("group").value("12_04-api").build()).send())
        .unwrap();
    let untagged = block_on(ec2.create_image().instance_id(&instance_id).name("untagged").send()).unwrap();
    let untagged = untagged.image_id().unwrap().to_string();
    let built = packer_run(&moto, &s, GROUP);
    // The group's autoscaling group, running the AMI about to go.
    moto.gantry(s.dir.path(), &["autoscale:create", GROUP]).ok();
    assert_eq!(moto.gantry(s.dir.path(), &["autoscale:run", GROUP]).ok(), "12_04-bee-v1\n");

    let plan = moto.gantry(s.dir.path(), &["packer:delete", GROUP, "--dry-run", "--json"]).ok();
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["deregistered"][0]["id"], built.as_str(), "{plan}");
    assert_eq!(plan["template_removed"], "packer/12_04-bee.json", "{plan}");
    assert!(s.path("packer/12_04-bee.json").exists(), "a dry run removes nothing");

    let out = moto.gantry(s.dir.path(), &["packer:delete", GROUP]).ok();
    assert!(out.starts_with(&format!("deregistered {built} ")), "{out}");
    assert!(out.ends_with("removed packer/12_04-bee.json\n"), "{out}");
    assert!(!s.path("packer/12_04-bee.json").exists());
    assert!(s.path("packer/12_04-api.json").exists());
    let mut left: Vec<String> = moto.own_images().into_iter().map(|(id, _)| id).collect();
    left.sort();
    let mut expected = vec![other, untagged];
    expected.sort();
    assert_eq!(left, expected);
    let running = block_on(
        ec2.describe_instances()
            .filters(Filter::builder().name("instance-state-name").values("running").build())
            .send(),
    )
    .unwrap();
    let mut running: Vec<_> =
        running.reservations().iter().flat_map(|r| r.instances()).filter_map(|i| i.instance_id()).collect();
    running.sort();
    let asg = &moto.asgs()[0];
    assert_eq!(asg.auto_scaling_group_name(), Some("12_04-bee-v1"), "the autoscaling group is left alone");
    let mut expected: Vec<&str> = asg.instances().iter().filter_map(|i| i.instance_id()).collect();
    assert_eq!(expected.len(), 2);
    expected.push(&instance_id);
    expected.sort();
    assert_eq!(running, expected, "no instance was touched");
    assert_eq!(recorded(&s), Vec::<String>::new());
}

/// The AMI ids `.gantry/amis/12_04-bee.json` records, oldest first.
fn recorded(s: &Scratch) -> Vec<String> {
    let record: Vec<serde_json::Value> = serde_json::from_str(&s.read(".gantry/amis/12_04-bee.json")).unwrap();
    record.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn aws_commands_say_when_credentials_are_missing() {
    let s = Scratch::example();
    let out = aws_command(s.dir.path(), &["packer:clean", GROUP, "-n", "1"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.starts_with("error: no AWS credentials: set AWS_ACCESS_KEY_ID"), "{}", run.stderr);
}
