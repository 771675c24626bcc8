//! `autoscale:run`, `autoscale:update`, `autoscale:status`: a node group's
//! autoscaling groups, one generation at a time: `<group>-v<N>`, each
//! launched from its own launch template `gantry-<group>-v<N>`, which goes
//! when the group goes. (One template per generation rather than versions
//! of one: a generation's launch settings are deleted with it, and moto 5
//! breaks on the user data of a template's second version.)
//!
//! `autoscale:update` replaces a group the way seed 004 describes, from
//! basic calls that every AWS-compatible endpoint has: the next generation
//! from the group as nodes.json says now; wait (bounded, with progress)
//! until all its instances are in service; wait `--settle` (the group's
//! `timeout`) so other nodes can update; check the new group once more;
//! then delete the old group. Any failure before that last step deletes
//! the new group and leaves the old one serving. AWS's own instance
//! refresh is `--strategy instance-refresh`: a new version of the group's
//! template, rolled onto its instances by AWS.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use gantry_aws::{Asg, Aws, NAME_TAG, NewAsg, Refresh, TemplateVersion};
use gantry_generate::asg_dna_path;
use gantry_spec::Autoscale;
use serde_json::json;

use super::launch::{LaunchArgs, Plan, launch_spec, plan};
use crate::BadInput;
use crate::cli::AwsArgs;
use crate::remote::{print_json, runtime};
use crate::repo::Opened;

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

/// Generation `generation` of a node group's autoscaling group.
pub fn asg_name(group: &str, generation: u32) -> String {
    format!("{group}-v{generation}")
}

/// The launch template of an autoscaling group.
pub fn template_name(asg: &str) -> String {
    format!("gantry-{asg}")
}

/// One past the newest generation among a group's autoscaling groups (1
/// for the first).
fn next_generation(group: &str, asgs: &[Asg]) -> u32 {
    let generation = |a: &Asg| a.name.strip_prefix(group)?.strip_prefix("-v")?.parse::<u32>().ok();
    asgs.iter().filter_map(generation).max().map_or(1, |n| n + 1)
}

/// `autoscale:run GROUP`: the first generation, a launch template and an
/// autoscaling group from it; refuses when the group already has one.
pub fn run(opened: &Opened, group: &str, launch: &LaunchArgs, key: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let (plan, autoscale) = plan_for(opened, group, launch, key)?;
    let connect = super::connect_for(opened, Some(group), launch.aws.endpoint_url.as_deref());
    let report = runtime()?.block_on(async {
        let aws = Aws::connect(&connect).await?;
        let (existing, generation) = live_asgs(&aws, group).await?;
        if !existing.is_empty() {
            anyhow::bail!(
                "group {group} already has autoscaling group {}: replace it with `gantry autoscale:update {group}`",
                names(&existing)
            );
        }
        let (spec, image) = launch_spec(&aws, &plan, launch.ami.as_deref()).await?;
        let name = asg_name(group, generation);
        let template = aws.put_launch_template(&template_name(&name), &spec).await?;
        aws.set_default_version(&template).await?;
        let new = new_asg(&aws, &plan, autoscale, &name, &template).await?;
        if let Err(e) = aws.create_asg(&new).await {
            let cleanup = match aws.delete_launch_template(&template.template_name).await {
                Ok(()) => format!("deleted the launch template {}", template.template_name),
                Err(e) => format!("deleting the launch template {} failed too ({e})", template.template_name),
            };
            anyhow::bail!("{e}\n{cleanup}");
        }
        eprintln!(
            "created autoscaling group {} in {}: {} node(s) ({}..{}) of {} from {}, launch template {}",
            new.name,
            aws.region(),
            new.desired,
            new.min,
            new.max,
            spec.instance_type,
            image.id,
            template_label(&template)
        );
        Ok(Report {
            group: group.to_string(),
            asg: new.name,
            template: template_label(&template),
            image_id: image.id,
            deleted: vec![],
        })
    })?;
    report.print(json)
}

