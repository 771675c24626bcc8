//! The real `packer validate` (Debian's packer 1.6.6) accepts every template Gantry writes.

use std::process::Command;

use super::{EXAMPLE, load, read_repo};

/// Runs `packer validate` on a template; fails with install instructions when packer is missing.
fn packer_validate(path: &std::path::Path) -> std::process::Output {
    Command::new("packer")
        .arg("validate")
        .arg(path)
        // Credentials come from the environment through {{env}}; validate
        // needs none, and must not pick up a developer's real ones.
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not run `packer` ({e}): install it with `apt-get install packer` \
                 (or run scripts/test, which installs every test dependency)"
            )
        })
}

#[test]
fn packer_validate_accepts_every_example_template() {
    let repo = load(&read_repo(EXAMPLE));
    let dir = tempfile::tempdir().unwrap();
    for g in repo.groups.values() {
        let out = gantry_generate::packer_file(g).unwrap();
        let path = dir.path().join(format!("{}.json", g.name));
        std::fs::write(&path, &out.bytes).unwrap();
        let result = packer_validate(&path);
        assert!(
            result.status.success(),
            "packer validate rejected {}:\n{}{}",
            out.path,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

#[test]
fn packer_validate_accepts_builder_options_and_communicator_none() {
    let files = read_repo(EXAMPLE);
    let nodes = files.nodes.as_deref().unwrap().replacen(
        "\"instance_type\": \"m3.xlarge\",",
        "\"instance_type\": \"m3.xlarge\", \"communicator\": \"none\", \"subnet_id\": \"subnet-1\", \
         \"associate_public_ip_address\": true, \"tags\": {\"team\": \"web\"}, \
         \"builder_options\": {\"ebs_optimized\": true, \"shutdown_behavior\": \"terminate\"},",
        1,
    );
    let repo = load(&gantry_spec::RepoFiles { nodes: Some(nodes), ..files.clone() });
    let out = gantry_generate::packer_file(&repo.groups["12_04-www"]).unwrap();
    let template: serde_json::Value = serde_json::from_slice(&out.bytes).unwrap();
    let builder = &template["builders"][0];
    assert_eq!(builder["communicator"], "none");
    assert!(builder.get("ssh_username").is_none(), "no ssh user without ssh");
    assert_eq!(builder["ebs_optimized"], true);
    assert_eq!(builder["tags"], serde_json::json!({"group": "12_04-www", "team": "web"}));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("www.json");
    std::fs::write(&path, &out.bytes).unwrap();
    let result = packer_validate(&path);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stdout));
}

#[test]
fn packer_validate_rejects_what_it_should() {
    // Guards the test above: validate really checks amazon-ebs options.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, r#"{"builders": [{"type": "amazon-ebs", "region": "us-east-1", "no_such_option": 1}]}"#)
        .unwrap();
    assert!(!packer_validate(&path).status.success());
}

#[test]
fn no_credentials_are_written_into_templates() {
    let repo = load(&read_repo(EXAMPLE));
    for g in repo.groups.values() {
        let text = String::from_utf8(gantry_generate::packer_file(g).unwrap().bytes).unwrap();
        let template: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(template["builders"][0]["access_key"], "{{user `aws_access_key`}}");
        assert_eq!(template["variables"]["aws_access_key"], "{{env `AWS_ACCESS_KEY_ID`}}");
        assert_eq!(template["variables"]["aws_secret_key"], "{{env `AWS_SECRET_ACCESS_KEY`}}");
    }
}
