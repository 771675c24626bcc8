//! Requirement resolution on the seed's `api` and `app-www` services
//! (examples/seatgeek): providers, datastores, federations, health, and the
//! stability and spread of the rendezvous choice.

use std::collections::BTreeMap;
use std::path::Path;

use gantry_agent::resolve::{Origin, Source, choose_provider, env_for, resolve};
use gantry_api::{Health, Instance};
use gantry_spec::{Repo, RepoFiles};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seatgeek");

fn example_files() -> RepoFiles {
    gantry_generate::read::read_repo(Path::new(EXAMPLE), "").expect("readable example")
}

fn load(files: &RepoFiles) -> Repo {
    gantry_spec::load(files).unwrap_or_else(|e| panic!("repository must load:\n{}", e.render()))
}

/// An `api` instance as the agent on `machine` would publish it.
fn api(id: &str, machine: &str, address: &str, health: Health, federation: &str) -> Instance {
    let url = format!("http://{address}:1100");
    Instance {
        service: "api".to_string(),
        id: id.to_string(),
        machine: machine.to_string(),
        address: address.to_string(),
        port: 1100,
        properties: BTreeMap::new(),
        health,
        federation: federation.to_string(),
        public: false,
        provides: BTreeMap::from([("API_URL".to_string(), url.clone()), ("READONLY_API_URL".to_string(), url)]),
    }
}

fn passing(n: usize) -> Vec<Instance> {
    (0..n)
        .map(|i| api(&format!("i-{i}"), &format!("api-{i}"), &format!("10.0.1.{i}"), Health::Passing, "seatgeek"))
        .collect()
}

#[test]
fn www_gets_the_api_from_an_instance_and_the_database_from_datastores() {
    let repo = load(&example_files());
    let www = &repo.services["app-www"];
    let instances = [api("i-1", "api-1", "10.0.0.7", Health::Passing, "seatgeek")];
    let resolution = resolve(www, "www-1", &instances, &repo.datastores).unwrap();
    assert_eq!(resolution.values["API_URL"], "http://10.0.0.7:1100");
    assert_eq!(resolution.values["DATABASE_URL"], "mysql://user:password@host:3306/database");
    let shown: Vec<String> = resolution.sources.iter().map(|(var, sources)| format!("{var}: {}", sources[0])).collect();
    assert_eq!(
        shown,
        [
            "API_URL: READONLY_API_URL from instance api/i-1 on api-1",
            "DATABASE_URL: PRIMARY_DATABASE_URL from datastore",
        ]
    );

    let env = env_for(www, "10.0.0.9", 8080, &resolution);
    let lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(
        lines,
        [
            "API_URL=http://10.0.0.7:1100",
            "DATABASE_URL=mysql://user:password@host:3306/database",
            "ENV=production",
            "HOST=10.0.0.9",
            "PORT=8080",
        ]
    );

    // The api itself needs only datastores.
    let api_resolution = resolve(&repo.services["api"], "api-1", &[], &repo.datastores).unwrap();
    assert_eq!(api_resolution.values["ELASTICSEARCH_URL"], "http://elastic-ec2-01,elastic-ec2-02:9200");
}

#[test]
fn requirements_win_over_the_fixed_environment_and_templates_mix_sources() {
    let mut files = example_files();
    files.services.push((
        "report.json".to_string(),
        r#"{
          "id": "report",
          "federation": "seatgeek",
          "environment": {"API_URL": "http://stale", "PORT": 9000},
          "requires": {
            "API_URL": "{API_URL}/v2?db={PRIMARY_DATABASE_URL}&again={API_URL}",
            "MODE": "batch"
          }
        }"#
        .to_string(),
    ));
    let repo = load(&files);
    let report = &repo.services["report"];
    let instances = [api("i-1", "api-1", "10.0.0.7", Health::Passing, "seatgeek")];
    let resolution = resolve(report, "r-1", &instances, &repo.datastores).unwrap();
    assert_eq!(
        resolution.values["API_URL"],
        "http://10.0.0.7:1100/v2?db=mysql://user:password@host:3306/database&again=http://10.0.0.7:1100"
    );
    // One source per distinct placeholder, in template order; none for a literal.
    let sources: Vec<String> = resolution.sources["API_URL"].iter().map(Source::to_string).collect();
    assert_eq!(sources, ["API_URL from instance api/i-1 on api-1", "PRIMARY_DATABASE_URL from datastore"]);
    assert_eq!(resolution.sources["MODE"], []);

    let env = env_for(report, "10.0.0.3", 9001, &resolution);
    assert_eq!(env["API_URL"], resolution.values["API_URL"], "requires win over environment");
    assert_eq!(env["PORT"], "9001", "the instance's port wins over environment");
    assert_eq!(env["MODE"], "batch");
}