/// `autoscale:update GROUP`: see the module's documentation.
pub fn update(
    opened: &Opened,
    group: &str,
    launch: &LaunchArgs,
    key: Option<&Path>,
    args: &UpdateArgs,
    json: bool,
) -> anyhow::Result<()> {
    let (plan, autoscale) = plan_for(opened, group, launch, key)?;
    let connect = super::connect_for(opened, Some(group), launch.aws.endpoint_url.as_deref());
    let report = runtime()?.block_on(async {
        let aws = Aws::connect(&connect).await?;
        let (old, generation) = live_asgs(&aws, group).await?;
        if old.is_empty() {
            anyhow::bail!(
                "group {group} has no autoscaling group to update: create one with `gantry autoscale:run {group}`"
            );
        }
        let update = Update { aws: &aws, plan: &plan, autoscale, old: &old, generation, launch, args };
        match args.strategy {
            Strategy::Replace => update.replace().await,
            Strategy::InstanceRefresh => update.refresh().await,
        }
    })?;
    report.print(json)
}

/// `autoscale:status [GROUP]`: every autoscaling group of the group (of
/// every group), with its instances in service.
pub fn status(opened: &Opened, group: Option<&str>, aws: &AwsArgs, json: bool) -> anyhow::Result<()> {
    let connect = super::connect_for(opened, group, aws.endpoint_url.as_deref());
    let asgs = runtime()?.block_on(async { anyhow::Ok(Aws::connect(&connect).await?.group_asgs(group).await?) })?;
    let header = ["GROUP", "AUTOSCALING GROUP", "STATUS", "MIN..MAX", "DESIRED", "IN SERVICE", "LAUNCH TEMPLATE"];
    let row = |a: &Asg| {
        vec![
            a.group.clone(),
            a.name.clone(),
            a.status.clone().unwrap_or_else(|| "active".into()),
            format!("{}..{}", a.min, a.max),
            a.desired.to_string(),
            a.in_service().to_string(),
            template_of(a).unwrap_or_else(|| "-".into()),
        ]
    };
    super::print_listing(&asgs, json, asg_json, &header, row, "no autoscaling groups")
}

/// The group's autoscaling groups but those AWS is already deleting (an
/// old generation whose instances are still terminating), and the next
/// generation, past all of them (a name in deletion is still taken).
async fn live_asgs(aws: &Aws, group: &str) -> anyhow::Result<(Vec<Asg>, u32)> {
    let mut asgs = aws.group_asgs(Some(group)).await?;
    let next = next_generation(group, &asgs);
    asgs.retain(|a| !a.is_deleting());
    Ok((asgs, next))
}

/// What `run` and `update` print: the autoscaling group's name, or JSON.
struct Report {
    group: String,
    asg: String,
    template: String,
    image_id: String,
    /// Old autoscaling groups deleted.
    deleted: Vec<String>,
}

impl Report {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            return print_json(&json!({
                "group": self.group,
                "autoscaling_group": self.asg,
                "launch_template": self.template,
                "image_id": self.image_id,
                "deleted": self.deleted,
            }));
        }
        println!("{}", self.asg);
        Ok(())
    }
}

/// The local checks of `run` and `update`: the group is autoscaled and
/// `autoscale:create` wrote its dna, which the nodes get.
fn plan_for<'a>(
    opened: &'a Opened,
    group: &str,
    launch: &LaunchArgs,
    key: Option<&Path>,
) -> anyhow::Result<(Plan<'a>, Autoscale)> {
    let spec = opened.repo.group(group).map_err(|d| opened.bad_input(vec![d]))?;
    let Some(autoscale) = spec.autoscale else {
        return Err(BadInput(format!(
            "error: group \"{group}\" is not autoscaled (\"autoscale\": false)\n = help: set \"autoscale\": {{\"node_min\": 1, \"node_max\": 2, \"timeout\": 300}} in nodes.json, or launch single nodes with `gantry instance:create {group}`"
        ))
        .into());
    };
    let dna_path = asg_dna_path(group);
    let dna = match std::fs::read(opened.dir.join(&dna_path)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BadInput(format!(
                "error: {} does not exist\n = help: write it with `gantry autoscale:create {group}`: the nodes get it as their dna",
                opened.show_path(&dna_path)
            ))
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", opened.show_path(&dna_path))),
    };
    Ok((plan(opened, group, launch, key, &dna)?, autoscale))
}

