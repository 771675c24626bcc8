//! `gantry server`: the API server over the store (embedded, or etcd),
//! serving until SIGINT or SIGTERM.

use std::io::Write;

use anyhow::Context as _;
use gantry_server::{Acl, AclMode, Bootstrap, ServeOptions, ServerTls};
use gantry_store::{EmbeddedConfig, EtcdAuth, EtcdConfig, EtcdTls, Store, StoreConfig};
use gantry_tls::Role;
use gantry_tls::config::{ClientAuth, Identity, TrustedCa};

use crate::BadInput;
use crate::cli::{AclArg, EtcdArgs, ServeArgs, ServeTlsArgs};
use crate::context::{Context, tls_input};

pub fn serve(ctx: &Context, args: &ServeArgs) -> anyhow::Result<()> {
    let embedded = matches!(args.store.as_str(), "embedded" | "redb");
    let config = if args.store == "embedded" {
        StoreConfig::Embedded(EmbeddedConfig::in_dir(&args.data_dir))
    } else if args.store == "redb" {
        StoreConfig::Redb(EmbeddedConfig::redb_in_dir(&args.data_dir))
    } else if let Some(etcd) = EtcdConfig::from_url(&args.store) {
        StoreConfig::Etcd(secure_etcd(etcd, &args.etcd)?)
    } else {
        return Err(BadInput(format!(
            "error: unknown store {:?}\n = help: use --store embedded, --store redb, or --store etcd://HOST:PORT[,HOST:PORT...]",
            args.store
        ))
        .into());
    };
    if embedded && (args.etcd.etcd_ca.is_some() || args.etcd.etcd_user.is_some()) {
        return Err(BadInput(
            "error: --etcd-* options are for --store etcd://...\n = help: leave them out with the embedded store"
                .into(),
        )
        .into());
    }
    let tls = server_tls(&args.tls)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let described = match &config {
        StoreConfig::Embedded(_) => format!("embedded in {}", args.data_dir.display()),
        StoreConfig::Redb(_) => format!("redb in {}", args.data_dir.display()),
        StoreConfig::Etcd(_) => args.store.clone(),
    };
    ctx.block_on(async move {
        // The embedded store creates its data directory itself, private (0700).
        let store = Store::open(config).await.with_context(|| format!("opening the store ({described})"))?;
        // After the store: it makes the data directory, private.
        let artifacts = artifact_store(args)?;
        let mode = if args.acl == AclArg::Off { AclMode::Off } else { AclMode::On };
        let acl = Acl::open(&store, mode).await.context("loading tokens and policies")?;
        match gantry_server::bootstrap(&acl, &store, &args.data_dir).await.context("bootstrapping access control")? {
            _ if mode == AclMode::Off => eprintln!(
                "gantry server: access control is OFF (--acl off): anyone who reaches this port may do anything"
            ),
            Bootstrap::Created(path) => eprintln!(
                "gantry server: access control is on; the management token is in {} (mode 0600): \
                 `export GANTRY_TOKEN_FILE={}`, and create others with `gantry acl:token:create`",
                path.display(),
                path.display()
            ),
            Bootstrap::Done => {}
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {} (is another gantry server running?)", args.listen))?;
        let addr = listener.local_addr()?;
        // Scripts and tests read this line to learn the port.
        println!("gantry server listening on {scheme}://{addr} (store: {described})");
        std::io::stdout().flush()?;
        // Every server campaigns; one at a time schedules (a lease-held key).
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        let scheduler = gantry_server::spawn_scheduler(
            store.clone(),
            gantry_server::SchedulerConfig::new(format!("{host}:{}:{}", addr.port(), std::process::id())),
        );
        let deploys = gantry_server::spawn_deploys(
            store.clone(),
            format!("{host}:{}:{}", addr.port(), std::process::id()),
            Some(std::sync::Arc::clone(&artifacts)),
        );
        let options = ServeOptions {
            threads: usize::from(args.threads),
            tls,
            acl,
            limits: args.limits.limits(),
            artifacts: Some(artifacts),
        };
        let served = gantry_server::serve_with(listener, store.clone(), options, shutdown_signal()).await;
        scheduler.abort();
        deploys.abort();
        served.context("serving")?;
        store.close().await.context("closing the store")?;
        Ok(())
    })
}

/// The artifact store `--artifacts` names (default: DATA_DIR/artifacts).
fn artifact_store(args: &ServeArgs) -> anyhow::Result<std::sync::Arc<dyn gantry_server::ArtifactStore>> {
    let dir = args.artifacts.clone().unwrap_or_else(|| args.data_dir.join("artifacts"));
    let local = gantry_server::LocalArtifacts::open(&dir).map_err(|e| {
        BadInput(format!(
            "error: cannot open the artifact store {}: {e}
 = help: pass --artifacts DIR with a directory this user may write",
            dir.display()
        ))
    })?;
    Ok(std::sync::Arc::new(local))
}

/// HTTPS as `--tls-cert`, `--tls-key`, `--tls-ca` and `--verify-incoming`
/// say; `None` without `--tls-cert` (plain HTTP).
fn server_tls(args: &ServeTlsArgs) -> anyhow::Result<Option<ServerTls>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else { return Ok(None) };
    let identity = Identity::load(cert, key).map_err(|e| tls_input("--tls-cert/--tls-key", e))?;
    let role = identity.holder().role;
    if role != Some(Role::Server) {
        return Err(BadInput(format!(
            "error: --tls-cert {} is not a server's certificate (its role: {})\n = help: make one with `gantry tls:cert:create --server NAME --ip ADDR`",
            cert.display(),
            role.map_or("none", Role::as_str)
        ))
        .into());
    }
    let ca = args.tls_ca.as_deref().map(TrustedCa::load).transpose().map_err(|e| tls_input("--tls-ca", e))?;
    let clients = match ca {
        None => ClientAuth::Off,
        Some(ca) if args.verify_incoming => ClientAuth::Required { ca, roles: Vec::new() },
        Some(ca) => ClientAuth::Optional(ca),
    };
    ServerTls::new(identity, &clients).map(Some).map_err(|e| tls_input("--tls-cert/--tls-key", e))
}

