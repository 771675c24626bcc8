//! `gantry apply`: uploads the repository's groups, services and datastores
//! to the server, where agents read them. Writes only what changed (an
//! unchanged datastore must not make every dependent node re-provision),
//! removes groups and services the repository no longer has, and leaves
//! datastores it did not write alone (`gantry kv:put datastores/NAME` sets
//! them at run time too).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context as _;
use gantry_api::{Group, ServiceDefinition, keys};
use gantry_client::{Client, PutOptions};
use serde::Serialize;

use crate::context::{Context, explain};
use crate::repo::Opened;

/// One change `apply` makes (or would make, with `--dry-run`).
#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// `create`, `update` or `delete`.
    pub action: &'static str,
    /// `group`, `service` or `datastore`.
    pub kind: &'static str,
    pub name: String,
}

/// What the server should hold for this repository.
struct Desired {
    groups: BTreeMap<String, Group>,
    services: BTreeMap<String, ServiceDefinition>,
    datastores: BTreeMap<String, String>,
}

fn desired(opened: &Opened) -> anyhow::Result<Desired> {
    let repo = &opened.repo;
    let groups = repo
        .groups
        .values()
        .map(|g| {
            let group = Group {
                name: g.name.clone(),
                run_list: g.role_run_list().iter().map(ToString::to_string).collect(),
                services: repo.services_of(g).iter().map(|s| s.id.clone()).collect(),
            };
            (g.name.clone(), group)
        })
        .collect();
    let mut services = BTreeMap::new();
    for id in repo.services.keys() {
        let path = opened.dir.join(gantry_spec::SERVICES_DIR).join(format!("{id}.json"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        // The spec crate checked this file already: a failure here means it
        // changed while gantry read it.
        let definition: ServiceDefinition =
            serde_json::from_str(&text).with_context(|| format!("{} changed while gantry read it", path.display()))?;
        services.insert(id.clone(), definition);
    }
    Ok(Desired { groups, services, datastores: repo.datastores.clone() })
}

pub fn apply(ctx: &Context, opened: &Opened, dry_run: bool) -> anyhow::Result<()> {
    let server = ctx.client().base();
    let desired = desired(opened)?;
    let changes = ctx.block_on(sync(ctx.client(), &desired, dry_run)).map_err(explain)?;
    ctx.output().print(&changes, |out| summary(out, &changes, &desired, server, dry_run))
}

fn summary(
    out: &mut dyn Write,
    changes: &[Change],
    desired: &Desired,
    server: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    for c in changes {
        let verb = match (c.action, dry_run) {
            (action, false) => format!("{action}d"),
            (action, true) => format!("would {action}"),
        };
        writeln!(out, "{verb:<14} {:<10} {}", c.kind, c.name)?;
    }
    let (g, s, d) = (desired.groups.len(), desired.services.len(), desired.datastores.len());
    match (changes.is_empty(), dry_run) {
        (true, _) => writeln!(out, "up to date: {g} group(s), {s} service(s), {d} datastore(s) on {server}")?,
        (false, true) => writeln!(out, "dry run: {} change(s) not made", changes.len())?,
        (false, false) => writeln!(out, "applied {} change(s) to {server}", changes.len())?,
    }
    Ok(())
}

/// Uploads the repository (what `gantry apply` does, quietly); returns the changes.
pub async fn upload(opened: &Opened, client: &Client) -> anyhow::Result<Vec<Change>> {
    let desired = desired(opened)?;
    sync(client, &desired, false).await.map_err(explain)
}

/// `create` when the server has nothing, `update` when it has something
/// else, nothing when it has the same.
fn action<T: PartialEq + ?Sized>(current: Option<&T>, desired: &T) -> Option<&'static str> {
    match current {
        None => Some("create"),
        Some(old) if old != desired => Some("update"),
        Some(_) => None,
    }
}

async fn sync(client: &Client, desired: &Desired, dry_run: bool) -> Result<Vec<Change>, gantry_client::ClientError> {
    let mut changes = Vec::new();
    let change = |action, kind, name: &str| Change { action, kind, name: name.to_owned() };

    // Services before groups: an agent that sees its group's new list finds
    // every service it names.
    let current: BTreeMap<String, ServiceDefinition> =
        client.services().await?.items.into_iter().map(|d| (d.id.clone(), d)).collect();
    let stored_services: Vec<String> = current.keys().cloned().collect();
    for (id, definition) in &desired.services {
        let Some(action) = action(current.get(id), definition) else { continue };
        if !dry_run {
            client.put_service(definition).await?;
        }
        changes.push(change(action, "service", id));
    }

    let datastores = client.kv_list(keys::DATASTORES_KV).await?;
    let current: BTreeMap<&str, &str> = datastores
        .entries
        .iter()
        .map(|e| (e.key.strip_prefix(keys::DATASTORES_KV).unwrap_or(&e.key), e.value.as_str()))
        .collect();
    for (name, value) in &desired.datastores {
        let Some(action) = action(current.get(name.as_str()).copied(), value.as_str()) else { continue };
        if !dry_run {
            client.kv_put(&format!("{}{name}", keys::DATASTORES_KV), value, PutOptions::default()).await?;
        }
        changes.push(change(action, "datastore", name));
    }

    let current: BTreeMap<String, Group> =
        client.groups().await?.items.into_iter().map(|g| (g.name.clone(), g)).collect();
    for (name, group) in &desired.groups {
        let Some(action) = action(current.get(name), group) else { continue };
        if !dry_run {
            client.put_group(group).await?;
        }
        changes.push(change(action, "group", name));
    }
    // Then what the repository no longer has: groups first, so no agent is
    // left naming a deleted service.
    for name in current.keys().filter(|n| !desired.groups.contains_key(*n)) {
        if !dry_run {
            client.delete_group(name).await?;
        }
        changes.push(change("delete", "group", name));
    }
    for id in stored_services.iter().filter(|id| !desired.services.contains_key(*id)) {
        if !dry_run {
            client.delete_service(id).await?;
        }
        changes.push(change("delete", "service", id));
    }
    Ok(changes)
}
