//! Scheduled services (`count`, `constraints`, `spread`, `strategy`,
//! `reschedule`): the model they load into, and a golden diagnostic for
//! each kind of mistake (refresh with `UPDATE_EXPECT=1 cargo test -p
//! gantry-spec`).

use std::collections::BTreeMap;

use expect_test::{Expect, expect};
use gantry_spec::{AttributeTest, Constraint, RepoFiles, Reschedule, Scheduling, Spread, Strategy};

use super::{example_files, load_example};

/// The example with `worker.json` added: a scheduled service whose
/// definition is `fields` after its id and command.
fn with_worker(fields: &str) -> RepoFiles {
    let mut files = example_files();
    let text = format!("{{\n  \"id\": \"worker\",\n  \"command\": \"exec bin/worker\",\n{fields}\n}}\n");
    files.services.push(("worker.json".to_string(), text));
    files
}

/// A worker with resources, so only `fields` can be wrong.
fn worker(fields: &str) -> RepoFiles {
    with_worker(&format!("  \"resources\": {{\"cpu\": 0.5, \"memory_mb\": 256}},\n{fields}"))
}

fn check(files: RepoFiles, expect: Expect) {
    match gantry_spec::load(&files) {
        Ok(_) => panic!("expected diagnostics, the repository loaded"),
        Err(e) => expect.assert_eq(&e.render()),
    }
}

/// The example's run-list services stay static; its `worker` (no run
/// list names it) is scheduled.
#[test]
fn run_list_services_are_not_scheduled() {
    let repo = load_example();
    let scheduled: Vec<&str> =
        repo.services.values().filter(|s| s.scheduling.is_some()).map(|s| s.id.as_str()).collect();
    assert_eq!(scheduled, ["worker"]);
    assert_eq!(repo.services["worker"].scheduling.as_ref().map(|s| s.count), Some(3));
}

#[test]
fn a_scheduled_service_loads_with_nomad_like_defaults() {
    let repo = gantry_spec::load(&worker("  \"count\": 3")).unwrap_or_else(|e| panic!("{}", e.render()));
    let worker = &repo.services["worker"];
    assert_eq!(
        worker.scheduling,
        Some(Scheduling {
            count: 3,
            constraints: vec![],
            spread: vec![],
            strategy: Strategy::Binpack,
            reschedule: Reschedule { attempts: None, interval_s: 3600, delay_s: 30, max_delay_s: 3600 },
        })
    );
    // No fixed PORT: each allocation gets one.
    assert_eq!(worker.port(), None);
}

#[test]
fn every_scheduling_field_loads() {
    let repo = gantry_spec::load(&worker(
        r#"  "count": 12,
  "constraints": [
    {"attribute": "region", "operator": "=", "value": "us-east-1"},
    {"attribute": "group", "operator": "!=", "value": "12_04-www"},
    {"attribute": "label.rack", "operator": "in", "value": ["r1", "r2", "r3"]},
    {"attribute": "fact.os", "operator": "regex", "value": "^ubuntu-2[24]"},
    {"operator": "distinct_hosts"}
  ],
  "spread": {"attribute": "label.rack", "targets": {"r1": 50, "r2": 25}},
  "strategy": "spread",
  "reschedule": {"attempts": 3, "interval_s": 600, "delay_s": 5}"#,
    ))
    .unwrap_or_else(|e| panic!("{}", e.render()));
    let scheduling = repo.services["worker"].scheduling.clone().expect("scheduled");
    let attribute = |a: &str, test| Constraint::Attribute { attribute: a.to_string(), test };
    assert_eq!(
        scheduling.constraints,
        [
            attribute("region", AttributeTest::Equals("us-east-1".into())),
            attribute("group", AttributeTest::NotEquals("12_04-www".into())),
            attribute("label.rack", AttributeTest::In(vec!["r1".into(), "r2".into(), "r3".into()])),
            attribute("fact.os", AttributeTest::Regex("^ubuntu-2[24]".into())),
            Constraint::DistinctHosts,
        ]
    );
    assert_eq!(
        scheduling.spread,
        [Spread {
            attribute: "label.rack".into(),
            targets: BTreeMap::from([("r1".to_string(), 50), ("r2".to_string(), 25)])
        }]
    );
    assert_eq!(scheduling.strategy, Strategy::Spread);
    assert_eq!(scheduling.reschedule, Reschedule { attempts: Some(3), interval_s: 600, delay_s: 5, max_delay_s: 3600 });
    // How explanations name the constraints.
    let shown: Vec<String> = scheduling.constraints.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        ["region=us-east-1", "group!=12_04-www", "label.rack in r1,r2,r3", "fact.os~/^ubuntu-2[24]/", "distinct_hosts"]
    );
    // Written back as the user wrote it.
    assert_eq!(
        serde_json::to_value(&scheduling.constraints[2]).unwrap(),
        serde_json::json!({"attribute": "label.rack", "operator": "in", "value": ["r1", "r2", "r3"]})
    );
    assert_eq!(
        serde_json::to_value(&scheduling.constraints[4]).unwrap(),
        serde_json::json!({"operator": "distinct_hosts"})
    );
}

