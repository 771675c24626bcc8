//! `gantry tls:ca:create` and `tls:cert:create` as a user runs them (files,
//! modes, roles, refusals), `gantry server` on an etcd that requires TLS
//! with client certificates and a password, and mutual TLS between the
//! CLI, an agent and a server (`--tls-*` on the server, `--ca-cert`,
//! `--client-cert` and `--client-key` on clients and agents).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_store::local_etcd::{LocalEtcd, LocalEtcdOptions, LocalEtcdTls};

use super::{AgentProcess, ServerProcess, eventually, gantry, run_in};

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

/// A CA in `dir`/tls with a server's certificate (`s1`) and an operator's
/// (`alice`), made by the commands a user runs; the directory's path.
fn pki(dir: &Path) -> PathBuf {
    let tls = dir.join("tls");
    let tls_arg = tls.to_str().unwrap();
    run_in(dir, &["tls:ca:create", "--dir", tls_arg]).ok();
    run_in(dir, &["tls:cert:create", "--server", "s1", "--dir", tls_arg]).ok();
    run_in(dir, &["tls:cert:create", "--client", "alice", "--dir", tls_arg]).ok();
    tls
}

fn file(tls: &Path, name: &str) -> String {
    tls.join(name).to_str().unwrap().to_owned()
}

/// `gantry server --tls-cert --tls-key --tls-ca --verify-incoming`.
fn mutual_tls_server(data: &Path, tls: &Path) -> ServerProcess {
    let (cert, key, ca) = (file(tls, "s1.pem"), file(tls, "s1-key.pem"), file(tls, "ca.pem"));
    let args = ["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca, "--verify-incoming"];
    ServerProcess::start_with_args(data, "127.0.0.1:0", "embedded", &args, &[])
}

fn with<'a>(args: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    args.iter().chain(more).copied().collect()
}

#[test]
fn kv_and_watch_over_mutual_tls_and_every_refusal_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let tls = pki(dir.path());
    let server = mutual_tls_server(&dir.path().join("data"), &tls);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    let (ca, cert, key) = (file(&tls, "ca.pem"), file(&tls, "alice.pem"), file(&tls, "alice-key.pem"));
    let flags = ["--ca-cert", ca.as_str(), "--client-cert", cert.as_str(), "--client-key", key.as_str()];

    let watch = super::server::Watching::start(&server, &with(&["datastores/"], &flags));
    // Its notice says it is watching: a write before that would be missed.
    let notice = watch.stderr.recv_timeout(std::time::Duration::from_secs(10)).expect("a notice");
    assert_eq!(notice, "no keys under datastores/ yet; waiting for changes");
    assert_eq!(gantry(&server, &with(&["kv:put", "datastores/DB", "mysql://db/x"], &flags)).ok(), "");
    assert_eq!(watch.next_event(), super::server::event("put", "datastores/DB", Some("mysql://db/x")));
    watch.stop();
    // The same from the environment, as Consul's CONSUL_CACERT and friends.
    let from_env = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["kv:get", "datastores/DB", "--server", &server.url])
        .envs([("GANTRY_CACERT", &ca), ("GANTRY_CLIENT_CERT", &cert), ("GANTRY_CLIENT_KEY", &key)])
        .env("GANTRY_TOKEN", server.token.as_deref().unwrap_or_default())
        .output()
        .unwrap();
    assert_eq!(super::Run::from(from_env).ok(), "mysql://db/x\n");

    // No client certificate: refused at the handshake, and the error says what to give.
    let refused = gantry(&server, &["kv:get", "datastores/DB", "--ca-cert", &ca]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("the server requires a client certificate"), "{}", refused.stderr);
    assert!(refused.stderr.contains("--client-cert and --client-key"), "{}", refused.stderr);
    // A client that trusts another CA does not trust this server.
    let other = dir.path().join("other");
    run_in(dir.path(), &["tls:ca:create", "--dir", other.to_str().unwrap()]).ok();
    let untrusted = gantry(&server, &with(&["kv:get", "datastores/DB"], &["--ca-cert", &file(&other, "ca.pem")]));
    assert_eq!(untrusted.code, 1, "{untrusted:?}");
    assert!(untrusted.stderr.contains("the server's certificate is not signed by --ca-cert"), "{}", untrusted.stderr);
    // Files that are not there, or settings that do not fit the URL: bad input.
    let missing = gantry(&server, &["kv:get", "datastores/DB", "--ca-cert", "nope.pem"]).bad_input();
    assert!(missing.contains("--ca-cert") && missing.contains("nope.pem"), "{missing}");
    let no_ca = gantry(&server, &["kv:get", "datastores/DB"]).bad_input();
    assert!(no_ca.contains("give --ca-cert FILE"), "{no_ca}");
    let plain = run_in(dir.path(), &["kv:get", "x", "--server", "http://127.0.0.1:1", "--ca-cert", &ca]).bad_input();
    assert!(plain.contains("plain HTTP"), "{plain}");
    // A client's certificate cannot serve.
    let wrong = ServerProcess::try_start(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(wrong.contains("is not a server's certificate"), "{wrong}");
}

