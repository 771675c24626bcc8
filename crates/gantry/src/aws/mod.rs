//! The AWS commands, glue over gantry-aws (the only crate that sees the
//! SDK): `packer:*` (AMIs), `autoscale:run|update|status` (launch templates
//! and autoscaling groups), `instance:create|list`.

mod autoscale;
mod instance;
mod launch;
mod packer;

use std::io::Write;

use gantry_aws::Connect;

pub use autoscale::{UpdateArgs, run as autoscale_run, status as autoscale_status, update as autoscale_update};
pub use instance::{CreateArgs, create as instance_create, list as instance_list};
pub use launch::LaunchArgs;
pub use packer::{clean as packer_clean, delete as packer_delete, run as packer_run};

use crate::repo::Opened;

/// How to reach AWS for `group` (any group when `None`): the group's
/// `region` is the fallback when the environment names none; without a
/// group, the region every group of nodes.json shares. A group no longer
/// in nodes.json can still have things in AWS to clean or list.
fn connect_for(opened: &Opened, group: Option<&str>, endpoint_url: Option<&str>) -> Connect {
    let groups = &opened.repo.groups;
    let fallback_region = match group {
        Some(name) => groups.get(name).and_then(|g| g.region.clone()),
        None => {
            let mut regions = groups.values().filter_map(|g| g.region.as_deref());
            let first = regions.next();
            first.filter(|r| regions.all(|other| other == *r)).map(str::to_string)
        }
    };
    Connect { endpoint_url: endpoint_url.map(str::to_string), fallback_region, region: None }
}

/// What a listing command prints: with `--json` an array of objects for
/// scripts; else a table under `header` for people, or `empty` when there
/// is nothing to list.
fn print_listing<T>(
    items: &[T],
    as_json: bool,
    to_json: impl Fn(&T) -> serde_json::Value,
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
    empty: &str,
) -> anyhow::Result<()> {
    if as_json {
        return crate::remote::print_json(&items.iter().map(to_json).collect::<Vec<_>>());
    }
    if items.is_empty() {
        writeln!(std::io::stdout().lock(), "{empty}")?;
        return Ok(());
    }
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect()];
    rows.extend(items.iter().map(row));
    crate::show::print_table(&rows)
}
