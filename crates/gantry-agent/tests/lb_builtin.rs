//! The built-in TCP proxy with real sockets on 127.0.0.1: round robin,
//! backends that are down, plans applied whole or not at all, open
//! connections that survive an apply, half-close and stop.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use gantry_agent::lb::builtin::Builtin;
use gantry_agent::lb::{Backend, Frontend, LbError, Mode, Plan};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A backend that greets each connection with `name` and a newline, echoes
/// what it reads, and says "bye" when the client has finished writing.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut from, mut to) = stream.split();
                to.write_all(format!("{name}\n").as_bytes()).await?;
                tokio::io::copy(&mut from, &mut to).await?;
                to.write_all(b"bye").await?;
                to.shutdown().await
            });
        }
    });
    address
}

/// An address where nothing listens (connections are refused).
fn free_address() -> SocketAddr {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap()
}

/// A plan of one frontend per `(bind, backends)`, named s0, s1…
fn plan(frontends: &[(SocketAddr, &[SocketAddr])]) -> Plan {
    let frontends = frontends
        .iter()
        .enumerate()
        .map(|(i, (bind, backends))| Frontend {
            service: format!("s{i}"),
            bind: *bind,
            mode: Mode::Tcp,
            public: false,
            backends: backends.iter().map(|&address| Backend { id: address.to_string(), address }).collect(),
        })
        .collect();
    Plan { frontends }
}

/// A connection through `frontend` and the name of the backend that greeted it.
async fn connect(frontend: SocketAddr) -> (BufReader<TcpStream>, String) {
    let mut stream = BufReader::new(TcpStream::connect(frontend).await.unwrap());
    let mut greeting = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut greeting)).await.unwrap().unwrap();
    (stream, greeting.trim_end().to_string())
}

async fn greeters(frontend: SocketAddr, connections: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..connections {
        names.push(connect(frontend).await.1);
    }
    names
}

#[tokio::test]
async fn round_robin_alternates_between_backends() {
    let (a, b, frontend) = (backend("a").await, backend("b").await, free_address());
    let mut lb = Builtin::new();
    let applied = lb.apply(&plan(&[(frontend, &[a, b])])).await.unwrap();
    assert!(applied.changed);
    assert_eq!(greeters(frontend, 4).await, ["a", "b", "a", "b"]);
    lb.stop().await;
}

#[tokio::test]
async fn a_backend_that_is_down_is_skipped() {
    let (down, a, frontend) = (free_address(), backend("a").await, free_address());
    let mut lb = Builtin::new();
    lb.apply(&plan(&[(frontend, &[down, a])])).await.unwrap();
    assert_eq!(greeters(frontend, 3).await, ["a", "a", "a"]);

    // None reachable: the client is closed.
    lb.apply(&plan(&[(frontend, &[down])])).await.unwrap();
    let mut stream = TcpStream::connect(frontend).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn removing_a_backend_keeps_new_connections_from_it() {
    let (a, b, frontend) = (backend("a").await, backend("b").await, free_address());
    let mut lb = Builtin::new();
    lb.apply(&plan(&[(frontend, &[a, b])])).await.unwrap();
    assert_eq!(greeters(frontend, 2).await, ["a", "b"]);

    let without_a = plan(&[(frontend, &[b])]);
    assert!(lb.apply(&without_a).await.unwrap().changed);
    assert_eq!(greeters(frontend, 3).await, ["b", "b", "b"]);
    assert!(!lb.apply(&without_a).await.unwrap().changed, "the same plan again changes nothing");
    assert_eq!(lb.plan(), &without_a);
}

#[tokio::test]
async fn removing_a_frontend_closes_its_port() {
    let (a, kept, removed) = (backend("a").await, free_address(), free_address());
    let mut lb = Builtin::new();
    lb.apply(&plan(&[(kept, &[a]), (removed, &[a])])).await.unwrap();
    assert_eq!(connect(removed).await.1, "a");

    lb.apply(&plan(&[(kept, &[a])])).await.unwrap();
    let refused = TcpStream::connect(removed).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(connect(kept).await.1, "a");
}

#[tokio::test]
async fn an_unchanged_frontend_keeps_its_open_connections_across_an_apply() {
    let (a, b, frontend, other) = (backend("a").await, backend("b").await, free_address(), free_address());
    let mut lb = Builtin::new();
    lb.apply(&plan(&[(frontend, &[a])])).await.unwrap();
    let (mut open, name) = connect(frontend).await;
    assert_eq!(name, "a");

    // New backends for the frontend, and a frontend more.
    lb.apply(&plan(&[(frontend, &[b]), (other, &[a])])).await.unwrap();
    open.write_all(b"still there\n").await.unwrap();
    let mut echoed = String::new();
    open.read_line(&mut echoed).await.unwrap();
    assert_eq!(echoed, "still there\n");
    assert_eq!(connect(frontend).await.1, "b");
}

#[tokio::test]
async fn a_port_already_taken_fails_the_plan_and_the_old_plan_still_routes() {
    let (a, b) = (backend("a").await, backend("b").await);
    let (frontend, fresh) = (free_address(), free_address());
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let taken_address = taken.local_addr().unwrap();
    let mut lb = Builtin::new();
    let before = plan(&[(frontend, &[a])]);
    lb.apply(&before).await.unwrap();

    let error = lb.apply(&plan(&[(frontend, &[b]), (fresh, &[b]), (taken_address, &[b])])).await.unwrap_err();
    let LbError::Io { what, source } = &error else { panic!("{error:?}") };
    assert!(what.contains(&taken_address.to_string()) && what.contains("s2"), "{error}");
    assert_eq!(source.kind(), ErrorKind::AddrInUse);

    assert_eq!(lb.plan(), &before);
    assert_eq!(greeters(frontend, 2).await, ["a", "a"], "the old backends still serve");
    let refused = TcpStream::connect(fresh).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "nothing of the failed plan listens");
}

#[tokio::test]
async fn two_frontends_on_one_address_are_rejected() {
    let (a, frontend) = (backend("a").await, free_address());
    let mut lb = Builtin::new();
    let error = lb.apply(&plan(&[(frontend, &[a]), (frontend, &[a])])).await.unwrap_err();
    assert!(matches!(&error, LbError::Rejected(m) if m.contains("s0 and s1")), "{error}");
    assert_eq!(lb.plan(), &Plan::default());
}

#[tokio::test]
async fn a_half_close_reaches_the_backend_and_its_answer_comes_back() {
    let (a, frontend) = (backend("a").await, free_address());
    let mut lb = Builtin::new();
    lb.apply(&plan(&[(frontend, &[a])])).await.unwrap();
    let mut stream = TcpStream::connect(frontend).await.unwrap();
    stream.write_all(b"hello ").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert_eq!(answer, "a\nhello bye");
}

#[tokio::test]
async fn stop_closes_the_ports_and_the_open_connections() {
    let (a, frontend) = (backend("a").await, free_address());
    let mut lb = Builtin::new();
    lb.apply(&plan(&[(frontend, &[a])])).await.unwrap();
    let (mut open, _) = connect(frontend).await;

    lb.stop().await;
    let refused = TcpStream::connect(frontend).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}
