//! `instance:create` (one node of a group outside any autoscaling group,
//! seed 004's "Procuring an instance") and `instance:list`.

use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;

use anyhow::Context;
use gantry_aws::{Aws, GROUP_TAG, Instance, NAME_TAG};
use gantry_generate::write::write_atomic;
use serde_json::json;

use super::launch::{LaunchArgs, launch_spec, plan};
use crate::BadInput;
use crate::cli::AwsArgs;
use crate::remote::{print_json, runtime};
use crate::repo::Opened;

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

/// `instance:create GROUP --key KEY --name NAME [--zone ZONE]`: launches one
/// node of the group, tagged `group` and `Name`, and writes its dna
/// `dna/instance/<group>-<instance-id>.json`; prints the instance id.
pub fn create(opened: &Opened, group: &str, args: &CreateArgs, launch: &LaunchArgs, json: bool) -> anyhow::Result<()> {
    let spec = opened.repo.group(group).map_err(|d| opened.bad_input(vec![d]))?;
    let dna = gantry_generate::asg_dna_file(spec).bytes;
    let plan = plan(opened, group, launch, Some(&args.key), &dna)?;
    let connect = super::connect_for(opened, Some(group), launch.aws.endpoint_url.as_deref());
    let (id, zone) = runtime()?.block_on(async {
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
    if json {
        return print_json(&json!({
            "group": group, "instance_id": id, "name": args.name, "zone": zone, "dna": opened.show_path(&out.path),
        }));
    }
    println!("{id}");
    Ok(())
}

/// `instance:list [GROUP]`: the live instances of the group (of every
/// group), autoscaled or not.
pub fn list(opened: &Opened, group: Option<&str>, aws: &AwsArgs, json: bool) -> anyhow::Result<()> {
    let connect = super::connect_for(opened, group, aws.endpoint_url.as_deref());
    let instances =
        runtime()?.block_on(async { anyhow::Ok(Aws::connect(&connect).await?.group_instances(group).await?) })?;
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
    super::print_listing(&instances, json, instance_json, &header, row, "no instances")
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

fn instance_json(i: &Instance) -> serde_json::Value {
    json!({
        "group": i.group,
        "id": i.id,
        "name": i.name,
        "state": i.state,
        "instance_type": i.instance_type,
        "zone": i.zone,
        "image_id": i.image_id,
        "private_ip": i.private_ip,
        "public_ip": i.public_ip,
        "autoscaling_group": i.autoscaling_group,
    })
}
