//! `machine:list` and `machine:show`: the machine inventory agents register.

use std::io::Write;

use gantry_api::Machine;

use crate::BadInput;
use crate::context::{Context, explain};
use crate::output::print_json;

pub fn list(ctx: &Context) -> anyhow::Result<()> {
    let listing = ctx.block_on(ctx.client().machines()).map_err(explain)?;
    ctx.output().print(&listing.items, |out| table(out, &listing.items))
}

fn table(out: &mut dyn Write, machines: &[Machine]) -> anyhow::Result<()> {
    writeln!(out, "{:<24} {:<20} {:<16} {:>4} {:>8}  LABELS", "ID", "HOSTNAME", "ADDRESS", "CPUS", "MEMORY")?;
    for m in machines {
        let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            out,
            "{:<24} {:<20} {:<16} {:>4} {:>7}M  {}",
            m.id,
            m.hostname,
            m.address,
            m.facts.cpu_count,
            m.facts.memory_bytes / (1024 * 1024),
            labels.join(",")
        )?;
    }
    Ok(())
}

/// `machine:show ID`: the machine with its facts and labels, and the
/// server its agent uses now (`server`, when its agent reports one: one of
/// its `--server` list), as JSON (with or without `--json`).
pub fn show(ctx: &Context, id: &str) -> anyhow::Result<()> {
    let client = ctx.client();
    match ctx.block_on(client.machine(id)) {
        Ok(m) => {
            let mut shown = serde_json::to_value(&m)?;
            let server = ctx.block_on(client.agent_status(id)).ok().flatten().and_then(|status| status.server);
            if let (Some(server), Some(fields)) = (server, shown.as_object_mut()) {
                fields.insert("server".to_owned(), server.into());
            }
            print_json(&shown)
        }
        Err(e) if e.is_not_found() => {
            Err(BadInput(format!("error: no machine {id:?}\n = help: `gantry machine:list` shows the known ones"))
                .into())
        }
        Err(e) => Err(explain(e)),
    }
}