#[test]
fn a_list_of_spreads_loads() {
    let repo = gantry_spec::load(&worker(
        r#"  "count": 4, "spread": [{"attribute": "region"}, {"attribute": "label.rack", "targets": {"r1": 100}}]"#,
    ))
    .unwrap_or_else(|e| panic!("{}", e.render()));
    let spread = &repo.services["worker"].scheduling.as_ref().unwrap().spread;
    assert_eq!(spread.iter().map(|s| s.attribute.as_str()).collect::<Vec<_>>(), ["region", "label.rack"]);
    assert!(spread[0].targets.is_empty());
}

#[test]
fn count_needs_resources() {
    check(
        with_worker("  \"count\": 3"),
        expect![[r#"
            error: a scheduled service needs "resources": the scheduler places it where they are free
             --> data_bags/service/worker.json:4:12
              |
            4 |   "count": 3
              |            ^
              = help: say what one allocation needs: "resources": {"cpu": 0.5, "memory_mb": 256}
        "#]],
    );
    check(
        with_worker("  \"count\": 3, \"resources\": {\"cpu\": 1}"),
        expect![[r#"
            error: a scheduled service needs "resources"."memory_mb": the scheduler places it where they are free
             --> data_bags/service/worker.json:4:28
              |
            4 |   "count": 3, "resources": {"cpu": 1}
              |                            ^^^^^^^^^^
              = help: say what one allocation needs: "resources": {"cpu": 0.5, "memory_mb": 256}
        "#]],
    );
}

#[test]
fn scheduling_keys_need_a_count() {
    check(
        worker("  \"strategy\": \"spread\", \"constraints\": []"),
        expect![[r#"
            error: "strategy" applies to scheduled services only, and this one has no "count"
             --> data_bags/service/worker.json:5:3
              |
            5 |   "strategy": "spread", "constraints": []
              |   ^^^^^^^^^^
              = help: add "count": N to have the scheduler place N allocations, or remove "strategy" (run lists place this service)
            error: "constraints" applies to scheduled services only, and this one has no "count"
             --> data_bags/service/worker.json:5:25
              |
            5 |   "strategy": "spread", "constraints": []
              |                         ^^^^^^^^^^^^^
              = help: add "count": N to have the scheduler place N allocations, or remove "constraints" (run lists place this service)
            error: found 2 problems
        "#]],
    );
}

#[test]
fn a_scheduled_service_is_not_in_a_run_list() {
    let mut files = example_files();
    let (_, api) = files.services.iter_mut().find(|(n, _)| n == "api.json").unwrap();
    *api = api.replacen(
        "\"federation\": \"seatgeek\"",
        "\"federation\": \"seatgeek\",\n  \"count\": 2,\n  \"resources\": {\"cpu\": 1, \"memory_mb\": 512}",
        1,
    );
    check(
        files,
        expect![[r#"
            error: service "api" has "count" (the scheduler places it), but the run list of group "12_04-api" names it too
              --> data_bags/service/api.json:28:12
               |
            28 |   "count": 2,
               |            ^
               = help: a service is placed by run lists or by the scheduler: remove "count", or remove recipe[seatgeek-service::api] from the group's run list
        "#]],
    );
}

#[test]
fn constraint_mistakes() {
    check(
        worker(
            r#"  "count": 3,
  "constraints": [
    {"attribute": "rack", "operator": "=", "value": "r1"},
    {"attribute": "regon", "operator": "==", "value": "us-east-1"},
    {"attribute": "region", "operator": "in", "value": "us-east-1"},
    {"attribute": "fact.os", "operator": "regex", "value": "ubuntu-(22"},
    {"attribute": "region", "operator": "="},
    {"attribute": "machine", "operator": "distinct_hosts"},
    {"value": "x"}
  ]"#,
        ),
        expect![[r#"
            error: unknown node attribute "rack"
             --> data_bags/service/worker.json:7:19
              |
            7 |     {"attribute": "rack", "operator": "=", "value": "r1"},
              |                   ^^^^^^
              = help: a machine label is "label.rack", a fact "fact.rack"
            error: unknown node attribute "regon"
             --> data_bags/service/worker.json:8:19
              |
            8 |     {"attribute": "regon", "operator": "==", "value": "us-east-1"},
              |                   ^^^^^^^
              = help: did you mean "region"?
            error: unknown constraint operator "=="
             --> data_bags/service/worker.json:8:40
              |
            8 |     {"attribute": "regon", "operator": "==", "value": "us-east-1"},
              |                                        ^^^^
              = help: did you mean "="? operators: "=", "!=", "in", "regex", "distinct_hosts"
            error: wrong type for "value": expected a list of strings, found a string
             --> data_bags/service/worker.json:9:56
              |
            9 |     {"attribute": "region", "operator": "in", "value": "us-east-1"},
              |                                                        ^^^^^^^^^^^
              = help: make it a list: "value": ["us-east-1"]
            error: invalid regular expression "ubuntu-(22": unclosed group
              --> data_bags/service/worker.json:10:60
               |
            10 |     {"attribute": "fact.os", "operator": "regex", "value": "ubuntu-(22"},
               |                                                            ^^^^^^^^^^^^
               = help: write a regular expression such as "^us-(east|west)-[0-9]+$" (Rust regex syntax)
            error: the "=" constraint has no "value"
              --> data_bags/service/worker.json:11:5
               |
            11 |     {"attribute": "region", "operator": "="},
               |     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
               = help: add "value": "us-east-1"
            error: "distinct_hosts" takes no "attribute"
              --> data_bags/service/worker.json:12:6
               |
            12 |     {"attribute": "machine", "operator": "distinct_hosts"},
               |      ^^^^^^^^^^^
               = help: write {"operator": "distinct_hosts"}: at most one allocation per node
            error: the constraint has no "operator"
              --> data_bags/service/worker.json:13:5
               |
            13 |     {"value": "x"}
               |     ^^^^^^^^^^^^^^
               = help: add "operator": one of "=", "!=", "in", "regex", "distinct_hosts"
            error: found 8 problems
        "#]],
    );
}

#[test]
fn spread_strategy_and_reschedule_mistakes() {
    check(
        worker(
            r#"  "count": 3,
  "spread": {"attribute": "label.rack", "targets": {"r1": 70, "r2": 50}},
  "strategy": "binpak",
  "reschedule": {"attempts": 2, "delay_s": 600, "max_delay_s": 60, "interval": 10}"#,
        ),
        expect![[r#"
            error: the spread's targets add up to 120%, more than 100%
             --> data_bags/service/worker.json:6:52
              |
            6 |   "spread": {"attribute": "label.rack", "targets": {"r1": 70, "r2": 50}},
              |                                                    ^^^^^^^^^^^^^^^^^^^^
              = help: make the percentages add up to 100 or less (values not named share what is left)
            error: unknown strategy "binpak"
             --> data_bags/service/worker.json:7:15
              |
            7 |   "strategy": "binpak",
              |               ^^^^^^^^
              = help: did you mean "binpack"?
            error: "delay_s" (600) is longer than "max_delay_s" (60)
             --> data_bags/service/worker.json:8:17
              |
            8 |   "reschedule": {"attempts": 2, "delay_s": 600, "max_delay_s": 60, "interval": 10}
              |                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
              = help: the delay doubles up to max_delay_s: make delay_s <= max_delay_s
            error: unknown key "interval" in "reschedule"
             --> data_bags/service/worker.json:8:68
              |
            8 |   "reschedule": {"attempts": 2, "delay_s": 600, "max_delay_s": 60, "interval": 10}
              |                                                                    ^^^^^^^^^^
              = help: did you mean "interval_s"?
            error: found 4 problems
        "#]],
    );
    check(
        worker(r#"  "count": -1, "spread": "label.rack""#),
        expect![[r#"
        error: "count" must be a whole number from 0 to 100000, found -1
         --> data_bags/service/worker.json:5:12
          |
        5 |   "count": -1, "spread": "label.rack"
          |            ^^
          = help: write a number between 0 and 100000
        error: wrong type for "spread": expected an object or a list of them, found a string
         --> data_bags/service/worker.json:5:26
          |
        5 |   "count": -1, "spread": "label.rack"
          |                          ^^^^^^^^^^^^
          = help: write "spread": {"attribute": "label.rack"}, or with "targets": {"r1": 50, "r2": 50}
        error: found 2 problems
    "#]],
    );
}
