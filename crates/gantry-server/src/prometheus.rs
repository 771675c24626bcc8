//! Prometheus HTTP service discovery (issue 18): `GET /v1/prometheus/targets`
//! answers the `http_sd_configs` format with every scrape target of the
//! fleet, so a Prometheus sees every node with no hand-written scrape
//! configuration:
//!
//! - each registered machine's agent (`/metrics` on its API, over TLS when
//!   the agent serves TLS), job `gantry-agent`;
//! - each haproxy exporter an agent reports (`lb.exporter`), job
//!   `gantry-haproxy`;
//! - each passing instance of a service that declares `"metrics"`, at its
//!   address and port with the declared path, job `gantry-service`.
//!
//! Every target is labelled `machine`, `group`, `federation`, `region` and
//! `health` (and `service` for instances). Addresses are the machines'
//! registered ones, as for the log proxy: an agent's status gives only
//! ports. A machine whose lease ended is gone from `machines/`, and its
//! targets with it; an instance leaves when it stops passing.
//!
//! Who may read it: operators whose policy grants `prometheus/targets`
//! (the management token, or the `prometheus` policy `gantry up` gives
//! Prometheus' token); never an agent.

use std::collections::BTreeMap;

use axum::Json;
use gantry_api::keys::{AgentKeyRef, StoreKey};
use gantry_api::{AgentStatus, Health, Machine, ServiceDefinition, TargetGroup};
use gantry_spec::observe::jobs;
use gantry_store::KeyValue;

use crate::error::ApiResult;
use crate::gate::Gate;
use crate::openapi::Errors;

/// What the targets are computed from, decoded. Values that do not decode
/// are left out (a corrupt document hides one target, not the fleet's).
#[derive(Debug, Default)]
pub struct Sources {
    pub machines: BTreeMap<String, Machine>,
    pub statuses: BTreeMap<String, AgentStatus>,
    /// Service id -> the path its instances serve metrics at.
    pub metrics_paths: BTreeMap<String, String>,
    pub instances: Vec<Scrapeable>,
}

/// What a target needs of an instance: read from its document, skipping the
/// rest (its properties and what it provides), which is most of the bytes.
#[derive(Debug, serde::Deserialize)]
pub struct Scrapeable {
    service: String,
    id: String,
    machine: String,
    address: String,
    port: u16,
    health: Health,
    federation: String,
}

impl Sources {
    pub fn decode(
        machines: &[KeyValue],
        agents: &[KeyValue],
        services: &[KeyValue],
        instances: &[KeyValue],
    ) -> Sources {
        fn parse<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
            serde_json::from_slice(&kv.value).ok()
        }
        let metrics_paths: BTreeMap<String, String> = services
            .iter()
            .filter_map(parse::<ServiceDefinition>)
            .filter_map(|d| Some((d.id, d.metrics?.path)))
            .collect();
        // Only instances of services with metrics are read at all.
        let scraped = |kv: &&KeyValue| match StoreKey::parse(&kv.key) {
            Some(StoreKey::Instance { service, .. }) => metrics_paths.contains_key(service),
            _ => false,
        };
        let instances = instances
            .iter()
            .filter(scraped)
            .filter_map(parse::<Scrapeable>)
            .filter(|i| i.health == Health::Passing)
            .collect();
        Sources {
            machines: machines.iter().filter_map(parse::<Machine>).map(|m| (m.id.clone(), m)).collect(),
            statuses: agents
                .iter()
                .filter(|kv| matches!(StoreKey::parse(&kv.key), Some(StoreKey::Agent { key: AgentKeyRef::Status, .. })))
                .filter_map(parse::<AgentStatus>)
                .map(|s| (s.machine.clone(), s))
                .collect(),
            metrics_paths,
            instances,
        }
    }
}

