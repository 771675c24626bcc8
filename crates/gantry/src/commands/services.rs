//! `services:list` and `services:show`: the service definitions, and
//! where each requirement is looked up.

use std::io::Write;

use gantry_spec::{Command, Repo, Service};

use crate::context::Context;
use crate::output::print_table;
use crate::repo::Opened;

pub fn list(ctx: &Context, opened: &Opened) -> anyhow::Result<()> {
    let repo = &opened.repo;
    if ctx.output().is_json() {
        let services: Vec<&Service> = repo.services.values().collect();
        return crate::output::print_json(&services);
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

pub fn show(ctx: &Context, opened: &Opened, id: &str) -> anyhow::Result<()> {
    let repo = &opened.repo;
    let s = repo.service(id).map_err(|d| opened.bad_input(vec![d]))?;
    ctx.output().print(s, |out| show_text(repo, s, out))
}

fn show_text(repo: &Repo, s: &Service, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "service {}", s.id)?;
    let field = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {k:<12} {v}");
    field(out, "description", s.description.as_deref().unwrap_or("-"))?;
    let command = match &s.command {
        Command::External => "(started by the provision run)".to_string(),
        Command::Shell(line) => line.clone(),
        Command::Argv(argv) => format!("{argv:?}"),
    };
    field(out, "command", &command)?;
    field(out, "federation", &s.federation)?;
    field(out, "public", if s.public { "yes" } else { "no" })?;
    field(out, "port", &s.port().map_or_else(|| "assigned by the agent".into(), |p| p.to_string()))?;
    field(out, "local_port", &s.local_port.map_or_else(|| "-".into(), |p| p.to_string()))?;
    let check = s.check.as_ref().map_or_else(|| "none".to_string(), |c| serde_json::to_string(c).expect("plain data"));
    field(out, "check", &check)?;
    let groups: Vec<&str> = repo
        .groups
        .values()
        .filter(|g| repo.services_of(g).iter().any(|x| x.id == s.id))
        .map(|g| g.name.as_str())
        .collect();
    field(out, "groups", &join_or_dash(groups.into_iter()))?;
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

pub(super) fn join_or_dash<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let joined = items.collect::<Vec<_>>().join(",");
    if joined.is_empty() { "-".into() } else { joined }
}
