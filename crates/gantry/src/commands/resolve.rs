//! `gantry resolve SERVICE`: what a service's requirements resolve to, as
//! an agent would resolve them (gantry-agent's `resolve`), passwords in
//! URLs masked.

use std::collections::BTreeMap;

use gantry_agent::resolve;
use gantry_api::keys;
use serde::Serialize;

use crate::BadInput;
use crate::context::{Context, explain};
use crate::output::print_json;

/// `gantry resolve SERVICE`: what the service's requirements resolve to,
/// as an agent on `machine` would see them.
pub fn resolve(ctx: &Context, service: &str, machine: Option<&str>, show_secrets: bool) -> anyhow::Result<()> {
    let client = ctx.client();
    let server = client.base();
    let (definition, instances, datastores) = ctx
        .block_on(async {
            let definition = client.services().await?.items.into_iter().find(|d| d.id == service);
            let instances = client.instances_with(&[]).await?.items;
            let datastores = client.kv_list(keys::DATASTORES_KV).await?;
            Ok::<_, gantry_client::ClientError>((definition, instances, datastores))
        })
        .map_err(explain)?;
    let Some(definition) = definition else {
        return Err(BadInput(format!(
            "error: no service {service:?} on {server}\n = help: run `gantry apply` in the repository"
        ))
        .into());
    };
    let parsed = gantry_spec::parse_service_json(service, &serde_json::to_string(&definition)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let datastores: BTreeMap<String, String> = datastores
        .entries
        .into_iter()
        .map(|e| (e.key.strip_prefix(keys::DATASTORES_KV).unwrap_or(&e.key).to_owned(), e.value))
        .collect();
    let consumer = machine.unwrap_or("");
    let shown = |v: &str| if show_secrets { v.to_owned() } else { mask_secret(v) };
    match resolve::resolve(&parsed, consumer, &instances, &datastores) {
        Ok(resolution) => {
            let values = resolution.values.iter().map(|(k, v)| (k.as_str(), shown(v))).collect();
            let resolved = Resolved { service, sources: &resolution.sources, values };
            ctx.output().print(&resolved, |out| {
                for (key, value) in &resolution.values {
                    let from: Vec<String> = resolution.sources[key]
                        .iter()
                        .map(|s| match &s.origin {
                            resolve::Origin::Instance { service, id, .. } => {
                                format!("{} from {service}/{id}", s.placeholder)
                            }
                            resolve::Origin::Datastore => format!("{} from datastore", s.placeholder),
                            resolve::Origin::Frontend { service, address } => {
                                format!("{} from the {service} frontend at {address}", s.placeholder)
                            }
                        })
                        .collect();
                    writeln!(out, "{key}={}\t# {}", shown(value), from.join(", "))?;
                }
                if machine.is_none()
                    && resolution
                        .sources
                        .values()
                        .flatten()
                        .any(|s| matches!(s.origin, resolve::Origin::Instance { .. }))
                {
                    writeln!(
                        out,
                        "# with several providers each machine gets its own: --machine ID shows one machine's"
                    )?;
                }
                Ok(())
            })
        }
        Err(unresolved) => {
            let lines: Vec<String> = unresolved.iter().map(|u| format!("error: {u}")).collect();
            if ctx.output().is_json() {
                print_json(&Unresolved { service, unresolved: &unresolved })?;
            }
            anyhow::bail!("{}", lines.join("\n"))
        }
    }
}

/// What `resolve --json` prints when every requirement resolved.
#[derive(Debug, Serialize)]
struct Resolved<'a> {
    service: &'a str,
    sources: &'a BTreeMap<String, Vec<resolve::Source>>,
    values: BTreeMap<&'a str, String>,
}

/// What `resolve --json` prints when some did not (before failing).
#[derive(Debug, Serialize)]
struct Unresolved<'a> {
    service: &'a str,
    unresolved: &'a [resolve::Unresolved],
}

/// `mysql://user:secret@host/db` -> `mysql://user:****@host/db`: passwords
/// in URLs are not printed unless asked for (--show-secrets).
pub fn mask_secret(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else { return value.to_owned() };
    let rest = &value[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:****{}", &value[..scheme_end + 3], &authority[..colon], &value[scheme_end + 3 + at..])
        }
        _ => value.to_owned(),
    }
}
