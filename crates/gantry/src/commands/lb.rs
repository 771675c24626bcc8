//! `gantry lb:status`: each node's load balancer as its agent publishes
//! it: frontends, their healthy backends, and the instances out of rotation.

use std::io::Write;

use gantry_api::{AgentStatus, Instance};
use serde::Serialize;

use crate::context::{Context, explain};

/// One node's balancer, as `lb:status --json` prints it.
#[derive(Serialize)]
struct MachineLb<'a> {
    machine: &'a str,
    lb: Option<&'a gantry_api::LbStatus>,
}

/// `gantry lb:status [--machine M]`: each node's balancer, its frontends
/// and their backends.
pub fn status(ctx: &Context, machine: Option<&str>) -> anyhow::Result<()> {
    let client = ctx.client();
    let mut all = ctx.block_on(client.agent_statuses()).map_err(explain)?.items;
    all.retain(|s| machine.is_none_or(|m| s.machine == m));
    // Every instance of the fronted services, to show the ones out of rotation too.
    let instances = ctx.block_on(client.instances_with(&[])).map_err(explain)?.items;
    let view: Vec<MachineLb> = all.iter().map(|s| MachineLb { machine: &s.machine, lb: s.lb.as_ref() }).collect();
    ctx.output().print(&view, |out| table(out, &all, &instances))
}

fn table(out: &mut dyn Write, all: &[AgentStatus], instances: &[Instance]) -> anyhow::Result<()> {
    for s in all {
        let Some(lb) = &s.lb else {
            writeln!(out, "{}: no load balancer (agent runs with --lb off)", s.machine)?;
            continue;
        };
        writeln!(out, "{}: {}", s.machine, lb.kind.as_str())?;
        for frontend in &lb.frontends {
            let backends: Vec<String> = frontend.backends.iter().map(|b| format!("{} {}", b.id, b.address)).collect();
            let kind = if frontend.public { "public" } else { "internal" };
            writeln!(
                out,
                "  {:<16} {:<22} {:<4} {:<8} {}",
                frontend.service,
                frontend.bind.to_string(),
                frontend.mode.as_str(),
                kind,
                if backends.is_empty() { "no healthy backend".to_owned() } else { backends.join(", ") }
            )?;
            let out_of_rotation: Vec<String> = instances
                .iter()
                .filter(|i| frontend.service == i.service && i.health != gantry_api::Health::Passing)
                .map(|i| format!("{} {}:{} ({})", i.id, i.address, i.port, i.health.word()))
                .collect();
            if !out_of_rotation.is_empty() {
                writeln!(out, "  {:<16} out of rotation: {}", "", out_of_rotation.join(", "))?;
            }
        }
        for note in &lb.notes {
            writeln!(out, "  note: {note}")?;
        }
        if let Some(error) = &lb.error {
            writeln!(out, "  error: {error}")?;
        }
    }
    Ok(())
}