/// The autoscaling group for `template`: sizes and health-check grace from
/// nodes.json, spread over every zone (or in the group's subnet), tagged
/// with the group (and named after it) down to its instances.
async fn new_asg(
    aws: &Aws,
    plan: &Plan<'_>,
    autoscale: Autoscale,
    name: &str,
    template: &TemplateVersion,
) -> anyhow::Result<NewAsg> {
    let group = plan.group;
    let zones = if group.subnet_id.is_some() { Vec::new() } else { aws.zones().await? };
    let mut tags =
        vec![(gantry_aws::GROUP_TAG.to_string(), group.name.clone()), (NAME_TAG.to_string(), group.name.clone())];
    tags.extend(group.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(NewAsg {
        name: name.to_string(),
        template: template.clone(),
        min: autoscale.node_min,
        max: autoscale.node_max,
        desired: autoscale.desired,
        grace_seconds: autoscale.timeout,
        zones,
        subnet_id: group.subnet_id.clone(),
        tags,
    })
}

/// One `autoscale:update`, whichever the strategy.
struct Update<'a> {
    aws: &'a Aws,
    plan: &'a Plan<'a>,
    autoscale: Autoscale,
    old: &'a [Asg],
    /// Of the new autoscaling group.
    generation: u32,
    launch: &'a LaunchArgs,
    args: &'a UpdateArgs,
}