/// The target groups, one per target (their labels differ), in a stable
/// order: agents and exporters by machine, then instances by service and id.
pub fn targets(sources: &Sources) -> Vec<TargetGroup> {
    let mut groups = Vec::with_capacity(sources.machines.len() * 2 + sources.instances.len());
    for (id, machine) in &sources.machines {
        let Some(status) = sources.statuses.get(id) else { continue };
        if let Some((scheme, port)) = status.api.as_deref().and_then(scheme_and_port) {
            let mut labels = machine_labels(machine, None);
            labels.insert("job".into(), jobs::AGENT.into());
            labels.insert("__scheme__".into(), scheme.into());
            labels.insert("__metrics_path__".into(), "/metrics".into());
            groups.push(TargetGroup { targets: vec![host_port(&machine.address, port)], labels });
        }
        if let Some(exporter) = status.lb.as_ref().and_then(|lb| lb.exporter) {
            let mut labels = machine_labels(machine, None);
            labels.insert("job".into(), jobs::HAPROXY.into());
            labels.insert("__scheme__".into(), "http".into());
            labels.insert("__metrics_path__".into(), "/metrics".into());
            groups.push(TargetGroup { targets: vec![host_port(&machine.address, exporter.port())], labels });
        }
    }
    let mut instances: Vec<&Scrapeable> =
        sources.instances.iter().filter(|i| sources.metrics_paths.contains_key(&i.service)).collect();
    instances.sort_by(|a, b| a.service.cmp(&b.service).then(a.id.cmp(&b.id)));
    for instance in instances {
        let Some(machine) = sources.machines.get(&instance.machine) else { continue };
        let mut labels = machine_labels(machine, Some(instance));
        labels.insert("job".into(), jobs::SERVICE.into());
        labels.insert("service".into(), instance.service.clone());
        labels.insert("instance_id".into(), instance.id.clone());
        labels.insert("__scheme__".into(), "http".into());
        labels.insert("__metrics_path__".into(), sources.metrics_paths[&instance.service].clone());
        groups.push(TargetGroup { targets: vec![host_port(&instance.address, instance.port)], labels });
    }
    groups
}

/// `machine`, `group`, `region`, `federation` and `health` of a target on
/// `machine` (an instance's federation is its own).
fn machine_labels(machine: &Machine, instance: Option<&Scrapeable>) -> BTreeMap<String, String> {
    let label = |name: &str| machine.labels.get(name).cloned().unwrap_or_default();
    let federation = match instance {
        Some(i) => i.federation.clone(),
        None => machine.labels.get("federation").cloned().unwrap_or_else(|| gantry_api::DEFAULT_FEDERATION.into()),
    };
    BTreeMap::from([
        ("machine".to_owned(), machine.id.clone()),
        ("group".to_owned(), label("group")),
        ("region".to_owned(), label("region")),
        ("federation".to_owned(), federation),
        ("health".to_owned(), "passing".to_owned()),
    ])
}

/// `("https", 4242)` from `https://10.0.0.5:4242`.
fn scheme_and_port(url: &str) -> Option<(&'static str, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    let port = rest.trim_end_matches('/').rsplit_once(':')?.1.parse().ok()?;
    Some((scheme, port))
}

/// `host:port`, an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Every scrape target of the fleet, in Prometheus' `http_sd_configs` format.
#[utoipa::path(get, path = "/v1/prometheus/targets", tag = "server",
    responses((status = 200, description = "Target groups for Prometheus' HTTP service discovery: every agent, every haproxy exporter, every passing instance of a service that declares `metrics`.", body = Vec<TargetGroup>), Errors),
)]
pub async fn prometheus_targets(gate: Gate) -> ApiResult<Json<Vec<TargetGroup>>> {
    let sources = gate.prometheus_sources().await?;
    Ok(Json(targets(&sources)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addresses() {
        assert_eq!(scheme_and_port("https://10.0.0.5:4242"), Some(("https", 4242)));
        assert_eq!(scheme_and_port("http://[fd00::5]:80/"), Some(("http", 80)));
        assert_eq!(scheme_and_port("ftp://x:1"), None);
        assert_eq!(host_port("fd00::5", 80), "[fd00::5]:80");
        assert_eq!(host_port("10.0.0.5", 80), "10.0.0.5:80");
    }
}
