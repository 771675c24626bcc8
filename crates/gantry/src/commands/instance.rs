//! `instance:create` (one node of a group outside any autoscaling group,
//! seed 004's "Procuring an instance"), `instance:list` (the group's
//! instances in AWS), and `instance:deploy` (its agents re-run
//! provisioning, N at a time: the rollout is `gantry_client::deploy`).

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use anyhow::Context as _;
use gantry_api::now_ms;
use gantry_aws::{Aws, GROUP_TAG, Instance, NAME_TAG};
use gantry_client::deploy::{self, NodeResult, Rollout};
use gantry_generate::write::write_atomic;
use serde::Serialize;

use super::aws::{launch_spec, plan};
use crate::BadInput;
use crate::cli::{AwsArgs, CreateArgs, LaunchArgs};
use crate::context::{Context, explain};
use crate::repo::Opened;

/// `instance:create GROUP --key KEY --name NAME [--zone ZONE]`: launches one
/// node of the group, tagged `group` and `Name`, and writes its dna
/// `dna/instance/<group>-<instance-id>.json`; prints the instance id.
pub fn create(
    ctx: &Context,
    opened: &Opened,
    group: &str,
    args: &CreateArgs,
    launch: &LaunchArgs,
) -> anyhow::Result<()> {
    let spec = opened.repo.group(group).map_err(|d| opened.bad_input(vec![d]))?;
    let dna = gantry_generate::asg_dna_file(spec).bytes;
    let plan = plan(opened, group, launch, Some(&args.key), &dna)?;
    let connect = super::aws::connect_for(opened, Some(group), launch.aws.endpoint_url.as_deref());
    let (id, zone) = ctx.block_on(async {
        let aws = Aws::connect(&connect).await?;
        let zone = match (&args.zone, &spec.subnet_id) {
            (_, Some(_)) => args.zone.clone(),
            (Some(zone), None) => Some(checked_zone(&aws, zone).await?),
            (None, None) => Some(random_zone(&aws).await?),
        };
        let (launch_spec, image) = launch_spec(&aws, &plan, launch.ami.as_deref()).await?;
        let tags = [(GROUP_TAG.to_string(), group.to_string()), (NAME_TAG.to_string(), args.name.clone())];
        let id = aws.run_instance(&launch_spec, zone.as_deref(), &tags).await?;
        eprintln!(
            "launched {id} ({} from {}) in {}{}",
            launch_spec.instance_type,
            image.id,
            aws.region(),
            zone.as_deref().map(|z| format!(" zone {z}")).unwrap_or_default()
        );
        anyhow::Ok((id, zone))
    })?;
    let out = gantry_generate::instance_dna_file(spec, &id);
    let path = opened.dir.join(&out.path);
    write_atomic(&path, &out.bytes).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote its dna {}", opened.show_path(&out.path));
    let created = Created { dna: opened.show_path(&out.path), group, instance_id: &id, name: &args.name, zone };
    ctx.output().print(&created, |out| Ok(writeln!(out, "{id}")?))
}

/// What `instance:create --json` prints.
#[derive(Debug, Serialize)]
struct Created<'a> {
    dna: String,
    group: &'a str,
    instance_id: &'a str,
    name: &'a str,
    zone: Option<String>,
}

/// `instance:list [GROUP]`: the live instances of the group (of every
/// group), autoscaled or not.
pub fn list(ctx: &Context, opened: &Opened, group: Option<&str>, aws: &AwsArgs) -> anyhow::Result<()> {
    let connect = super::aws::connect_for(opened, group, aws.endpoint_url.as_deref());
    let instances = ctx.block_on(async { anyhow::Ok(Aws::connect(&connect).await?.group_instances(group).await?) })?;
    let header = ["GROUP", "INSTANCE", "NAME", "STATE", "TYPE", "ZONE", "AMI", "PRIVATE IP", "AUTOSCALING GROUP"];
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let row = |i: &Instance| {
        vec![
            i.group.clone(),
            i.id.clone(),
            or_dash(&i.name),
            i.state.clone(),
            i.instance_type.clone(),
            i.zone.clone(),
            i.image_id.clone(),
            or_dash(&i.private_ip),
            or_dash(&i.autoscaling_group),
        ]
    };
    ctx.output().listing(&instances, InstanceView::of, &header, row, "no instances")
}

