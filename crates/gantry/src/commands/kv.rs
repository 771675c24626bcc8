//! `kv:get`, `kv:put`, `kv:del`: the free key-value space. Keys are KV keys
//! (`datastores/X`), which the store holds under `kv/` (`kv/datastores/X`).

use gantry_api::ErrorCode;
use gantry_client::PutOptions;

use crate::context::{Context, explain};
use crate::output::print_json;

/// Prints the value (a newline added if it has none); exit 1 when the key does not exist.
pub fn get(ctx: &Context, key: &str) -> anyhow::Result<()> {
    match ctx.block_on(ctx.client().kv_get(key)).map_err(explain)? {
        Some(entry) => ctx.output().print(&entry, |out| {
            out.write_all(entry.value.as_bytes())?;
            if !entry.value.ends_with('\n') {
                out.write_all(b"\n")?;
            }
            Ok(())
        }),
        None => {
            eprintln!("error: no key {key:?}");
            std::process::exit(1);
        }
    }
}

/// Prints nothing on success (the write's revision with `--json`); a lost
/// compare-and-set is exit 1.
pub fn put(ctx: &Context, key: &str, value: &str, cas: Option<u64>) -> anyhow::Result<()> {
    let written = ctx.block_on(ctx.client().kv_put(key, value, PutOptions { cas, lease: None }));
    let result = written.map_err(|e| match e.code() {
        Some(ErrorCode::CasFailed) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        _ => explain(e),
    })?;
    if ctx.output().is_json() {
        print_json(&result)?;
    }
    Ok(())
}

pub fn del(ctx: &Context, key: &str) -> anyhow::Result<()> {
    let deleted = ctx.block_on(ctx.client().kv_delete(key)).map_err(explain)?;
    if ctx.output().is_json() {
        print_json(&deleted)?;
    }
    Ok(())
}
