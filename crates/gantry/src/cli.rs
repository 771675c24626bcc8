//! Command-line grammar (`gantry <namespace>:<action> [group] [--flags]`, seed 004) and dispatch.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::agents::AgentArgs;
use crate::aws::{CreateArgs, LaunchArgs, UpdateArgs};
use crate::remote::{ServeArgs, ServerArgs};
use crate::{agents, apply, aws, generate, remote, repo, running, show, up};

/// Gantry: one declarative repository becomes running infrastructure.
///
/// Commands take the form `gantry <namespace>:<action> [group]`. They find
/// the repository (the directory holding nodes.json) from the current
/// directory upwards, or from --repo.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, propagate_version = true, max_term_width = 100)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command that reads the repository.
#[derive(Debug, clap::Args)]
pub struct RepoArgs {
    /// The repository: the directory holding nodes.json [default: the current
    /// directory or the nearest parent with a nodes.json]
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    pub json: bool,
}

/// Options of the commands that call AWS. Credentials and region come from
/// the environment or the AWS profile, as for every AWS tool.
#[derive(Debug, clap::Args)]
pub struct AwsArgs {
    /// An AWS-compatible endpoint (moto in tests), for Gantry and for packer
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,
}

/// Which agents a control command addresses.
#[derive(Debug, clap::Args)]
pub struct Machines {
    /// One machine
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    pub machine: Option<String>,
    /// Every machine in the inventory
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the Chef role roles/<group>.json for one group, or every group.
    #[command(name = "role:create")]
    RoleCreate {
        /// The node group [default: every group]
        group: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Rewrite existing roles from nodes.json (every existing role when no group is named).
    #[command(name = "roles:update")]
    RolesUpdate {
        /// The node group [default: every group that has a role file]
        group: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Write the packer template packer/<group>.json for one group, or every group.
    #[command(name = "packer:create")]
    PackerCreate {
        /// The node group [default: every group]
        group: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Build the group's AMI: `packer build` on packer/<group>.json, tag the
    /// AMI (group, git commit), record it in .gantry/amis/<group>.json and
    /// print its id.
    #[command(name = "packer:run")]
    PackerRun {
        group: String,
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Keep the group's newest N AMIs; deregister the rest with their snapshots.
    #[command(name = "packer:clean")]
    PackerClean {
        group: String,
        /// How many AMIs to keep (newest by creation date, then name)
        #[arg(short = 'n', value_name = "N", required = true)]
        keep: usize,
        /// List what would be deregistered, change nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Deregister every AMI of the group (with snapshots) and remove packer/<group>.json.
    #[command(name = "packer:delete")]
    PackerDelete {
        group: String,
        /// List what would be deregistered and removed, change nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Write the autoscaling dna dna/asg/<group>.json, and the role it runs.
    #[command(name = "autoscale:create")]
    AutoscaleCreate {
        /// The node group [default: every group with "autoscale" set]
        group: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Launch the group's autoscaling group <group>-v1, tagged group:<group> and
    /// sized from nodes.json, from a launch template (newest AMI, instance type,
    /// security groups, user data starting `gantry agent` with
    /// dna/asg/<group>.json); refuses if the group has one.
    #[command(name = "autoscale:run")]
    AutoscaleRun {
        /// The node group
        group: String,
        /// A private key file whose public key the nodes accept (imported as the
        /// key pair named after the file, or that key pair reused) [default: no key pair]
        #[arg(long, value_name = "PATH")]
        key: Option<PathBuf>,
        #[command(flatten)]
        launch: LaunchArgs,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Replace the group's autoscaling group with the next generation, launched
    /// as nodes.json says now: wait until its nodes are in service, let other
    /// nodes update, delete the old group; on failure delete the new one.
    #[command(name = "autoscale:update")]
    AutoscaleUpdate {
        /// The node group
        group: String,
        /// A private key file, as for autoscale:run [default: no key pair]
        #[arg(long, value_name = "PATH")]
        key: Option<PathBuf>,
        #[command(flatten)]
        update: UpdateArgs,
        #[command(flatten)]
        launch: LaunchArgs,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// The autoscaling groups of a group (or of every group) and their nodes in service.
    #[command(name = "autoscale:status")]
    AutoscaleStatus {
        /// The node group [default: every group]
        group: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Launch one node of the group outside autoscaling, tagged group and Name,
    /// and write its dna dna/instance/<group>-<instance-id>.json.
    #[command(name = "instance:create")]
    InstanceCreate {
        /// The node group
        group: String,
        #[command(flatten)]
        create: CreateArgs,
        #[command(flatten)]
        launch: LaunchArgs,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// The instances of a group (or of every group) in AWS, autoscaled or not.
    #[command(name = "instance:list")]
    InstanceList {
        /// The node group [default: every group]
        group: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// List node groups.
    #[command(name = "nodes:list")]
    NodesList {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Show one node group, fully merged over __base__.
    #[command(name = "nodes:show")]
    NodesShow {
        group: String,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// List service definitions.
    #[command(name = "services:list")]
    ServicesList {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Show one service definition and where each requirement comes from.
    #[command(name = "services:show")]
    ServicesShow {
        service: String,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Check the whole repository and report every problem.
    #[command(name = "repo:check")]
    RepoCheck {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// The whole stack of a repository on this machine: a server, a node per
    /// group member (node_min, at least 1) with its services, load balancers;
    /// returns when everything is healthy with --detach.
    Up {
        /// The repository [default: the current directory or the nearest parent with a nodes.json]
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Return once everything is healthy, leaving the stack running (last line: the public URL)
        #[arg(short, long)]
        detach: bool,
        /// How long to wait for everything to be healthy
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: std::time::Duration,
    },
    /// What `gantry up` runs: nodes, services, instances, health, listeners, load balancers.
    Status {
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Stop everything `gantry up` started.
    Down {
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Also remove the stack's state (DIR/.gantry: store, node data, logs)
        #[arg(long)]
        purge: bool,
    },
    /// Run the API server: inventory, KV, leases and watches over the store.
    Server(ServeArgs),
    /// Upload the repository's groups, services and datastores to the server
    /// (what agents run and resolve from); only changes are written.
    Apply {
        /// Print what would change without changing it
        #[arg(long)]
        dry_run: bool,
        /// The repository [default: the current directory or the nearest parent with a nodes.json]
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run the node agent: register this machine and its group's services,
    /// resolve requirements into env files, re-provision on changes.
    Agent(Box<AgentArgs>),
    /// Show what a service's requirements resolve to (passwords in URLs masked).
    Resolve {
        service: String,
        /// Resolve as the agent of this machine does (providers are spread per machine)
        #[arg(long, value_name = "ID")]
        machine: Option<String>,
        /// Print passwords in URLs as they are
        #[arg(long)]
        show_secrets: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Each agent's listener: on or off, running or idle, the last run's outcome.
    #[command(name = "listener:status")]
    ListenerStatus {
        /// Only this machine
        #[arg(long, value_name = "ID")]
        machine: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Turn a node's listener on (a provision run is queued at once).
    #[command(name = "listener:on")]
    ListenerOn {
        #[command(flatten)]
        target: Machines,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Turn a node's listener off: changes are noted, nothing runs.
    #[command(name = "listener:off")]
    ListenerOff {
        #[command(flatten)]
        target: Machines,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Ask a group's agents to re-run provisioning (no SSH), N nodes at a time.
    #[command(name = "instance:deploy")]
    InstanceDeploy {
        /// The group [default: every agent]
        group: Option<String>,
        /// Nodes at a time
        #[arg(short = 'n', default_value_t = 1, value_name = "N")]
        batch: usize,
        /// How long to wait for each batch
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: std::time::Duration,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Restart a service's process on every node that runs it (or one).
    #[command(name = "service:restart")]
    ServiceRestart {
        service: String,
        /// Only on this machine
        #[arg(long, value_name = "ID")]
        machine: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop a service's process (its instance fails its health and leaves rotation) until service:start.
    #[command(name = "service:stop")]
    ServiceStop {
        service: String,
        /// Only on this machine
        #[arg(long, value_name = "ID")]
        machine: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Start a service stopped with service:stop.
    #[command(name = "service:start")]
    ServiceStart {
        service: String,
        /// Only on this machine
        #[arg(long, value_name = "ID")]
        machine: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A service's output (stdout and stderr), read from the nodes through the server.
    Logs {
        service: String,
        /// Only this machine's
        #[arg(long, value_name = "ID")]
        machine: Option<String>,
        /// Keep printing what it writes
        #[arg(short, long)]
        follow: bool,
        /// Bytes of history to print first
        #[arg(long, default_value_t = 16 * 1024, value_name = "BYTES")]
        tail: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Each node's load balancer: its frontends and their healthy backends.
    #[command(name = "lb:status")]
    LbStatus {
        /// Only this machine
        #[arg(long, value_name = "ID")]
        machine: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List machines in the inventory.
    #[command(name = "machine:list")]
    MachineList {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one machine with its facts and labels.
    #[command(name = "machine:show")]
    MachineShow {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Hosts for a service: its instances, filtered by properties.
    #[command(name = "service:hosts")]
    ServiceHosts {
        service: String,
        /// Only instances with this property (repeatable): --where master=true
        #[arg(long = "where", value_name = "PROPERTY=VALUE")]
        wheres: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Services on a host: the instances a machine runs.
    #[command(name = "service:on")]
    ServiceOn {
        machine: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One healthy instance of a service (get_host): prints ADDRESS:PORT.
    Lookup {
        service: String,
        /// Properties the instance must have: master=true environment=production
        #[arg(value_name = "PROPERTY=VALUE")]
        wheres: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a key's value (exit 1 if it does not exist).
    #[command(name = "kv:get")]
    KvGet {
        key: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Set a key; prints nothing on success.
    #[command(name = "kv:put")]
    KvPut {
        key: String,
        value: String,
        /// Only if the key's mod revision is REV (0: only if it does not exist); exit 1 otherwise
        #[arg(long, value_name = "REV")]
        cas: Option<u64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a key.
    #[command(name = "kv:del")]
    KvDel {
        key: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Follow every change under a store prefix (kv/, machines/, instances/api/):
    /// one JSON object per line.
    Watch {
        prefix: String,
        /// Start at this revision (replaying history) instead of now
        #[arg(long, default_value_t = 0, value_name = "REVISION")]
        from: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::RoleCreate { group, repo } => {
            generate::run(&repo::open(&repo)?, generate::Kind::Role, group.as_deref(), repo.json)
        }
        Command::RolesUpdate { group, repo } => {
            generate::run(&repo::open(&repo)?, generate::Kind::RoleUpdate, group.as_deref(), repo.json)
        }
        Command::PackerCreate { group, repo } => {
            generate::run(&repo::open(&repo)?, generate::Kind::Packer, group.as_deref(), repo.json)
        }
        Command::PackerRun { group, repo, aws } => {
            aws::packer_run(&repo::open(&repo)?, &group, aws.endpoint_url.as_deref(), repo.json)
        }
        Command::PackerClean { group, keep, dry_run, repo, aws } => {
            aws::packer_clean(&repo::open(&repo)?, &group, keep, dry_run, aws.endpoint_url.as_deref(), repo.json)
        }
        Command::PackerDelete { group, dry_run, repo, aws } => {
            aws::packer_delete(&repo::open(&repo)?, &group, dry_run, aws.endpoint_url.as_deref(), repo.json)
        }
        Command::AutoscaleRun { group, key, launch, repo } => {
            aws::autoscale_run(&repo::open(&repo)?, &group, &launch, key.as_deref(), repo.json)
        }
        Command::AutoscaleUpdate { group, key, update, launch, repo } => {
            aws::autoscale_update(&repo::open(&repo)?, &group, &launch, key.as_deref(), &update, repo.json)
        }
        Command::AutoscaleStatus { group, repo, aws } => {
            aws::autoscale_status(&repo::open(&repo)?, group.as_deref(), &aws, repo.json)
        }
        Command::InstanceCreate { group, create, launch, repo } => {
            aws::instance_create(&repo::open(&repo)?, &group, &create, &launch, repo.json)
        }
        Command::InstanceList { group, repo, aws } => {
            aws::instance_list(&repo::open(&repo)?, group.as_deref(), &aws, repo.json)
        }
        Command::AutoscaleCreate { group, repo } => {
            generate::run(&repo::open(&repo)?, generate::Kind::Autoscale, group.as_deref(), repo.json)
        }
        Command::NodesList { repo } => show::nodes_list(&repo::open(&repo)?, repo.json),
        Command::NodesShow { group, repo } => show::nodes_show(&repo::open(&repo)?, &group, repo.json),
        Command::ServicesList { repo } => show::services_list(&repo::open(&repo)?, repo.json),
        Command::ServicesShow { service, repo } => show::services_show(&repo::open(&repo)?, &service, repo.json),
        Command::RepoCheck { repo } => show::check(&repo::open(&repo)?, repo.json),
        Command::Up { dir, detach, timeout } => up::up(dir, detach, timeout),
        Command::Status { dir, json } => up::status(dir, json),
        Command::Down { dir, purge } => up::down(dir, purge),
        Command::Server(args) => remote::serve(args),
        Command::Apply { dry_run, repo, server } => {
            let opened = repo::open(&RepoArgs { repo, json: server.json })?;
            apply::apply(&opened, &server.url, dry_run, server.json)
        }
        Command::Agent(args) => agents::agent(*args),
        Command::Resolve { service, machine, show_secrets, server } => {
            agents::resolve_cmd(&server, &service, machine.as_deref(), show_secrets)
        }
        Command::ListenerStatus { machine, server } => agents::listener_status(&server, machine.as_deref()),
        Command::ListenerOn { target, server } => {
            agents::listener_switch(&server, target.machine.as_deref(), target.all, true)
        }
        Command::ListenerOff { target, server } => {
            agents::listener_switch(&server, target.machine.as_deref(), target.all, false)
        }
        Command::InstanceDeploy { group, batch, timeout, server } => {
            agents::instance_deploy(&server, group.as_deref(), batch, timeout)
        }
        Command::ServiceRestart { service, machine, server } => {
            running::control(&server, &service, machine.as_deref(), running::Action::Restart)
        }
        Command::ServiceStop { service, machine, server } => {
            running::control(&server, &service, machine.as_deref(), running::Action::Stop)
        }
        Command::ServiceStart { service, machine, server } => {
            running::control(&server, &service, machine.as_deref(), running::Action::Start)
        }
        Command::Logs { service, machine, follow, tail, server } => {
            running::logs(&server, &service, machine.as_deref(), follow, tail)
        }
        Command::LbStatus { machine, server } => running::lb_status(&server, machine.as_deref()),
        Command::MachineList { server } => remote::machine_list(&server),
        Command::MachineShow { id, server } => remote::machine_show(&server, &id),
        Command::ServiceHosts { service, wheres, server } => remote::service_hosts(&server, &service, &wheres),
        Command::ServiceOn { machine, server } => remote::service_on(&server, &machine),
        Command::Lookup { service, wheres, server } => remote::lookup(&server, &service, &wheres),
        Command::KvGet { key, server } => remote::kv_get(&server, &key),
        Command::KvPut { key, value, cas, server } => remote::kv_put(&server, &key, &value, cas),
        Command::KvDel { key, server } => remote::kv_del(&server, &key),
        Command::Watch { prefix, from, server } => remote::watch(&server, &prefix, from),
    }
}
