//! `gantry agent`: the node agent (gantry-agent) configured from the
//! command line, running until SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_agent::agent::AgentConfig;
use gantry_agent::lb::LbKind;
use gantry_agent::listener::Throttle;

use super::key_values;
use super::server::shutdown_signal;
use crate::BadInput;
use crate::cli::{AgentArgs, Lb};
use crate::context::{Context, client_tls};

pub fn run(ctx: &Context, args: AgentArgs) -> anyhow::Result<()> {
    let labels: BTreeMap<String, String> = key_values(&args.labels, "KEY=VALUE", "--label region=us-east-1")?;
    if args.lease_ttl < Duration::from_secs(1) {
        return Err(BadInput("error: --lease-ttl must be at least 1s".into()).into());
    }
    let tls = client_tls(&args.tls, &args.server)?;
    let mut config = AgentConfig::new(args.server, args.data_dir);
    config.tls = tls;
    config.machine_id = args.machine_id;
    config.group = args.group;
    config.services = args.services;
    config.address = args.address;
    config.labels = labels;
    config.env_dir = args.env_dir;
    config.provision_command = args.provision_command;
    config.provision_timeout = args.provision_timeout;
    config.throttle = Throttle { min_interval: args.min_interval, max_runs: args.max_runs.max(1), window: args.window };
    config.lease_ttl = args.lease_ttl;
    config.drain = args.drain;
    config.lb = match args.lb {
        Lb::Auto => LbKind::Auto,
        Lb::Haproxy => LbKind::Haproxy,
        Lb::Builtin => LbKind::Builtin,
        Lb::Off => LbKind::Off,
    };
    config.external_lb = args.external_lb;
    config.workdir = args.workdir;
    config.restart_policy.initial = args.restart_delay;
    config.restart_policy.max = args.restart_max_delay.max(args.restart_delay);
    config.api_port = Some(args.api_port);
    config.lb_metrics_port = args.lb_metrics_port;
    config.enable_script_checks = args.enable_script_checks;
    config.keep_releases = usize::from(args.keep_releases);
    config.reserve = args.reserve;
    config.capacity = args.capacity;
    config.token = match (args.token, &args.token_file) {
        (Some(token), _) => Some(token),
        (None, Some(file)) => Some(crate::context::read_token(file)?),
        (None, None) => None,
    }
    .map(gantry_client::Secret::new);
    ctx.block_on(gantry_agent::agent::run(config, shutdown_signal()))?;
    Ok(())
}
