//! What this node's load balancer serves ([`Plan`]), computed from the
//! world: pure, so every rule is tested with plain data.
//!
//! - A frontend for each service a local service's requirement resolves
//!   through ([`resolve::frontend_provider`]), on the node's address and the
//!   service's `local_port`, internal.
//! - On an external balancer, a frontend for each public service of its
//!   federation that has a `local_port` (seed 001 "Public and private
//!   services"): internal services never reach it unless a local service
//!   requires them.
//! - Backends: the service's passing instances of the same federation.
//! - HTTP mode for services checked over HTTP (haproxy then adds a request
//!   id), TCP otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use gantry_api::{Health, Instance};
use gantry_spec::{CheckKind, Service};

use crate::lb::{Backend, Frontend, Mode, Plan};
use crate::resolve;

/// Which frontends a node has besides the ones its services require.
#[derive(Debug, Clone, Copy)]
pub struct Role<'a> {
    pub address: IpAddr,
    /// `Some(federation)` on an external balancer: it also fronts that
    /// federation's public services.
    pub external: Option<&'a str>,
}

/// The services this node fronts: service id to whether it is there as a
/// public service of an external balancer.
pub fn fronted<'s>(
    local: &[&Service],
    instances: &[Instance],
    services: &'s BTreeMap<String, Service>,
    external: Option<&str>,
) -> BTreeMap<&'s str, (&'s Service, bool)> {
    let mut out: BTreeMap<&str, (&Service, bool)> = BTreeMap::new();
    for service in local {
        for name in service.requires.values().flat_map(|t| t.placeholders()) {
            if let Some(provider) = resolve::frontend_provider(service, instances, services, name) {
                out.entry(provider.id.as_str()).or_insert((provider, false));
            }
        }
    }
    if let Some(federation) = external {
        for service in services.values().filter(|s| s.public && s.local_port.is_some() && s.federation == federation) {
            out.insert(service.id.as_str(), (service, true));
        }
    }
    out
}

/// The plan, and the problems that kept a frontend out of it (two services
/// on one `local_port`: the first by id keeps it).
pub fn plan(
    local: &[&Service],
    instances: &[Instance],
    services: &BTreeMap<String, Service>,
    role: Role<'_>,
) -> (Plan, Vec<String>) {
    let mut frontends: Vec<Frontend> = Vec::new();
    let mut problems = Vec::new();
    for (id, (service, public)) in fronted(local, instances, services, role.external) {
        let Some(port) = service.local_port else { continue };
        // A service of this node already listens there (a scheduled
        // service placed beside what it requires): the requirement reaches
        // that instance directly; a frontend could not bind.
        if let Some(listening) = local.iter().find(|s| s.port() == Some(port)) {
            if listening.id != id {
                problems.push(format!(
                    "service {id}: local_port {port} is where {} listens on this node: give one of them another port",
                    listening.id
                ));
            }
            continue;
        }
        let bind = SocketAddr::new(role.address, port);
        if let Some(taken) = frontends.iter().find(|f| f.bind == bind) {
            problems.push(format!(
                "service {id}: local_port {port} is already the {} frontend's: give one of them another local_port",
                taken.service
            ));
            continue;
        }
        frontends.push(Frontend {
            service: id.to_owned(),
            bind,
            mode: mode_of(service),
            public,
            backends: backends_of(service, instances),
        });
    }
    (Plan { frontends }, problems)
}

fn mode_of(service: &Service) -> Mode {
    match service.check.as_ref().map(|c| &c.kind) {
        Some(CheckKind::Http { .. }) => Mode::Http,
        _ => Mode::Tcp,
    }
}

fn backends_of(service: &Service, instances: &[Instance]) -> Vec<Backend> {
    let mut backends: Vec<Backend> = instances
        .iter()
        .filter(|i| i.service == service.id && i.federation == service.federation && i.health == Health::Passing)
        .filter_map(|i| Some(Backend { id: i.id.clone(), address: SocketAddr::new(i.address.parse().ok()?, i.port) }))
        .collect();
    backends.sort_by(|a, b| a.id.cmp(&b.id));
    backends
}

/// Never render empty backends because the source of truth is unreachable
/// or mid-restart: while the agent settles after (re)connecting, a frontend
/// whose backends would go from some to none, because its service has no
/// instance registered at all, keeps its last known ones. Instances that are
/// there and failing are the truth, settling or not.
#[derive(Debug, Default)]
pub struct LastGood {
    backends: BTreeMap<String, Vec<Backend>>,
}

