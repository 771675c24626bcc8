//! The conformance suite against a real etcd that each test starts on free
//! loopback ports; fails (never skips) when etcd is not installed.

use gantry_store::local_etcd::LocalEtcd;
use gantry_store::{EtcdConfig, Store};

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
