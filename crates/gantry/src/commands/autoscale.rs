//! `autoscale:run`, `autoscale:update`, `autoscale:status`
//! (`autoscale:create` is `generate`): a node group's autoscaling groups,
//! one generation at a time. The algorithms (launching a generation,
//! replacing one by the next, AWS's instance refresh) are
//! `gantry_aws::generations`; this module checks the request against the
//! repository, says what happens, and prints the outcome.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use gantry_aws::generations::{self, Progress, Refreshing, Replacement, Timing, UpdateError, live_generations, names};
use gantry_aws::{Asg, AsgSettings, Aws, NAME_TAG, TemplateVersion};
use gantry_generate::asg_dna_path;
use gantry_spec::Autoscale;
use serde::Serialize;

use super::aws::{Plan, launch_spec, plan};
use crate::BadInput;
use crate::cli::{AwsArgs, LaunchArgs, Strategy, UpdateArgs};
use crate::context::Context;
use crate::repo::Opened;

/// `autoscale:run GROUP`: the first generation, a launch template and an
/// autoscaling group from it; refuses when the group already has one.
pub fn run(ctx: &Context, opened: &Opened, group: &str, launch: &LaunchArgs, key: Option<&Path>) -> anyhow::Result<()> {
    let (plan, autoscale) = plan_for(opened, group, launch, key)?;
    let connect = super::aws::connect_for(opened, Some(group), launch.aws.endpoint_url.as_deref());
    let report = ctx.block_on(async {
        let aws = Aws::connect(&connect).await?;
        let (existing, generation) = live_generations(&aws, group).await?;
        if !existing.is_empty() {
            anyhow::bail!(
                "group {group} already has autoscaling group {}: replace it with `gantry autoscale:update {group}`",
                asg_names(&existing)
            );
        }
        let (spec, image) = launch_spec(&aws, &plan, launch.ami.as_deref()).await?;
        let settings = settings(&aws, &plan, autoscale).await?;
        let new = generations::launch(&aws, group, generation, &spec, &settings).await?;
        eprintln!(
            "created autoscaling group {} in {}: {} node(s) ({}..{}) of {} from {}, launch template {}",
            new.name,
            aws.region(),
            settings.desired,
            settings.min,
            settings.max,
            spec.instance_type,
            image.id,
            template_label(&new.template)
        );
        Ok(Report {
            asg: new.name,
            deleted: vec![],
            group: group.to_string(),
            image_id: image.id,
            template: template_label(&new.template),
        })
    })?;
    ctx.output().print(&report, |out| Ok(writeln!(out, "{}", report.asg)?))
}

/// `autoscale:update GROUP`: the next generation replaces the group's
/// (or, with `--strategy instance-refresh`, AWS refreshes it in place).
pub fn update(
    ctx: &Context,
    opened: &Opened,
    group: &str,
    launch: &LaunchArgs,
    key: Option<&Path>,
    args: &UpdateArgs,
) -> anyhow::Result<()> {
    let (plan, autoscale) = plan_for(opened, group, launch, key)?;
    let connect = super::aws::connect_for(opened, Some(group), launch.aws.endpoint_url.as_deref());
    let timing = Timing {
        wait: args.wait,
        poll: args.poll,
        settle: args.settle.unwrap_or(Duration::from_secs(autoscale.timeout)),
    };
    let report = ctx.block_on(async {
        let aws = Aws::connect(&connect).await?;
        let (old, generation) = live_generations(&aws, group).await?;
        if old.is_empty() {
            anyhow::bail!(
                "group {group} has no autoscaling group to update: create one with `gantry autoscale:run {group}`"
            );
        }
        match args.strategy {
            Strategy::Replace => {
                let (spec, image) = launch_spec(&aws, &plan, launch.ami.as_deref()).await?;
                let settings = settings(&aws, &plan, autoscale).await?;
                let replacement =
                    Replacement { group, old: &old, generation, spec: &spec, settings: &settings, timing };
                let cancel = ctrl_c()?;
                let replaced = generations::replace(&aws, &replacement, cancel, |p| show(&p, &spec, &image.id, timing))
                    .await
                    .map_err(|e| failed(group, e))?;
                Ok(Report {
                    asg: replaced.new.name,
                    deleted: replaced.deleted,
                    group: group.to_string(),
                    image_id: image.id,
                    template: template_label(&replaced.new.template),
                })
            }
            Strategy::InstanceRefresh => {
                let [asg] = old.as_slice() else {
                    anyhow::bail!(
                        "--strategy instance-refresh updates one autoscaling group, and group {group} has {}: use --strategy replace",
                        asg_names(&old)
                    );
                };
                generations::check_refresh(&aws, asg).await.map_err(|e| failed(group, e))?;
                let (spec, image) = launch_spec(&aws, &plan, launch.ami.as_deref()).await?;
                let refreshing = Refreshing { asg, spec: &spec, warmup_seconds: autoscale.timeout, timing };
                let cancel = ctrl_c()?;
                let template = generations::refresh(&aws, &refreshing, cancel, |p| show(&p, &spec, &image.id, timing))
                    .await
                    .map_err(|e| failed(group, e))?;
                Ok(Report {
                    asg: asg.name.clone(),
                    deleted: vec![],
                    group: group.to_string(),
                    image_id: image.id,
                    template: template_label(&template),
                })
            }
        }
    })?;
    ctx.output().print(&report, |out| Ok(writeln!(out, "{}", report.asg)?))
}