/// SIGINT (Ctrl-C) or SIGTERM (an init system, `gantry down`).
pub(super) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// The password of `--etcd-user`: from GANTRY_ETCD_PASSWORD, or the first
/// line of `--etcd-password-file`; never a command-line value, which
/// every user of the machine can read in the process list.
pub const ETCD_PASSWORD_ENV: &str = "GANTRY_ETCD_PASSWORD";

/// `config` with the TLS and authentication `args` ask for.
fn secure_etcd(mut config: EtcdConfig, args: &EtcdArgs) -> anyhow::Result<EtcdConfig> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| anyhow::Error::from(BadInput(format!("error: cannot read {what} {}: {e}", path.display()))))
    };
    if let Some(ca) = &args.etcd_ca {
        let client = match (&args.etcd_cert, &args.etcd_key) {
            (Some(cert), Some(key)) => Some((read(cert, "--etcd-cert")?, read(key, "--etcd-key")?)),
            _ => None,
        };
        config = config.with_tls(EtcdTls { ca_pem: read(ca, "--etcd-ca")?, client });
    }
    if let Some(user) = &args.etcd_user {
        let password = match (&args.etcd_password_file, std::env::var(ETCD_PASSWORD_ENV)) {
            (Some(file), _) => read(file, "--etcd-password-file")?.lines().next().unwrap_or_default().to_owned(),
            (None, Ok(password)) => password,
            (None, Err(_)) => {
                return Err(BadInput(format!(
                    "error: --etcd-user {user} needs its password\n = help: set {ETCD_PASSWORD_ENV}, or give --etcd-password-file FILE"
                ))
                .into());
            }
        };
        config.auth = Some(EtcdAuth { user: user.clone(), password });
    }
    Ok(config)
}
