//! Requirement resolution (seed 001 "requires"/"provides"): the value of each
//! environment variable a service `requires`, filled from the instances that
//! `provide` its placeholders, else from the repository's datastores.
//!
//! Pure: the caller passes the instances and datastores it read, so
//! `gantry resolve` and the agent give the same answer for the same world.
//!
//! Rules, for each placeholder `NAME` of each `requires` template:
//! 1. Providers are instances that provide `NAME`, are `Passing` their
//!    checks, and are in the service's own federation. Federations never see
//!    each other, even when another federation holds the only provider.
//! 2. Among several providers, rendezvous (highest random weight) hashing
//!    of (consumer machine, provider machine, provider id) picks one: each
//!    consumer keeps its provider while that provider lives, consumers
//!    spread evenly, and when a provider goes only its consumers move.
//! 3. With no provider, `datastores[NAME]` fills it.
//! 4. Otherwise the requirement is [`Unresolved`], saying where it looked.
//!
//! With local load balancing on ([`resolve_via`] with [`Frontends`]), rule 1
//! changes: a provider *service* of the federation with a `local_port` and
//! at least one registered instance (whatever its health) fills `NAME` with
//! its `provides` template rendered for this node's frontend (`HOST` = the
//! node's address, `PORT` = the `local_port`). The value then stays the same
//! while that service's instances come and go (seed 001); the balancer
//! follows them instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use gantry_api::{Health, Instance};
use gantry_spec::Service;
use serde::Serialize;

/// Every requirement of a service, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// Environment variable to its rendered value.
    pub values: BTreeMap<String, String>,
    /// Environment variable to where each of its placeholders came from, in
    /// the template's order (empty for a template without placeholders).
    pub sources: BTreeMap<String, Vec<Source>>,
}

/// Where one placeholder's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub placeholder: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// A live instance's `provides`.
    Instance { service: String, id: String, machine: String },
    /// The datastore of the placeholder's name (`configuration/datastores.json`).
    Datastore,
    /// This node's load balancer frontend for `service`.
    Frontend { service: String, address: String },
}

/// Local load balancing: requirements on a service with a `local_port`
/// resolve to this node's frontend for it.
#[derive(Debug, Clone, Copy)]
pub struct Frontends<'a> {
    /// The node's address, where its balancer listens.
    pub address: &'a str,
    /// Every known service definition, by id.
    pub services: &'a BTreeMap<String, Service>,
}

/// A placeholder of a requirement that nothing fills, and where Gantry looked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unresolved {
    /// The service whose requirement it is.
    pub service: String,
    pub env_var: String,
    pub placeholder: String,
    /// The federation searched: the service's own.
    pub federation: String,
    /// Instances of this federation that provide the name but are not
    /// passing their checks, as `service/id (health)`.
    pub not_passing: Vec<String>,
    /// Other federations where an instance provides the name. Only their
    /// names: nothing of their values crosses the boundary.
    pub other_federations: Vec<String>,
}

/// Resolves every `requires` entry of `service` for a consumer on machine
/// `consumer_machine`. Either every requirement resolves, or the error lists
/// every placeholder that did not (one entry each, in env var order).
pub fn resolve(
    service: &Service,
    consumer_machine: &str,
    instances: &[Instance],
    datastores: &BTreeMap<String, String>,
) -> Result<Resolution, Vec<Unresolved>> {
    resolve_via(service, consumer_machine, instances, datastores, None)
}

/// [`resolve`], through this node's load balancer when `frontends` is given.
pub fn resolve_via(
    service: &Service,
    consumer_machine: &str,
    instances: &[Instance],
    datastores: &BTreeMap<String, String>,
    frontends: Option<Frontends<'_>>,
) -> Result<Resolution, Vec<Unresolved>> {
    let mut resolution = Resolution::default();
    let mut unresolved = Vec::new();
    for (env_var, template) in &service.requires {
        let mut values = BTreeMap::new();
        let mut sources = Vec::new();
        let mut complete = true;
        for name in template.placeholders() {
            if values.contains_key(name) {
                continue;
            }
            let found = match frontends.and_then(|f| through_frontend(service, instances, f, name)) {
                Some(found) => Some(found),
                None => lookup(service, consumer_machine, instances, datastores, name)
                    .map(|(value, origin)| (value.to_string(), origin)),
            };
            match found {
                Some((value, origin)) => {
                    values.insert(name.to_string(), value);
                    sources.push(Source { placeholder: name.to_string(), origin });
                }
                None => {
                    complete = false;
                    unresolved.push(explain(service, env_var, name, instances));
                }
            }
        }
        if complete {
            let value = template.render(&values).expect("every placeholder was filled above");
            resolution.values.insert(env_var.clone(), value);
            resolution.sources.insert(env_var.clone(), sources);
        }
    }
    if unresolved.is_empty() { Ok(resolution) } else { Err(unresolved) }
}

