//! `listener:status`, `listener:on`, `listener:off`: each agent's
//! provision listener, as its agent publishes it, and its switch.

use std::io::Write;

use gantry_api::{AgentStatus, ListenerSwitch, now_ms};

use crate::BadInput;
use crate::cli::Machines;
use crate::context::{Context, explain};

/// `gantry listener:status [--machine M]`: each agent's listener.
pub fn status(ctx: &Context, machine: Option<&str>) -> anyhow::Result<()> {
    let mut all = ctx.block_on(ctx.client().agent_statuses()).map_err(explain)?.items;
    all.retain(|s| machine.is_none_or(|m| s.machine == m));
    ctx.output().print(&all, |out| table(out, &all))
}

fn table(out: &mut dyn Write, all: &[AgentStatus]) -> anyhow::Result<()> {
    writeln!(out, "{:<28} {:<12} {:<8} {:<10} {:<28} PROBLEMS", "MACHINE", "GROUP", "LISTENER", "STATE", "LAST RUN")?;
    for s in all {
        let switch = match &s.listener {
            Some(l) if l.enabled => "on",
            Some(_) => "off",
            None => "-",
        };
        let last = match s.listener.as_ref().and_then(|l| l.last_run.as_ref()) {
            Some(run) => {
                let outcome = match (run.exit_code, run.timed_out) {
                    (_, true) => "timed out".to_owned(),
                    (Some(code), _) => format!("exit {code}"),
                    _ => "failed".to_owned(),
                };
                format!("{outcome}, {} ms, {}", run.duration_ms, ago(run.started_at_ms))
            }
            None => "never".to_owned(),
        };
        writeln!(
            out,
            "{:<28} {:<12} {:<8} {:<10} {:<28} {}",
            s.machine,
            s.group.as_deref().unwrap_or("-"),
            switch,
            s.listener.as_ref().map_or("-", |l| l.state.as_str()),
            last,
            s.problems.len()
        )?;
        for p in &s.problems {
            writeln!(out, "    {p}")?;
        }
    }
    Ok(())
}

fn ago(ms: u64) -> String {
    let secs = now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// `listener:on` / `listener:off` for one machine or all.
pub fn switch(ctx: &Context, target: &Machines, enabled: bool) -> anyhow::Result<()> {
    let client = ctx.client();
    let machines: Vec<String> = match (target.machine.as_deref(), target.all) {
        (Some(m), false) => vec![m.to_owned()],
        (None, true) => ctx.block_on(client.machines()).map_err(explain)?.items.into_iter().map(|m| m.id).collect(),
        _ => {
            return Err(
                BadInput("error: name one machine with --machine ID, or every machine with --all".into()).into()
            );
        }
    };
    ctx.block_on(async {
        for m in &machines {
            client.set_listener(m, ListenerSwitch { enabled }).await?;
        }
        Ok::<_, gantry_client::ClientError>(())
    })
    .map_err(explain)?;
    if !ctx.output().is_json() {
        let word = if enabled { "on (a run is queued)" } else { "off" };
        for m in &machines {
            println!("listener {word}: {m}");
        }
    }
    Ok(())
}
