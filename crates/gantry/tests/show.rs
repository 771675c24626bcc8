//! `nodes:list`, `nodes:show`, `services:list`, `services:show`, `repo:check`
//! output, text and JSON, and the help.

use expect_test::expect_file;

use super::Scratch;

#[test]
fn nodes_list() {
    let s = Scratch::example();
    expect_file!["golden/nodes_list.txt"].assert_eq(&s.gantry(&["nodes:list"]).ok());
    let json: serde_json::Value = serde_json::from_str(&s.gantry(&["nodes:list", "--json"]).ok()).unwrap();
    let names: Vec<&str> = json.as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["12_04-api", "12_04-bee", "12_04-www"]);
}

#[test]
fn nodes_show() {
    let s = Scratch::example();
    expect_file!["golden/nodes_show.txt"].assert_eq(&s.gantry(&["nodes:show", "12_04-bee"]).ok());
    expect_file!["golden/nodes_show.json"].assert_eq(&s.gantry(&["nodes:show", "12_04-bee", "--json"]).ok());
}

#[test]
fn services_list_and_show() {
    let s = Scratch::example();
    expect_file!["golden/services_list.txt"].assert_eq(&s.gantry(&["services:list"]).ok());
    expect_file!["golden/services_show.txt"].assert_eq(&s.gantry(&["services:show", "app-www"]).ok());
    expect_file!["golden/services_show.json"].assert_eq(&s.gantry(&["services:show", "api", "--json"]).ok());
}

#[test]
fn unknown_service_suggests_the_nearest() {
    let s = Scratch::example();
    expect_file!["golden/unknown_service.txt"].assert_eq(&s.gantry(&["services:show", "app-ww"]).bad_input());
}

#[test]
fn repo_check() {
    let s = Scratch::example();
    assert_eq!(s.gantry(&["repo:check"]).ok(), "ok: 3 node group(s), 2 service(s), 2 datastore(s)\n");
    s.edit("data_bags/service/api.json", "\"requires\"", "\"requries\"");
    let err = s.gantry(&["repo:check"]).bad_input();
    assert!(err.contains("did you mean \"requires\"?"), "{err}");
}

#[test]
fn help_lists_every_command() {
    let s = Scratch::example();
    expect_file!["golden/help.txt"].assert_eq(&s.gantry(&["--help"]).ok());
}

/// `watch` reads KV prefixes, and store prefixes with --store.
#[test]
fn watch_help_says_which_prefix_it_reads() {
    // Without the variable, which clap would show as the value in effect.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["watch", "--help"])
        .env("COLUMNS", "100")
        .env_remove("GANTRY_SERVER")
        .output()
        .unwrap();
    expect_file!["golden/watch_help.txt"].assert_eq(&super::Run::from(out).ok());
}
