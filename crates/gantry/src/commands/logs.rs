//! `gantry logs SERVICE`: a service's output, read from the nodes that run
//! it through the server (which asks each node's agent).

use std::io::Write;

use futures::StreamExt;

use super::service::agents_running;
use crate::BadInput;
use crate::context::{Context, explain};

/// `gantry logs SERVICE [--machine M] [-f] [--tail BYTES]`: the service's
/// log from every node that runs it (one, when following).
pub fn logs(ctx: &Context, service: &str, machine: Option<&str>, follow: bool, tail: u64) -> anyhow::Result<()> {
    let client = ctx.client();
    let agents = ctx.block_on(agents_running(client, service, machine))?;
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
    ctx.block_on(async {
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
