//! Bad input, one case per kind: the rendered diagnostics are golden
//! (refresh with `UPDATE_EXPECT=1 cargo test -p gantry-spec`).

use expect_test::{Expect, expect};
use gantry_spec::RepoFiles;

use super::example_files;

/// Loads `files` and checks the rendered diagnostics.
fn check(files: RepoFiles, expect: Expect) {
    match gantry_spec::load(&files) {
        Ok(_) => panic!("expected diagnostics, the repository loaded"),
        Err(e) => expect.assert_eq(&e.render()),
    }
}

/// The example with nodes.json replaced.
fn with_nodes(nodes: &str) -> RepoFiles {
    RepoFiles { nodes: Some(nodes.to_string()), ..example_files() }
}

/// The example with one service file replaced or added.
fn with_service(name: &str, text: &str) -> RepoFiles {
    let mut files = example_files();
    files.services.retain(|(n, _)| n != name);
    files.services.push((name.to_string(), text.to_string()));
    files
}

/// The example with one find-and-replace applied to a service file.
fn edit_service(name: &str, from: &str, to: &str) -> RepoFiles {
    let mut files = example_files();
    let (_, text) = files.services.iter_mut().find(|(n, _)| n == name).expect("example service");
    assert!(text.contains(from), "{name} has no {from:?}");
    *text = text.replacen(from, to, 1);
    files
}

fn edit_nodes(from: &str, to: &str) -> RepoFiles {
    let nodes = example_files().nodes.unwrap();
    assert!(nodes.contains(from), "nodes.json has no {from:?}");
    with_nodes(&nodes.replacen(from, to, 1))
}