impl<'a> Update<'a> {
    fn group(&self) -> &'a str {
        &self.plan.group.name
    }

    /// The replacement: new group, wait, settle, check, delete the old.
    async fn replace(&self) -> anyhow::Result<Report> {
        let (aws, group) = (self.aws, self.group());
        let (spec, image) = launch_spec(aws, self.plan, self.launch.ami.as_deref()).await?;
        let name = asg_name(group, self.generation);
        let template = aws.put_launch_template(&template_name(&name), &spec).await?;
        aws.set_default_version(&template).await?;
        let new = new_asg(aws, self.plan, self.autoscale, &name, &template).await?;
        if let Err(e) = aws.create_asg(&new).await {
            return Err(self.abandon(&name, &e.to_string()).await);
        }
        eprintln!(
            "created autoscaling group {name} ({} node(s) of {} from {}, launch template {}); waiting up to {} for its nodes to be in service",
            new.desired,
            spec.instance_type,
            image.id,
            template_label(&template),
            humantime::format_duration(self.args.wait)
        );
        if let Err(why) = self.until_replaced(&name).await {
            return Err(self.abandon(&name, &why).await);
        }
        let mut deleted = Vec::new();
        for old in self.old {
            delete_generation(aws, old).await?;
            eprintln!("deleted the old autoscaling group {} (its instances are terminating)", old.name);
            deleted.push(old.name.clone());
        }
        Ok(Report {
            group: group.to_string(),
            asg: name,
            template: template_label(&template),
            image_id: image.id,
            deleted,
        })
    }

    /// Waits until the new group serves, then lets other nodes update, then
    /// checks the new group once more; the reason it did not work otherwise.
    async fn until_replaced(&self, new: &str) -> Result<(), String> {
        let settle = self.args.settle.unwrap_or(Duration::from_secs(self.autoscale.timeout));
        wait_in_service(self.aws, new, self.args.wait, self.args.poll).await?;
        eprintln!(
            "all nodes of {new} are in service; both groups serve for {} so other nodes can update",
            humantime::format_duration(settle)
        );
        pause(settle).await?;
        let asg = describe(self.aws, new).await?;
        if !asg.is_ready() {
            return Err(format!("the new nodes stopped serving while other nodes updated: {}", progress(&asg)));
        }
        Ok(())
    }

    /// The failure path: delete the new group (if it got that far) and its
    /// launch template, say why and what still serves.
    async fn abandon(&self, new: &str, why: &str) -> anyhow::Error {
        let template = template_name(new);
        let cleanup = match self.aws.asg(new).await {
            Ok(Some(asg)) => {
                delete_generation(self.aws, &asg).await.map(|()| format!("deleted the new autoscaling group {new}"))
            }
            Ok(None) => self
                .aws
                .delete_launch_template(&template)
                .await
                .map(|()| format!("deleted the launch template {template}")),
            Err(e) => Err(e),
        };
        let cleanup =
            cleanup.unwrap_or_else(|e| format!("cleaning up {new} failed too ({e}): delete it and {template} by hand"));
        anyhow!("autoscale:update of {} failed: {why}\n{cleanup}; {} keeps serving", self.group(), names(self.old))
    }

    /// `--strategy instance-refresh`: AWS replaces the instances of the one
    /// existing group, rolling back by itself when that fails; on a timeout
    /// Gantry asks for the rollback.
    async fn refresh(&self) -> anyhow::Result<Report> {
        let (aws, group) = (self.aws, self.group());
        let [asg] = self.old else {
            anyhow::bail!(
                "--strategy instance-refresh updates one autoscaling group, and group {group} has {}: use --strategy replace",
                names(self.old)
            );
        };
        match aws.check_instance_refresh(&asg.name).await {
            Err(e @ gantry_aws::Error::NotImplemented { .. }) => anyhow::bail!(
                "{e}\ninstance refresh is not available at this endpoint: use --strategy replace (the default); nothing was changed"
            ),
            other => other?,
        }
        let (spec, image) = launch_spec(aws, self.plan, self.launch.ami.as_deref()).await?;
        let template = aws.put_launch_template(&template_name(&asg.name), &spec).await?;
        let refresh = aws.start_instance_refresh(&asg.name, &template, self.autoscale.timeout).await?;
        eprintln!(
            "started instance refresh {} of {} onto launch template {}",
            refresh.id,
            asg.name,
            template_label(&template)
        );
        if let Err((why, finished)) = wait_refresh(aws, &refresh, self.args.wait, self.args.poll).await {
            let rollback = match (finished, aws.rollback_instance_refresh(&refresh).await) {
                (true, _) => "AWS rolled it back".to_string(),
                (false, Ok(())) => "asked AWS to roll it back".to_string(),
                (false, Err(e)) => format!("asking AWS to roll it back failed ({e}): roll it back in the console"),
            };
            anyhow::bail!("autoscale:update of {group} failed: {why}\n{rollback}");
        }
        aws.set_default_version(&template).await?;
        Ok(Report {
            group: group.to_string(),
            asg: asg.name.clone(),
            template: template_label(&template),
            image_id: image.id,
            deleted: vec![],
        })
    }
}

/// Deletes an autoscaling group (its instances terminate) and the launch
/// template Gantry made for it.
async fn delete_generation(aws: &Aws, asg: &Asg) -> Result<(), gantry_aws::Error> {
    aws.delete_asg(&asg.name).await?;
    aws.delete_launch_template(&template_name(&asg.name)).await
}

/// Polls (every `poll`, at most `wait` in all) until every instance the
/// group wants is in service and healthy, printing progress when it changes.
async fn wait_in_service(aws: &Aws, name: &str, wait: Duration, poll: Duration) -> Result<(), String> {
    let start = Instant::now();
    let deadline = start + wait;
    let mut shown = String::new();
    loop {
        // AWS needs a while to launch anything: the first look is one poll in.
        pause(poll.min(deadline.saturating_duration_since(Instant::now()))).await?;
        let asg = describe(aws, name).await?;
        let line = progress(&asg);
        if line != shown {
            eprintln!("  [{:>4}s] {line}", start.elapsed().as_secs());
            shown = line;
        }
        if asg.is_ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not every node was in service after {}: {shown}", humantime::format_duration(wait)));
        }
    }
}

