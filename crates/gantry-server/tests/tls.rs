//! The server over HTTPS with real certificates from the built-in CA: who
//! is refused at the handshake (no certificate, another CA's, an expired
//! one; a server the client does not trust, or reached by a name its
//! certificate lacks), what works over it (KV, a watch on HTTP/2 chosen by
//! ALPN), and the log proxy, which reaches agents only at their machine's
//! registered address.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use gantry_api::{AgentStatus, ErrorCode, Machine};
use gantry_client::{Client, ClientError, PutOptions};
use gantry_server::{Limits, ServeOptions, ServerTls};
use gantry_store::{EmbeddedConfig, Store, StoreConfig};
use gantry_tls::config::{ClientAuth, ClientTls, Identity, TrustedCa};
use gantry_tls::problem::TlsProblem;
use gantry_tls::{CA_VALIDITY, Ca, CertRequest, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(10);

/// A CA and the certificates it signs, as PEM in memory.
struct Pki {
    ca: Ca,
}

impl Pki {
    fn new(name: &str) -> Pki {
        Pki { ca: Ca::create(name, CA_VALIDITY).unwrap() }
    }

    fn trusted(&self) -> TrustedCa {
        TrustedCa::from_pem(self.ca.cert_pem(), "ca.pem").unwrap()
    }

    fn identity(&self, request: &CertRequest) -> Identity {
        let issued = self.ca.issue(request).unwrap();
        Identity::from_pem(&issued.cert_pem, &issued.key_pem, &request.name).unwrap()
    }

    fn of(&self, role: Role, name: &str) -> Identity {
        self.identity(&CertRequest::new(role, name))
    }

    /// A client trusting this CA, presenting `identity`.
    fn client(&self, url: &str, identity: Option<Identity>) -> Client {
        Client::with_tls(url, &ClientTls { ca: self.trusted(), identity }).unwrap()
    }
}

/// A server over HTTPS in this process (two event loops, as `gantry
/// server --threads 2`), stopped on drop.
struct TlsServer {
    url: String,
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(listen: &str, identity: Identity, clients: ClientAuth) -> TlsServer {
        TlsServer::start_limited(listen, identity, clients, Limits::default()).await
    }

    async fn start_limited(listen: &str, identity: Identity, clients: ClientAuth, limits: Limits) -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::Embedded(EmbeddedConfig::in_dir(dir.path()))).await.unwrap();
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        // Access control off: these tests are about the transport.
        let tls = Some(ServerTls::new(identity, &clients).unwrap());
        let options = ServeOptions { threads: 2, tls, acl: gantry_server::Acl::off(), limits, artifacts: None };
        let serving = tokio::spawn(gantry_server::serve_with(listener, store, options, async {
            let _ = stopped.await;
        }));
        TlsServer { url, stop, serving, _dir: dir }
    }
}

