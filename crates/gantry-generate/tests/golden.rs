//! Every file generated for the seed example equals the committed one
//! (refresh with `UPDATE_EXPECT=1 cargo test -p gantry-generate`), and
//! generation is byte-stable whatever the key order of the input.

use expect_test::expect_file;
use gantry_generate::{Output, asg_dna_file, packer_file, role_file};

use super::{EXAMPLE, load, read_repo};

fn all_outputs(repo: &gantry_spec::Repo) -> Vec<Output> {
    let mut out = Vec::new();
    for g in repo.groups.values() {
        out.push(role_file(g));
        out.push(packer_file(g).expect("example groups have region, ami and type"));
        if g.autoscale.is_some() {
            out.push(asg_dna_file(g));
        }
    }
    out
}

#[test]
fn example_outputs_match_committed_files() {
    let repo = load(&read_repo(EXAMPLE));
    let outputs = all_outputs(&repo);
    let paths: Vec<&str> = outputs.iter().map(|o| o.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "roles/12_04-api.json",
            "packer/12_04-api.json",
            "roles/12_04-bee.json",
            "packer/12_04-bee.json",
            "dna/asg/12_04-bee.json",
            "roles/12_04-www.json",
            "packer/12_04-www.json",
        ]
    );
    for out in outputs {
        let text = String::from_utf8(out.bytes).expect("utf-8");
        expect_file![format!("{EXAMPLE}/{}", out.path)].assert_eq(&text);
    }
}

#[test]
fn seed_role_for_12_04_bee() {
    // The role seed 004 shows for `role:create 12_04-bee`, with the seed's
    // `role[seatgeek::server]` read as the recipe its input names.
    let repo = load(&read_repo(EXAMPLE));
    let role = gantry_generate::role(&repo.groups["12_04-bee"]);
    let value = serde_json::to_value(&role).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "name": "role-12_04-bee",
            "chef_type": "role",
            "json_class": "Chef::Role",
            "description": "12_04-bee-ec2 instance, responsible for worker processes",
            "override_attributes": {},
            "default_attributes": {"environment": "production", "key": "value", "other_key": "value"},
            "env_run_lists": {},
            "run_list": [
                "recipe[seatgeek::base-server]",
                "recipe[seatgeek::collect-services]",
                "recipe[seatgeek::decommission-services]",
                "recipe[seatgeek-service::api-workers]",
                "recipe[seatgeek-service::cronq-workers]",
                "recipe[seatgeek-service::djjob]",
                "recipe[seatgeek::notify-services]",
                "recipe[sudo::default]"
            ]
        })
    );
}

#[test]
fn output_does_not_depend_on_input_key_order() {
    let files = read_repo(EXAMPLE);
    let before = all_outputs(&load(&files));
    // Reverse the order of every object's keys in nodes.json.
    fn reverse(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Object(map) => {
                let members: Vec<String> = map
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap(), reverse(v)))
                    .collect();
                format!("{{{}}}", members.join(", "))
            }
            serde_json::Value::Array(items) => {
                format!("[{}]", items.iter().map(reverse).collect::<Vec<_>>().join(", "))
            }
            other => other.to_string(),
        }
    }
    let nodes: serde_json::Value = serde_json::from_str(files.nodes.as_deref().unwrap()).unwrap();
    let shuffled = gantry_spec::RepoFiles { nodes: Some(reverse(&nodes)), ..files.clone() };
    let after = all_outputs(&load(&shuffled));
    assert_eq!(before, after);
    // And the same input twice gives the same bytes.
    assert_eq!(before, all_outputs(&load(&files)));
}

#[test]
fn instance_dna() {
    let repo = load(&read_repo(EXAMPLE));
    let out = gantry_generate::instance_dna_file(&repo.groups["12_04-www"], "i-0abc");
    assert_eq!(out.path, "dna/instance/12_04-www-i-0abc.json");
    assert_eq!(
        String::from_utf8(out.bytes).unwrap(),
        "{\n  \"id\": \"12_04-www-i-0abc\",\n  \"run_list\": [\n    \"role[role-12_04-www]\"\n  ]\n}\n"
    );
}

#[test]
fn missing_packer_fields_are_diagnostics() {
    let files = read_repo(EXAMPLE);
    let nodes = files.nodes.as_deref().unwrap().replacen("\"source_ami\": \"ami-1ebb2077\",", "", 1);
    let repo = load(&gantry_spec::RepoFiles { nodes: Some(nodes), ..files.clone() });
    let err = packer_file(&repo.groups["12_04-bee"]).unwrap_err();
    let rendered = repo.sources.render(&gantry_spec::Diagnostics(err));
    expect_test::expect![[r#"
        error: group "12_04-bee" has no "source_ami", which a packer template needs
          --> nodes.json:23:3
           |
        23 |   "12_04-bee": {
           |   ^^^^^^^^^^^
           = help: add "source_ami" to the group, or to "__base__" for every group
    "#]]
    .assert_eq(&rendered);
}
