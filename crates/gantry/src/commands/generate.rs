//! `role:create`, `roles:update`, `packer:create`, `autoscale:create`: the
//! repository's generated files, all built before the first is written.

use std::io::Write;

use anyhow::Context as _;
use gantry_generate::write::{WriteOutcome, write_atomic};
use gantry_generate::{Output, role_path};
use gantry_spec::NodeGroup;
use serde::Serialize;

use crate::context::Context;
use crate::repo::Opened;

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Role,
    RoleUpdate,
    Packer,
    Autoscale,
}

/// One file, as `--json` lists it.
#[derive(Debug, Serialize)]
struct Written {
    path: String,
    status: &'static str,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Files {
    files: Vec<Written>,
}

pub fn run(ctx: &Context, opened: &Opened, kind: Kind, group: Option<&str>) -> anyhow::Result<()> {
    let groups = select_groups(opened, kind, group)?;
    // Build every file before writing any, so bad input writes nothing.
    let mut outputs: Vec<Output> = Vec::new();
    let mut problems = Vec::new();
    for g in &groups {
        match kind {
            Kind::Role | Kind::RoleUpdate => outputs.push(gantry_generate::role_file(g)),
            Kind::Packer => match gantry_generate::packer_file(g) {
                Ok(out) => outputs.push(out),
                Err(mut d) => problems.append(&mut d),
            },
            Kind::Autoscale => {
                outputs.push(gantry_generate::role_file(g));
                outputs.push(gantry_generate::asg_dna_file(g));
            }
        }
    }
    if !problems.is_empty() {
        return Err(opened.bad_input(problems));
    }

    let mut written = Vec::new();
    for out in &outputs {
        let path = opened.dir.join(&out.path);
        let outcome = write_atomic(&path, &out.bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(Written {
            path: opened.show_path(&out.path),
            status: match outcome {
                WriteOutcome::Written => "written",
                WriteOutcome::Unchanged => "unchanged",
            },
        });
    }

    let files = Files { files: written };
    ctx.output().print(&files, |stdout| print_written(stdout, &files.files))
}

fn print_written(stdout: &mut dyn Write, written: &[Written]) -> anyhow::Result<()> {
    if written.is_empty() {
        writeln!(
            stdout,
            "no roles to update: roles/ has no role of a group in nodes.json (create one with `gantry role:create GROUP`)"
        )?;
        return Ok(());
    }
    for w in written {
        writeln!(stdout, "{:<9} {}", w.status, w.path)?;
    }
    let changed = written.iter().filter(|w| w.status == "written").count();
    if changed == 0 {
        writeln!(stdout, "nothing written: {} file(s) already up to date", written.len())?;
    }
    Ok(())
}

/// The groups a command acts on: the named one, or its default set.
fn select_groups<'a>(opened: &'a Opened, kind: Kind, group: Option<&str>) -> anyhow::Result<Vec<&'a NodeGroup>> {
    let repo = &opened.repo;
    if let Some(name) = group {
        return repo.group(name).map(|g| vec![g]).map_err(|d| opened.bad_input(vec![d]));
    }
    Ok(repo
        .groups
        .values()
        .filter(|g| match kind {
            Kind::Role | Kind::Packer => true,
            Kind::RoleUpdate => opened.dir.join(role_path(&g.name)).is_file(),
            Kind::Autoscale => g.autoscale.is_some(),
        })
        .collect())
}