fn tls_problem(result: Result<impl std::fmt::Debug, ClientError>) -> TlsProblem {
    match result {
        Err(ClientError::Tls { problem, .. }) => problem,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_incoming_refuses_clients_without_a_certificate_of_its_ca_and_keeps_serving() {
    let pki = Pki::new("ours");
    let clients = ClientAuth::Required { ca: pki.trusted(), roles: Vec::new() };
    let server = TlsServer::start("127.0.0.1:0", pki.of(Role::Server, "s1"), clients).await;
    let good = pki.client(&server.url, Some(pki.of(Role::Client, "alice")));
    good.kv_put("before", "1", PutOptions::default()).await.unwrap();

    let without = pki.client(&server.url, None);
    let theirs = Pki::new("theirs");
    let foreign = pki.client(&server.url, Some(theirs.of(Role::Client, "mallory")));
    let mut expired = CertRequest::new(Role::Client, "late");
    expired.not_before = Some(SystemTime::now() - Duration::from_secs(2 * 24 * 3600));
    expired.valid_for = Duration::from_secs(24 * 3600);
    let expired = pki.client(&server.url, Some(pki.identity(&expired)));
    for (who, client) in [("no certificate", &without), ("another CA's", &foreign), ("an expired one", &expired)] {
        let problem = tls_problem(client.kv_put("intruder", who, PutOptions::default()).await);
        assert!(
            matches!(problem, TlsProblem::CertificateRequired | TlsProblem::CertificateRefused { .. }),
            "{who}: {problem:?}"
        );
        // The server keeps serving the others, and nothing was written.
        assert_eq!(good.kv_get("before").await.unwrap().unwrap().value, "1", "{who}");
        assert!(good.kv_get("intruder").await.unwrap().is_none(), "{who}");
    }
    assert_eq!(tls_problem(without.health().await), TlsProblem::CertificateRequired);
}

/// Under TLS 1.3 a refusal of the client's certificate can reach the HTTP
/// client only as a closed connection; `diagnose` connects again and reads
/// the server's alert, so the reason given never depends on that race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_names_the_refusal_a_closed_connection_hid() {
    use gantry_tls::problem::diagnose;
    let pki = Pki::new("ours");
    let clients = ClientAuth::Required { ca: pki.trusted(), roles: Vec::new() };
    let server = TlsServer::start("127.0.0.1:0", pki.of(Role::Server, "s1"), clients).await;
    let addr = server.url.trim_start_matches("https://").to_owned();
    let wait = Duration::from_secs(2);
    let config = |identity| std::sync::Arc::new(ClientTls { ca: pki.trusted(), identity }.config().unwrap());
    assert_eq!(diagnose(&addr, "127.0.0.1", config(None), wait).await, Some(TlsProblem::CertificateRequired));
    let theirs = Pki::new("theirs");
    assert!(matches!(
        diagnose(&addr, "127.0.0.1", config(Some(theirs.of(Role::Client, "mallory"))), wait).await,
        Some(TlsProblem::CertificateRefused { .. })
    ));
    // An accepted client: nothing to report, within the wait.
    assert_eq!(diagnose(&addr, "127.0.0.1", config(Some(pki.of(Role::Client, "alice"))), wait).await, None);
    // Nothing listening: no TLS problem either (the caller reports a connection failure).
    server.stop.send(()).unwrap();
    tokio::time::timeout(WAIT, server.serving).await.expect("the server stops").unwrap().unwrap();
    assert_eq!(diagnose(&addr, "127.0.0.1", config(None), wait).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_verifies_the_servers_ca_and_name() {
    let pki = Pki::new("ours");
    let server = TlsServer::start("127.0.0.1:0", pki.of(Role::Server, "s1"), ClientAuth::Off).await;
    pki.client(&server.url, None).health().await.unwrap();

    let theirs = Pki::new("theirs");
    assert_eq!(tls_problem(theirs.client(&server.url, None).health().await), TlsProblem::UnknownIssuer);
    // A plain client trusts no CA at all, not even the system's.
    assert_eq!(tls_problem(Client::new(&server.url).health().await), TlsProblem::UnknownIssuer);

    // A server certificate names localhost and 127.0.0.1 only: reached at
    // 127.0.0.3 (loopback too), it is not the server asked for.
    let elsewhere = TlsServer::start("127.0.0.3:0", pki.of(Role::Server, "s2"), ClientAuth::Off).await;
    match tls_problem(pki.client(&elsewhere.url, None).health().await) {
        TlsProblem::NameMismatch { expected, presented } => {
            assert_eq!(expected, "127.0.0.3");
            assert!(presented.iter().any(|p| p.contains("127.0.0.1")), "{presented:?}");
        }
        other => panic!("expected a name mismatch, got {other:?}"),
    }
    let named =
        pki.identity(&CertRequest { ips: vec!["127.0.0.3".parse().unwrap()], ..CertRequest::new(Role::Server, "s3") });
    let named = TlsServer::start("127.0.0.3:0", named, ClientAuth::Off).await;
    pki.client(&named.url, None).health().await.unwrap();
}

/// KV over HTTPS with an optional client certificate, and several watches
/// as streams of one HTTP/2 connection chosen by ALPN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_watches_over_http2_chosen_by_alpn() {
    let pki = Pki::new("ours");
    let server = TlsServer::start("127.0.0.1:0", pki.of(Role::Server, "s1"), ClientAuth::Optional(pki.trusted())).await;
    let with = pki.client(&server.url, Some(pki.of(Role::Client, "alice")));
    let without = pki.client(&server.url, None);
    with.kv_put("a", "from alice", PutOptions::default()).await.unwrap();
    assert_eq!(without.kv_get("a").await.unwrap().unwrap().value, "from alice");

    let mut config = ClientTls { ca: pki.trusted(), identity: None }.config().unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.url.trim_start_matches("https://")).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let request = hyper::Request::get(format!("{}/v1/watch?prefix=kv/h2/", server.url))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.clone().send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(response.into_body());
    }
    let revision = with.kv_put("h2/x", "over h2", PutOptions::default()).await.unwrap().revision;
    for body in &mut bodies {
        let frame = tokio::time::timeout(WAIT, http_body_util::BodyExt::frame(body)).await.unwrap().unwrap().unwrap();
        let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
        assert!(text.starts_with(&format!("id: {revision}.0\ndata: ")), "{text}");
    }
}