/// `--zone`, if the region has it (a typo is bad input, not an AWS error).
async fn checked_zone(aws: &Aws, zone: &str) -> anyhow::Result<String> {
    let zones = aws.zones().await?;
    if zones.iter().any(|z| z == zone) {
        return Ok(zone.to_string());
    }
    Err(BadInput(format!(
        "error: --zone {zone} is not an available zone of {}\n = help: use one of {}",
        aws.region(),
        zones.join(", ")
    ))
    .into())
}

/// One of the region's zones, at random (seed 004: "random if unspecified").
async fn random_zone(aws: &Aws) -> anyhow::Result<String> {
    let zones = aws.zones().await?;
    anyhow::ensure!(!zones.is_empty(), "{} has no available zone", aws.region());
    let pick = RandomState::new().hash_one(std::process::id()) as usize % zones.len();
    Ok(zones[pick].clone())
}

/// An instance as `instance:list --json` lists it.
#[derive(Debug, Serialize)]
struct InstanceView<'a> {
    autoscaling_group: Option<&'a str>,
    group: &'a str,
    id: &'a str,
    image_id: &'a str,
    instance_type: &'a str,
    name: Option<&'a str>,
    private_ip: Option<&'a str>,
    public_ip: Option<&'a str>,
    state: &'a str,
    zone: &'a str,
}

impl<'a> InstanceView<'a> {
    fn of(i: &'a Instance) -> InstanceView<'a> {
        InstanceView {
            autoscaling_group: i.autoscaling_group.as_deref(),
            group: &i.group,
            id: &i.id,
            image_id: &i.image_id,
            instance_type: &i.instance_type,
            name: i.name.as_deref(),
            private_ip: i.private_ip.as_deref(),
            public_ip: i.public_ip.as_deref(),
            state: &i.state,
            zone: &i.zone,
        }
    }
}

/// `gantry instance:deploy [GROUP] [-n N]`: every agent of the group (or
/// every agent) re-runs provisioning, at most N at a time; a line per node
/// as its batch ends.
pub fn deploy(ctx: &Context, group: Option<&str>, batch: usize, timeout: Duration) -> anyhow::Result<()> {
    let client = ctx.client();
    let machines: Vec<String> = ctx
        .block_on(client.machines())
        .map_err(explain)?
        .items
        .into_iter()
        .filter(|m| group.is_none_or(|g| m.labels.get("group").is_some_and(|l| l == g)))
        .map(|m| m.id)
        .collect();
    if machines.is_empty() {
        let what =
            group.map_or("no agents are registered".to_owned(), |g| format!("no agent of group {g:?} is registered"));
        return Err(BadInput(format!("error: {what}\n = help: start agents with `gantry agent --group GROUP`")).into());
    }
    let id = format!("{:x}", now_ms());
    let rollout = Rollout { id: &id, machines: &machines, batch, timeout, poll: Duration::from_millis(100) };
    let text = !ctx.output().is_json();
    let results = ctx
        .block_on(deploy::deploy(client, &rollout, |result| {
            if text {
                let shown = Deployed::of(result, timeout);
                let word = if shown.ok { "ok" } else { "FAILED" };
                println!("{:<28} {word:<7} {:>7} ms  {}", shown.machine, shown.duration_ms, shown.detail);
            }
        }))
        .map_err(explain)?;
    if ctx.output().is_json() {
        crate::output::print_json(&results.iter().map(|r| Deployed::of(r, timeout)).collect::<Vec<_>>())?;
    }
    let failed = results.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        anyhow::bail!("deploy {id}: {failed} of {} node(s) failed", machines.len());
    }
    Ok(())
}

/// One node's deploy, as `instance:deploy` shows it.
#[derive(Debug, Serialize)]
struct Deployed<'a> {
    detail: String,
    duration_ms: u64,
    machine: &'a str,
    ok: bool,
}

impl<'a> Deployed<'a> {
    fn of(result: &'a NodeResult, timeout: Duration) -> Deployed<'a> {
        let (ok, detail, duration_ms) = match &result.outcome {
            Some(o) => (o.ok, o.detail.clone(), o.duration_ms),
            None => (false, format!("no answer within {timeout:?}"), 0),
        };
        Deployed { detail, duration_ms, machine: &result.machine, ok }
    }
}