#[test]
fn seed_single_quoted_description() {
    // Seed 004's own nodes.json writes the bee description in single quotes.
    check(
        edit_nodes(
            "\"12_04-bee-ec2 instance, responsible for worker processes\"",
            "'12_04-bee-ec2 instance, responsible for worker processes'",
        ),
        expect![[r#"
            error: invalid JSON: single-quoted string
              --> nodes.json:24:20
               |
            24 |     "description": '12_04-bee-ec2 instance, responsible for worker processes',
               |                    ^
               = help: JSON strings use double quotes: replace '...' with "..."
        "#]],
    );
}

#[test]
fn seed_missing_comma() {
    // Seed 001's app-www.json misses the comma after "production".
    check(
        edit_service("app-www.json", "\"ENV\": \"production\",", "\"ENV\": \"production\""),
        expect![[r#"
            error: invalid JSON: missing comma
              --> data_bags/service/app-www.json:13:24
               |
            13 |     "ENV": "production"
               |                        ^
               = help: add a `,` after the previous item: JSON needs a comma between items
        "#]],
    );
}

#[test]
fn trailing_comma_and_comment() {
    check(
        edit_nodes("\"recipe[sudo]\"", "\"recipe[sudo]\","),
        expect![[r#"
        error: invalid JSON: trailing comma
          --> nodes.json:20:21
           |
        20 |       "recipe[sudo]",
           |                     ^
           = help: remove the `,` after the last item: JSON does not allow trailing commas
    "#]],
    );
    check(
        edit_nodes("\"autoscale\": false,", "\"autoscale\": false, // no ASG"),
        expect![[r#"
        error: invalid JSON: comment
         --> nodes.json:3:25
          |
        3 |     "autoscale": false, // no ASG
          |                         ^^^^^^^^^
          = help: JSON has no comments: remove it, or put the note in a "description" field
    "#]],
    );
}

#[test]
fn unknown_key_in_group_suggests_nearest() {
    check(
        edit_nodes("\"instance_type\": \"m3.xlarge\"", "\"instance_typ\": \"m3.xlarge\""),
        expect![[r#"
        error: unknown key "instance_typ" in group "12_04-www"
          --> nodes.json:51:5
           |
        51 |     "instance_typ": "m3.xlarge",
           |     ^^^^^^^^^^^^^^
           = help: did you mean "instance_type"?
    "#]],
    );
}

#[test]
fn unknown_key_in_service_suggests_nearest() {
    check(
        edit_service("api.json", "\"requires\"", "\"requries\""),
        expect![[r#"
            error: unknown key "requries" in service "api"
              --> data_bags/service/api.json:18:3
               |
            18 |   "requries": {
               |   ^^^^^^^^^^
               = help: did you mean "requires"?
        "#]],
    );
}

#[test]
fn wrong_types() {
    check(
        edit_nodes("\"instance_type\": \"m3.xlarge\"", "\"instance_type\": 5"),
        expect![[r#"
        error: wrong type for "instance_type": expected a string, found a number
          --> nodes.json:51:22
           |
        51 |     "instance_type": 5,
           |                      ^
           = help: put the value in double quotes: "instance_type": "5"
    "#]],
    );
    check(
        edit_nodes("\"security_groups\": [\"www\"]", "\"security_groups\": \"www\""),
        expect![[r#"
        error: wrong type for "security_groups": expected a list of strings, found a string
          --> nodes.json:52:24
           |
        52 |     "security_groups": "www",
           |                        ^^^^^
           = help: make it a list: "security_groups": ["www"]
    "#]],
    );
    check(
        edit_service("api.json", "\"local_port\": 1100", "\"local_port\": \"1100\""),
        expect![[r#"
            error: wrong type for "local_port": expected a number, found a string
              --> data_bags/service/api.json:26:17
               |
            26 |   "local_port": "1100",
               |                 ^^^^^^
               = help: remove the quotes: "local_port": 1100
        "#]],
    );
}

#[test]
fn invalid_group_name() {
    check(
        edit_nodes("\"12_04-www\": {", "\"12.04 www\": {"),
        expect![[r#"
        error: invalid group name "12.04 www"
          --> nodes.json:49:3
           |
        49 |   "12.04 www": {
           |   ^^^^^^^^^^^
           = help: group names become Chef role names (role-<group>) and file names: use letters, digits, `_` and `-`, up to 64 characters, not starting with `_` or `-`
    "#]],
    );
}

#[test]
fn run_list_item_chef_rejects() {
    // Seed 004's generated role shows role[seatgeek::server]: not a valid role name.
    check(
        edit_nodes("\"recipe[seatgeek::base-server]\"", "\"role[seatgeek::server]\""),
        expect![[r#"
        error: invalid run-list item "role[seatgeek::server]" in "run_list"
          --> nodes.json:14:7
           |
        14 |       "role[seatgeek::server]",
           |       ^^^^^^^^^^^^^^^^^^^^^^^^
           = help: invalid role name `seatgeek::server`: role names use letters, digits, `_` and `-` only (`::` separates a cookbook from a recipe: did you mean `recipe[...]`?)
    "#]],
    );
    check(
        edit_nodes("\"recipe[seatgeek::customer-web]\"", "\"recipe[seatgeek::customer-web@1]\""),
        expect![[r#"
        error: invalid run-list item "recipe[seatgeek::customer-web@1]" in "run_list"
          --> nodes.json:54:7
           |
        54 |       "recipe[seatgeek::customer-web@1]",
           |       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
           = help: invalid version `1`: Chef versions are `x.y` or `x.y.z` (digits)
    "#]],
    );
}

#[test]
fn service_id_must_match_file_name() {
    check(
        edit_service("api.json", "\"id\": \"api\"", "\"id\": \"apis\""),
        expect![[r#"
        error: service id "apis" does not match its file name "api.json"
         --> data_bags/service/api.json:2:9
          |
        2 |   "id": "apis",
          |         ^^^^^^
          = help: rename the file to "apis.json", or set "id": "api"
    "#]],
    );
}

#[test]
fn duplicate_service_ids() {
    let api = example_files().services.into_iter().find(|(n, _)| n == "api.json").unwrap().1;
    check(
        with_service("api-copy.json", &api),
        expect![[r#"
        error: duplicate service id "api": data_bags/service/api.json defines it too
         --> data_bags/service/api-copy.json:2:9
          |
        2 |   "id": "api",
          |         ^^^^^
          = help: each service has one file, named after its id: give this one its own id
        error: service id "api" does not match its file name "api-copy.json"
         --> data_bags/service/api-copy.json:2:9
          |
        2 |   "id": "api",
          |         ^^^^^
          = help: rename the file to "api.json", or set "id": "api-copy"
        error: found 2 problems
    "#]],
    );
}

#[test]
fn duplicate_keys() {
    check(
        edit_nodes("\"region\": \"us-east-1\",", "\"region\": \"us-east-1\", \"region\": \"eu-west-1\","),
        expect![[r#"
        error: duplicate key "region" in this object
         --> nodes.json:5:28
          |
        5 |     "region": "us-east-1", "region": "eu-west-1",
          |                            ^^^^^^^^
          = help: a key may appear once per object: remove one of the two
    "#]],
    );
}

#[test]
fn unknown_placeholders() {
    check(
        edit_service("app-www.json", "{READONLY_API_URL}", "{READONLY_API_URI}"),
        expect![[r#"
            error: service "app-www" requires {READONLY_API_URI} (for API_URL), but no service in federation "seatgeek" provides it and configuration/datastores.json does not define it
              --> data_bags/service/app-www.json:18:16
               |
            18 |     "API_URL": "{READONLY_API_URI}"
               |                ^^^^^^^^^^^^^^^^^^^^
               = help: did you mean {READONLY_API_URL}?
        "#]],
    );
    check(
        edit_service("app-www.json", "{PRIMARY_DATABASE_URL}", "{ANALYTICS_DB}"),
        expect![[r#"
            error: service "app-www" requires {ANALYTICS_DB} (for DATABASE_URL), but no service in federation "seatgeek" provides it and configuration/datastores.json does not define it
              --> data_bags/service/app-www.json:17:21
               |
            17 |     "DATABASE_URL": "{ANALYTICS_DB}",
               |                     ^^^^^^^^^^^^^^^^
               = help: add "ANALYTICS_DB" to configuration/datastores.json, or add a service in federation "seatgeek" that provides it
        "#]],
    );
    // Seed 001 writes {host}:{port} in one example and {HOST}:{PORT} in another.
    check(
        edit_service("app-www.json", "http://{HOST}:{PORT}", "http://{host}:{port}"),
        expect![[r#"
            error: unknown placeholder {host} in provides "WWW_URL"
              --> data_bags/service/app-www.json:21:16
               |
            21 |     "WWW_URL": "http://{host}:{port}/some-mount"
               |                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
               = help: did you mean {HOST}? placeholders are case-sensitive
            error: unknown placeholder {port} in provides "WWW_URL"
              --> data_bags/service/app-www.json:21:16
               |
            21 |     "WWW_URL": "http://{host}:{port}/some-mount"
               |                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
               = help: did you mean {PORT}? placeholders are case-sensitive
            error: found 2 problems
        "#]],
    );
}

#[test]
fn requirement_from_another_federation_is_unknown() {
    check(
        edit_service("api.json", "\"federation\": \"seatgeek\"", "\"federation\": \"pivotly\""),
        expect![[r#"
            error: service "app-www" requires {READONLY_API_URL} (for API_URL), but no service in federation "seatgeek" provides it and configuration/datastores.json does not define it
              --> data_bags/service/app-www.json:18:16
               |
            18 |     "API_URL": "{READONLY_API_URL}"
               |                ^^^^^^^^^^^^^^^^^^^^
               = help: add "READONLY_API_URL" to configuration/datastores.json, or add a service in federation "seatgeek" that provides it
            error: service "worker" requires {READONLY_API_URL} (for API_URL), but no service in federation "seatgeek" provides it and configuration/datastores.json does not define it
             --> data_bags/service/worker.json:9:16
              |
            9 |     "API_URL": "{READONLY_API_URL}"
              |                ^^^^^^^^^^^^^^^^^^^^
              = help: add "READONLY_API_URL" to configuration/datastores.json, or add a service in federation "seatgeek" that provides it
            error: found 2 problems
        "#]],
    );
}

#[test]
fn local_port_collision() {
    check(
        edit_service("api.json", "\"local_port\": 1100", "\"local_port\": 8080"),
        expect![[r#"
            error: local_port 8080 of "app-www" is also the local_port of "api" in federation "seatgeek"
              --> data_bags/service/app-www.json:23:17
               |
            23 |   "local_port": 8080,
               |                 ^^^^
               = help: local load balancers listen on local_port: give each service its own
        "#]],
    );
}

#[test]
fn autoscale_sizes() {
    check(
        edit_nodes("\"node_max\": 2", "\"node_max\": 1"),
        expect![[r#"
        error: "node_min" (2) is larger than "node_max" (1)
          --> nodes.json:25:18
           |
        25 |     "autoscale": {
           |                  ^
           = help: an autoscaling group needs node_min <= desired <= node_max
    "#]],
    );
}

#[test]
fn check_fields() {
    check(
        edit_service(
            "api.json",
            "\"local_port\": 1100",
            "\"local_port\": 1100, \"check\": {\"type\": \"htp\", \"interval\": \"1s\"}",
        ),
        expect![[r#"
            error: duplicate key "check" in this object
              --> data_bags/service/api.json:26:23
               |
            26 |   "local_port": 1100, "check": {"type": "htp", "interval": "1s"},
               |                       ^^^^^^^
               = help: a key may appear once per object: remove one of the two
        "#]],
    );
    check(
        edit_service(
            "api.json",
            "\"local_port\": 1100",
            "\"local_port\": 1100, \"check\": {\"interval\": \"1s\", \"timeout\": \"5s\"}",
        ),
        expect![[r#"
            error: duplicate key "check" in this object
              --> data_bags/service/api.json:26:23
               |
            26 |   "local_port": 1100, "check": {"interval": "1s", "timeout": "5s"},
               |                       ^^^^^^^
               = help: a key may appear once per object: remove one of the two
        "#]],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut files = edit_nodes("\"instance_type\": \"m3.xlarge\"", "\"instance_typ\": \"m3.xlarge\"");
    let (_, api) = files.services.iter_mut().find(|(n, _)| n == "api.json").unwrap();
    *api = api.replacen("\"federation\"", "\"federaton\"", 1).replacen("\"command\": true", "\"command\": false", 1);
    check(
        files,
        expect![[r#"
            error: unknown key "instance_typ" in group "12_04-www"
              --> nodes.json:51:5
               |
            51 |     "instance_typ": "m3.xlarge",
               |     ^^^^^^^^^^^^^^
               = help: did you mean "instance_type"?
            error: unknown key "federaton" in service "api"
              --> data_bags/service/api.json:27:3
               |
            27 |   "federaton": "seatgeek",
               |   ^^^^^^^^^^^
               = help: did you mean "federation"?
            error: found 2 problems
        "#]],
    );
}

#[test]
fn missing_nodes_json() {
    check(
        RepoFiles { nodes: None, ..example_files() },
        expect![[r#"
        error: no nodes.json in this directory or its parents
         = help: run gantry inside a repository (or pass --repo DIR) that has a nodes.json of node groups; see examples/seatgeek
    "#]],
    );
}

/// Issue 17's keys: a rollout that can never pass, an artifact outside the
/// repository, a zero `max_parallel`, an unknown update key, an empty hook.
#[test]
fn deploy_settings() {
    check(
        edit_service(
            "api.json",
            r#""update": {"max_parallel": 1, "min_healthy_time": "1s", "healthy_deadline": "30s"}"#,
            r#""update": {"max_parallel": 0, "min_healthy_time": "2m", "healthy_deadline": "1m", "canery": 1}, "deploy": {"pre": " "}"#,
        ),
        expect![[r#"
            error: "min_healthy_time" (2m) is not shorter than "healthy_deadline" (1m)
             --> data_bags/service/api.json:7:13
              |
            7 |   "update": {"max_parallel": 0, "min_healthy_time": "2m", "healthy_deadline": "1m", "canery": 1}, "deploy": {"pre": " "},
              |             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
              = help: a node must be able to pass: make min_healthy_time < healthy_deadline
            error: "max_parallel" must be at least 1
             --> data_bags/service/api.json:7:30
              |
            7 |   "update": {"max_parallel": 0, "min_healthy_time": "2m", "healthy_deadline": "1m", "canery": 1}, "deploy": {"pre": " "},
              |                              ^
              = help: write how many nodes switch at once: 1 (the default) is one at a time
            error: unknown key "canery" in "update"
             --> data_bags/service/api.json:7:85
              |
            7 |   "update": {"max_parallel": 0, "min_healthy_time": "2m", "healthy_deadline": "1m", "canery": 1}, "deploy": {"pre": " "},
              |                                                                                     ^^^^^^^^
              = help: did you mean "canary"?
            error: "deploy.pre" is empty
             --> data_bags/service/api.json:7:117
              |
            7 |   "update": {"max_parallel": 0, "min_healthy_time": "2m", "healthy_deadline": "1m", "canery": 1}, "deploy": {"pre": " "},
              |                                                                                                                     ^^^
              = help: write a shell command ("./bin/migrate"), or leave the hook out
            error: found 4 problems
        "#]],
    );
    check(
        edit_service("api.json", r#""artifact": {"path": "bin"}"#, r#""artifact": {"path": "../secrets"}"#),
        expect![[r#"
        error: "artifact.path" must name a path inside the repository, found "../secrets"
         --> data_bags/service/api.json:5:24
          |
        5 |   "artifact": {"path": "../secrets"},
          |                        ^^^^^^^^^^^^
          = help: write the directory or archive to deploy, relative to the repository: "dist/api"
    "#]],
    );
}
