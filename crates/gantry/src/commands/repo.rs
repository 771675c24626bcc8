//! `repo:check`: the whole repository loaded, every problem reported (for
//! CI hooks in users' repositories).

use serde::Serialize;

use crate::context::Context;
use crate::repo::Opened;

/// What `repo:check --json` prints (problems are bad input, on stderr).
#[derive(Debug, Serialize)]
struct Checked {
    datastores: usize,
    groups: usize,
    ok: bool,
    services: usize,
}

pub fn check(ctx: &Context, opened: &Opened) -> anyhow::Result<()> {
    let repo = &opened.repo;
    let checked = Checked {
        datastores: repo.datastores.len(),
        groups: repo.groups.len(),
        ok: true,
        services: repo.services.len(),
    };
    ctx.output().print(&checked, |out| {
        writeln!(
            out,
            "ok: {} node group(s), {} service(s), {} datastore(s)",
            checked.groups, checked.services, checked.datastores
        )?;
        Ok(())
    })
}
