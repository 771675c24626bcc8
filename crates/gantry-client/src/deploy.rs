//! `instance:deploy`'s rollout: asks agents to re-run provisioning (no
//! SSH), `batch` nodes at a time, and waits for each node's outcome in the
//! status its agent publishes. A node that fails stops nothing (it is
//! reported); one that does not answer within `timeout` is reported as
//! such, and the next batch starts.
//!
//! Written against [`Fleet`], the two calls it makes ([`Client`]
//! implements it), so that it is tested against a fleet in memory.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use gantry_api::{AgentStatus, DeployOutcome, DeployRequest, now_ms};
use tokio::time::Instant;

use crate::{Client, ClientError};

/// What the rollout needs of the agents.
pub trait Fleet: Sync {
    /// Asks `machine`'s agent to re-run provisioning.
    fn request_deploy(
        &self,
        machine: &str,
        request: &DeployRequest,
    ) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// Every agent's published status (its last finished deploy among it).
    fn statuses(&self) -> impl Future<Output = Result<Vec<AgentStatus>, ClientError>> + Send;
}

impl Fleet for Client {
    async fn request_deploy(&self, machine: &str, request: &DeployRequest) -> Result<(), ClientError> {
        Client::request_deploy(self, machine, request).await.map(drop)
    }

    async fn statuses(&self) -> Result<Vec<AgentStatus>, ClientError> {
        Ok(self.agent_statuses().await?.items)
    }
}

/// One rollout.
#[derive(Debug, Clone, Copy)]
pub struct Rollout<'a> {
    /// The deploy's id; each agent reports it back with its outcome.
    pub id: &'a str,
    /// In this order.
    pub machines: &'a [String],
    /// Nodes at a time (0 is taken as 1).
    pub batch: usize,
    /// How long each batch may take.
    pub timeout: Duration,
    /// How often the statuses are read while a batch runs.
    pub poll: Duration,
}

/// How the deploy went on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResult {
    pub machine: String,
    /// `None`: the node did not answer within the batch's timeout.
    pub outcome: Option<DeployOutcome>,
}

impl NodeResult {
    pub fn ok(&self) -> bool {
        self.outcome.as_ref().is_some_and(|o| o.ok)
    }
}

/// Runs the rollout batch by batch; `on_result` sees each node's result as
/// its batch ends (in the order of `machines`), and all of them are
/// returned. A call the server refuses ends the rollout with that error.
pub async fn deploy<F: Fleet>(
    fleet: &F,
    rollout: &Rollout<'_>,
    mut on_result: impl FnMut(&NodeResult),
) -> Result<Vec<NodeResult>, ClientError> {
    let mut results = Vec::with_capacity(rollout.machines.len());
    for batch in rollout.machines.chunks(rollout.batch.max(1)) {
        for result in deploy_batch(fleet, rollout, batch).await? {
            on_result(&result);
            results.push(result);
        }
    }
    Ok(results)
}

async fn deploy_batch<F: Fleet>(
    fleet: &F,
    rollout: &Rollout<'_>,
    machines: &[String],
) -> Result<Vec<NodeResult>, ClientError> {
    let request = DeployRequest { id: rollout.id.to_owned(), requested_at_ms: now_ms() };
    for machine in machines {
        fleet.request_deploy(machine, &request).await?;
    }
    let deadline = Instant::now() + rollout.timeout;
    let mut done: BTreeMap<String, DeployOutcome> = BTreeMap::new();
    while done.len() < machines.len() && Instant::now() < deadline {
        for status in fleet.statuses().await? {
            let outcome = status.last_deploy.filter(|d| d.id == rollout.id && machines.contains(&status.machine));
            if let Some(outcome) = outcome {
                done.insert(status.machine, outcome);
            }
        }
        if done.len() < machines.len() {
            tokio::time::sleep(rollout.poll.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
    Ok(machines.iter().map(|m| NodeResult { machine: m.clone(), outcome: done.remove(m) }).collect())
}
