//! What each command does, one module per namespace, each thin over the
//! library crates: it reads the repository or asks the server or AWS,
//! and prints. Every command gets the [`Context`] built once in `main`.
//!
//! - the repository's generated files (`role:create`, `roles:update`,
//!   `packer:create`, `autoscale:create`): `generate`; its views:
//!   `nodes`, `services`, `repo` (`repo:check`)
//! - AWS: `packer`, `autoscale`, `instance` (with `instance:deploy`, which
//!   asks agents), and what they share, `aws`
//! - the stack: `up` (`up`, `status`, `down`), `server`, `agent`, `apply`
//! - the server's clients: `machine`, `service` (`service:hosts|on` and
//!   `service:restart|stop|start`), `listener`, `lb`, `logs`, `resolve`,
//!   `lookup`, `kv`, `watch`
//! - transport security: `tls` (`tls:ca:create`, `tls:cert:create`)
//! - access control: `acl` (`acl:token:*`, `acl:policy:*`)

mod acl;
mod agent;
mod apply;
mod autoscale;
mod aws;
mod generate;
mod instance;
mod kv;
mod lb;
mod listener;
mod logs;
mod lookup;
mod machine;
mod nodes;
mod packer;
mod prometheus;
mod release;
mod repo;
mod resolve;
mod sched;
mod server;
mod service;
mod services;
mod tls;
mod up;
mod watch;

pub use up::stack_around_cwd;

use crate::BadInput;
use crate::cli::Command;
use crate::context::Context;
use crate::repo::open;

