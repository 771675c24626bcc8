//! Scheduled work (issue 16): `nodes:usage`, `alloc:list`, `alloc:show`,
//! `node:drain` and `node:eligible`.

use std::io::Write;

use gantry_api::{AllocReport, Allocation, DesiredState, NodeEligibility, Resources, now_ms};
use gantry_client::fleet::FleetUsage;
use serde::Serialize;

use crate::BadInput;
use crate::context::{Context, explain};
use crate::output::print_table;

fn cpu(r: Resources) -> String {
    format!("{:.2}", r.cpu)
}
fn mem(r: Resources) -> String {
    format!("{}M", r.memory_mb)
}
fn percent(part: f64, whole: f64) -> String {
    if whole <= 0.0 { "-".to_owned() } else { format!("{:.0}%", 100.0 * part / whole) }
}

/// `nodes:usage`: allocatable vs reserved vs used, per node and in total.
pub fn usage(ctx: &Context) -> anyhow::Result<()> {
    let fleet = ctx.block_on(FleetUsage::read(ctx.client())).map_err(explain)?;
    ctx.output().print(&fleet, |out| usage_table(out, &fleet))
}

fn usage_table(out: &mut dyn Write, fleet: &FleetUsage) -> anyhow::Result<()> {
    let mut rows = vec![
        [
            "NODE",
            "CPU ALLOC",
            "CPU RESERVED",
            "CPU USED",
            "MEM ALLOC",
            "MEM RESERVED",
            "MEM USED",
            "ALLOCS",
            "ELIGIBLE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for n in &fleet.nodes {
        rows.push(vec![
            n.machine.clone(),
            cpu(n.allocatable),
            format!("{} ({})", cpu(n.reserved), percent(n.reserved.cpu, n.allocatable.cpu)),
            n.used.map_or("-".into(), cpu),
            mem(n.allocatable),
            format!("{} ({})", mem(n.reserved), percent(n.reserved.memory_mb as f64, n.allocatable.memory_mb as f64)),
            n.used.map_or("-".into(), mem),
            n.allocations.to_string(),
            if n.eligible { "yes" } else { "no" }.into(),
        ]);
    }
    let t = &fleet.total;
    rows.push(vec![
        "TOTAL".into(),
        cpu(t.allocatable),
        format!("{} ({})", cpu(t.reserved), percent(t.reserved.cpu, t.allocatable.cpu)),
        cpu(t.used),
        mem(t.allocatable),
        format!("{} ({})", mem(t.reserved), percent(t.reserved.memory_mb as f64, t.allocatable.memory_mb as f64)),
        mem(t.used),
        fleet.nodes.iter().map(|n| n.allocations).sum::<u32>().to_string(),
        String::new(),
    ]);
    print_table(&rows)?;
    let p = fleet.packing;
    writeln!(
        out,
        "\npacking: reserved work on {} node(s); it would fit on {} (the lower bound)",
        p.nodes_in_use, p.lower_bound
    )?;
    Ok(())
}

/// One allocation with how its agent reports it.
#[derive(Debug, Serialize)]
struct AllocView {
    #[serde(flatten)]
    allocation: Allocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<AllocReport>,
}

fn views(ctx: &Context) -> anyhow::Result<Vec<AllocView>> {
    let client = ctx.client();
    let (allocations, statuses) = ctx
        .block_on(async {
            Ok::<_, gantry_client::ClientError>((client.allocations().await?, client.agent_statuses().await?))
        })
        .map_err(explain)?;
    Ok(allocations
        .items
        .into_iter()
        .map(|allocation| {
            let report = statuses
                .items
                .iter()
                .find(|s| s.machine == allocation.machine)
                .and_then(|s| s.allocations.get(&allocation.id).cloned());
            AllocView { allocation, report }
        })
        .collect())
}

/// `alloc:list [SERVICE] [--node M] [--all]`.
pub fn alloc_list(ctx: &Context, service: Option<&str>, node: Option<&str>, all: bool) -> anyhow::Result<()> {
    let mut views = views(ctx)?;
    views.retain(|v| {
        let a = &v.allocation;
        service.is_none_or(|s| a.service == s)
            && node.is_none_or(|n| a.machine == n)
            && (all || a.desired == DesiredState::Run)
    });
    views.sort_by(|a, b| {
        (&a.allocation.service, a.allocation.index, a.allocation.created_at_ms).cmp(&(
            &b.allocation.service,
            b.allocation.index,
            b.allocation.created_at_ms,
        ))
    });
    ctx.output().listing(
        &views,
        |v| v,
        &["ID", "SERVICE", "NODE", "PORT", "CPU", "MEMORY", "DESIRED", "STATE", "RESTARTS"],
        |v| {
            let a = &v.allocation;
            vec![
                a.id.clone(),
                a.service.clone(),
                a.machine.clone(),
                a.port.to_string(),
                cpu(a.resources),
                mem(a.resources),
                match a.desired {
                    DesiredState::Run => "run".into(),
                    DesiredState::Stop => "stop".into(),
                },
                v.report.as_ref().map_or("unreported".into(), |r| format!("{:?}", r.state).to_lowercase()),
                v.report.as_ref().map_or(String::new(), |r| r.restarts.to_string()),
            ]
        },
        "no allocations (a service with \"count\" is scheduled; `gantry apply` sends definitions)",
    )?;
    // What could not be placed, and why (the scheduler's latest evaluations).
    if !ctx.output().is_json() {
        let jobs = ctx.block_on(ctx.client().jobs()).map_err(explain)?;
        for job in jobs.items.iter().filter(|j| j.pending > 0 && service.is_none_or(|s| j.service == s)) {
            println!(
                "{}: {} pending: {}",
                job.service,
                job.pending,
                job.reason.as_deref().unwrap_or("no reason given")
            );
        }
    }
    Ok(())
}

/// `alloc:show ID`: the allocation, why it is where it is, and its state.
pub fn alloc_show(ctx: &Context, id: &str) -> anyhow::Result<()> {
    let Some(view) = views(ctx)?.into_iter().find(|v| v.allocation.id == id) else {
        return Err(
            BadInput(format!("error: no allocation {id:?}\n = help: `gantry alloc:list --all` shows them")).into()
        );
    };
    ctx.output().print(&view, |out| {
        let a = &view.allocation;
        writeln!(out, "allocation {} of {} (slot {}, version {})", a.id, a.service, a.index, a.version)?;
        writeln!(out, "node:       {} port {}", a.machine, a.port)?;
        writeln!(out, "reserves:   {} CPU, {} memory", cpu(a.resources), mem(a.resources))?;
        match a.desired {
            DesiredState::Run => writeln!(out, "desired:    run")?,
            DesiredState::Stop => {
                writeln!(out, "desired:    stop ({})", a.stop_reason.as_deref().unwrap_or("no reason given"))?
            }
        }
        if let Some(replaced) = &a.replaces {
            writeln!(out, "replaces:   {replaced}")?;
        }
        match &view.report {
            Some(r) => writeln!(
                out,
                "state:      {} for {}s, {} restart(s){}{}",
                format!("{:?}", r.state).to_lowercase(),
                now_ms().saturating_sub(r.since_ms) / 1000,
                r.restarts,
                if r.healthy { ", healthy" } else { "" },
                r.message.as_ref().map_or(String::new(), |m| format!(" ({m})"))
            )?,
            None => writeln!(out, "state:      not reported by the node's agent yet")?,
        }
        let p = &a.placement;
        writeln!(out, "placed:     {} (score {:.3})", p.reason, p.score)?;
        writeln!(out, "why here:   {}", p.explanation)?;
        Ok(())
    })
}

/// `node:drain M` (eligible = false, draining) and `node:eligible M`.
pub fn eligibility(ctx: &Context, machine: &str, eligible: bool) -> anyhow::Result<()> {
    let record = NodeEligibility { machine: machine.to_owned(), eligible, drain: !eligible, updated_at_ms: now_ms() };
    let client = ctx.client();
    let known = ctx.block_on(client.machine(machine));
    match known {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            return Err(BadInput(format!(
                "error: no machine {machine:?}\n = help: `gantry machine:list` shows the connected ones"
            ))
            .into());
        }
        Err(e) => return Err(explain(e)),
    }
    ctx.block_on(client.put_eligibility(&record)).map_err(explain)?;
    ctx.output().print(&record, |out| {
        if eligible {
            writeln!(out, "{machine}: eligible; the scheduler may place work on it again")?;
        } else {
            writeln!(
                out,
                "{machine}: draining; its allocations move elsewhere a few at a time, and no new work goes to it"
            )?;
            writeln!(
                out,
                "  `gantry alloc:list --node {machine}` shows what is left; `gantry node:eligible {machine}` undoes it"
            )?;
        }
        Ok(())
    })
}