/// Shutdown over TLS is as over plain HTTP: requests get a moment, open
/// watch streams are then cut, and the event loops end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watch_streams_over_tls() {
    let pki = Pki::new("ours");
    let server = TlsServer::start("127.0.0.1:0", pki.of(Role::Server, "s1"), ClientAuth::Off).await;
    let client = pki.client(&server.url, None);
    let watch = client.watch("kv/", 0, None).await.unwrap();
    futures::pin_mut!(watch);
    client.kv_put("before", "1", PutOptions::default()).await.unwrap();
    let first = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut watch)).await.unwrap();
    assert!(matches!(first, Some(Ok(gantry_client::WatchItem::Event { .. }))), "{first:?}");
    server.stop.send(()).unwrap();
    tokio::time::timeout(WAIT, server.serving).await.expect("the server stops with a watch open").unwrap().unwrap();
    let ended = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut watch)).await.expect("the watch ends");
    assert!(!matches!(ended, Some(Ok(gantry_client::WatchItem::Event { .. }))), "{ended:?}");
}

/// A plain HTTP server on `listen` that counts its connections and answers
/// each with `answer`.
async fn counting_server(listen: &str, answer: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buffer = [0u8; 4096];
            let _ = tcp.read(&mut buffer).await;
            let _ = tcp.write_all(answer.as_bytes()).await;
        }
    });
    (port, count)
}

fn status_with_api(machine: &str, api: String) -> AgentStatus {
    AgentStatus {
        machine: machine.into(),
        group: None,
        services: vec!["api".into()],
        listener: None,
        problems: Vec::new(),
        last_deploy: None,
        api: Some(api),
        processes: BTreeMap::new(),
        lb: None,
        allocations: Default::default(),
        releases: Default::default(),
        server: None,
        updated_at_ms: 0,
    }
}

fn machine_at(id: &str, address: &str) -> Machine {
    Machine {
        id: id.into(),
        hostname: id.into(),
        address: address.into(),
        facts: Default::default(),
        labels: BTreeMap::new(),
        updated_at: 0,
        capacity: None,
    }
}