/// The whole environment of a service's env file: its fixed `environment`,
/// then `HOST` (the address its instance is published with) and `PORT`,
/// then the resolved requirements. Later entries win a clash: `HOST`/`PORT`
/// replace the same keys of `environment`, and a requirement replaces
/// anything of its name, because it is the live value.
pub fn env_for(service: &Service, host: &str, port: u16, resolution: &Resolution) -> BTreeMap<String, String> {
    let mut env = service.environment.clone();
    env.insert("HOST".to_string(), host.to_string());
    env.insert("PORT".to_string(), port.to_string());
    env.extend(resolution.values.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The provider a consumer uses among `candidates`: the one with the highest
/// [`rendezvous_weight`] (ties, which need a 64-bit collision, go to the
/// greatest machine and id so the choice stays deterministic).
pub fn choose_provider<'i>(
    consumer_machine: &str,
    candidates: impl IntoIterator<Item = &'i Instance>,
) -> Option<&'i Instance> {
    candidates.into_iter().max_by(|a, b| {
        let key = |i: &'i Instance| (rendezvous_weight(consumer_machine, &i.machine, &i.id), &i.machine, &i.id);
        key(a).cmp(&key(b))
    })
}

/// The rendezvous weight of a provider for a consumer: FNV-1a 64 over the
/// three strings, each followed by a 0xff byte (which UTF-8 never contains,
/// so `("ab", "c")` and `("a", "bc")` differ), then MurmurHash3's 64-bit
/// finalizer, because FNV-1a alone leaves the last bytes poorly mixed into
/// the high bits that decide the maximum. Both are fixed arithmetic, so the
/// weight, and thus every consumer's choice, is the same on every machine
/// and every Rust version (unlike std's `DefaultHasher`).
pub fn rendezvous_weight(consumer_machine: &str, provider_machine: &str, provider_id: &str) -> u64 {
    let mut hash = FNV_OFFSET;
    for part in [consumer_machine, provider_machine, provider_id] {
        hash = fnv1a(hash, part.as_bytes());
        hash = fnv1a(hash, &[0xff]);
    }
    fmix64(hash)
}

/// A hash of `bytes` that is the same on every machine and every Rust
/// version (FNV-1a 64, then MurmurHash3's finalizer), for choices that must
/// not move on an upgrade.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(FNV_OFFSET, bytes))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`, continuing from `hash` (start with [`FNV_OFFSET`]).
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// MurmurHash3's `fmix64`: every input bit affects every output bit.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Whether `instance` may serve `service`'s placeholder `name`.
fn provides_in(instance: &Instance, federation: &str, name: &str) -> bool {
    instance.federation == federation && instance.provides.contains_key(name)
}

fn lookup<'a>(
    service: &Service,
    consumer_machine: &str,
    instances: &'a [Instance],
    datastores: &'a BTreeMap<String, String>,
    name: &str,
) -> Option<(&'a str, Origin)> {
    let providers =
        instances.iter().filter(|i| i.health == Health::Passing && provides_in(i, &service.federation, name));
    if let Some(chosen) = choose_provider(consumer_machine, providers) {
        let origin = Origin::Instance {
            service: chosen.service.clone(),
            id: chosen.id.clone(),
            machine: chosen.machine.clone(),
        };
        return Some((chosen.provides[name].as_str(), origin));
    }
    datastores.get(name).map(|value| (value.as_str(), Origin::Datastore))
}

