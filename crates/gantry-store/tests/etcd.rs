//! The conformance suite against a real etcd that each test starts on free
//! loopback ports; fails (never skips) when etcd is not installed.

use gantry_store::local_etcd::{LocalEtcd, LocalEtcdCluster, LocalEtcdOptions, LocalEtcdTls};
use gantry_store::{EtcdAuth, EtcdConfig, EtcdTls, Store};
use gantry_tls::{CA_VALIDITY, Ca, CertRequest, Role};

pub struct Fixture {
    pub store: Store,
    _etcd: LocalEtcd,
}

pub async fn fixture() -> Fixture {
    let etcd = LocalEtcd::start().await.unwrap_or_else(|error| panic!("{error}"));
    let mut config = EtcdConfig::new([etcd.endpoint()]);
    // A namespace, as a shared cluster would use: keys outside it (the
    // health check's) must stay invisible.
    config.namespace = "gantry-test/".into();
    let store = Store::connect_etcd(config).await.unwrap();
    Fixture { store, _etcd: etcd }
}

crate::all_cases!(fixture);

/// A range larger than gRPC's default 4 MB message comes back whole (the
/// scheduler reads every allocation at once).
#[tokio::test]
async fn a_range_over_four_megabytes_comes_back_whole() {
    let f = fixture().await;
    let value = vec![b'x'; 900 * 1024];
    for n in 0..7 {
        f.store.put(&format!("big/{n}"), value.clone()).await.unwrap();
    }
    let range = f.store.range("big/", None).await.unwrap();
    assert_eq!(range.kvs.len(), 7);
    assert!(range.kvs.iter().all(|kv| kv.value.len() == value.len()));
}

/// The whole conformance suite again, on an etcd that speaks only TLS,
/// requires client certificates from its CA, and has authentication on
/// (`root` with a password): as a production cluster is run.
pub mod secure {
    use super::*;

    pub struct Secure {
        pub ca: Ca,
        pub etcd: LocalEtcd,
        pub client: (String, String),
    }

    pub const PASSWORD: &str = "correct horse battery staple";

    /// Certificates and options for a secure etcd (one member or a cluster).
    pub struct SecureOptions {
        pub ca: Ca,
        pub options: LocalEtcdOptions,
        pub client: (String, String),
    }

    pub fn start_options() -> SecureOptions {
        let ca = Ca::create("etcd-test", CA_VALIDITY).unwrap();
        let server = ca.issue(&CertRequest::new(Role::Server, "etcd")).unwrap();
        let client = ca.issue(&CertRequest::new(Role::Client, "gantry-server")).unwrap();
        let tls = LocalEtcdTls {
            ca_pem: ca.cert_pem().to_owned(),
            server_cert_pem: server.cert_pem,
            server_key_pem: server.key_pem,
            client_cert_pem: client.cert_pem.clone(),
            client_key_pem: client.key_pem.clone(),
        };
        let options = LocalEtcdOptions { tls: Some(tls), root_password: Some(PASSWORD.into()) };
        SecureOptions { ca, options, client: (client.cert_pem, client.key_pem) }
    }

    pub async fn start() -> Secure {
        let SecureOptions { ca, options, client } = start_options();
        let etcd = LocalEtcd::start_with(options).await.unwrap_or_else(|error| panic!("{error}"));
        Secure { ca, etcd, client }
    }

    /// The store's configuration for a secure cluster of several members.
    pub fn cluster_config(secure: &SecureOptions, cluster: &LocalEtcdCluster) -> EtcdConfig {
        let endpoints = cluster.endpoints().iter().map(|e| e.replacen("https://", "http://", 1)).collect::<Vec<_>>();
        let mut config = EtcdConfig::new(endpoints)
            .with_tls(EtcdTls { ca_pem: secure.ca.cert_pem().to_owned(), client: Some(secure.client.clone()) });
        config.auth = Some(EtcdAuth { user: "root".into(), password: PASSWORD.into() });
        config.namespace = "gantry-test/".into();
        config.connect_timeout = std::time::Duration::from_secs(2);
        config
    }

