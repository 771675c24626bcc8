//! The API conformance suite, each test run on the embedded engine and on etcd.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use gantry_api::{Group, Health, Instance, Machine, WatchKind};
use gantry_client::{Client, PutOptions, WatchItem};

use super::{TestServer, both, eventually};

const WAIT: Duration = Duration::from_secs(10);

fn instance(service: &str, id: &str, machine: &str, port: u16, health: Health, props: &[(&str, &str)]) -> Instance {
    Instance {
        service: service.into(),
        id: id.into(),
        machine: machine.into(),
        address: "127.0.0.2".into(),
        port,
        properties: props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        health,
        federation: "default".into(),
        public: false,
        provides: BTreeMap::new(),
    }
}

fn machine(id: &str) -> Machine {
    Machine {
        id: id.into(),
        hostname: format!("{id}.local"),
        address: "127.0.0.2".into(),
        facts: Default::default(),
        labels: BTreeMap::from([("group".to_string(), "api".to_string())]),
        updated_at: 0,
        capacity: None,
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn kv_crud_list_and_revisions() {
    both(|s| async move {
        let c = &s.client;
        let h0 = c.health().await.unwrap();
        assert_eq!(h0.status, "ok");
        let r1 = c.kv_put("datastores/DB", "mysql://a", PutOptions::default()).await.unwrap().revision;
        let r2 = c.kv_put("datastores/ES", "http://es", PutOptions::default()).await.unwrap().revision;
        assert!(r2 > r1 && r1 > h0.revision);
        let db = c.kv_get("datastores/DB").await.unwrap().unwrap();
        assert_eq!((db.value.as_str(), db.mod_revision, db.version), ("mysql://a", r1, 1));
        let list = c.kv_list("datastores/").await.unwrap();
        assert_eq!(list.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["datastores/DB", "datastores/ES"]);
        assert_eq!(c.kv_delete("datastores/DB").await.unwrap().deleted, 1);
        assert_eq!(c.kv_get("datastores/DB").await.unwrap(), None);
        assert_eq!(c.kv_delete("datastores/DB").await.unwrap().deleted, 0);
    })
    .await;
}

#[tokio::test]
async fn compare_and_set_race_has_exactly_one_winner() {
    both(|s| async move {
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let c = s.client.clone();
                tokio::spawn(async move {
                    c.kv_put("leader", &format!("node-{i}"), PutOptions { cas: Some(0), lease: None }).await
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => winners += 1,
                Err(e) => assert_eq!(e.code(), Some(gantry_api::ErrorCode::CasFailed), "{e}"),
            }
        }
        assert_eq!(winners, 1);
        // A CAS on the current revision wins; on a stale one it loses.
        let cur = s.client.kv_get("leader").await.unwrap().unwrap();
        s.client.kv_put("leader", "x", PutOptions { cas: Some(cur.mod_revision), lease: None }).await.unwrap();
        let stale = s.client.kv_put("leader", "y", PutOptions { cas: Some(cur.mod_revision), lease: None }).await;
        assert_eq!(stale.unwrap_err().code(), Some(gantry_api::ErrorCode::CasFailed));
    })
    .await;
}

#[tokio::test]
async fn inventory_queries() {
    both(|s| async move {
        let c = &s.client;
        c.put_machine(&machine("m1"), PutOptions::default()).await.unwrap();
        c.put_machine(&machine("m2"), PutOptions::default()).await.unwrap();
        c.put_instance(
            &instance(
                "mysql",
                "m1-mysql",
                "m1",
                3306,
                Health::Passing,
                &[("mysql.master", "true"), ("environment", "production")],
            ),
            PutOptions::default(),
        )
        .await
        .unwrap();
        c.put_instance(
            &instance(
                "mysql",
                "m2-mysql",
                "m2",
                3306,
                Health::Passing,
                &[("mysql.master", "false"), ("environment", "production")],
            ),
            PutOptions::default(),
        )
        .await
        .unwrap();
        c.put_instance(&instance("api", "m2-api", "m2", 1100, Health::Failing, &[]), PutOptions::default())
            .await
            .unwrap();

        let machines = c.machines().await.unwrap();
        assert_eq!(machines.items.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m1", "m2"]);
        assert_eq!(c.machine("m1").await.unwrap(), machine("m1"));
        // Hosts for service X.
        assert_eq!(c.service_instances("mysql", &[]).await.unwrap().items.len(), 2);
        // Services on host X.
        let on_m2: Vec<String> = c.machine_instances("m2").await.unwrap().items.into_iter().map(|i| i.id).collect();
        assert_eq!(on_m2, ["m2-api", "m2-mysql"]);
        // Hosts with property Y=X, qualified or not.
        let masters = c.instances_with(&pairs(&[("mysql.master", "true")])).await.unwrap().items;
        assert_eq!(masters.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["m1-mysql"]);
        // get_host('mysql', master=True, environment='production').
        let host = c.lookup("mysql", &pairs(&[("master", "true"), ("environment", "production")])).await.unwrap();
        assert_eq!(host.id, "m1-mysql");
        // Only healthy instances are looked up.
        assert!(c.lookup("api", &[]).await.unwrap_err().is_not_found());
        assert!(c.lookup("mysql", &pairs(&[("federation", "other")])).await.unwrap_err().is_not_found());
        assert!(c.machine("nope").await.unwrap_err().is_not_found());
    })
    .await;
}

#[tokio::test]
async fn groups_round_trip_and_a_mismatched_name_is_refused() {
    both(|s| async move {
        let c = &s.client;
        let www = Group {
            name: "12_04-www".into(),
            run_list: vec!["recipe[nginx::default]".into()],
            services: vec!["app-www".into()],
        };
        c.put_group(&www).await.unwrap();
        assert_eq!(c.group("12_04-www").await.unwrap(), Some(www.clone()));
        assert_eq!(c.groups().await.unwrap().items, [www]);
        let status = reqwest::Client::new()
            .put(format!("{}/v1/groups/other", c.base()))
            .body(r#"{"name": "12_04-www"}"#)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 400);
        c.delete_group("12_04-www").await.unwrap();
        assert_eq!(c.group("12_04-www").await.unwrap(), None);
        assert!(c.groups().await.unwrap().items.is_empty());
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_a_json_error_and_stores_nothing() {
    both(|s| async move {
        let http = reqwest::Client::new();
        let before = s.client.health().await.unwrap().revision;
        let cases: Vec<(reqwest::Method, String, Vec<u8>, u16, &str)> = vec![
            (reqwest::Method::PUT, "/v1/machines/m1".into(), b"{\"id\": \"m1\",".to_vec(), 400, "invalid_body"),
            (
                reqwest::Method::PUT,
                "/v1/machines/m1".into(),
                br#"{"id": "m1", "hostnme": "x"}"#.to_vec(),
                400,
                "invalid_body",
            ),
            (reqwest::Method::PUT, "/v1/machines/m1".into(), br#"{"id": "m2"}"#.to_vec(), 400, "invalid_body"),
            (
                reqwest::Method::PUT,
                "/v1/services/api/instances/i".into(),
                br#"{"service": "api"}"#.to_vec(),
                400,
                "invalid_body",
            ),
            (reqwest::Method::PUT, "/v1/kv/a//b".into(), b"x".to_vec(), 400, "invalid_key"),
            (reqwest::Method::PUT, "/v1/kv/big".into(), vec![b'a'; 2 * 1024 * 1024], 413, "body_too_large"),
            (reqwest::Method::PUT, "/v1/kv/k?lease=zz".into(), b"x".to_vec(), 400, "invalid_lease"),
            (reqwest::Method::PUT, "/v1/kv/k?cas=abc".into(), b"x".to_vec(), 400, "invalid_query"),
            (reqwest::Method::PUT, "/v1/kv/k".into(), vec![0xff, 0xfe], 400, "invalid_body"),
            (reqwest::Method::POST, "/v1/leases".into(), br#"{"ttl_secs": 0}"#.to_vec(), 400, "invalid_ttl"),
            (reqwest::Method::GET, "/v1/no/such/route".into(), vec![], 404, "not_found"),
            // A method the route does not take.
            (reqwest::Method::POST, "/v1/machines".into(), b"{}".to_vec(), 405, "method_not_allowed"),
            (reqwest::Method::DELETE, "/v1/health".into(), vec![], 405, "method_not_allowed"),
            (reqwest::Method::PATCH, "/v1/kv/k".into(), b"x".to_vec(), 405, "method_not_allowed"),
            (reqwest::Method::PUT, "/v1/lookup/api".into(), vec![], 405, "method_not_allowed"),
            // Paths that do not decode: not UTF-8 once decoded, or a `%`
            // that starts no escape (which axum would take literally).
            (reqwest::Method::GET, "/v1/machines/%FF".into(), vec![], 400, "invalid_path"),
            (reqwest::Method::PUT, "/v1/kv/a%C3%28".into(), b"x".to_vec(), 400, "invalid_path"),
            (reqwest::Method::PUT, "/v1/kv/100%zz".into(), b"x".to_vec(), 400, "invalid_path"),
            (reqwest::Method::PUT, "/v1/services/api/instances/%4".into(), b"{}".to_vec(), 400, "invalid_path"),
            (reqwest::Method::GET, "/v1/no/such%zz".into(), vec![], 400, "invalid_path"),
            // Ids that decode but are not one key segment.
            (reqwest::Method::GET, "/v1/machines/a%2Fb".into(), vec![], 400, "invalid_id"),
            (reqwest::Method::PUT, "/v1/agents/m%01/listener".into(), b"{}".to_vec(), 400, "invalid_id"),
        ];
        for (method, path, body, status, code) in cases {
            let response = http.request(method.clone(), format!("{}{path}", s.url)).body(body).send().await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{method} {path}");
            if status == 405 {
                let allow = response.headers().get("allow").unwrap_or_else(|| panic!("{method} {path}: no Allow"));
                assert!(!allow.to_str().unwrap().contains(method.as_str()), "{method} {path}: {allow:?}");
            }
            let error: gantry_api::ErrorBody =
                response.json().await.unwrap_or_else(|e| panic!("{method} {path}: not a JSON error: {e}"));
            assert_eq!(error.error.code.as_str(), code, "{method} {path}: {}", error.error.message);
            assert!(!error.error.message.is_empty());
        }
        assert_eq!(s.client.health().await.unwrap().revision, before, "nothing was stored");
    })
    .await;
}

#[tokio::test]
async fn a_lease_that_is_not_renewed_takes_its_instances_out_of_lookups() {
    both(|s| async move {
        let c = &s.client;
        let kept = c.grant_lease(Duration::from_secs(2)).await.unwrap();
        let dying = c.grant_lease(Duration::from_secs(2)).await.unwrap();
        for (id, lease) in [("live", &kept), ("dead", &dying)] {
            let options = PutOptions { cas: None, lease: Some(lease.id.clone()) };
            c.put_machine(&machine(id), options.clone()).await.unwrap();
            c.put_instance(&instance("web", id, id, 80, Health::Passing, &[]), options).await.unwrap();
        }
        let keeper = {
            let c = c.clone();
            let id = kept.id.clone();
            tokio::spawn(async move {
                loop {
                    c.keep_alive(&id).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        };
        eventually("the dead machine leaves", WAIT, || async {
            c.service_instances("web", &[]).await.unwrap().items.len() == 1
        })
        .await;
        assert_eq!(c.lookup("web", &[]).await.unwrap().id, "live");
        assert!(c.machine("dead").await.unwrap_err().is_not_found());
        keeper.abort();
        c.revoke_lease(&kept.id).await.unwrap();
        assert!(c.lookup("web", &[]).await.unwrap_err().is_not_found());
        assert_eq!(c.keep_alive(&kept.id).await.unwrap_err().code(), Some(gantry_api::ErrorCode::LeaseNotFound));
    })
    .await;
}

async fn next(
    stream: &mut (impl futures::Stream<Item = Result<WatchItem, gantry_client::ClientError>> + Unpin),
) -> WatchItem {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watch item in time")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test]
async fn watch_delivers_every_change_in_order_and_resumes_exactly() {
    both(|s| async move {
        let c = &s.client;
        let start = c.health().await.unwrap().revision + 1;
        // Three keys on one lease: its revocation is one revision with three events.
        let lease = c.grant_lease(Duration::from_secs(60)).await.unwrap();
        for i in 0..3 {
            c.kv_put(&format!("w/leased-{i}"), "v", PutOptions { cas: None, lease: Some(lease.id.clone()) })
                .await
                .unwrap();
        }
        for i in 0..10 {
            c.kv_put(&format!("w/k{}", i % 4), &i.to_string(), PutOptions::default()).await.unwrap();
        }
        c.revoke_lease(&lease.id).await.unwrap();
        c.kv_put("other/x", "not watched", PutOptions::default()).await.unwrap();
        c.kv_delete("w/k0").await.unwrap();
        // 3 + 10 + 3 + 1 events under kv/w/.
        let mut all = Vec::new();
        let stream = c.watch("kv/w/", start, None).await.unwrap();
        futures::pin_mut!(stream);
        for _ in 0..17 {
            match next(&mut stream).await {
                WatchItem::Event { id, event } => all.push((id, event)),
                WatchItem::Reset(r) => panic!("unexpected reset {r:?}"),
            }
        }
        let revisions: Vec<u64> = all.iter().map(|(_, e)| e.revision).collect();
        assert!(revisions.windows(2).all(|w| w[0] <= w[1]), "in order: {revisions:?}");
        assert!(all.iter().all(|(_, e)| e.key.starts_with("kv/w/")));
        assert_eq!(all.iter().filter(|(_, e)| e.kind == WatchKind::Delete).count(), 4);

        // Resume after every position, including in the middle of the
        // lease's three-event revision: exactly the rest, in order.
        for cut in [0, 5, 13, 14, 15] {
            let (id, _) = &all[cut];
            let resumed = c.watch("kv/w/", 0, Some(id)).await.unwrap();
            futures::pin_mut!(resumed);
            for expected in &all[cut + 1..] {
                match next(&mut resumed).await {
                    WatchItem::Event { event, .. } => assert_eq!(&event, &expected.1, "after cut {cut}"),
                    WatchItem::Reset(r) => panic!("unexpected reset {r:?}"),
                }
            }
            // Nothing more (the next write is the live one).
            c.kv_put("w/live", &cut.to_string(), PutOptions::default()).await.unwrap();
            match next(&mut resumed).await {
                WatchItem::Event { event, .. } => assert_eq!(event.key, "kv/w/live"),
                WatchItem::Reset(r) => panic!("unexpected reset {r:?}"),
            }
            // Keep `all` the full history for the next cut.
            all.retain(|(_, e)| e.key != "kv/w/live");
        }
    })
    .await;
}

#[tokio::test]
async fn a_watch_from_compacted_history_is_told_to_reread() {
    both(|s| async move {
        let c = &s.client;
        let first = c.kv_put("old", "1", PutOptions::default()).await.unwrap().revision;
        let last = c.kv_put("old", "2", PutOptions::default()).await.unwrap().revision;
        c.kv_put("old", "3", PutOptions::default()).await.unwrap();
        s.store.compact(last).await.unwrap();
        let stream = c.watch("kv/", first, None).await.unwrap();
        futures::pin_mut!(stream);
        match next(&mut stream).await {
            WatchItem::Reset(r) => assert!(r.message.contains("re-read"), "{}", r.message),
            WatchItem::Event { event, .. } => panic!("expected a reset, got {event:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn metrics_report_requests_watchers_and_revision() {
    let s = TestServer::embedded().await;
    s.client.kv_put("m", "1", PutOptions::default()).await.unwrap();
    let stream = s.client.watch("kv/", 0, None).await.unwrap();
    let text = reqwest::get(format!("{}/metrics", s.url)).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("gantry_http_requests_total{method=\"PUT\",route=\"/v1/kv/{*key}\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("gantry_watchers 1"), "{text}");
    assert!(text.contains("gantry_store_revision 1"), "{text}");
    assert!(text.contains("gantry_http_request_duration_seconds_count{route=\"/v1/kv/{*key}\"} 1"), "{text}");
    drop(stream);
    // Served by a fresh client that speaks only Client's API.
    let _ = Client::new(&s.url).health().await.unwrap();
}

#[tokio::test]
async fn several_servers_serve_one_etcd_cluster() {
    let a = TestServer::etcd().await;
    let b = a.sharing_etcd_with().await;
    let stream = b.client.watch("kv/shared/", 0, None).await.unwrap();
    futures::pin_mut!(stream);
    a.client.kv_put("shared/x", "from a", PutOptions::default()).await.unwrap();
    assert_eq!(b.client.kv_get("shared/x").await.unwrap().unwrap().value, "from a");
    match next(&mut stream).await {
        WatchItem::Event { event, .. } => assert_eq!(event.value.as_deref(), Some("from a")),
        WatchItem::Reset(r) => panic!("unexpected reset {r:?}"),
    }
    // Compare-and-set is decided by etcd, across servers.
    let (ra, rb) = tokio::join!(
        a.client.kv_put("shared/leader", "a", PutOptions { cas: Some(0), lease: None }),
        b.client.kv_put("shared/leader", "b", PutOptions { cas: Some(0), lease: None }),
    );
    assert_eq!(ra.is_ok() as u8 + rb.is_ok() as u8, 1, "exactly one server's client wins");
}

/// The values of the next `n` events of a watch stream.
async fn next_events(
    stream: &mut (impl futures::Stream<Item = Result<WatchItem, gantry_client::ClientError>> + Unpin),
    n: usize,
) -> Vec<gantry_api::WatchEvent> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        match next(stream).await {
            WatchItem::Event { event, .. } => events.push(event),
            WatchItem::Reset(r) => panic!("unexpected reset {r:?}"),
        }
    }
    events
}

async fn metric(url: &str, name: &str) -> Option<i64> {
    let text = reqwest::get(format!("{url}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn watchers_of_one_prefix_share_one_store_watch_and_each_sees_every_change() {
    both(|s| async move {
        let c = &s.client;
        let mut shared = Vec::new();
        for _ in 0..20 {
            shared.push(Box::pin(c.watch("kv/share/", 0, None).await.unwrap()));
        }
        let other = c.watch("kv/else/", 0, None).await.unwrap();
        assert_eq!(metric(&s.url, "gantry_watchers").await, Some(21));
        assert_eq!(metric(&s.url, "gantry_store_watches").await, Some(2), "one store watch per prefix");
        let mut written = Vec::new();
        for i in 0..5 {
            written
                .push(c.kv_put(&format!("share/k{i}"), &i.to_string(), PutOptions::default()).await.unwrap().revision);
        }
        for stream in &mut shared {
            let seen: Vec<u64> = next_events(stream, 5).await.iter().map(|e| e.revision).collect();
            assert_eq!(seen, written);
        }
        drop((shared, other));
        eventually("the store watches end with their last watcher", WAIT, || async {
            metric(&s.url, "gantry_store_watches").await == Some(0)
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_watcher_starting_behind_a_busy_prefix_sees_every_change_once_in_order() {
    both(|s| async move {
        let c = s.client.clone();
        let live = c.watch("kv/busy/", 0, None).await.unwrap();
        futures::pin_mut!(live);
        const WRITES: usize = 150;
        let (revisions_tx, mut revisions) = tokio::sync::mpsc::unbounded_channel();
        let writer = {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..WRITES {
                    let revision = c
                        .kv_put(&format!("busy/k{}", i % 7), &i.to_string(), PutOptions::default())
                        .await
                        .unwrap()
                        .revision;
                    revisions_tx.send(revision).unwrap();
                }
            })
        };
        // Join while the writes go on, from the first write's revision: the
        // history up to the shared watch's position, then the shared watch.
        let mut written = Vec::new();
        while written.len() < WRITES / 3 {
            written.push(revisions.recv().await.unwrap());
        }
        let behind = c.watch("kv/busy/", written[0], None).await.unwrap();
        futures::pin_mut!(behind);
        writer.await.unwrap();
        while let Ok(revision) = revisions.try_recv() {
            written.push(revision);
        }
        assert_eq!(written.len(), WRITES);
        let seen: Vec<u64> = next_events(&mut behind, WRITES).await.iter().map(|e| e.revision).collect();
        assert_eq!(seen, written, "the late watcher: every change once, in order");
        let seen: Vec<u64> = next_events(&mut live, WRITES).await.iter().map(|e| e.revision).collect();
        assert_eq!(seen, written, "the live watcher");
    })
    .await;
}

/// HTTP/2 without TLS (prior knowledge), as the benchmark's multiplexed
/// watchers use it: several watches are streams of one connection.
#[tokio::test]
async fn watches_are_streams_of_one_http2_connection() {
    let s = TestServer::embedded().await;
    let tcp = tokio::net::TcpStream::connect(s.url.trim_start_matches("http://")).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let request = hyper::Request::get(format!("{}/v1/watch?prefix=kv/h2/", s.url))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.clone().send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        bodies.push(response.into_body());
    }
    let revision = s.client.kv_put("h2/x", "over h2", PutOptions::default()).await.unwrap().revision;
    for body in &mut bodies {
        let frame = tokio::time::timeout(WAIT, http_body_util::BodyExt::frame(body)).await.unwrap().unwrap().unwrap();
        let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
        assert!(text.starts_with(&format!("id: {revision}.0\ndata: ")), "{text}");
        assert!(text.contains("\"value\":\"over h2\""), "{text}");
    }
}

/// `gantry server`'s event loops (a thread each) share one router: one
/// store watch per prefix whichever loop a watcher's connection landed on,
/// and every loop serves reads and writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_loops_share_one_set_of_watches() {
    let s = TestServer::embedded_threaded(3).await;
    let mut watches = Vec::new();
    for _ in 0..12 {
        // A client each: a connection each, spread over the loops.
        watches.push(Box::pin(Client::new(&s.url).watch("kv/loops/", 0, None).await.unwrap()));
    }
    assert_eq!(metric(&s.url, "gantry_store_watches").await, Some(1));
    let mut written = Vec::new();
    for i in 0..6 {
        let writer = Client::new(&s.url);
        written
            .push(writer.kv_put(&format!("loops/k{i}"), &i.to_string(), PutOptions::default()).await.unwrap().revision);
    }
    for watch in &mut watches {
        let seen: Vec<u64> = next_events(watch, 6).await.iter().map(|e| e.revision).collect();
        assert_eq!(seen, written);
    }
}

/// Shutdown does not wait for watchers to hang up: requests in flight get a
/// moment, then open watch streams are cut (their clients resume from the
/// last event they saw), and the server's threads end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watch_streams() {
    let dir = tempfile::tempdir().unwrap();
    let store = gantry_store::Store::open(gantry_store::StoreConfig::Embedded(gantry_store::EmbeddedConfig::in_dir(
        dir.path(),
    )))
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gantry_server::serve_threaded(listener, store, gantry_server::Acl::off(), 2, async {
        let _ = stopped.await;
    }));
    let client = Client::new(&url);
    let watch = client.watch("kv/", 0, None).await.unwrap();
    futures::pin_mut!(watch);
    client.kv_put("before", "1", PutOptions::default()).await.unwrap();
    assert_eq!(next_events(&mut watch, 1).await[0].key, "kv/before");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server stops although a watch is open")
        .unwrap()
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("the watch stream ends");
    assert!(!matches!(ended, Some(Ok(WatchItem::Event { .. }))), "no event after shutdown: {ended:?}");
}
