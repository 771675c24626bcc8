//! The commands about services as they run on nodes: `logs`,
//! `service:restart` / `service:stop` / `service:start` and `lb:status`.
//! All go through the server: agents publish their state there and take
//! requests from their control keys (`kv/agents/<machine>/service/<id>`).

use std::io::Write;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry_api::{AgentStatus, ProcState, ProcessStatus, ServiceControl};
use gantry_client::Client;

use crate::BadInput;
use crate::agents::statuses;
use crate::remote::{ServerArgs, explain, print_json, runtime};
use gantry_api::now_ms;

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
async fn agents_running(client: &Client, service: &str, machine: Option<&str>) -> anyhow::Result<Vec<AgentStatus>> {
    let mut all = statuses(client).await.map_err(explain)?;
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
pub fn control(server: &ServerArgs, service: &str, machine: Option<&str>, action: Action) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let rt = runtime()?;
    let agents = rt.block_on(agents_running(&client, service, machine))?;
    let request_id = format!("{:x}", now_ms());
    let results = rt.block_on(async {
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
        Ok::<_, gantry_client::ClientError>(confirm(&client, service, &agents, action).await)
    });
    let results = results.map_err(explain)?;
    if server.json {
        return print_json(&results);
    }
    let mut out = std::io::stdout().lock();
    let mut late = 0;
    for (machine, done, state) in &results {
        late += usize::from(!done);
        let word = if *done { "done" } else { "NOT CONFIRMED" };
        writeln!(out, "{machine:<28} {word:<14} {state}")?;
    }
    if late > 0 {
        anyhow::bail!(
            "{late} of {} node(s) did not confirm within {CONFIRM:?}: see `gantry logs {service}`",
            results.len()
        );
    }
    Ok(())
}

/// Waits until each agent's status shows `action` carried out: a new pid or
/// more restarts (restart), state stopped (stop), running (start).
async fn confirm(
    client: &Client,
    service: &str,
    before: &[AgentStatus],
    action: Action,
) -> Vec<(String, bool, String)> {
    let process = |s: &AgentStatus| s.processes.get(service).and_then(|p| p.process.clone());
    let done = |old: Option<&ProcessStatus>, new: &ProcessStatus| match action {
        Action::Restart => {
            new.state == ProcState::Running && old.is_none_or(|old| new.pid != old.pid || new.restarts != old.restarts)
        }
        Action::Stop => new.state == ProcState::Stopped,
        Action::Start => new.state == ProcState::Running,
    };
    let deadline = Instant::now() + CONFIRM;
    let mut results: Vec<(String, bool, String)> =
        before.iter().map(|s| (s.machine.clone(), false, String::new())).collect();
    loop {
        let now = statuses(client).await.unwrap_or_default();
        for (machine, ok, state) in &mut results {
            let old = before.iter().find(|s| &s.machine == machine).and_then(process);
            if let Some(new) = now.iter().find(|s| &s.machine == machine).and_then(process) {
                *ok = done(old.as_ref(), &new);
                *state = describe(&new);
            }
        }
        if results.iter().all(|(_, ok, _)| *ok) || Instant::now() > deadline {
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

/// `gantry logs SERVICE [--machine M] [-f] [--tail BYTES]`: the service's
/// log from every node that runs it (one, when following).
pub fn logs(server: &ServerArgs, service: &str, machine: Option<&str>, follow: bool, tail: u64) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let rt = runtime()?;
    let agents = rt.block_on(agents_running(&client, service, machine))?;
    if follow && agents.len() > 1 {
        let names: Vec<&str> = agents.iter().map(|a| a.machine.as_str()).collect();
        return Err(BadInput(format!(
            "error: {service} runs on {} nodes ({}); follow one\n = help: add --machine {}",
            agents.len(),
            names.join(", "),
            names[0]
        ))
        .into());
    }
    rt.block_on(async {
        for agent in &agents {
            if agents.len() > 1 {
                println!("==> {} on {} <==", service, agent.machine);
            }
            let mut stream = client.agent_logs(&agent.machine, service, Some(tail), follow).await.map_err(explain)?;
            let mut out = std::io::stdout();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(explain)?;
                out.write_all(&chunk)?;
                out.flush()?;
            }
        }
        Ok(())
    })
}

/// One node's balancer, as `lb:status --json` prints it.
#[derive(serde::Serialize)]
struct MachineLb<'a> {
    machine: &'a str,
    lb: Option<&'a gantry_api::LbStatus>,
}

/// `gantry lb:status [--machine M]`: each node's balancer, its frontends
/// and their backends.
pub fn lb_status(server: &ServerArgs, machine: Option<&str>) -> anyhow::Result<()> {
    let client = Client::new(&server.url);
    let rt = runtime()?;
    let mut all = rt.block_on(statuses(&client)).map_err(explain)?;
    all.retain(|s| machine.is_none_or(|m| s.machine == m));
    // Every instance of the fronted services, to show the ones out of rotation too.
    let instances = rt.block_on(client.instances_with(&[])).map_err(explain)?.items;
    if server.json {
        let view: Vec<MachineLb> = all.iter().map(|s| MachineLb { machine: &s.machine, lb: s.lb.as_ref() }).collect();
        return print_json(&view);
    }
    let mut out = std::io::stdout().lock();
    for s in &all {
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
