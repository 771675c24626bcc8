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
use axum::response::{IntoResponse, Response};
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

/// One target group as written: the JSON of a [`TargetGroup`] (the wire
/// type, which clients read and the OpenAPI document describes), written
/// from borrowed fields. Labels in their sorted order, as a `BTreeMap`
/// writes them. Measured by `bench-metrics` (10,000 instances): building
/// `TargetGroup`s took 66 ms a request at p50, most of it 180,000 small
/// allocations for their label maps.
#[derive(Debug, serde::Serialize)]
pub struct Target<'a> {
    targets: [String; 1],
    labels: Labels<'a>,
}

#[derive(Debug, serde::Serialize)]
struct Labels<'a> {
    #[serde(rename = "__metrics_path__")]
    metrics_path: &'a str,
    #[serde(rename = "__scheme__")]
    scheme: &'a str,
    federation: &'a str,
    group: &'a str,
    health: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<&'a str>,
    job: &'a str,
    machine: &'a str,
    region: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
}

/// A target on `machine` with its labels (an instance's are set over these).
fn on<'a>(machine: &'a Machine, job: &'static str, scheme: &'static str, port: u16) -> Target<'a> {
    let label = |name: &str| machine.labels.get(name).map_or("", String::as_str);
    Target {
        targets: [host_port(&machine.address, port)],
        labels: Labels {
            metrics_path: "/metrics",
            scheme,
            federation: machine.labels.get("federation").map_or(gantry_api::DEFAULT_FEDERATION, String::as_str),
            group: label("group"),
            health: "passing",
            instance_id: None,
            job,
            machine: &machine.id,
            region: label("region"),
            service: None,
        },
    }
}

/// The target groups, one per target (their labels differ), in a stable
/// order: agents and exporters by machine, then instances by service and id.
pub fn targets(sources: &Sources) -> Vec<Target<'_>> {
    let mut groups = Vec::with_capacity(sources.machines.len() * 2 + sources.instances.len());
    for (id, machine) in &sources.machines {
        let Some(status) = sources.statuses.get(id) else { continue };
        if let Some((scheme, port)) = status.api.as_deref().and_then(scheme_and_port) {
            groups.push(on(machine, jobs::AGENT, scheme, port));
        }
        if let Some(exporter) = status.lb.as_ref().and_then(|lb| lb.exporter) {
            groups.push(on(machine, jobs::HAPROXY, "http", exporter.port()));
        }
    }
    let mut instances: Vec<&Scrapeable> =
        sources.instances.iter().filter(|i| sources.metrics_paths.contains_key(&i.service)).collect();
    instances.sort_by(|a, b| a.service.cmp(&b.service).then(a.id.cmp(&b.id)));
    for instance in instances {
        let Some(machine) = sources.machines.get(&instance.machine) else { continue };
        let mut target = on(machine, jobs::SERVICE, "http", instance.port);
        target.targets = [host_port(&instance.address, instance.port)];
        target.labels.metrics_path = &sources.metrics_paths[&instance.service];
        target.labels.federation = &instance.federation;
        target.labels.instance_id = Some(&instance.id);
        target.labels.service = Some(&instance.service);
        groups.push(target);
    }
    groups
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
pub async fn prometheus_targets(gate: Gate) -> ApiResult<Response> {
    let sources = gate.prometheus_sources().await?;
    // A federation never sees another's machines or instances.
    let mut targets = targets(&sources);
    targets.retain(|target| gate.sees_federation(target.labels.federation));
    Ok(Json(targets).into_response())
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
