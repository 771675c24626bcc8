//! Deploys (issue 17): what a service definition says about its releases:
//! the `artifact` `gantry deploy` packs, the `deploy` hooks run around a
//! switch, the `shutdown_delay` an instance drains for, and the `update`
//! stanza its rollouts follow (defaults as Nomad's, documented in the
//! README's "Deploys").

use std::time::Duration;

use serde::Serialize;

use crate::decode::{self, get};
use crate::diagnostic::{Diagnostic, Sink};
use crate::json::{Json, Member};

/// The service keys of this module.
pub const DEPLOY_KEYS: &[&str] = &["artifact", "deploy", "shutdown_delay", "update"];
const ARTIFACT_KEYS: &[&str] = &["path"];
const HOOK_KEYS: &[&str] = &["pre", "post"];
const UPDATE_KEYS: &[&str] = &["max_parallel", "min_healthy_time", "healthy_deadline", "canary", "auto_revert"];

/// How a service is deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deploy {
    /// The directory or archive `gantry deploy` packs, relative to the repository.
    pub artifact: Option<String>,
    /// Run in the new release's directory before the switch.
    pub pre: Option<String>,
    /// Run after the new process passed `min_healthy_time`, before it
    /// returns to rotation.
    pub post: Option<String>,
    /// Between withdrawing an instance from the balancers and stopping it.
    #[serde(with = "crate::service::duration_text")]
    pub shutdown_delay: Duration,
    pub update: Update,
}

/// The `update` stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Update {
    /// Nodes switched at once; never all of a service's nodes when it has
    /// more than one (one keeps serving while the others switch).
    pub max_parallel: u32,
    /// How long checks must pass before a node counts as healthy.
    #[serde(with = "crate::service::duration_text")]
    pub min_healthy_time: Duration,
    /// A node not healthy this long after its switch fails the rollout.
    #[serde(with = "crate::service::duration_text")]
    pub healthy_deadline: Duration,
    /// Nodes switched before the rollout waits for `deploy:promote`; 0: none.
    pub canary: u32,
    /// On failure, switched nodes go back to the stable release.
    pub auto_revert: bool,
}

impl Update {
    /// How many of a service's `nodes` switch at once: `max_parallel`, but
    /// never all of them when there is more than one. A switching node is
    /// out of rotation (withdrawn, draining, starting, proving itself for
    /// `min_healthy_time`), so one that has not moved yet, or has moved and
    /// passed, keeps serving: `max_parallel: 20` on 20 nodes moves 19, then
    /// the last.
    pub fn moving_at_once(&self, nodes: usize) -> usize {
        (self.max_parallel as usize).min(nodes.saturating_sub(1)).max(1)
    }
}

impl Default for Update {
    fn default() -> Update {
        Update {
            max_parallel: 1,
            min_healthy_time: Duration::from_secs(5),
            healthy_deadline: Duration::from_secs(120),
            canary: 0,
            auto_revert: true,
        }
    }
}

impl Default for Deploy {
    fn default() -> Deploy {
        Deploy {
            artifact: None,
            pre: None,
            post: None,
            shutdown_delay: Deploy::DEFAULT_SHUTDOWN_DELAY,
            update: Update::default(),
        }
    }
}

impl Deploy {
    pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(2);
}

/// A duration written as text (`"5s"`, `"500ms"`); zero only if `zero_ok`.
pub(crate) fn duration(key: &str, value: &Json, zero_ok: bool, sink: &mut Sink) -> Option<Duration> {
    let text = decode::string(key, value, sink)?;
    match humantime::parse_duration(&text) {
        Ok(d) if zero_ok || !d.is_zero() => Some(d),
        _ => {
            sink.push(
                Diagnostic::new(format!("\"{key}\" is not a duration: \"{text}\""))
                    .at(value.span)
                    .help("write a duration such as \"500ms\", \"2s\" or \"1m\""),
            );
            None
        }
    }
}