/// Whoever may write an agent's status cannot make the server fetch
/// another address (a cloud's metadata service): the log proxy goes to the
/// machine's registered address only, and follows no redirect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_proxy_never_reaches_an_address_an_agent_status_names() {
    let s = super::TestServer::embedded().await;
    let (metadata_port, metadata_hits) =
        counting_server("127.0.0.9:0", "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret").await;
    let metadata = format!("http://127.0.0.9:{metadata_port}");

    // No machine registered: the server does not know where the agent is.
    s.client.put_agent_status(&status_with_api("m1", metadata.clone()), PutOptions::default()).await.unwrap();
    let err = s.client.agent_logs("m1", "api", None, false).await.err().expect("refused");
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");

    // Registered at 127.0.0.1: the status's host is ignored, its port kept,
    // and nothing listens there on 127.0.0.1.
    s.client.put_machine(&machine_at("m1", "127.0.0.1"), PutOptions::default()).await.unwrap();
    let err = s.client.agent_logs("m1", "api", None, false).await.err().expect("refused");
    assert_eq!(err.code(), Some(ErrorCode::AgentUnreachable), "{err}");
    for api in [format!("http://metadata.google.internal:{metadata_port}"), format!("http://[::1]:{metadata_port}")] {
        s.client.put_agent_status(&status_with_api("m1", api), PutOptions::default()).await.unwrap();
        assert!(s.client.agent_logs("m1", "api", None, false).await.is_err());
    }

    // An "agent" at the registered address that redirects to the metadata
    // service: the redirect is not followed.
    let redirect: &'static str = Box::leak(
        format!("HTTP/1.1 302 Found\r\nlocation: {metadata}/latest\r\ncontent-length: 0\r\n\r\n").into_boxed_str(),
    );
    let (agent_port, agent_hits) = counting_server("127.0.0.1:0", redirect).await;
    s.client
        .put_agent_status(&status_with_api("m1", format!("http://127.0.0.9:{agent_port}")), PutOptions::default())
        .await
        .unwrap();
    let answer = s.client.agent_logs("m1", "api", None, false).await;
    assert!(answer.is_err(), "a redirect is not a log");
    assert_eq!(agent_hits.load(Ordering::SeqCst), 1, "the registered address was asked once");

    assert_eq!(metadata_hits.load(Ordering::SeqCst), 0, "the metadata server was never reached");
}

/// Connections per address are counted at accept, before the handshake:
/// one over the limit is closed at once (it would otherwise wait out the
/// handshake's timeout), and other addresses are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_before_any_handshake() {
    let pki = Pki::new("ours");
    let limits = Limits { connections_per_ip: 2, ..Limits::default() };
    let server = TlsServer::start_limited("127.0.0.1:0", pki.of(Role::Server, "s1"), ClientAuth::Off, limits).await;
    let address = server.url.trim_start_matches("https://").to_owned();
    let mut three = Vec::new();
    for _ in 0..3 {
        three.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // The server's two event loops accept from one socket, so the one
    // over the limit is whichever was admitted last, not always the third
    // opened: exactly one is closed, at once, before a handshake.
    async fn closed(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(within, stream.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) => panic!("the server sent a byte before any handshake"),
            Err(_) => false,
        }
    }
    let start = std::time::Instant::now();
    let mut refused = None;
    while refused.is_none() && start.elapsed() < Duration::from_secs(5) {
        for (i, stream) in three.iter_mut().enumerate() {
            if closed(stream, Duration::from_millis(50)).await {
                refused = Some(i);
                break;
            }
        }
    }
    let refused = refused.expect("one of three connections closed within 5 s");
    for (i, stream) in three.iter_mut().enumerate().filter(|(i, _)| *i != refused) {
        assert!(!closed(stream, Duration::from_millis(300)).await, "connection {i} is held open");
    }
    let held = three;
    // A client of another address does its handshake and is served.
    let listen: std::net::SocketAddr = address.parse().unwrap();
    let elsewhere = tokio::net::TcpSocket::new_v4().unwrap();
    elsewhere.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = elsewhere.connect(listen).await.unwrap();
    let mut config = ClientTls { ca: pki.trusted(), identity: None }.config().unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.unwrap().unwrap();
    tls.write_all(b"GET /v1/health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    drop(held);
}