pub fn run(ctx: &Context, command: Command) -> anyhow::Result<()> {
    use generate::Kind;
    match command {
        Command::RoleCreate { group, repo } => generate::run(ctx, &open(&repo)?, Kind::Role, group.as_deref()),
        Command::RolesUpdate { group, repo } => generate::run(ctx, &open(&repo)?, Kind::RoleUpdate, group.as_deref()),
        Command::PackerCreate { group, repo } => generate::run(ctx, &open(&repo)?, Kind::Packer, group.as_deref()),
        Command::AutoscaleCreate { group, repo } => {
            generate::run(ctx, &open(&repo)?, Kind::Autoscale, group.as_deref())
        }
        Command::PackerRun { group, repo, aws } => packer::run(ctx, &open(&repo)?, &group, &aws),
        Command::PackerClean { group, keep, dry_run, repo, aws } => {
            packer::clean(ctx, &open(&repo)?, &group, keep, dry_run, &aws)
        }
        Command::PackerDelete { group, dry_run, repo, aws } => {
            packer::delete(ctx, &open(&repo)?, &group, dry_run, &aws)
        }
        Command::AutoscaleRun { group, key, launch, repo } => {
            autoscale::run(ctx, &open(&repo)?, &group, &launch, key.as_deref())
        }
        Command::AutoscaleUpdate { group, key, update, launch, repo } => {
            autoscale::update(ctx, &open(&repo)?, &group, &launch, key.as_deref(), &update)
        }
        Command::AutoscaleStatus { group, repo, aws } => autoscale::status(ctx, &open(&repo)?, group.as_deref(), &aws),
        Command::InstanceCreate { group, create, launch, repo } => {
            instance::create(ctx, &open(&repo)?, &group, &create, &launch)
        }
        Command::InstanceList { group, repo, aws } => instance::list(ctx, &open(&repo)?, group.as_deref(), &aws),
        Command::InstanceDeploy { group, batch, timeout, .. } => {
            instance::deploy(ctx, group.as_deref(), batch, timeout)
        }
        Command::NodesList { repo } => nodes::list(ctx, &open(&repo)?),
        Command::NodesShow { group, repo } => nodes::show(ctx, &open(&repo)?, &group),
        Command::ServicesList { repo } => services::list(ctx, &open(&repo)?),
        Command::ServicesShow { service, repo } => services::show(ctx, &open(&repo)?, &service),
        Command::RepoCheck { repo } => repo::check(ctx, &open(&repo)?),
        Command::Up { dir, detach, timeout, ha } => up::up(ctx, dir, detach, timeout, ha),
        Command::Status { dir, .. } => up::status(ctx, dir),
        Command::Alerts { dir, .. } => prometheus::alerts(ctx, dir),
        Command::PrometheusConfig {
            out,
            server,
            token_file,
            ca_cert,
            client_cert,
            client_key,
            alertmanager,
            scrape_interval,
            repo,
        } => {
            let given = prometheus::Given {
                server,
                token_file,
                ca_cert,
                client_cert: client_cert.zip(client_key),
                alertmanager,
                scrape_interval,
            };
            prometheus::config(ctx, &open(&repo)?, &out, given)
        }
        Command::Down { dir, purge } => up::down(dir, purge),
        Command::Server(args) => server::serve(ctx, &args),
        Command::Apply { dry_run, repo, .. } => {
            let opened = crate::repo::open_dir(repo.as_deref())?;
            apply::apply(ctx, &opened, dry_run)
        }
        Command::Agent(args) => agent::run(ctx, *args),
        Command::Resolve { service, machine, show_secrets, .. } => {
            resolve::resolve(ctx, &service, machine.as_deref(), show_secrets)
        }
        Command::ListenerStatus { machine, .. } => listener::status(ctx, machine.as_deref()),
        Command::ListenerOn { target, .. } => listener::switch(ctx, &target, true),
        Command::ListenerOff { target, .. } => listener::switch(ctx, &target, false),
        Command::ServiceRestart { service, machine, .. } => {
            service::control(ctx, &service, machine.as_deref(), service::Action::Restart)
        }
        Command::ServiceStop { service, machine, .. } => {
            service::control(ctx, &service, machine.as_deref(), service::Action::Stop)
        }
        Command::ServiceStart { service, machine, .. } => {
            service::control(ctx, &service, machine.as_deref(), service::Action::Start)
        }
        Command::ServiceHosts { service, wheres, .. } => service::hosts(ctx, &service, &wheres),
        Command::ServiceOn { machine, .. } => service::on(ctx, &machine),
        Command::Logs { service, machine, follow, tail, .. } => {
            logs::logs(ctx, &service, machine.as_deref(), follow, tail)
        }
        Command::LbStatus { machine, .. } => lb::status(ctx, machine.as_deref()),
        Command::MachineList { .. } => machine::list(ctx),
        Command::MachineShow { id, .. } => machine::show(ctx, &id),
        Command::NodesUsage { .. } => sched::usage(ctx),
        Command::JobPlan { service, repo, .. } => {
            let opened = crate::repo::open_dir(repo.as_deref())?;
            sched::job_plan(ctx, &opened, &service)
        }
        Command::AllocList { service, node, all, .. } => {
            sched::alloc_list(ctx, service.as_deref(), node.as_deref(), all)
        }
        Command::AllocShow { id, .. } => sched::alloc_show(ctx, &id),
        Command::Deploy { service, artifact, message, detach, timeout, repo, .. } => {
            let opened = crate::repo::open_dir(repo.as_deref())?;
            let args =
                release::DeployArgs { service: &service, artifact: artifact.as_deref(), message, detach, timeout };
            release::deploy(ctx, &opened, args)
        }
        Command::DeployHistory { service, .. } => release::history(ctx, &service),
        Command::DeployShow { service, release, .. } => release::show(ctx, &service, &release),
        Command::DeployStatus { service, follow, timeout, .. } => release::status(ctx, &service, follow, timeout),
        Command::DeployPromote { service, .. } => release::promote_or_abort(ctx, &service, true),
        Command::DeployAbort { service, .. } => release::promote_or_abort(ctx, &service, false),
        Command::DeployRollback { service, to, detach, timeout, .. } => {
            release::rollback(ctx, &service, to.as_deref(), detach, timeout)
        }
        Command::ReleasesOn { machine, .. } => release::on(ctx, &machine),
        Command::NodeDrain { machine, detach, timeout, .. } => sched::drain(ctx, &machine, detach, timeout),
        Command::NodeEligible { machine, .. } => sched::eligibility(ctx, &machine, true),
        Command::Lookup { service, wheres, .. } => lookup::lookup(ctx, &service, &wheres),
        Command::KvGet { key, .. } => kv::get(ctx, &key),
        Command::KvPut { key, value, cas, .. } => kv::put(ctx, &key, &value, cas),
        Command::KvDel { key, .. } => kv::del(ctx, &key),
        Command::Watch { prefix, store, from, .. } => watch::watch(ctx, &prefix, store, from),
        Command::AclTokenCreate { policies, agent, federation, services, name, ttl, secret_file, .. } => {
            let agent = agent.map(|machine| gantry_api::AgentIdentity { machine, federation, services });
            let ttl_secs = ttl.map(|ttl| ttl.as_secs().max(1));
            let request = gantry_api::TokenRequest { name, policies, agent, ttl_secs };
            acl::token_create(ctx, &request, secret_file.as_deref())
        }
        Command::AclTokenList { .. } => acl::token_list(ctx),
        Command::AclTokenRevoke { accessor, .. } => acl::token_revoke(ctx, &accessor),
        Command::AclPolicyCreate { name, read, write, deny, federations, description, file, .. } => {
            let rules = [
                (gantry_api::Access::Read, read),
                (gantry_api::Access::Write, write),
                (gantry_api::Access::Deny, deny),
            ]
            .into_iter()
            .flat_map(|(access, prefixes)| prefixes.into_iter().map(move |prefix| gantry_api::Rule { prefix, access }))
            .collect();
            let policy = gantry_api::Policy { name, description, rules, federations };
            acl::policy_create(ctx, policy, file.as_deref())
        }
        Command::AclPolicyList { .. } => acl::policy_list(ctx),
        Command::AclPolicyShow { name, .. } => acl::policy_show(ctx, &name),
        Command::TlsCaCreate { tls, name, valid_for } => tls::ca_create(ctx, &tls.dir, &name, valid_for),
        Command::TlsCertCreate { name, role, ips, dns, valid_for, tls } => {
            let role = if role.server {
                gantry_tls::Role::Server
            } else if role.agent {
                gantry_tls::Role::Agent
            } else if role.metrics {
                gantry_tls::Role::Metrics
            } else {
                gantry_tls::Role::Client
            };
            let request = gantry_tls::CertRequest { role, name, ips, dns, valid_for, not_before: None };
            tls::cert_create(ctx, &tls.dir, &request)
        }
    }
}

/// `KEY=VALUE` arguments; one without `=` is bad input showing `example`.
fn key_values<C: FromIterator<(String, String)>>(items: &[String], form: &str, example: &str) -> anyhow::Result<C> {
    items
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| BadInput(format!("error: {p:?} is not {form}\n = help: write {example}")).into())
        })
        .collect()
}

/// `PROPERTY=VALUE` filters of instances.
fn filters(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    key_values(pairs, "PROPERTY=VALUE", "master=true")
}