impl LastGood {
    /// Applies the rule to `plan` in place; returns one note per frontend
    /// that kept its last known backends. Outside `settling`, the plan is
    /// taken as it is (a service whose every instance failed has none).
    /// `registered`: the services with at least one instance, of any health.
    pub fn guard(&mut self, plan: &mut Plan, settling: bool, registered: &BTreeSet<String>) -> Vec<String> {
        let mut notes = Vec::new();
        for frontend in &mut plan.frontends {
            let last = self.backends.get(&frontend.service).filter(|b| !b.is_empty());
            match last {
                Some(last) if settling && frontend.backends.is_empty() && !registered.contains(&frontend.service) => {
                    frontend.backends = last.clone();
                    notes.push(format!(
                        "frontend {}: kept its last known backends while the agent reconnects",
                        frontend.service
                    ));
                }
                _ => {
                    self.backends.insert(frontend.service.clone(), frontend.backends.clone());
                }
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use gantry_spec::parse_service_json;

    use super::*;

    fn service(id: &str, json: &str) -> Service {
        let mut value: serde_json::Value = serde_json::from_str(json).expect("test JSON");
        value["id"] = id.into();
        parse_service_json(id, &value.to_string()).expect("valid test service")
    }

    fn instance(service: &str, machine: &str, port: u16, health: Health) -> Instance {
        Instance {
            service: service.into(),
            id: machine.into(),
            machine: machine.into(),
            address: "10.0.0.1".into(),
            port,
            properties: BTreeMap::new(),
            health,
            federation: "default".into(),
            public: false,
            provides: [("API_URL".to_string(), format!("http://10.0.0.1:{port}"))].into(),
        }
    }

    fn world() -> BTreeMap<String, Service> {
        [
            service(
                "api",
                r#"{"local_port": 8500, "provides": {"API_URL": "http://{HOST}:{PORT}"}, "check": {"type": "http"}}"#,
            ),
            service("www", r#"{"local_port": 8600, "public": true, "requires": {"API": "{API_URL}"}}"#),
            service("cache", r#"{"local_port": 8500, "provides": {"CACHE_URL": "{HOST}:{PORT}"}}"#),
        ]
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect()
    }

    #[test]
    fn a_node_fronts_what_its_services_require_with_passing_backends_only() {
        let services = world();
        let instances = vec![
            instance("api", "b", 9001, Health::Passing),
            instance("api", "a", 9000, Health::Passing),
            instance("api", "c", 9002, Health::Failing),
        ];
        let role = Role { address: [127, 0, 0, 2].into(), external: None };
        let (plan, problems) = plan(&[&services["www"]], &instances, &services, role);
        assert!(problems.is_empty());
        assert_eq!(plan.frontends.len(), 1);
        let api = &plan.frontends[0];
        assert_eq!(
            (api.service.as_str(), api.bind.to_string().as_str(), api.mode, api.public),
            ("api", "127.0.0.2:8500", Mode::Http, false)
        );
        let ids: Vec<&str> = api.backends.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    /// A scheduled service placed on a node that runs what it requires, on
    /// the port the frontend would take: no frontend, the local instance
    /// answers there itself; another service on that port is a problem.
    #[test]
    fn no_frontend_where_a_local_service_already_listens() {
        let mut services = world();
        services.insert("api".into(), service("api", r#"{"local_port": 8500, "environment": {"PORT": 8500}, "provides": {"API_URL": "http://{HOST}:{PORT}"}}"#));
        services.insert("other".into(), service("other", r#"{"environment": {"PORT": 8500}}"#));
        let instances = vec![instance("api", "a", 8500, Health::Passing)];
        let role = Role { address: [127, 0, 0, 2].into(), external: None };
        let (plan_, problems) = plan(&[&services["api"], &services["www"]], &instances, &services, role);
        assert!(plan_.frontends.is_empty() && problems.is_empty(), "{plan_:?} {problems:?}");
        let (plan_, problems) = plan(&[&services["other"], &services["www"]], &instances, &services, role);
        assert!(plan_.frontends.is_empty());
        assert!(problems[0].contains("local_port 8500 is where other listens"), "{problems:?}");
    }

    #[test]
    fn an_external_balancer_fronts_public_services_only_and_reports_port_clashes() {
        let mut services = world();
        services.insert("db".into(), service("db", r#"{"local_port": 8600, "public": true}"#));
        let role = Role { address: [127, 0, 0, 9].into(), external: Some("default") };
        let (plan, problems) = plan(&[], &[instance("www", "w", 9100, Health::Passing)], &services, role);
        let fronts: Vec<(&str, bool)> = plan.frontends.iter().map(|f| (f.service.as_str(), f.public)).collect();
        // "db" sorts first and keeps 8600; www clashes with it.
        assert_eq!(fronts, [("db", true)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("service www: local_port 8600 is already the db frontend's"), "{problems:?}");
    }

    #[test]
    fn last_good_backends_survive_a_reconnect_but_not_a_real_outage() {
        let backend = Backend { id: "a".into(), address: "10.0.0.1:9000".parse().unwrap() };
        let frontend = |backends: Vec<Backend>| Plan {
            frontends: vec![Frontend {
                service: "api".into(),
                bind: "127.0.0.1:8500".parse().unwrap(),
                mode: Mode::Tcp,
                public: false,
                backends,
            }],
        };
        let mut last = LastGood::default();
        let gone = &BTreeSet::new();
        assert!(last.guard(&mut frontend(vec![backend.clone()]), false, gone).is_empty());

        let mut empty = frontend(vec![]);
        let notes = last.guard(&mut empty, true, gone);
        assert_eq!(empty, frontend(vec![backend.clone()]));
        assert_eq!(notes.len(), 1);

        let mut empty = frontend(vec![]);
        assert!(last.guard(&mut empty, true, &["api".to_string()].into()).is_empty());
        assert_eq!(empty, frontend(vec![]), "registered and failing: the truth, even while settling");

        let mut empty = frontend(vec![]);
        assert!(last.guard(&mut empty, false, gone).is_empty());
        assert_eq!(empty, frontend(vec![]), "settled: an empty backend is the truth");
    }
}