/// The service that fills `name` through this node's frontend, if any, and
/// its value: among the federation's services with a `local_port` that
/// provide `name` and have an instance, one with a passing instance first,
/// then the smallest id.
pub fn frontend_provider<'s>(
    service: &Service,
    instances: &[Instance],
    services: &'s BTreeMap<String, Service>,
    name: &str,
) -> Option<&'s Service> {
    let has = |id: &str, passing: bool| {
        instances
            .iter()
            .any(|i| i.service == id && i.federation == service.federation && (!passing || i.health == Health::Passing))
    };
    let mut candidates: Vec<&Service> = services
        .values()
        .filter(|s| s.federation == service.federation && s.local_port.is_some() && s.provides.contains_key(name))
        .filter(|s| has(&s.id, false))
        .collect();
    candidates.sort_by_key(|s| (!has(&s.id, true), s.id.as_str()));
    candidates.into_iter().next()
}

fn through_frontend(
    service: &Service,
    instances: &[Instance],
    frontends: Frontends<'_>,
    name: &str,
) -> Option<(String, Origin)> {
    let provider = frontend_provider(service, instances, frontends.services, name)?;
    let port = provider.local_port?;
    let mut values = provider.environment.clone();
    values.insert("HOST".into(), frontends.address.to_owned());
    values.insert("PORT".into(), port.to_string());
    let value = provider.provides.get(name)?.render(&values).ok()?;
    let origin = Origin::Frontend { service: provider.id.clone(), address: format!("{}:{port}", frontends.address) };
    Some((value, origin))
}

fn explain(service: &Service, env_var: &str, name: &str, instances: &[Instance]) -> Unresolved {
    let not_passing = instances
        .iter()
        .filter(|i| i.health != Health::Passing && provides_in(i, &service.federation, name))
        .map(|i| format!("{}/{} ({})", i.service, i.id, i.health.word()))
        .collect();
    let other_federations: BTreeSet<&str> = instances
        .iter()
        .filter(|i| i.federation != service.federation && i.provides.contains_key(name))
        .map(|i| i.federation.as_str())
        .collect();
    Unresolved {
        service: service.id.clone(),
        env_var: env_var.to_string(),
        placeholder: name.to_string(),
        federation: service.federation.clone(),
        not_passing,
        other_federations: other_federations.into_iter().map(str::to_string).collect(),
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Instance { service, id, machine } => write!(f, "instance {service}/{id} on {machine}"),
            Origin::Datastore => f.write_str("datastore"),
            Origin::Frontend { service, address } => {
                write!(f, "the local load balancer's {service} frontend at {address}")
            }
        }
    }
}

impl fmt::Display for Source {
    /// `READONLY_API_URL from instance api/i-1 on m1`, `PRIMARY_DATABASE_URL from datastore`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from {}", self.placeholder, self.origin)
    }
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Unresolved { service, env_var, placeholder, federation, not_passing, other_federations } = self;
        write!(
            f,
            "service {service}: {env_var} needs {placeholder}, which no passing instance in federation \
             \"{federation}\" provides and no datastore defines"
        )?;
        if !not_passing.is_empty() {
            write!(f, "; provided by instances that are not passing their checks: {}", not_passing.join(", "))?;
        }
        if !other_federations.is_empty() {
            let names: Vec<String> = other_federations.iter().map(|n| format!("\"{n}\"")).collect();
            write!(
                f,
                "; federation {} provides it, but federations never see each other: run a provider in \
                 \"{federation}\" or add a datastore {placeholder}",
                names.join(", ")
            )?;
        } else if not_passing.is_empty() {
            write!(f, "; start a service that provides {placeholder} in \"{federation}\", or add it to datastores")?;
        }
        Ok(())
    }
}

impl std::error::Error for Unresolved {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn weights_are_pinned() {
        // A change here moves consumers between providers on every upgrade:
        // it must never happen by accident.
        expect_test::expect!["5647554478422388597"].assert_eq(&rendezvous_weight("web-1", "api-1", "i-1").to_string());
        assert_ne!(rendezvous_weight("ab", "c", "x"), rendezvous_weight("a", "bc", "x"));
        assert_ne!(rendezvous_weight("web-1", "api-1", "i-1"), rendezvous_weight("web-2", "api-1", "i-1"));
    }
}
