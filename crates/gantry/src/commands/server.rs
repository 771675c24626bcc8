//! `gantry server`: the API server over the store (embedded, or etcd),
//! serving until SIGINT or SIGTERM.

use std::io::Write;

use anyhow::Context as _;
use gantry_store::{EmbeddedConfig, EtcdConfig, Store, StoreConfig};

use crate::BadInput;
use crate::cli::ServeArgs;
use crate::context::Context;

pub fn serve(ctx: &Context, args: &ServeArgs) -> anyhow::Result<()> {
    let config = if args.store == "embedded" {
        StoreConfig::Embedded(EmbeddedConfig::in_dir(&args.data_dir))
    } else if let Some(etcd) = EtcdConfig::from_url(&args.store) {
        StoreConfig::Etcd(etcd)
    } else {
        return Err(BadInput(format!(
            "error: unknown store {:?}\n = help: use --store embedded, or --store etcd://HOST:PORT[,HOST:PORT...]",
            args.store
        ))
        .into());
    };
    let described = match &config {
        StoreConfig::Embedded(_) => format!("embedded in {}", args.data_dir.display()),
        StoreConfig::Etcd(_) => args.store.clone(),
    };
    ctx.block_on(async move {
        // The embedded store creates its data directory itself, private (0700).
        let store = Store::open(config).await.with_context(|| format!("opening the store ({described})"))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {} (is another gantry server running?)", args.listen))?;
        let addr = listener.local_addr()?;
        // Scripts and tests read this line to learn the port.
        println!("gantry server listening on http://{addr} (store: {described})");
        std::io::stdout().flush()?;
        gantry_server::serve_threaded(listener, store.clone(), usize::from(args.threads), shutdown_signal())
            .await
            .context("serving")?;
        store.close().await.context("closing the store")?;
        Ok(())
    })
}

/// SIGINT (Ctrl-C) or SIGTERM (an init system, `gantry down`).
pub(super) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
