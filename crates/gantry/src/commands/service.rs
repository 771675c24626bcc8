//! `service:*`: a service's instances (`service:hosts`, and `service:on`
//! a machine), and its processes on the nodes (`service:restart`,
//! `service:stop`, `service:start`): requests written to each agent's
//! control keys, then confirmed in the status the agents publish.

use std::io::Write;
use std::time::{Duration, Instant};

use gantry_api::{AgentStatus, Instance, ProcState, ProcessStatus, ServiceControl, now_ms};
use gantry_client::Client;
use serde::Serialize;

use super::filters;
use crate::BadInput;
use crate::context::{Context, explain};

/// `service:hosts SERVICE [--where P=V]`: the service's instances.
pub fn hosts(ctx: &Context, service: &str, wheres: &[String]) -> anyhow::Result<()> {
    let listing = ctx.block_on(ctx.client().service_instances(service, &filters(wheres)?)).map_err(explain)?;
    print_instances(ctx, &listing.items)
}

/// `service:on MACHINE`: the instances a machine runs.
pub fn on(ctx: &Context, machine: &str) -> anyhow::Result<()> {
    let listing = ctx.block_on(ctx.client().machine_instances(machine)).map_err(explain)?;
    print_instances(ctx, &listing.items)
}

fn print_instances(ctx: &Context, instances: &[Instance]) -> anyhow::Result<()> {
    ctx.output().print(instances, |out| instances_table(out, instances))
}

fn instances_table(out: &mut dyn Write, instances: &[Instance]) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<12} {:<24} {:<20} {:<22} {:<8} {:<12} PROPERTIES",
        "SERVICE", "INSTANCE", "MACHINE", "ADDRESS", "HEALTH", "FEDERATION"
    )?;
    for i in instances {
        let props: Vec<String> = i.properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            out,
            "{:<12} {:<24} {:<20} {:<22} {:<8} {:<12} {}",
            i.service,
            i.id,
            i.machine,
            format!("{}:{}", i.address, i.port),
            i.health.as_str(),
            i.federation,
            props.join(",")
        )?;
    }
    Ok(())
}

/// What `service:*` asks of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Restart,
    Stop,
    Start,
}

/// How long `service:*` waits to see its request carried out.
const CONFIRM: Duration = Duration::from_secs(15);

/// The agents running `service` (only `machine`'s when given); an error
/// that says so when there are none.
pub(super) async fn agents_running(
    client: &Client,
    service: &str,
    machine: Option<&str>,
) -> anyhow::Result<Vec<AgentStatus>> {
    let mut all = client.agent_statuses().await.map_err(explain)?.items;
    all.retain(|s| s.services.iter().any(|id| id == service) && machine.is_none_or(|m| s.machine == m));
    if all.is_empty() {
        let where_ = machine.map_or("any node".to_owned(), |m| format!("machine {m}"));
        return Err(BadInput(format!(
            "error: no agent runs service {service:?} on {where_}\n = help: `gantry listener:status` lists the agents and `gantry service:hosts {service}` its instances"
        ))
        .into());
    }
    Ok(all)
}

/// `gantry service:restart|stop|start SERVICE [--machine M]`: asks each
/// agent running it, then waits (up to 15 s) to see it done.
pub fn control(ctx: &Context, service: &str, machine: Option<&str>, action: Action) -> anyhow::Result<()> {
    let client = ctx.client();
    let agents = ctx.block_on(agents_running(client, service, machine))?;
    let request_id = format!("{:x}", now_ms());
    let results = ctx.block_on(async {
        for agent in &agents {
            let current = client.service_control(&agent.machine, service).await?;
            let restart = current.and_then(|c| c.restart);
            let control = match action {
                Action::Restart => ServiceControl { running: true, restart: Some(request_id.clone()) },
                Action::Stop => ServiceControl { running: false, restart },
                Action::Start => ServiceControl { running: true, restart },
            };
            client.put_service_control(&agent.machine, service, &control).await?;
        }
        Ok::<_, gantry_client::ClientError>(confirm(client, service, &agents, action).await)
    });
    let results = results.map_err(explain)?;
    ctx.output().print(&results, |out| {
        for Confirmation(machine, done, state) in &results {
            let word = if *done { "done" } else { "NOT CONFIRMED" };
            writeln!(out, "{machine:<28} {word:<14} {state}")?;
        }
        Ok(())
    })?;
    let late = results.iter().filter(|c| !c.1).count();
    if late > 0 {
        anyhow::bail!(
            "{late} of {} node(s) did not confirm within {CONFIRM:?}: see `gantry logs {service}`",
            results.len()
        );
    }
    Ok(())
}

/// One node's answer to `service:*`: its machine, whether the request was
/// seen carried out, and the process's state (`--json` prints it as the
/// array `[machine, done, state]`).
#[derive(Debug, Serialize)]
struct Confirmation(String, bool, String);

/// Waits until each agent's status shows `action` carried out: a new pid or
/// more restarts (restart), state stopped (stop), running (start).
async fn confirm(client: &Client, service: &str, before: &[AgentStatus], action: Action) -> Vec<Confirmation> {
    let process = |s: &AgentStatus| s.processes.get(service).and_then(|p| p.process.clone());
    let done = |old: Option<&ProcessStatus>, new: &ProcessStatus| match action {
        Action::Restart => {
            new.state == ProcState::Running && old.is_none_or(|old| new.pid != old.pid || new.restarts != old.restarts)
        }
        Action::Stop => new.state == ProcState::Stopped,
        Action::Start => new.state == ProcState::Running,
    };
    let deadline = Instant::now() + CONFIRM;
    let mut results: Vec<Confirmation> =
        before.iter().map(|s| Confirmation(s.machine.clone(), false, String::new())).collect();
    loop {
        let now = client.agent_statuses().await.map(|l| l.items).unwrap_or_default();
        for Confirmation(machine, ok, state) in &mut results {
            let old = before.iter().find(|s| &s.machine == machine).and_then(process);
            if let Some(new) = now.iter().find(|s| &s.machine == machine).and_then(process) {
                *ok = done(old.as_ref(), &new);
                *state = describe(&new);
            }
        }
        if results.iter().all(|c| c.1) || Instant::now() > deadline {
            return results;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(process: &ProcessStatus) -> String {
    let mut text = process.state.as_str().to_owned();
    if let Some(pid) = process.pid {
        text.push_str(&format!(", pid {pid}"));
    }
    if process.restarts > 0 {
        text.push_str(&format!(", {} restart(s)", process.restarts));
    }
    text
}
