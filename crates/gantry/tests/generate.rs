//! `role:create`, `roles:update`, `packer:create`, `autoscale:create` from the command line.

use expect_test::{expect, expect_file};

use super::{EXAMPLE, Scratch, run_in};

#[test]
fn role_create_writes_the_seed_role() {
    let s = Scratch::example();
    let out = s.gantry(&["role:create", "12_04-bee"]).ok();
    expect!["written   roles/12_04-bee.json\n"].assert_eq(&out);
    assert_eq!(
        s.read("roles/12_04-bee.json"),
        std::fs::read_to_string(format!("{EXAMPLE}/roles/12_04-bee.json")).unwrap()
    );
    // Only that file.
    assert!(!s.path("roles/12_04-www.json").exists());
}

#[test]
fn every_generated_file_matches_the_committed_example() {
    let s = Scratch::example();
    s.gantry(&["role:create"]).ok();
    s.gantry(&["packer:create"]).ok();
    s.gantry(&["autoscale:create"]).ok();
    for rel in [
        "roles/12_04-api.json",
        "roles/12_04-bee.json",
        "roles/12_04-www.json",
        "packer/12_04-api.json",
        "packer/12_04-bee.json",
        "packer/12_04-www.json",
        "dna/asg/12_04-bee.json",
    ] {
        assert_eq!(s.read(rel), std::fs::read_to_string(format!("{EXAMPLE}/{rel}")).unwrap(), "{rel}");
    }
    // autoscale:create with no group only covers groups that autoscale.
    assert!(!s.path("dna/asg/12_04-www.json").exists());
}

#[test]
fn roles_update_rewrites_existing_roles_and_says_when_nothing_changed() {
    let s = Scratch::example();
    expect![[r#"
        no roles to update: roles/ has no role of a group in nodes.json (create one with `gantry role:create GROUP`)
    "#]]
    .assert_eq(&s.gantry(&["roles:update"]).ok());
    s.gantry(&["role:create", "12_04-bee"]).ok();
    s.gantry(&["role:create", "12_04-www"]).ok();
    expect![[r#"
        unchanged roles/12_04-bee.json
        unchanged roles/12_04-www.json
        nothing written: 2 file(s) already up to date
    "#]]
    .assert_eq(&s.gantry(&["roles:update"]).ok());

    // nodes.json gains a capability for every group: both roles change.
    s.edit("nodes.json", "\"recipe[sudo]\"", "\"recipe[sudo]\", \"recipe[fail2ban]\"");
    expect![[r#"
        written   roles/12_04-bee.json
        written   roles/12_04-www.json
    "#]]
    .assert_eq(&s.gantry(&["roles:update"]).ok());
    assert!(s.read("roles/12_04-bee.json").contains("\"recipe[fail2ban::default]\"\n"));
    // Roles that did not exist are not created by an update of all.
    assert!(!s.path("roles/12_04-api.json").exists());
}

#[test]
fn autoscale_create_writes_dna_and_its_role() {
    let s = Scratch::example();
    let out = s.gantry(&["autoscale:create", "12_04-bee", "--json"]).ok();
    expect![[r#"
        {
          "files": [
            {
              "path": "roles/12_04-bee.json",
              "status": "written"
            },
            {
              "path": "dna/asg/12_04-bee.json",
              "status": "written"
            }
          ]
        }
    "#]]
    .assert_eq(&out);
    expect![[r#"
        {
          "id": "12_04-bee",
          "run_list": [
            "role[role-12_04-bee]"
          ]
        }
    "#]]
    .assert_eq(&s.read("dna/asg/12_04-bee.json"));
}

#[test]
fn packer_create_and_repo_flag_from_another_directory() {
    let s = Scratch::example();
    let elsewhere = tempfile::tempdir().unwrap();
    let repo = s.dir.path().to_str().unwrap();
    let out = run_in(elsewhere.path(), &["packer:create", "12_04-www", "--repo", repo]).ok();
    assert_eq!(out, format!("written   {repo}/packer/12_04-www.json\n"));
    assert!(s.read("packer/12_04-www.json").contains("\"ami_name\": \"12_04-www {{timestamp}}\""));
}

#[test]
fn repository_is_found_from_a_subdirectory() {
    let s = Scratch::example();
    let out = run_in(&s.path("data_bags/service"), &["role:create", "12_04-api"]).ok();
    assert!(out.ends_with("roles/12_04-api.json\n"), "{out}");
    assert!(s.path("roles/12_04-api.json").is_file());
}

#[test]
fn unknown_group_suggests_the_nearest_and_writes_nothing() {
    let s = Scratch::example();
    let before = s.snapshot();
    let err = s.gantry(&["role:create", "12_04-be"]).bad_input();
    expect_file!["golden/unknown_group.txt"].assert_eq(&err);
    let err = s.gantry(&["packer:create", "__base__"]).bad_input();
    expect_file!["golden/base_is_not_a_group.txt"].assert_eq(&err);
    assert_eq!(before, s.snapshot());
}

#[test]
fn seed_json_mistakes_are_exit_code_2_and_write_nothing() {
    let s = Scratch::example();
    s.edit(
        "nodes.json",
        "\"12_04-bee-ec2 instance, responsible for worker processes\"",
        "'12_04-bee-ec2 instance, responsible for worker processes'",
    );
    s.edit("data_bags/service/app-www.json", "\"ENV\": \"production\",", "\"ENV\": \"production\"");
    let before = s.snapshot();
    let err = s.gantry(&["role:create", "12_04-bee"]).bad_input();
    expect_file!["golden/seed_json_mistakes.txt"].assert_eq(&err);
    assert_eq!(before, s.snapshot());
}

#[test]
fn spec_errors_write_nothing_for_any_group() {
    let s = Scratch::example();
    // One bad run-list item in __base__ breaks every group: nothing is written.
    s.edit("nodes.json", "\"recipe[seatgeek::base-server]\"", "\"role[seatgeek::server]\"");
    let before = s.snapshot();
    let err = s.gantry(&["role:create"]).bad_input();
    expect_file!["golden/invalid_run_list_item.txt"].assert_eq(&err);
    assert_eq!(before, s.snapshot());
}

#[test]
fn packer_create_without_an_ami_names_the_field_and_writes_nothing() {
    let s = Scratch::example();
    s.edit("nodes.json", "\"source_ami\": \"ami-1ebb2077\",", "");
    let before = s.snapshot();
    let err = s.gantry(&["packer:create"]).bad_input();
    expect_file!["golden/packer_missing_ami.txt"].assert_eq(&err);
    assert_eq!(before, s.snapshot());
}

#[test]
fn usage_errors_are_exit_code_2() {
    let s = Scratch::example();
    let run = s.gantry(&["role:craete"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("unrecognized subcommand 'role:craete'"), "{}", run.stderr);
    assert!(run.stderr.contains("role:create"), "clap suggests the nearest: {}", run.stderr);
}

#[test]
fn missing_repository_is_explained() {
    let empty = tempfile::tempdir().unwrap();
    let err = run_in(empty.path(), &["nodes:list"]).bad_input();
    expect![[r#"
        error: no nodes.json in this directory or its parents
         = help: run gantry inside a repository (or pass --repo DIR) that has a nodes.json of node groups; see examples/seatgeek
    "#]]
    .assert_eq(&err);
}