/// An agent over mutual TLS: it registers through a `--verify-incoming`
/// server, serves its API over TLS with its own certificate, and the
/// server reads a service's log from it with the server's certificate;
/// anyone else (an operator's certificate) is refused by the agent. A
/// metrics collector's certificate (role metrics) reads the agent's
/// `/metrics` and nothing else; another agent's certificate reads neither.
#[test]
fn an_agent_over_tls_registers_and_its_logs_come_through_the_server_only() {
    let dir = tempfile::tempdir().unwrap();
    let tls = pki(dir.path());
    let tls_arg = tls.to_str().unwrap();
    run_in(dir.path(), &["tls:cert:create", "--agent", "web-1", "--ip", "127.0.0.5", "--dir", tls_arg]).ok();
    run_in(dir.path(), &["tls:cert:create", "--agent", "web-2", "--ip", "127.0.0.6", "--dir", tls_arg]).ok();
    run_in(dir.path(), &["tls:cert:create", "--metrics", "prometheus", "--dir", tls_arg]).ok();
    let server = mutual_tls_server(&dir.path().join("data"), &tls);
    let (ca, cert, key) = (file(&tls, "ca.pem"), file(&tls, "alice.pem"), file(&tls, "alice-key.pem"));
    let operator = ["--ca-cert", ca.as_str(), "--client-cert", cert.as_str(), "--client-key", key.as_str()];
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("data_bags/service")).unwrap();
    std::fs::write(
        repo.join("nodes.json"),
        r#"{"__base__": {"run_list": []}, "web": {"run_list": ["recipe[services::api]"]}}"#,
    )
    .unwrap();
    std::fs::write(
        repo.join("data_bags/service/api.json"),
        r#"{"id": "api", "command": ["sh", "-c", "echo hello over tls; exec sleep 600"]}"#,
    )
    .unwrap();
    gantry(&server, &with(&["apply", "--repo", repo.to_str().unwrap()], &operator)).ok();

    let (agent_cert, agent_key) = (file(&tls, "web-1.pem"), file(&tls, "web-1-key.pem"));
    let agent_tls =
        ["--ca-cert", ca.as_str(), "--client-cert", agent_cert.as_str(), "--client-key", agent_key.as_str()];
    // Its certificate must name the address servers reach it at.
    let elsewhere = run_in(
        dir.path(),
        &with(
            &["agent", "--server", &server.url, "--data-dir", "a0", "--group", "web", "--address", "127.0.0.6"],
            &agent_tls,
        ),
    );
    assert_eq!(elsewhere.code, 1, "{elsewhere:?}");
    assert!(elsewhere.stderr.contains("does not name its address 127.0.0.6"), "{}", elsewhere.stderr);

    let data = dir.path().join("agent");
    let agent = AgentProcess::start(&server, &data, &with(&["--group", "web", "--address", "127.0.0.5"], &agent_tls));
    let machine = agent.machine_id();
    let logs = eventually("the log reads through the server", Duration::from_secs(20), || {
        let run = gantry(&server, &with(&["logs", "api", "--machine", &machine], &operator));
        (run.code == 0 && run.stdout.contains("hello over tls")).then_some(run.stdout)
    });
    assert!(logs.contains("hello over tls"), "{logs}\n{}", agent.log());
    let listed = gantry(&server, &with(&["machine:list", "--json"], &operator)).ok();
    assert!(listed.contains(&machine), "{listed}");

    // The agent's API, asked directly: an operator's certificate is
    // refused at the handshake; a server's is answered.
    let status = super::block_on(
        gantry_client::Client::with_tls(&server.url, &client_tls(&tls, "alice"))
            .unwrap()
            .with_token(server.token.as_deref().unwrap())
            .agent_status(&machine),
    )
    .unwrap()
    .unwrap();
    let api = status.api.expect("the agent publishes its API");
    assert!(api.starts_with("https://127.0.0.5:"), "{api}");
    let ask_at = |holder: &str, path: &str| {
        let config = client_tls(&tls, holder).config().unwrap();
        super::block_on(async {
            let http = reqwest::Client::builder().tls_backend_preconfigured(config).build().unwrap();
            let response = http.get(format!("{api}{path}")).send().await?;
            let status = response.status().as_u16();
            response.text().await.map(|text| (status, text))
        })
    };
    let ask = |holder: &str| ask_at(holder, "/v1/logs/api").map(|(_, text)| text);
    let refused = ask("alice").expect_err("the agent API refuses an operator's certificate");
    assert_eq!(
        gantry_tls::problem::TlsProblem::find(&refused),
        Some(gantry_tls::problem::TlsProblem::CertificateRefused { alert: "AccessDenied".into() }),
        "{refused:?}"
    );
    assert!(ask("s1").unwrap().contains("hello over tls"));
    // Prometheus' certificate: metrics yes, logs no (403, after the handshake).
    let (status, metrics) = ask_at("prometheus", "/metrics").unwrap();
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("gantry_node_memory_total_bytes ") && metrics.contains("unit=\"api\""), "{metrics}");
    let (status, refused) = ask_at("prometheus", "/v1/logs/api").unwrap();
    assert_eq!(status, 403, "{refused}");
    assert!(refused.contains("may not read service logs") && !refused.contains("hello over tls"), "{refused}");
    // Another node's certificate: refused at the handshake, metrics included.
    let other = ask_at("web-2", "/metrics").expect_err("the agent API refuses another agent's certificate");
    assert_eq!(
        gantry_tls::problem::TlsProblem::find(&other),
        Some(gantry_tls::problem::TlsProblem::CertificateRefused { alert: "AccessDenied".into() }),
        "{other:?}"
    );
    drop(agent);
}

/// `NAME.pem` and `NAME-key.pem` in `tls`, with its CA.
fn client_tls(tls: &Path, name: &str) -> gantry_tls::config::ClientTls {
    let (cert, key) = (tls.join(format!("{name}.pem")), tls.join(format!("{name}-key.pem")));
    gantry_tls::config::ClientTls::load(&tls.join("ca.pem"), Some((&cert, &key))).unwrap()
}