/// Polls an instance refresh until it finishes (bounded by `wait`); on
/// failure, the reason and whether the refresh had finished.
async fn wait_refresh(aws: &Aws, refresh: &Refresh, wait: Duration, poll: Duration) -> Result<(), (String, bool)> {
    let start = Instant::now();
    let deadline = start + wait;
    loop {
        pause(poll.min(deadline.saturating_duration_since(Instant::now()))).await.map_err(|why| (why, false))?;
        let state = aws.instance_refresh(refresh).await.map_err(|e| (e.to_string(), false))?;
        eprintln!("  [{:>4}s] {} {}% complete", start.elapsed().as_secs(), state.status, state.percentage_complete);
        match (state.finished, state.succeeded) {
            (true, true) => return Ok(()),
            (true, false) => {
                let reason = state.reason.unwrap_or_else(|| "no reason given".into());
                return Err((format!("the instance refresh ended {}: {reason}", state.status), true));
            }
            _ if Instant::now() >= deadline => {
                return Err((
                    format!("the instance refresh had not finished after {}", humantime::format_duration(wait)),
                    false,
                ));
            }
            _ => {}
        }
    }
}

/// Sleeps, unless Ctrl-C comes first (which fails the update, so that the
/// new group is cleaned up rather than left behind).
async fn pause(duration: Duration) -> Result<(), String> {
    tokio::select! {
        () = tokio::time::sleep(duration) => Ok(()),
        _ = tokio::signal::ctrl_c() => Err("interrupted (Ctrl-C)".to_string()),
    }
}

async fn describe(aws: &Aws, name: &str) -> Result<Asg, String> {
    match aws.asg(name).await {
        Ok(Some(asg)) => Ok(asg),
        Ok(None) => Err(format!("autoscaling group {name} disappeared")),
        Err(e) => Err(format!("looking at {name}: {e}")),
    }
}

/// `12_04-bee-v2: 1/2 in service (i-0a Pending/Healthy)`.
fn progress(asg: &Asg) -> String {
    let waiting: Vec<String> = asg
        .instances
        .iter()
        .filter(|i| !i.is_in_service())
        .map(|i| format!("{} {}/{}", i.id, i.lifecycle, i.health))
        .collect();
    let mut line = format!("{}: {}/{} in service", asg.name, asg.in_service(), asg.desired);
    if !waiting.is_empty() {
        line.push_str(&format!(" ({})", waiting.join(", ")));
    }
    line
}

fn names(asgs: &[Asg]) -> String {
    asgs.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn template_label(template: &TemplateVersion) -> String {
    format!("{}:{}", template.template_name, template.version)
}

/// `<launch template>:<version>` of an autoscaling group.
fn template_of(asg: &Asg) -> Option<String> {
    asg.launch_template.as_ref().map(|(name, version)| format!("{name}:{version}"))
}

fn asg_json(asg: &Asg) -> serde_json::Value {
    json!({
        "group": asg.group,
        "name": asg.name,
        "status": asg.status,
        "min": asg.min,
        "max": asg.max,
        "desired": asg.desired,
        "in_service": asg.in_service(),
        "launch_template": template_of(asg),
        "created": asg.created,
        "instances": asg.instances.iter().map(|i| json!({
            "id": i.id, "lifecycle": i.lifecycle, "health": i.health, "zone": i.zone,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use gantry_aws::Asg;

    fn asg(name: &str) -> Asg {
        Asg {
            name: name.into(),
            group: "12_04-bee".into(),
            status: None,
            min: 1,
            max: 1,
            desired: 1,
            launch_template: None,
            created: String::new(),
            instances: vec![],
        }
    }

    #[test]
    fn the_next_generation_is_past_every_numbered_one() {
        assert_eq!(super::next_generation("12_04-bee", &[]), 1);
        let asgs = [asg("12_04-bee-v2"), asg("12_04-bee-v10"), asg("12_04-bee-manual"), asg("12_04-bee-v3x")];
        assert_eq!(super::next_generation("12_04-bee", &asgs), 11);
        assert_eq!(super::next_generation("12_04", &asgs), 1, "another group's names do not count");
    }
}
