//! The seed example as a model: merge results, run lists, services per group, templates.

use std::collections::BTreeMap;

use gantry_spec::{Command, RunListItem};

use super::load_example;

#[test]
fn seed_groups_merge_over_base() {
    let repo = load_example();
    assert_eq!(repo.groups.keys().collect::<Vec<_>>(), ["12_04-api", "12_04-bee", "12_04-www"]);
    let bee = &repo.groups["12_04-bee"];
    assert_eq!(bee.instance_type.as_deref(), Some("m1.large"));
    assert_eq!(bee.source_ami.as_deref(), Some("ami-1ebb2077"));
    // Lists append, base first.
    assert_eq!(bee.security_groups, ["external", "internal", "bee"]);
    // Objects merge one level, child keys win.
    assert_eq!(
        serde_json::to_value(&bee.default_attributes).unwrap(),
        serde_json::json!({"environment": "production", "key": "value", "other_key": "value"})
    );
    let autoscale = bee.autoscale.expect("bee autoscales");
    assert_eq!((autoscale.timeout, autoscale.node_min, autoscale.node_max), (120, 2, 2));
    // `"autoscale": false` inherited from __base__.
    assert!(repo.groups["12_04-www"].autoscale.is_none());
    assert_eq!(repo.groups["12_04-www"].instance_type.as_deref(), Some("m3.xlarge"));
}

#[test]
fn role_run_list_is_base_then_group_then_post() {
    let repo = load_example();
    let items: Vec<String> = repo.groups["12_04-bee"].role_run_list().iter().map(ToString::to_string).collect();
    assert_eq!(
        items,
        [
            "recipe[seatgeek::base-server]",
            "recipe[seatgeek::collect-services]",
            "recipe[seatgeek::decommission-services]",
            "recipe[seatgeek-service::api-workers]",
            "recipe[seatgeek-service::cronq-workers]",
            "recipe[seatgeek-service::djjob]",
            "recipe[seatgeek::notify-services]",
            "recipe[sudo::default]",
        ]
    );
}

#[test]
fn services_are_collected_from_run_lists() {
    let repo = load_example();
    let ids = |g: &str| repo.services_of(&repo.groups[g]).iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids("12_04-api"), ["api"]);
    assert_eq!(ids("12_04-www"), ["app-www"]);
    assert!(ids("12_04-bee").is_empty());
}

#[test]
fn seed_services_parse() {
    let repo = load_example();
    let www = &repo.services["app-www"];
    assert_eq!(www.command, Command::Shell("exec python3 bin/www.py".into()));
    let check = www.check.as_ref().expect("www is checked");
    assert_eq!((check.interval, check.rise, check.restart_after), (std::time::Duration::from_millis(500), 2, 30));
    assert!(www.public);
    assert_eq!(www.federation, "seatgeek");
    assert_eq!(www.port(), Some(8080));
    assert_eq!(www.local_port, Some(8080));
    assert_eq!(www.run_list[0], RunListItem::parse("recipe[nginx::default]").unwrap());
    assert_eq!(www.requires["API_URL"].placeholders().collect::<Vec<_>>(), ["READONLY_API_URL"]);

    let api = &repo.services["api"];
    let values =
        BTreeMap::from([("HOST".to_string(), "10.0.0.7".to_string()), ("PORT".to_string(), "1100".to_string())]);
    assert_eq!(api.provides["READONLY_API_URL"].render(&values).unwrap(), "http://10.0.0.7:1100");
    assert_eq!(repo.datastores["PRIMARY_DATABASE_URL"], "mysql://user:password@host:3306/database");
}

#[test]
fn one_service_parses_alone_as_apply_stores_it() {
    let text = r#"{"id": "worker", "command": ["bin/worker", "--fast"], "on_delete": "rm -rf /srv/worker",
                   "requires": {"QUEUE": "{NOBODY_PROVIDES_THIS}"}}"#;
    let service = gantry_spec::parse_service_json("worker", text).unwrap();
    assert_eq!(service.command, Command::Argv(vec!["bin/worker".into(), "--fast".into()]));
    assert_eq!(service.on_delete.as_deref(), Some("rm -rf /srv/worker"));
    // Requirements are resolved at run time: no repository-wide check here.
    assert_eq!(service.requires["QUEUE"].as_str(), "{NOBODY_PROVIDES_THIS}");

    let err = gantry_spec::parse_service_json("worker", r#"{"id": "worker", "comand": "x"}"#).unwrap_err();
    let text = err.render();
    assert!(text.contains("data_bags/service/worker.json:1:18"), "{text}");
    assert!(text.contains("did you mean"), "{text}");
}