/// Reads `artifact`, `deploy`, `shutdown_delay` and `update`.
pub(crate) fn parse_deploy(members: &[Member], sink: &mut Sink) -> Deploy {
    let mut deploy = Deploy::default();
    if let Some(value) = get(members, "artifact")
        && let Some(fields) = decode::object("artifact", value, sink)
    {
        decode::check_keys(fields, ARTIFACT_KEYS, "\"artifact\"", sink);
        match get(fields, "path").and_then(|v| decode::string("path", v, sink).map(|p| (v, p))) {
            Some((v, path)) if path.trim().is_empty() || path.split('/').any(|s| s == "..") => sink.push(
                Diagnostic::new(format!("\"artifact.path\" must name a path inside the repository, found \"{path}\""))
                    .at(v.span)
                    .help("write the directory or archive to deploy, relative to the repository: \"dist/api\""),
            ),
            Some((_, path)) => deploy.artifact = Some(path),
            None => sink.push(
                Diagnostic::new("\"artifact\" has no \"path\"")
                    .at(value.span)
                    .help("write \"artifact\": {\"path\": \"dist/api\"} (a directory or a .tar archive)"),
            ),
        }
    }
    if let Some(value) = get(members, "deploy")
        && let Some(fields) = decode::object("deploy", value, sink)
    {
        decode::check_keys(fields, HOOK_KEYS, "\"deploy\"", sink);
        let hook = |key: &str, sink: &mut Sink| {
            let v = get(fields, key)?;
            let text = decode::string(key, v, sink)?;
            if text.trim().is_empty() {
                sink.push(
                    Diagnostic::new(format!("\"deploy.{key}\" is empty"))
                        .at(v.span)
                        .help("write a shell command (\"./bin/migrate\"), or leave the hook out"),
                );
                return None;
            }
            Some(text)
        };
        deploy.pre = hook("pre", sink);
        deploy.post = hook("post", sink);
    }
    if let Some(value) = get(members, "shutdown_delay") {
        deploy.shutdown_delay = duration("shutdown_delay", value, true, sink).unwrap_or(deploy.shutdown_delay);
    }
    if let Some(value) = get(members, "update")
        && let Some(fields) = decode::object("update", value, sink)
    {
        decode::check_keys(fields, UPDATE_KEYS, "\"update\"", sink);
        let update = &mut deploy.update;
        if let Some(v) = get(fields, "max_parallel")
            && let Some(n) = decode::integer("max_parallel", v, 10_000, sink)
        {
            if n == 0 {
                sink.push(
                    Diagnostic::new("\"max_parallel\" must be at least 1")
                        .at(v.span)
                        .help("write how many nodes switch at once: 1 (the default) is one at a time"),
                );
            } else {
                update.max_parallel = n as u32;
            }
        }
        if let Some(v) = get(fields, "min_healthy_time") {
            update.min_healthy_time = duration("min_healthy_time", v, true, sink).unwrap_or(update.min_healthy_time);
        }
        if let Some(v) = get(fields, "healthy_deadline") {
            update.healthy_deadline = duration("healthy_deadline", v, false, sink).unwrap_or(update.healthy_deadline);
        }
        if let Some(v) = get(fields, "canary") {
            update.canary = decode::integer("canary", v, 10_000, sink).map_or(update.canary, |n| n as u32);
        }
        if let Some(v) = get(fields, "auto_revert") {
            update.auto_revert = decode::boolean("auto_revert", v, sink).unwrap_or(update.auto_revert);
        }
        if update.min_healthy_time >= update.healthy_deadline {
            sink.push(
                Diagnostic::new(format!(
                    "\"min_healthy_time\" ({}) is not shorter than \"healthy_deadline\" ({})",
                    humantime::format_duration(update.min_healthy_time),
                    humantime::format_duration(update.healthy_deadline)
                ))
                .at(value.span)
                .help("a node must be able to pass: make min_healthy_time < healthy_deadline"),
            );
        }
    }
    deploy
}
