//! Integration tests of the API: a real server on a loopback port, driven
//! through the typed client (and raw HTTP for malformed requests). Every
//! suite runs against both engines: embedded (temp dir) and a real etcd
//! started by the test.

mod acl;
mod deploys;
mod http;
mod limits;
mod openapi;
mod suite;
mod tls;

use std::future::Future;
use std::time::Duration;

use gantry_client::Client;
use gantry_server::{Acl, AclMode, Limits};
use gantry_store::local_etcd::LocalEtcd;
use gantry_store::{EmbeddedConfig, EtcdConfig, Store, StoreConfig};
use tokio::sync::oneshot;

/// A server running in this process, stopped on drop.
pub struct TestServer {
    pub client: Client,
    pub store: Store,
    pub url: String,
    /// Its management token, when it checks tokens.
    pub token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<LocalEtcd>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestServer {
    pub async fn embedded() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(dir.path()))).await.unwrap();
        TestServer::start(store, Some(dir), None, None).await
    }

    /// On the embedded engine with access control on, as `gantry server`
    /// runs by default; its client sends the bootstrapped management token.
    pub async fn embedded_with_acl() -> TestServer {
        TestServer::embedded_limited(AclMode::On, Limits::default()).await
    }

    /// On the embedded engine with `limits`, access control as `mode`
    /// says; with it on, its client sends the management token.
    pub async fn embedded_limited(mode: AclMode, limits: Limits) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(dir.path()))).await.unwrap();
        let acl = Acl::open(&store, mode).await.unwrap();
        if mode == AclMode::Off {
            return TestServer::start_with(store, acl, limits, Some(dir), None, None).await;
        }
        gantry_server::bootstrap(&acl, &store, dir.path()).await.unwrap();
        let token = std::fs::read_to_string(dir.path().join(gantry_server::BOOTSTRAP_TOKEN_FILE)).unwrap();
        let mut server = TestServer::start_with(store, acl, limits, Some(dir), None, None).await;
        server.client = server.client.clone().with_token(token.trim());
        server.token = Some(token.trim().to_owned());
        server
    }

    /// On the embedded engine, served as `gantry server` serves: several
    /// event loops, each on a thread of its own.
    pub async fn embedded_threaded(threads: usize) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(dir.path()))).await.unwrap();
        TestServer::start(store, Some(dir), None, Some(threads)).await
    }

    pub async fn etcd() -> TestServer {
        let etcd = start_etcd().await;
        let store = Store::open(StoreConfig::Etcd(EtcdConfig::new([etcd.endpoint().to_string()]))).await.unwrap();
        TestServer::start(store, None, Some(etcd), None).await
    }

    /// Another server in front of the same etcd as `self`.
    pub async fn sharing_etcd_with(&self) -> TestServer {
        let endpoint = self._etcd.as_ref().expect("an etcd-backed server").endpoint().to_string();
        let store = Store::open(StoreConfig::Etcd(EtcdConfig::new([endpoint]))).await.unwrap();
        TestServer::start(store, None, None, None).await
    }

    async fn start(
        store: Store,
        dir: Option<tempfile::TempDir>,
        etcd: Option<LocalEtcd>,
        threads: Option<usize>,
    ) -> TestServer {
        TestServer::start_with(store, Acl::off(), Limits::default(), dir, etcd, threads).await
    }

    async fn start_with(
        store: Store,
        acl: std::sync::Arc<Acl>,
        limits: Limits,
        dir: Option<tempfile::TempDir>,
        etcd: Option<LocalEtcd>,
        threads: Option<usize>,
    ) -> TestServer {
        // The tests' own reqwest clients need a crypto provider (reqwest's
        // rustls has none of its own in this build).
        gantry_tls::config::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = store.clone();
        // Release artifacts beside the store, as `gantry server` keeps them.
        let artifacts = dir.as_ref().map(|dir| {
            let local = gantry_server::LocalArtifacts::open(&dir.path().join("artifacts")).unwrap();
            std::sync::Arc::new(local) as std::sync::Arc<dyn gantry_server::ArtifactStore>
        });
        let shutdown = async {
            let _ = stopped.await;
        };
        tokio::spawn(async move {
            let options =
                gantry_server::ServeOptions { threads: threads.unwrap_or(1), tls: None, acl, limits, artifacts };
            match threads {
                Some(_) => gantry_server::serve_with(listener, serving, options, shutdown).await,
                None => gantry_server::serve_here(listener, serving, options, shutdown).await,
            }
            .unwrap();
        });
        TestServer { client: Client::new(&url), store, url, token: None, stop: Some(stop), _dir: dir, _etcd: etcd }
    }
}

pub async fn start_etcd() -> LocalEtcd {
    LocalEtcd::start().await.unwrap_or_else(|e| {
        panic!("{e} (install etcd with `apt-get install etcd-server`, or run scripts/test, which installs every test dependency)")
    })
}

/// Runs one suite function against both engines.
pub async fn both<F, Fut>(suite: F)
where
    F: Fn(TestServer) -> Fut,
    Fut: Future<Output = ()>,
{
    suite(TestServer::embedded().await).await;
    suite(TestServer::etcd().await).await;
}

/// Bounded wait for a condition, polling.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {limit:?}");
}
