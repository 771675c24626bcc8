//! `gantry tls:ca:create` and `tls:cert:create` as a user runs them (files,
//! modes, roles, refusals), and `gantry server` on an etcd that requires
//! TLS with client certificates and a password.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gantry_store::local_etcd::{LocalEtcd, LocalEtcdOptions, LocalEtcdTls};

use super::{ServerProcess, gantry, run_in};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_ca_and_certificates_with_their_roles_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let tls_arg = tls.to_str().unwrap();
    let made = run_in(dir.path(), &["tls:ca:create", "--dir", tls_arg]).ok();
    assert!(made.contains("ca-key.pem (private key, mode 0600)"), "{made}");
    assert_eq!(mode(&tls), 0o700);
    assert_eq!(mode(&tls.join("ca-key.pem")), 0o600);
    assert_eq!(mode(&tls.join("ca.pem")), 0o644);

    let server = run_in(
        dir.path(),
        &["tls:cert:create", "--server", "s1", "--dir", tls_arg, "--ip", "10.0.0.1", "--dns", "api.example", "--json"],
    )
    .ok();
    let written: serde_json::Value = serde_json::from_str(&server).unwrap();
    assert_eq!(written["role"], "server");
    assert_eq!(written["dns"], serde_json::json!(["server.gantry", "localhost", "api.example"]));
    assert_eq!(written["ips"], serde_json::json!(["10.0.0.1", "127.0.0.1"]));
    assert_eq!(mode(&tls.join("s1-key.pem")), 0o600);
    let pem = std::fs::read_to_string(tls.join("s1.pem")).unwrap();
    assert_eq!(gantry_tls::holder_of_pem(&pem).unwrap().role, Some(gantry_tls::Role::Server));

    for (flag, role) in [("--agent", gantry_tls::Role::Agent), ("--client", gantry_tls::Role::Client)] {
        let name = format!("x{}", &flag[2..]);
        run_in(dir.path(), &["tls:cert:create", flag, &name, "--dir", tls_arg]).ok();
        let pem = std::fs::read_to_string(tls.join(format!("{name}.pem"))).unwrap();
        assert_eq!(gantry_tls::holder_of_pem(&pem).unwrap().role, Some(role));
        assert_eq!(mode(&tls.join(format!("{name}-key.pem"))), 0o600);
    }
}

#[test]
fn nothing_is_replaced_and_bad_input_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let tls_arg = tls.to_str().unwrap();
    // No CA yet.
    let no_ca = run_in(dir.path(), &["tls:cert:create", "--client", "alice", "--dir", tls_arg]).bad_input();
    assert!(no_ca.contains("gantry tls:ca:create --dir"), "{no_ca}");
    run_in(dir.path(), &["tls:ca:create", "--dir", tls_arg]).ok();
    let key = std::fs::read(tls.join("ca-key.pem")).unwrap();
    let again = run_in(dir.path(), &["tls:ca:create", "--dir", tls_arg]).bad_input();
    assert!(again.contains("ca.pem exists"), "{again}");
    assert_eq!(std::fs::read(tls.join("ca-key.pem")).unwrap(), key, "the CA was not replaced");

    run_in(dir.path(), &["tls:cert:create", "--client", "alice", "--dir", tls_arg]).ok();
    let twice = run_in(dir.path(), &["tls:cert:create", "--client", "alice", "--dir", tls_arg]).bad_input();
    assert!(twice.contains("alice.pem exists"), "{twice}");
    // Exactly one role.
    let none = run_in(dir.path(), &["tls:cert:create", "bob", "--dir", tls_arg]);
    assert_eq!(none.code, 2, "{none:?}");
    let two = run_in(dir.path(), &["tls:cert:create", "--client", "--server", "bob", "--dir", tls_arg]);
    assert_eq!(two.code, 2, "{two:?}");
    let bad_dns = run_in(dir.path(), &["tls:cert:create", "--server", "s", "--dns", "a..b", "--dir", tls_arg]);
    assert!(bad_dns.bad_input().contains("is not a DNS name"));
    let bad_name = run_in(dir.path(), &["tls:cert:create", "--client", "../x", "--dir", tls_arg]).bad_input();
    assert!(bad_name.contains("cannot name a certificate's files"), "{bad_name}");
    assert!(!dir.path().join("x.pem").exists());
}

/// `gantry server --store etcd://... --etcd-ca --etcd-cert --etcd-key
/// --etcd-user` against an etcd that accepts nothing less; the password
/// comes from the environment and shows nowhere.
#[test]
fn server_on_an_etcd_with_tls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let tls_arg = tls.to_str().unwrap();
    run_in(dir.path(), &["tls:ca:create", "--dir", tls_arg]).ok();
    run_in(dir.path(), &["tls:cert:create", "--server", "etcd", "--dir", tls_arg]).ok();
    run_in(dir.path(), &["tls:cert:create", "--client", "gantry-server", "--dir", tls_arg]).ok();
    let read = |name: &str| std::fs::read_to_string(tls.join(name)).unwrap();
    let password = "s3cret-for-etcd";
    let options = LocalEtcdOptions {
        tls: Some(LocalEtcdTls {
            ca_pem: read("ca.pem"),
            server_cert_pem: read("etcd.pem"),
            server_key_pem: read("etcd-key.pem"),
            client_cert_pem: read("gantry-server.pem"),
            client_key_pem: read("gantry-server-key.pem"),
        }),
        root_password: Some(password.into()),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = rt
        .block_on(LocalEtcd::start_with(options))
        .unwrap_or_else(|e| panic!("{e} (install etcd with `apt-get install etcd-server`, or run scripts/test)"));
    let store = format!("etcd://{}", etcd.endpoint().trim_start_matches("https://"));
    let (ca, cert, key) = (tls.join("ca.pem"), tls.join("gantry-server.pem"), tls.join("gantry-server-key.pem"));
    let args = [
        "--etcd-ca",
        ca.to_str().unwrap(),
        "--etcd-cert",
        cert.to_str().unwrap(),
        "--etcd-key",
        key.to_str().unwrap(),
        "--etcd-user",
        "root",
    ];
    let server = ServerProcess::start_with_args(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &store,
        &args,
        &[("GANTRY_ETCD_PASSWORD", password)],
    );
    gantry(&server, &["kv:put", "datastores/ES", "http://es:9200"]).ok();
    assert_eq!(gantry(&server, &["kv:get", "datastores/ES"]).ok(), "http://es:9200\n");

    // Without the password it says how to give one, and never asks for it on the command line.
    let missing =
        run_in(dir.path(), &[&["server", "--listen", "127.0.0.1:0", "--store", &store][..], &args[..]].concat());
    assert!(missing.bad_input().contains("set GANTRY_ETCD_PASSWORD, or give --etcd-password-file FILE"));
    // A wrong one is refused by etcd, and the error does not repeat it.
    let wrong = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["server", "--listen", "127.0.0.1:0", "--store", &store])
        .args(args)
        .env("GANTRY_ETCD_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("opening the store") && !stderr.contains("not-the-password"), "{stderr}");
}