/// Completes on Ctrl-C. Listening starts when it is called, just before
/// anything is made: from then on a Ctrl-C, even during an AWS call, is
/// acted on at the update's next wait, so what was made is cleaned up
/// rather than left behind (before, Ctrl-C ends the command at once, with
/// nothing made).
fn ctrl_c() -> anyhow::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    Ok(async move {
        interrupt.recv().await;
        "Ctrl-C"
    })
}

/// An update's failure as the user reads it: what failed and why, what
/// was undone, and what to do about what was not.
fn failed(group: &str, e: UpdateError) -> anyhow::Error {
    match e {
        UpdateError::RefreshUnavailable(e) => anyhow::anyhow!(
            "{e}\ninstance refresh is not available at this endpoint: use --strategy replace (the default); nothing was changed"
        ),
        e @ (UpdateError::Abandoned { .. } | UpdateError::RefreshFailed { .. }) => {
            anyhow::Error::new(e).context(format!("autoscale:update of {group} failed"))
        }
        other => other.into(),
    }
}

/// The update's progress on stderr.
fn show(progress: &Progress<'_>, spec: &gantry_aws::LaunchSpec, image_id: &str, timing: Timing) {
    match progress {
        Progress::Created { asg } => eprintln!(
            "created autoscaling group {} ({} node(s) of {} from {image_id}, launch template {}); waiting up to {} for its nodes to be in service",
            asg.name,
            asg.settings.desired,
            spec.instance_type,
            template_label(&asg.template),
            humantime::format_duration(timing.wait)
        ),
        Progress::Looked { elapsed, line } => eprintln!("  [{:>4}s] {line}", elapsed.as_secs()),
        Progress::Settling { asg, settle } => eprintln!(
            "all nodes of {asg} are in service; both groups serve for {} so other nodes can update",
            humantime::format_duration(*settle)
        ),
        Progress::DeletedOld { asg } => {
            eprintln!("deleted the old autoscaling group {asg} (its instances are terminating)");
        }
        Progress::RefreshStarted { refresh, template } => eprintln!(
            "started instance refresh {} of {} onto launch template {}",
            refresh.id,
            refresh.asg,
            template_label(template)
        ),
        Progress::RefreshLooked { elapsed, state } => {
            eprintln!("  [{:>4}s] {} {}% complete", elapsed.as_secs(), state.status, state.percentage_complete);
        }
    }
}

/// `autoscale:status [GROUP]`: every autoscaling group of the group (of
/// every group), with its instances in service.
pub fn status(ctx: &Context, opened: &Opened, group: Option<&str>, aws: &AwsArgs) -> anyhow::Result<()> {
    let connect = super::aws::connect_for(opened, group, aws.endpoint_url.as_deref());
    let asgs = ctx.block_on(async { anyhow::Ok(Aws::connect(&connect).await?.group_asgs(group).await?) })?;
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
    ctx.output().listing(&asgs, AsgView::of, &header, row, "no autoscaling groups")
}

/// What `run` and `update` print with `--json` (without, the autoscaling
/// group's name).
#[derive(Debug, Serialize)]
struct Report {
    #[serde(rename = "autoscaling_group")]
    asg: String,
    /// Old autoscaling groups deleted.
    deleted: Vec<String>,
    group: String,
    image_id: String,
    #[serde(rename = "launch_template")]
    template: String,
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

/// What every generation of the group is made with: sizes and
/// health-check grace from nodes.json, spread over every zone (or in the
/// group's subnet), tagged with the group (and named after it) down to
/// its instances.
async fn settings(aws: &Aws, plan: &Plan<'_>, autoscale: Autoscale) -> anyhow::Result<AsgSettings> {
    let group = plan.group;
    let zones = if group.subnet_id.is_some() { Vec::new() } else { aws.zones().await? };
    let mut tags =
        vec![(gantry_aws::GROUP_TAG.to_string(), group.name.clone()), (NAME_TAG.to_string(), group.name.clone())];
    tags.extend(group.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(AsgSettings {
        min: autoscale.node_min,
        max: autoscale.node_max,
        desired: autoscale.desired,
        grace_seconds: autoscale.timeout,
        zones,
        subnet_id: group.subnet_id.clone(),
        tags,
    })
}

fn asg_names(asgs: &[Asg]) -> String {
    names(&asgs.iter().map(|a| a.name.as_str()).collect::<Vec<_>>())
}

fn template_label(template: &TemplateVersion) -> String {
    format!("{}:{}", template.template_name, template.version)
}

/// `<launch template>:<version>` of an autoscaling group.
fn template_of(asg: &Asg) -> Option<String> {
    asg.launch_template.as_ref().map(|(name, version)| format!("{name}:{version}"))
}

/// An autoscaling group as `autoscale:status --json` lists it.
#[derive(Debug, Serialize)]
struct AsgView<'a> {
    created: &'a str,
    desired: i32,
    group: &'a str,
    in_service: usize,
    instances: Vec<AsgInstanceView<'a>>,
    launch_template: Option<String>,
    max: i32,
    min: i32,
    name: &'a str,
    status: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct AsgInstanceView<'a> {
    health: &'a str,
    id: &'a str,
    lifecycle: &'a str,
    zone: &'a str,
}

impl<'a> AsgView<'a> {
    fn of(asg: &'a Asg) -> AsgView<'a> {
        AsgView {
            created: &asg.created,
            desired: asg.desired,
            group: &asg.group,
            in_service: asg.in_service(),
            instances: asg
                .instances
                .iter()
                .map(|i| AsgInstanceView { health: &i.health, id: &i.id, lifecycle: &i.lifecycle, zone: &i.zone })
                .collect(),
            launch_template: template_of(asg),
            max: asg.max,
            min: asg.min,
            name: &asg.name,
            status: asg.status.as_deref(),
        }
    }
}
