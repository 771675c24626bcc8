//! The command-line grammar (`gantry <namespace>:<action> [group] [--flags]`,
//! seed 004): every command, flag and help text, and what each command needs
//! beyond its arguments (how it prints, the server it talks to, an async
//! runtime). Parsing is all this does; `commands` runs what was parsed.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::output::Output;

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
        timeout: Duration,
        /// High availability: a 3-member etcd (TLS, client certificates,
        /// auth) and 3 gantry servers; agents and commands use all three
        #[arg(long)]
        ha: bool,
    },
    /// Write a Prometheus and Alertmanager setup for the fleet into DIR:
    /// prometheus.yml (discovery through the server), recording and
    /// alerting rules from the services' "alerts", alertmanager.yml.
    #[command(name = "prometheus:config")]
    PrometheusConfig {
        /// Where the files go [default: prometheus/ in the current directory]
        #[arg(long, value_name = "DIR", default_value = "prometheus")]
        out: PathBuf,
        /// The server Prometheus discovers its targets from [default: the `gantry up` stack's]
        #[arg(long = "server", value_name = "URL")]
        server: Option<String>,
        /// A file holding Prometheus' token (a token of a policy granting
        /// read on `prometheus/targets`) [default: the `gantry up` stack's]
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The CA of the server's and agents' certificates [default: the stack's]
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
        /// The certificate (role metrics) Prometheus presents to agents, with --client-key
        #[arg(long, value_name = "FILE", requires = "client_key")]
        client_cert: Option<PathBuf>,
        #[arg(long, value_name = "FILE", requires = "client_cert")]
        client_key: Option<PathBuf>,
        /// Where Alertmanager listens
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9093")]
        alertmanager: String,
        /// How often targets are scraped and the list of targets read again
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        scrape_interval: Duration,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// The alerts of the `gantry up` stack's Prometheus: firing and pending.
    Alerts {
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
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
        timeout: Duration,
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
    /// CPU and memory per node and in total: allocatable, reserved, used
    ///
    /// Reserved is the `resources` of the static services a node runs and of
    /// the allocations placed on it; used is measured by its agent. The last
    /// line compares the nodes in use with the fewest that could hold the work.
    #[command(name = "nodes:usage")]
    NodesUsage {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// What a change to a scheduled service would place, stop and move
    ///
    /// Plans the repository's definition of SERVICE as the scheduler would if
    /// it were written; writes nothing (`gantry apply` does).
    #[command(name = "job:plan")]
    JobPlan {
        service: String,
        /// The repository [default: the current directory or the nearest parent with a nodes.json]
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Build and publish a release of SERVICE, and roll it out
    ///
    /// Packs the service's artifact (its definition's "artifact": {"path": ...},
    /// or --artifact), uploads it unless the server has it, records the
    /// release (vN, git commit, who, message) and follows its rollout.
    Deploy {
        service: String,
        /// A directory or tar archive to deploy instead of the definition's artifact
        #[arg(long, value_name = "PATH")]
        artifact: Option<PathBuf>,
        /// Recorded with the release
        #[arg(long, short, value_name = "TEXT")]
        message: Option<String>,
        /// Return once the release is made, without following its rollout
        #[arg(long)]
        detach: bool,
        /// How long to follow the rollout
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: Duration,
        /// The repository [default: the current directory or the nearest parent with a nodes.json]
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A service's releases: version, status, who, when, commit, how long, nodes.
    #[command(name = "deploy:history")]
    DeployHistory {
        service: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One release: metadata, each node's outcome, the definition's diff against the previous.
    #[command(name = "deploy:show")]
    DeployShow {
        service: String,
        /// The release: vN
        #[arg(value_name = "vN")]
        release: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The rollout in progress: each node pending/draining/starting/healthy/failed.
    #[command(name = "deploy:status")]
    DeployStatus {
        service: String,
        /// Follow it until it is over
        #[arg(long, short)]
        follow: bool,
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: Duration,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Let a rollout whose canaries are healthy go on to every node.
    #[command(name = "deploy:promote")]
    DeployPromote {
        service: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop the rollout in progress; switched nodes go back to the stable release.
    #[command(name = "deploy:abort")]
    DeployAbort {
        service: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Deploy an earlier release's artifact again, as a new release.
    #[command(name = "deploy:rollback")]
    DeployRollback {
        service: String,
        /// The version to go back to [default: the stable release before the newest]
        #[arg(long, value_name = "vN")]
        to: Option<String>,
        #[arg(long)]
        detach: bool,
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: Duration,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// What release of each service a machine runs.
    #[command(name = "releases:on")]
    ReleasesOn {
        machine: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List scheduled allocations: where each service's instances were placed.
    #[command(name = "alloc:list")]
    AllocList {
        /// Only this service's
        service: Option<String>,
        /// Only this node's
        #[arg(long, value_name = "MACHINE")]
        node: Option<String>,
        /// Also the stopped ones (replaced, drained, lost)
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one allocation: why it is where it is, and how it is doing.
    #[command(name = "alloc:show")]
    AllocShow {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Move a node's allocations elsewhere, a few at a time, then keep new
    /// work off it.
    #[command(name = "node:drain")]
    NodeDrain {
        machine: String,
        /// Return at once instead of following the drain until it ends
        #[arg(long)]
        detach: bool,
        /// How long to follow the drain before giving up (it goes on)
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: Duration,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Let the scheduler place work on a node again (undoes node:drain).
    #[command(name = "node:eligible")]
    NodeEligible {
        machine: String,
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
    /// Create a token: with policies (operators, applications), or an agent's for
    /// one machine. Its secret is shown once (or written to --secret-file, 0600).
    #[command(name = "acl:token:create")]
    AclTokenCreate {
        /// A policy it holds (repeatable); `management` is everything
        #[arg(long = "policy", value_name = "NAME")]
        policies: Vec<String>,
        /// An agent's token for this machine: it writes only that machine's
        /// records and reads what its services need
        #[arg(long, value_name = "MACHINE", conflicts_with = "policies")]
        agent: Option<String>,
        /// The agent's federation (its services')
        #[arg(long, value_name = "FEDERATION", requires = "agent", default_value = gantry_api::DEFAULT_FEDERATION)]
        federation: String,
        /// A service the agent may run besides its group's and those the
        /// scheduler places on it, as `gantry agent --service` (repeatable)
        #[arg(long = "service", value_name = "SERVICE", requires = "agent")]
        services: Vec<String>,
        /// A name for people (shown in lists and refusals)
        #[arg(long, default_value = "", value_name = "NAME")]
        name: String,
        /// It expires after this long [default: never]
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        ttl: Option<Duration>,
        /// Write the secret to this file (mode 0600) instead of printing it
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List tokens: accessor, name, policies or agent, expiry (never a secret).
    #[command(name = "acl:token:list")]
    AclTokenList {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token by its accessor: every server refuses it from now on.
    #[command(name = "acl:token:revoke")]
    AclTokenRevoke {
        accessor: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create or replace a policy: rules of read, write or deny access to key
    /// prefixes (kv/app/, services/, instances/, acl/, logs/MACHINE/, metrics),
    /// optionally limited to federations.
    #[command(name = "acl:policy:create")]
    AclPolicyCreate {
        name: String,
        /// Read access to keys under this prefix (repeatable; "" is everything)
        #[arg(long = "read", value_name = "PREFIX")]
        read: Vec<String>,
        /// Write (and read) access under this prefix (repeatable)
        #[arg(long = "write", value_name = "PREFIX")]
        write: Vec<String>,
        /// No access under this prefix, whatever a shorter prefix grants (repeatable)
        #[arg(long = "deny", value_name = "PREFIX")]
        deny: Vec<String>,
        /// See only these federations' services and instances (repeatable)
        #[arg(long = "federation", value_name = "NAME")]
        federations: Vec<String>,
        #[arg(long, default_value = "", value_name = "TEXT")]
        description: String,
        /// The policy as JSON ({"name", "rules": [{"prefix", "access"}], "federations"}) instead of flags
        #[arg(long, value_name = "FILE", conflicts_with_all = ["read", "write", "deny", "federations"])]
        file: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List policies.
    #[command(name = "acl:policy:list")]
    AclPolicyList {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one policy's rules.
    #[command(name = "acl:policy:show")]
    AclPolicyShow {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create the built-in certificate authority: DIR/ca.pem and DIR/ca-key.pem
    /// (the private key, mode 0600). Refuses to replace an existing one.
    #[command(name = "tls:ca:create")]
    TlsCaCreate {
        #[command(flatten)]
        tls: TlsDirArgs,
        /// The CA's name, in its certificate ("Gantry CA NAME")
        #[arg(long, default_value = "gantry", value_name = "NAME")]
        name: String,
        /// Valid for this long
        #[arg(long, default_value = "10years", value_parser = humantime::parse_duration, value_name = "DURATION")]
        valid_for: Duration,
    },
    /// Create a certificate signed by the CA in DIR for a server, an agent or a
    /// client: DIR/NAME.pem and DIR/NAME-key.pem (mode 0600), its role written in it.
    #[command(name = "tls:cert:create")]
    TlsCertCreate {
        /// Its holder: the server's or machine's name, or the operator's
        name: String,
        #[command(flatten)]
        role: CertRoleArgs,
        /// An address it answers on (repeatable); servers also get 127.0.0.1
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
        /// A DNS name it answers on (repeatable); servers also get localhost
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Valid for this long
        #[arg(long, default_value = "1year", value_parser = humantime::parse_duration, value_name = "DURATION")]
        valid_for: Duration,
        #[command(flatten)]
        tls: TlsDirArgs,
    },
    /// Follow every change under a KV prefix (datastores/), or under a store prefix
    /// with --store (machines/, instances/api/): one JSON object per line.
    Watch {
        /// A KV prefix (`datastores/` follows `kv:put datastores/X`), or with --store a store prefix
        prefix: String,
        /// PREFIX is a store prefix: machines/, groups/, services/, instances/api/, agents/, kv/
        #[arg(long)]
        store: bool,
        /// Start at this revision (replaying history) instead of now
        #[arg(long, default_value_t = 0, value_name = "REVISION")]
        from: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
}

impl Command {
    /// How the command prints: JSON for scripts with `--json`, else text.
    pub fn output(&self) -> Output {
        let json = match self {
            Command::RoleCreate { repo, .. }
            | Command::RolesUpdate { repo, .. }
            | Command::PackerCreate { repo, .. }
            | Command::PackerRun { repo, .. }
            | Command::PackerClean { repo, .. }
            | Command::PackerDelete { repo, .. }
            | Command::AutoscaleCreate { repo, .. }
            | Command::AutoscaleRun { repo, .. }
            | Command::AutoscaleUpdate { repo, .. }
            | Command::AutoscaleStatus { repo, .. }
            | Command::InstanceCreate { repo, .. }
            | Command::InstanceList { repo, .. }
            | Command::NodesList { repo }
            | Command::NodesShow { repo, .. }
            | Command::ServicesList { repo }
            | Command::ServicesShow { repo, .. }
            | Command::RepoCheck { repo }
            | Command::PrometheusConfig { repo, .. } => repo.json,
            Command::Status { json, .. } | Command::Alerts { json, .. } => *json,
            Command::TlsCaCreate { tls, .. } | Command::TlsCertCreate { tls, .. } => tls.json,
            Command::Up { .. } | Command::Down { .. } | Command::Server(_) | Command::Agent(_) => false,
            _ => self.server().is_some_and(|server| server.json),
        };
        if json { Output::Json } else { Output::Text }
    }

    /// The gantry server a client command talks to (`--server`, `GANTRY_SERVER`).
    pub fn server(&self) -> Option<&ServerArgs> {
        match self {
            Command::Apply { server, .. }
            | Command::Resolve { server, .. }
            | Command::ListenerStatus { server, .. }
            | Command::ListenerOn { server, .. }
            | Command::ListenerOff { server, .. }
            | Command::InstanceDeploy { server, .. }
            | Command::ServiceRestart { server, .. }
            | Command::ServiceStop { server, .. }
            | Command::ServiceStart { server, .. }
            | Command::Logs { server, .. }
            | Command::LbStatus { server, .. }
            | Command::MachineList { server }
            | Command::MachineShow { server, .. }
            | Command::NodesUsage { server }
            | Command::JobPlan { server, .. }
            | Command::Deploy { server, .. }
            | Command::DeployHistory { server, .. }
            | Command::DeployShow { server, .. }
            | Command::DeployStatus { server, .. }
            | Command::DeployPromote { server, .. }
            | Command::DeployAbort { server, .. }
            | Command::DeployRollback { server, .. }
            | Command::ReleasesOn { server, .. }
            | Command::AllocList { server, .. }
            | Command::AllocShow { server, .. }
            | Command::NodeDrain { server, .. }
            | Command::NodeEligible { server, .. }
            | Command::ServiceHosts { server, .. }
            | Command::ServiceOn { server, .. }
            | Command::Lookup { server, .. }
            | Command::KvGet { server, .. }
            | Command::KvPut { server, .. }
            | Command::KvDel { server, .. }
            | Command::Watch { server, .. }
            | Command::AclTokenCreate { server, .. }
            | Command::AclTokenList { server }
            | Command::AclTokenRevoke { server, .. }
            | Command::AclPolicyCreate { server, .. }
            | Command::AclPolicyList { server }
            | Command::AclPolicyShow { server, .. } => Some(server),
            _ => None,
        }
    }

    /// Whether the command needs the async runtime: everything but the
    /// commands that only read the repository and write files, and `down`.
    pub fn needs_runtime(&self) -> bool {
        !matches!(
            self,
            Command::RoleCreate { .. }
                | Command::RolesUpdate { .. }
                | Command::PackerCreate { .. }
                | Command::AutoscaleCreate { .. }
                | Command::NodesList { .. }
                | Command::NodesShow { .. }
                | Command::ServicesList { .. }
                | Command::ServicesShow { .. }
                | Command::RepoCheck { .. }
                | Command::PrometheusConfig { .. }
                | Command::Down { .. }
                | Command::TlsCaCreate { .. }
                | Command::TlsCertCreate { .. }
        )
    }
}

/// Where the certificate authority's files are.
#[derive(Debug, clap::Args)]
pub struct TlsDirArgs {
    /// The directory of ca.pem and ca-key.pem, where certificates are written
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    pub json: bool,
}

/// What a certificate is for: exactly one of the four.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct CertRoleArgs {
    /// For a `gantry server`
    #[arg(long)]
    pub server: bool,
    /// For a `gantry agent` (NAME: its machine)
    #[arg(long)]
    pub agent: bool,
    /// For an operator's CLI or an application
    #[arg(long)]
    pub client: bool,
    /// For a metrics collector (Prometheus): it may scrape agents' /metrics, nothing else of them
    #[arg(long)]
    pub metrics: bool,
}

/// Where the client finds the server.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The gantry server's URL, or several servers of one cluster
    /// comma-separated (one is used, the next when it fails) [default: the
    /// `gantry up` stack of the repository around the current directory,
    /// else http://127.0.0.1:7400]
    #[arg(long = "server", env = "GANTRY_SERVER", value_name = "URL[,URL...]")]
    pub url: Option<String>,
    /// The token to send (prefer GANTRY_TOKEN or --token-file: a command
    /// line is visible to every user of the machine)
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true, value_name = "SECRET")]
    pub token: Option<String>,
    /// A file holding the token (its first line) [default: in a `gantry up`
    /// repository, its management token]
    #[arg(long, env = "GANTRY_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    pub json: bool,
}

/// How a client (the CLI, an agent) talks to an HTTPS server, as Consul's
/// CONSUL_CACERT, CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY.
#[derive(Debug, clap::Args)]
pub struct ClientTlsArgs {
    /// The CA that signed the server's certificate (ca.pem): talk HTTPS,
    /// trusting this CA and no other
    #[arg(long, env = "GANTRY_CACERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// A certificate to present to the server, signed by its CA (with --client-key)
    #[arg(long, env = "GANTRY_CLIENT_CERT", value_name = "FILE", requires = "client_key", requires = "ca_cert")]
    pub client_cert: Option<PathBuf>,
    /// The private key of --client-cert
    #[arg(long, env = "GANTRY_CLIENT_KEY", value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// `gantry server`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start)
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Directory of the embedded store
    #[arg(long, default_value = ".gantry/server", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// `embedded` (one crash-safe log file in --data-dir), `redb` (the same
    /// engine on a redb file there) or `etcd://HOST:PORT[,HOST:PORT...]`
    #[arg(long, default_value = "embedded", value_name = "STORE")]
    pub store: String,
    /// HTTP event loops, each on a thread of its own (one serves about 35k
    /// requests/s on one core; more split a watch fan-out's writes)
    #[arg(long, value_name = "N", default_value_t = gantry_server::DEFAULT_EVENT_LOOPS as u16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    #[command(flatten)]
    pub tls: ServeTlsArgs,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Access control: `on` (default deny: every request needs a token; the
    /// first start writes a management token to DATA_DIR/bootstrap-token) or
    /// `off` (anyone may do anything: for benchmarks only)
    #[arg(long, value_enum, default_value_t = AclArg::On, value_name = "on|off")]
    pub acl: AclArg,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Where release artifacts are kept: a directory [default: DATA_DIR/artifacts]
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
}

/// `gantry server`'s limits: what one token (or, for requests without a
/// token, one client address) may hold and ask at once. The defaults are
/// gantry_server::Limits's; README's "Limits" says why each is what it is.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Limits (per token; per client address for requests without one)")]
pub struct LimitArgs {
    /// Open connections from one client address; more are closed at once
    #[arg(long, value_name = "N", default_value_t = gantry_server::Limits::default().connections_per_ip, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: u32,
    /// Open watches of one token
    #[arg(long, value_name = "N", default_value_t = gantry_server::Limits::default().watches_per_token, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watches_per_token: u32,
    /// Live leases one token granted
    #[arg(long, value_name = "N", default_value_t = gantry_server::Limits::default().leases_per_token, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_leases_per_token: u32,
    /// The longest TTL a lease may have (at most 365days, the store's own bound)
    #[arg(long, value_name = "DURATION", default_value_t = gantry_server::Limits::default().lease_ttl.into(), value_parser = lease_ttl)]
    pub max_lease_ttl: humantime::Duration,
    /// Keys one token holds (those whose current value it wrote)
    #[arg(long, value_name = "N", default_value_t = gantry_server::Limits::default().keys_per_token, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_keys_per_token: u64,
    /// Bytes of keys and values one token holds (`1048576`, `512KiB`, `256MiB`, `1GiB`)
    #[arg(long, value_name = "BYTES", default_value_t = ByteSize(gantry_server::Limits::default().bytes_per_token))]
    pub max_bytes_per_token: ByteSize,
    /// Requests per second one token may send, on average
    #[arg(long, value_name = "N", default_value_t = gantry_server::Limits::default().requests_per_second_per_token, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_per_second_per_token: u32,
    /// Requests one token may send at once above that rate
    #[arg(long, value_name = "N", default_value_t = gantry_server::Limits::default().request_burst_per_token, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_request_burst_per_token: u32,
}

impl LimitArgs {
    pub fn limits(&self) -> gantry_server::Limits {
        gantry_server::Limits {
            connections_per_ip: self.max_connections_per_ip,
            watches_per_token: self.max_watches_per_token,
            leases_per_token: self.max_leases_per_token,
            lease_ttl: self.max_lease_ttl.into(),
            keys_per_token: self.max_keys_per_token,
            bytes_per_token: self.max_bytes_per_token.0,
            requests_per_second_per_token: self.max_requests_per_second_per_token,
            request_burst_per_token: self.max_request_burst_per_token,
        }
    }
}

/// `--max-lease-ttl`: a duration from a second to the store's year.
fn lease_ttl(text: &str) -> Result<humantime::Duration, String> {
    let ttl: humantime::Duration = text.parse().map_err(|e| format!("{e}"))?;
    let (ttl_std, longest) = (Duration::from(ttl), gantry_store::MAX_LEASE_TTL);
    if ttl_std < Duration::from_secs(1) || ttl_std > longest {
        return Err(format!("a lease TTL is from 1s to {}days (the store's longest)", longest.as_secs() / 86_400));
    }
    Ok(ttl)
}

/// A number of bytes, written plain or with a binary unit (`KiB`, `MiB`,
/// `GiB`, `TiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

const BYTE_UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let (number, unit) = BYTE_UNITS
            .iter()
            .find_map(|(name, size)| text.strip_suffix(name).map(|n| (n.trim(), *size)))
            .unwrap_or((text.strip_suffix('B').unwrap_or(text), 1));
        let bad = || format!("{text:?} is not a number of bytes: write 1048576, 512KiB, 256MiB or 1GiB");
        let n: u64 = number.parse().map_err(|_| bad())?;
        n.checked_mul(unit).filter(|bytes| *bytes > 0).map(ByteSize).ok_or_else(bad)
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match BYTE_UNITS.iter().find(|(_, size)| self.0 >= *size && self.0.is_multiple_of(*size)) {
            Some((name, size)) => write!(f, "{}{name}", self.0 / size),
            None => write!(f, "{}", self.0),
        }
    }
}

/// `gantry server --acl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AclArg {
    On,
    Off,
}

/// HTTPS for `gantry server`.
#[derive(Debug, clap::Args)]
pub struct ServeTlsArgs {
    /// Serve HTTPS with this certificate (role server: `gantry tls:cert:create --server`)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA of client and agent certificates: a client's certificate is
    /// verified when presented, and agents' APIs are reached over TLS
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Refuse clients without a certificate signed by --tls-ca
    #[arg(long, requires = "tls_ca")]
    pub verify_incoming: bool,
}

/// How `gantry server` reaches a secured etcd (`--store etcd://...`).
#[derive(Debug, clap::Args)]
pub struct EtcdArgs {
    /// The CA that signed etcd's certificates: talk TLS to etcd
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// This server's client certificate for etcd's --client-cert-auth (with --etcd-key)
    #[arg(long, value_name = "FILE", requires = "etcd_key", requires = "etcd_ca")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// An etcd user (etcd's authentication); its password comes from
    /// GANTRY_ETCD_PASSWORD or --etcd-password-file, never the command line
    #[arg(long, value_name = "USER")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password (its first line)
    #[arg(long, value_name = "FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

/// `gantry agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The gantry server's URL, or several servers of one cluster
    /// comma-separated: the agent starts on one at random and moves to
    /// another when it fails (lease, watches and status carry on)
    #[arg(long = "server", env = "GANTRY_SERVER", default_value = gantry_api::DEFAULT_SERVER, value_name = "URL[,URL...]")]
    pub server: String,
    // To the servers, and the agent's own API over TLS with --client-cert
    // (role agent, naming --address), answering servers only.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// The agent's own state: machine id, assigned ports, listener state
    #[arg(long, default_value = ".gantry/agent", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The node group whose services this machine runs (see `gantry apply`)
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// A service to run besides the group's (repeatable; under access control
    /// its token must name it too: `acl:token:create --agent M --service S`)
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// The address instances are published with [default: the first private address]
    #[arg(long, value_name = "IP")]
    pub address: Option<IpAddr>,
    /// A machine label, also each instance's property (repeatable): --label region=us-east-1
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Where env files are written [default: DATA_DIR/env]
    #[arg(long, value_name = "DIR")]
    pub env_dir: Option<PathBuf>,
    /// The provision command the listener runs on changes (`sh -c`): chef-solo, a script
    #[arg(long = "provision-cmd", value_name = "COMMAND")]
    pub provision_command: Option<String>,
    /// How long a provision run may take
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub provision_timeout: Duration,
    /// Fewest time between two provision runs
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub min_interval: Duration,
    /// Most provision runs per --window
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_runs: u32,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub window: Duration,
    /// The machine id [default: saved in DATA_DIR, else HOSTNAME-RANDOM]
    #[arg(long, value_name = "ID")]
    pub machine_id: Option<String>,
    /// Lease time to live: how soon a dead agent leaves the inventory (and its
    /// scheduled work is replaced elsewhere)
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lease_ttl: Duration,
    /// Between withdrawing a departing service and stopping it
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub drain: Duration,
    /// The local load balancer: a frontend on each required service's local_port
    /// (auto: haproxy if installed, else the built-in proxy)
    #[arg(long, value_enum, default_value_t = Lb::Off)]
    pub lb: Lb,
    /// This node is an external load balancer: it also fronts the public services of its federation
    #[arg(long)]
    pub external_lb: bool,
    /// The working directory of service commands [default: the agent's]
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// First delay before restarting a service that exited; doubles up to --restart-max-delay
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub restart_delay: Duration,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub restart_max_delay: Duration,
    /// The port of the agent's own API (service logs) on --address; 0: any free port
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub api_port: u16,
    /// Serve haproxy's Prometheus exporter (GET /metrics) on --address at this port [default: off]
    #[arg(long, value_name = "PORT")]
    pub lb_metrics_port: Option<u16>,
    /// Run services' command checks, on_delete and deploy hooks (off by default:
    /// otherwise whoever may write a service definition runs commands here)
    #[arg(long)]
    pub enable_script_checks: bool,
    /// Release directories kept per service (the running one and older ones to go back to)
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub keep_releases: u16,
    /// Keep this much for the system: never given to scheduled services
    #[arg(long, value_name = "cpu=C,memory_mb=M", default_value = "cpu=0,memory_mb=0")]
    pub reserve: gantry_api::Resources,
    /// The node's capacity for the scheduler instead of its measured CPUs
    /// and memory (test nodes, nodes that share a machine)
    #[arg(long, value_name = "cpu=C,memory_mb=M")]
    pub capacity: Option<gantry_api::Resources>,
    /// The agent's token (prefer GANTRY_TOKEN or --token-file)
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true, value_name = "SECRET")]
    pub token: Option<String>,
    /// A file holding the agent's token (its first line); `gantry acl:token:create --agent MACHINE` makes one
    #[arg(long, env = "GANTRY_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// `--lb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lb {
    Auto,
    Haproxy,
    Builtin,
    Off,
}

/// `autoscale:update`'s options.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// How the nodes are replaced
    #[arg(long, value_enum, default_value_t = Strategy::Replace)]
    pub strategy: Strategy,
    /// How long the new nodes have to be in service (instance-refresh: to finish)
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub wait: Duration,
    /// How long old and new nodes serve side by side before the old group is
    /// deleted, so that other nodes can update [default: the group's autoscale timeout]
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub settle: Option<Duration>,
    /// How often to look at the new nodes
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub poll: Duration,
}

/// `--strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// A new autoscaling group; the old one is deleted once the new one serves
    Replace,
    /// AWS's instance refresh of the existing group (not in moto)
    InstanceRefresh,
}

/// Options of the commands that launch nodes.
#[derive(Debug, clap::Args)]
pub struct LaunchArgs {
    /// The gantry server the nodes' agents report to: their user data runs
    /// `gantry agent --server URL` (several comma-separated: every one)
    #[arg(long = "server", env = "GANTRY_SERVER", value_name = "URL[,URL...]")]
    pub server: String,
    /// The AMI to launch [default: the group's newest, from packer:run]
    #[arg(long, value_name = "AMI")]
    pub ami: Option<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// `instance:create`'s own options.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// A private key file (`deploy.pem`): its public key is imported as key
    /// pair `deploy`, or that key pair reused; the private key never leaves
    /// this machine
    #[arg(long, value_name = "PATH")]
    pub key: PathBuf,
    /// The instance's Name tag
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The availability zone [default: one of the region's, at random]
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
}
