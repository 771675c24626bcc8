//! `gantry lookup SERVICE [PROPERTY=VALUE...]`: one healthy instance of a
//! service (seed 002's `get_host`), as `ADDRESS:PORT`.

use super::filters;
use crate::context::{Context, explain};

pub fn lookup(ctx: &Context, service: &str, wheres: &[String]) -> anyhow::Result<()> {
    match ctx.block_on(ctx.client().lookup(service, &filters(wheres)?)) {
        Ok(i) => ctx.output().print(&i, |out| Ok(writeln!(out, "{}:{}", i.address, i.port)?)),
        // None matches: exit 1 with the server's reason, not bad input.
        Err(e) if e.is_not_found() => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        Err(e) => Err(explain(e)),
    }
}
