//! `nodes:list`, `nodes:show`, `services:list`, `services:show`, `repo:check`: read-only views of the spec.

use std::io::Write;

use gantry_spec::{Command, NodeGroup, Repo, Service};
use serde_json::json;

use crate::remote::print_json;
use crate::repo::Opened;

pub fn nodes_list(opened: &Opened, as_json: bool) -> anyhow::Result<()> {
    let repo = &opened.repo;
    if as_json {
        let groups: Vec<_> = repo.groups.values().map(|g| group_json(repo, g)).collect();
        return print_json(&groups);
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

pub fn nodes_show(opened: &Opened, name: &str, as_json: bool) -> anyhow::Result<()> {
    let repo = &opened.repo;
    let g = repo.group(name).map_err(|d| opened.bad_input(vec![d]))?;
    if as_json {
        return print_json(&group_json(repo, g));
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

fn group_json(repo: &Repo, g: &NodeGroup) -> serde_json::Value {
    let mut v = serde_json::to_value(g).expect("plain data");
    let services: Vec<&str> = repo.services_of(g).iter().map(|s| s.id.as_str()).collect();
    v["role"] = json!(g.role_name());
    v["role_run_list"] = json!(g.role_run_list());
    v["services"] = json!(services);
    v
}

pub fn services_list(opened: &Opened, as_json: bool) -> anyhow::Result<()> {
    let repo = &opened.repo;
    if as_json {
        let services: Vec<&Service> = repo.services.values().collect();
        return print_json(&services);
    }
    let mut rows = vec![
        ["SERVICE", "FEDERATION", "PORT", "LOCAL PORT", "PUBLIC", "REQUIRES", "PROVIDES"].map(String::from).to_vec(),
    ];
    for s in repo.services.values() {
        rows.push(vec![
            s.id.clone(),
            s.federation.clone(),
            s.port().map_or_else(|| "auto".into(), |p| p.to_string()),
            s.local_port.map_or_else(|| "-".into(), |p| p.to_string()),
            if s.public { "yes" } else { "no" }.into(),
            join_or_dash(s.requires.keys().map(String::as_str)),
            join_or_dash(s.provides.keys().map(String::as_str)),
        ]);
    }
    print_table(&rows)
}

pub fn services_show(opened: &Opened, id: &str, as_json: bool) -> anyhow::Result<()> {
    let repo = &opened.repo;
    let s = repo.service(id).map_err(|d| opened.bad_input(vec![d]))?;
    if as_json {
        return print_json(s);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "service {}", s.id)?;
    let field = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {k:<12} {v}");
    field(&mut out, "description", s.description.as_deref().unwrap_or("-"))?;
    let command = match &s.command {
        Command::External => "(started by the provision run)".to_string(),
        Command::Shell(line) => line.clone(),
        Command::Argv(argv) => format!("{argv:?}"),
    };
    field(&mut out, "command", &command)?;
    field(&mut out, "federation", &s.federation)?;
    field(&mut out, "public", if s.public { "yes" } else { "no" })?;
    field(&mut out, "port", &s.port().map_or_else(|| "assigned by the agent".into(), |p| p.to_string()))?;
    field(&mut out, "local_port", &s.local_port.map_or_else(|| "-".into(), |p| p.to_string()))?;
    let check = s.check.as_ref().map_or_else(|| "none".to_string(), |c| serde_json::to_string(c).expect("plain data"));
    field(&mut out, "check", &check)?;
    let groups: Vec<&str> = repo
        .groups
        .values()
        .filter(|g| repo.services_of(g).iter().any(|x| x.id == s.id))
        .map(|g| g.name.as_str())
        .collect();
    field(&mut out, "groups", &join_or_dash(groups.into_iter()))?;
    writeln!(out, "  environment")?;
    for (k, v) in &s.environment {
        writeln!(out, "    {k}={v}")?;
    }
    writeln!(out, "  requires")?;
    for (k, t) in &s.requires {
        let sources: Vec<String> = t.placeholders().map(|p| source_of(repo, s, p)).collect();
        writeln!(out, "    {k} = {t}    <- {}", sources.join(", "))?;
    }
    writeln!(out, "  provides")?;
    for (k, t) in &s.provides {
        writeln!(out, "    {k} = {t}")?;
    }
    Ok(())
}

/// Where a placeholder in `s`'s requires is looked up: a live provider first,
/// datastores second (seed 001).
fn source_of(repo: &Repo, s: &Service, placeholder: &str) -> String {
    let provider =
        repo.services.values().find(|p| p.federation == s.federation && p.provides.contains_key(placeholder));
    match (provider, repo.datastores.contains_key(placeholder)) {
        (Some(p), true) => format!("{placeholder} from service {} (datastore as fallback)", p.id),
        (Some(p), false) => format!("{placeholder} from service {}", p.id),
        (None, _) => format!("{placeholder} from datastores"),
    }
}

pub fn check(opened: &Opened, as_json: bool) -> anyhow::Result<()> {
    let repo = &opened.repo;
    if as_json {
        return print_json(&json!({
            "ok": true,
            "groups": repo.groups.len(),
            "services": repo.services.len(),
            "datastores": repo.datastores.len(),
        }));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ok: {} node group(s), {} service(s), {} datastore(s)",
        repo.groups.len(),
        repo.services.len(),
        repo.datastores.len()
    )?;
    Ok(())
}

fn join_or_dash<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let joined = items.collect::<Vec<_>>().join(",");
    if joined.is_empty() { "-".into() } else { joined }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub(crate) fn print_table(rows: &[Vec<String>]) -> anyhow::Result<()> {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = std::io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
