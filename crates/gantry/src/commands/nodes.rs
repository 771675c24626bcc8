//! `nodes:list` and `nodes:show`: the node groups of nodes.json, merged over `__base__`.

use std::io::Write;

use gantry_spec::{NodeGroup, Repo, RunListItem};
use serde::Serialize;

use super::services::join_or_dash;
use crate::context::Context;
use crate::output::print_table;
use crate::repo::Opened;

pub fn list(ctx: &Context, opened: &Opened) -> anyhow::Result<()> {
    let repo = &opened.repo;
    if ctx.output().is_json() {
        let groups =
            repo.groups.values().map(|g| GroupView::of(repo, g).sorted()).collect::<anyhow::Result<Vec<_>>>()?;
        return crate::output::print_json(&groups);
    }
    let mut rows = vec![["GROUP", "INSTANCE TYPE", "REGION", "AUTOSCALE", "SERVICES"].map(String::from).to_vec()];
    for g in repo.groups.values() {
        rows.push(vec![
            g.name.clone(),
            g.instance_type.clone().unwrap_or_else(|| "-".into()),
            g.region.clone().unwrap_or_else(|| "-".into()),
            g.autoscale.map_or_else(|| "no".into(), |a| format!("{}..{}", a.node_min, a.node_max)),
            join_or_dash(repo.services_of(g).iter().map(|s| s.id.as_str())),
        ]);
    }
    print_table(&rows)
}

pub fn show(ctx: &Context, opened: &Opened, name: &str) -> anyhow::Result<()> {
    let repo = &opened.repo;
    let g = repo.group(name).map_err(|d| opened.bad_input(vec![d]))?;
    if ctx.output().is_json() {
        return crate::output::print_json(&GroupView::of(repo, g).sorted()?);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "group {}", g.name)?;
    let field = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {k:<20} {v}");
    field(&mut out, "description", g.description.as_deref().unwrap_or("-"))?;
    field(&mut out, "role", &g.role_name())?;
    field(&mut out, "type", &g.builder_type)?;
    for (k, v) in [
        ("region", &g.region),
        ("instance_type", &g.instance_type),
        ("source_ami", &g.source_ami),
        ("ssh_username", &g.ssh_username),
        ("communicator", &g.communicator),
        ("subnet_id", &g.subnet_id),
        ("vpc_id", &g.vpc_id),
        ("iam_instance_profile", &g.iam_instance_profile),
    ] {
        if let Some(v) = v {
            field(&mut out, k, v)?;
        }
    }
    let autoscale = g.autoscale.map_or_else(
        || "no".to_string(),
        |a| format!("node_min {} node_max {} desired {} timeout {}s", a.node_min, a.node_max, a.desired, a.timeout),
    );
    field(&mut out, "autoscale", &autoscale)?;
    field(&mut out, "security_groups", &join_or_dash(g.security_groups.iter().map(String::as_str)))?;
    field(&mut out, "services", &join_or_dash(repo.services_of(g).iter().map(|s| s.id.as_str())))?;
    for (k, attrs) in [("default_attributes", &g.default_attributes), ("override_attributes", &g.override_attributes)] {
        writeln!(out, "  {k}")?;
        for (name, value) in attrs {
            writeln!(out, "    {name} = {value}")?;
        }
    }
    writeln!(out, "  run_list (role)")?;
    for item in g.role_run_list() {
        writeln!(out, "    {item}")?;
    }
    Ok(())
}

/// A group as `--json` shows it: its fields, its role and the services it runs.
#[derive(Debug, Serialize)]
struct GroupView<'a> {
    #[serde(flatten)]
    group: &'a NodeGroup,
    role: String,
    role_run_list: Vec<RunListItem>,
    services: Vec<&'a str>,
}

impl<'a> GroupView<'a> {
    fn of(repo: &'a Repo, group: &'a NodeGroup) -> GroupView<'a> {
        GroupView {
            group,
            role: group.role_name(),
            role_run_list: group.role_run_list(),
            services: repo.services_of(group).iter().map(|s| s.id.as_str()).collect(),
        }
    }

    /// As JSON with its keys sorted, the group's and the role's together,
    /// as `nodes:show --json` has always printed them.
    fn sorted(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}