    pub fn config(secure: &Secure) -> EtcdConfig {
        // The plain endpoint; with_tls makes it https.
        let endpoint = secure.etcd.endpoint().replacen("https://", "http://", 1);
        let mut config = EtcdConfig::new([endpoint])
            .with_tls(EtcdTls { ca_pem: secure.ca.cert_pem().to_owned(), client: Some(secure.client.clone()) });
        config.auth = Some(EtcdAuth { user: "root".into(), password: PASSWORD.into() });
        config.namespace = "gantry-test/".into();
        config.connect_timeout = std::time::Duration::from_secs(2);
        config
    }

    pub struct Fixture {
        pub store: Store,
        _etcd: Secure,
    }

    pub async fn fixture() -> Fixture {
        let secure = start().await;
        let store = Store::connect_etcd(config(&secure)).await.unwrap();
        Fixture { store, _etcd: secure }
    }

    crate::all_cases!(fixture);

    /// Each missing piece is refused: no TLS, a certificate from another
    /// CA, no password, a wrong password. None of the errors shows the
    /// password.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_the_right_credentials_etcd_refuses() {
        let secure = start().await;
        let plaintext = {
            let mut config = EtcdConfig::new([secure.etcd.endpoint().replacen("https://", "http://", 1)]);
            config.auth = Some(EtcdAuth { user: "root".into(), password: PASSWORD.into() });
            config
        };
        let other_ca = Ca::create("other", CA_VALIDITY).unwrap();
        let stranger = other_ca.issue(&CertRequest::new(Role::Client, "stranger")).unwrap();
        let foreign = {
            let mut config = config(&secure);
            config.tls = Some(EtcdTls {
                ca_pem: secure.ca.cert_pem().to_owned(),
                client: Some((stranger.cert_pem, stranger.key_pem)),
            });
            config
        };
        let no_password = EtcdConfig { auth: None, ..config(&secure) };
        let wrong_password =
            EtcdConfig { auth: Some(EtcdAuth { user: "root".into(), password: "guess".into() }), ..config(&secure) };
        for (what, mut config) in [
            ("plaintext", plaintext),
            ("another CA's client certificate", foreign),
            ("no password", no_password),
            ("a wrong password", wrong_password),
        ] {
            config.connect_timeout = std::time::Duration::from_secs(1);
            let refused = tokio::time::timeout(std::time::Duration::from_secs(20), async {
                // A connection may open; the first request must fail.
                match Store::connect_etcd(config).await {
                    Ok(store) => store.put("kv/x", "1").await.map(|_| ()),
                    Err(e) => Err(e),
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within 20 s"));
            let error = refused.expect_err(what);
            assert!(!format!("{error:?} {error}").contains(PASSWORD), "{what}: the error shows the password");
        }
        // And with everything right, it works.
        let store = Store::connect_etcd(config(&secure)).await.unwrap();
        store.put("kv/x", "1").await.unwrap();
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let auth = EtcdAuth { user: "root".into(), password: PASSWORD.into() };
        let config = EtcdConfig { auth: Some(auth), ..EtcdConfig::new(["http://127.0.0.1:1"]) };
        assert!(!format!("{config:?}").contains(PASSWORD));
    }
}

#[tokio::test]
async fn store_urls_parse() {
    let config = EtcdConfig::from_url("etcd://10.0.0.1:2379, 10.0.0.2:2379").unwrap();
    assert_eq!(config.endpoints, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
    assert!(EtcdConfig::from_url("http://x").is_none());
    assert!(EtcdConfig::from_url("etcd://").is_none());
}

#[tokio::test]
async fn an_unreachable_cluster_is_an_etcd_error() {
    let mut config = EtcdConfig::new(["http://127.0.0.1:1"]);
    config.connect_timeout = std::time::Duration::from_millis(200);
    let error = Store::connect_etcd(config).await.unwrap_err();
    assert!(matches!(error, gantry_store::StoreError::Etcd { .. }), "{error}");
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
}
