//! `gantry watch PREFIX`: every change under a prefix, one JSON object per
//! line, resumed exactly after the last event printed when the connection
//! drops. PREFIX is a KV prefix, as `kv:*` name keys (`datastores/`
//! follows `kv:put datastores/X`, printed with the KV key); with `--store`
//! it is a store prefix (`machines/`, `instances/api/`, `agents/`).

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use gantry_api::keys;
use gantry_client::{ClientError, WatchItem};

use crate::context::{Context, explain};

pub fn watch(ctx: &Context, prefix: &str, store: bool, from: u64) -> anyhow::Result<()> {
    let followed = if store { Followed::Store(prefix) } else { Followed::Kv(prefix) };
    let watched = followed.store_prefix();
    let client = ctx.client();
    ctx.block_on(async move {
        // List, then watch from the revision after the listing: nothing
        // written in between is missed.
        let presence = client.any_under(&watched).await.map_err(explain)?;
        if !presence.found {
            eprintln!("{}", followed.nothing_yet());
        }
        let from = if from == 0 { presence.revision + 1 } else { from };
        let mut last_id: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let stream = match client.watch(&watched, from, last_id.as_deref()).await {
                Ok(s) => s,
                Err(e @ ClientError::Connect { .. }) if last_id.is_some() => {
                    eprintln!("gantry watch: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => return Err(explain(e)),
            };
            backoff = Duration::from_millis(100);
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(WatchItem::Event { id, mut event }) => {
                        event.key = followed.shown_key(event.key);
                        let mut out = std::io::stdout().lock();
                        serde_json::to_writer(&mut out, &event)?;
                        writeln!(out)?;
                        out.flush()?;
                        last_id = Some(id);
                    }
                    Ok(WatchItem::Reset(reset)) => {
                        anyhow::bail!("{}; run `gantry watch` again (from now) after re-reading", reset.message);
                    }
                    Err(e) => {
                        eprintln!("gantry watch: {e}; reconnecting");
                        break;
                    }
                }
            }
            // The server closed the stream (restart, shutdown): resume.
            if last_id.is_none() {
                tokio::time::sleep(backoff).await;
            }
        }
    })
}

/// What the user follows: KV keys, or the store's own.
#[derive(Debug, Clone, Copy)]
enum Followed<'a> {
    Kv(&'a str),
    Store(&'a str),
}

impl Followed<'_> {
    fn store_prefix(self) -> String {
        match self {
            Followed::Kv(prefix) => keys::kv(prefix),
            Followed::Store(prefix) => prefix.to_owned(),
        }
    }

    /// An event's key as the user named the prefix: a KV key for KV prefixes.
    fn shown_key(self, key: String) -> String {
        match self {
            Followed::Kv(_) => key.strip_prefix(keys::KV).map(str::to_owned).unwrap_or(key),
            Followed::Store(_) => key,
        }
    }

    /// Said once when nothing is under the prefix yet, so that a watch that
    /// waits for a first change is not mistaken for one that hangs.
    fn nothing_yet(self) -> String {
        let (Followed::Kv(prefix) | Followed::Store(prefix)) = self;
        let mut notice = format!("no keys under {prefix} yet; waiting for changes");
        let store_namespaces = [keys::KV, keys::MACHINES, keys::GROUPS, keys::SERVICES, keys::INSTANCES, keys::AGENTS];
        if matches!(self, Followed::Kv(_)) && store_namespaces.iter().any(|ns| prefix.starts_with(ns)) {
            notice.push_str(&format!(
                "\n = help: {prefix} is read as a KV prefix (under kv/); to follow the store's keys, run `gantry watch --store {prefix}`"
            ));
        }
        notice
    }
}