#[test]
fn federations_never_see_each_other() {
    let repo = load(&example_files());
    let www = &repo.services["app-www"];
    let secret = "10.66.6.6";
    let instances = [api("p-1", "pivot-1", secret, Health::Passing, "pivotly")];
    let unresolved = resolve(www, "www-1", &instances, &repo.datastores).unwrap_err();
    assert_eq!(unresolved.len(), 1, "{unresolved:?}");
    let u = &unresolved[0];
    assert_eq!(
        (u.env_var.as_str(), u.placeholder.as_str(), u.federation.as_str()),
        ("API_URL", "READONLY_API_URL", "seatgeek")
    );
    assert_eq!(u.other_federations, ["pivotly"]);
    let text = u.to_string();
    assert!(!text.contains(secret), "{text}");
    expect_test::expect![[r#"service app-www: API_URL needs READONLY_API_URL, which no passing instance in federation "seatgeek" provides and no datastore defines; federation "pivotly" provides it, but federations never see each other: run a provider in "seatgeek" or add a datastore READONLY_API_URL"#]]
    .assert_eq(&text);

    // A datastore fills the gap; the other federation's instance still is not used.
    let mut datastores = repo.datastores.clone();
    datastores.insert("READONLY_API_URL".to_string(), "http://api.internal".to_string());
    let resolution = resolve(www, "www-1", &instances, &datastores).unwrap();
    assert_eq!(resolution.values["API_URL"], "http://api.internal");
    assert_eq!(resolution.sources["API_URL"][0].origin, Origin::Datastore);
}

#[test]
fn only_passing_instances_provide() {
    let repo = load(&example_files());
    let www = &repo.services["app-www"];
    let instances = [
        api("bad", "api-1", "10.0.0.1", Health::Failing, "seatgeek"),
        api("new", "api-2", "10.0.0.2", Health::Unknown, "seatgeek"),
        api("good", "api-3", "10.0.0.3", Health::Passing, "seatgeek"),
    ];
    for n in 0..50 {
        let resolution = resolve(www, &format!("www-{n}"), &instances, &repo.datastores).unwrap();
        assert_eq!(resolution.values["API_URL"], "http://10.0.0.3:1100");
    }

    let unresolved = resolve(www, "www-1", &instances[..2], &BTreeMap::new()).unwrap_err();
    let text: Vec<String> = unresolved.iter().map(ToString::to_string).collect();
    expect_test::expect![[r#"
        [
            "service app-www: API_URL needs READONLY_API_URL, which no passing instance in federation \"seatgeek\" provides and no datastore defines; provided by instances that are not passing their checks: api/bad (failing), api/new (not checked yet)",
            "service app-www: DATABASE_URL needs PRIMARY_DATABASE_URL, which no passing instance in federation \"seatgeek\" provides and no datastore defines; start a service that provides PRIMARY_DATABASE_URL in \"seatgeek\", or add it to datastores",
        ]
    "#]]
    .assert_debug_eq(&text);
}

#[test]
fn the_choice_is_stable_and_ignores_the_order_of_instances() {
    let providers = passing(4);
    let mut reversed = providers.clone();
    reversed.reverse();
    for n in 0..200 {
        let consumer = format!("www-{n}");
        let a = choose_provider(&consumer, &providers).unwrap();
        let b = choose_provider(&consumer, &reversed).unwrap();
        assert_eq!(a.id, b.id, "{consumer}");
    }
    assert!(choose_provider("www-1", &[]).is_none());
}

#[test]
fn consumers_spread_and_only_a_lost_providers_consumers_move() {
    let providers = passing(4);
    let consumers: Vec<String> = (0..1000).map(|n| format!("www-{n}")).collect();
    let before: Vec<&str> = consumers.iter().map(|c| choose_provider(c, &providers).unwrap().id.as_str()).collect();
    let mut counts = BTreeMap::new();
    for id in &before {
        *counts.entry(*id).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|n| (150..350).contains(n)), "{counts:?}");

    let remaining: Vec<Instance> = providers.iter().filter(|i| i.id != "i-2").cloned().collect();
    let mut moved = 0;
    for (consumer, old) in consumers.iter().zip(&before) {
        let new = choose_provider(consumer, &remaining).unwrap().id.as_str();
        if *old == "i-2" {
            moved += 1;
        } else {
            assert_eq!(new, *old, "{consumer} moved although its provider stayed");
        }
    }
    assert_eq!(moved, counts["i-2"]);
}
