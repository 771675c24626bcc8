//! Each limit hit by a bounded loop against a real server: the server
//! answers with the JSON error (429 or 413, naming the limit and its
//! flag), keeps serving the other callers, and `/metrics` counts the
//! refusal. And the `/metrics` label sets stay small whatever methods and
//! paths are sent.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry_api::{ErrorBody, ErrorCode, MANAGEMENT_POLICY, TokenRequest};
use gantry_client::{Client, PutOptions};
use gantry_server::{AclMode, Limits};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{TestServer, eventually};

const WAIT: Duration = Duration::from_secs(10);

/// A management token of its own (the limits apply to those too), as a
/// client and as its secret.
async fn operator(s: &TestServer, name: &str) -> (Client, String) {
    let request = TokenRequest { name: name.into(), policies: vec![MANAGEMENT_POLICY.into()], ..Default::default() };
    let secret = s.client.create_token(&request).await.unwrap().secret;
    (Client::new(&s.url).with_token(&secret), secret)
}

/// `gantry_limit_refusals_total` of `limit`, as `/metrics` says now.
async fn refusals(s: &TestServer, limit: &str) -> u64 {
    let http = reqwest::Client::new();
    let mut request = http.get(format!("{}/metrics", s.url));
    if let Some(token) = &s.token {
        request = request.bearer_auth(token);
    }
    let text = request.send().await.unwrap().text().await.unwrap();
    let line = format!("gantry_limit_refusals_total{{limit=\"{limit}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).unwrap_or_else(|| panic!("no {line} in\n{text}")).parse().unwrap()
}

/// The error body of a refused answer, checked against `status` and `code`.
async fn refused(response: reqwest::Response, status: StatusCode, code: ErrorCode) -> String {
    assert_eq!(response.status(), status);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error.code, code, "{}", body.error.message);
    body.error.message
}

#[tokio::test]
async fn connections_over_the_limit_of_an_address_are_closed_and_other_addresses_served() {
    let limits = Limits { connections_per_ip: 3, ..Limits::default() };
    let s = TestServer::embedded_limited(AclMode::Off, limits).await;
    let address = s.url.trim_start_matches("http://").to_owned();
    // Three idle connections from 127.0.0.1: the limit.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // The fourth is closed before it is read: the request gets no answer.
    let mut fourth = tokio::net::TcpStream::connect(&address).await.unwrap();
    let _ = fourth.write_all(b"GET /v1/health HTTP/1.1\r\nhost: gantry\r\n\r\n").await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, fourth.read_to_end(&mut answer)).await.expect("closed, not left hanging");
    assert!(read.is_err() || answer.is_empty(), "an answer on a connection over the limit: {answer:?}");

    // Another address is served meanwhile.
    let from_elsewhere = reqwest::Client::builder().local_address(IpAddr::from([127, 0, 0, 2])).build().unwrap();
    let health = from_elsewhere.get(format!("{}/v1/health", s.url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Once one of the three closes, 127.0.0.1 is served again.
    held.pop();
    let client = s.client.clone();
    eventually("127.0.0.1 served again", WAIT, || {
        let client = client.clone();
        async move { client.health().await.is_ok() }
    })
    .await;
    drop(held);
    assert!(refusals(&s, "connections_per_ip").await >= 1);
}

#[tokio::test]
async fn a_token_over_its_request_rate_gets_429_with_retry_after_and_others_are_served() {
    let limits = Limits { requests_per_second_per_token: 5, request_burst_per_token: 10, ..Limits::default() };
    let s = TestServer::embedded_limited(AclMode::On, limits).await;
    let (_, secret) = operator(&s, "busy").await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut answered = 0;
    let response = loop {
        assert!(answered < 100 && started.elapsed() < WAIT, "no 429 after {answered} requests");
        let response = http.get(format!("{}/v1/kv/x", s.url)).bearer_auth(&secret).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            break response;
        }
        answered += 1;
    };
    assert!(answered >= 10, "the burst of 10 passes first: {answered}");
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let message = refused(response, StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests).await;
    assert!(message.contains("(busy)") && message.contains("5 requests per second"), "{message}");
    assert!(message.contains("--max-requests-per-second-per-token"), "{message}");

    // Another token is served at once.
    s.client.kv_put("other", "served", PutOptions::default()).await.unwrap();
    assert!(refusals(&s, "requests_per_second_per_token").await >= 1);
    // And the busy one again once its bucket refilled a little.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = http.get(format!("{}/v1/kv/other", s.url)).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_tokens_the_rate_is_per_client_address() {
    let limits = Limits { requests_per_second_per_token: 2, request_burst_per_token: 5, ..Limits::default() };
    let s = TestServer::embedded_limited(AclMode::Off, limits).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(s.client.health().await.err().and_then(|e| e.code()));
        if statuses.last() == Some(&Some(ErrorCode::TooManyRequests)) {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&Some(ErrorCode::TooManyRequests)), "{statuses:?}");
    let from_elsewhere = reqwest::Client::builder().local_address(IpAddr::from([127, 0, 0, 3])).build().unwrap();
    let health = from_elsewhere.get(format!("{}/v1/health", s.url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_over_its_watches_gets_429_and_others_still_watch() {
    let limits = Limits { watches_per_token: 3, ..Limits::default() };
    let s = TestServer::embedded_limited(AclMode::On, limits).await;
    let (busy, secret) = operator(&s, "watcher").await;
    let mut open = Vec::new();
    for n in 0..3 {
        open.push(busy.watch(&format!("kv/w{n}/"), 0, None).await.unwrap());
    }
    let http = reqwest::Client::new();
    let fourth = http.get(format!("{}/v1/watch?prefix=kv/w3/", s.url)).bearer_auth(&secret).send().await.unwrap();
    let message = refused(fourth, StatusCode::TOO_MANY_REQUESTS, ErrorCode::LimitExceeded).await;
    assert!(message.contains("3 watches") && message.contains("--max-watches-per-token"), "{message}");

    // Another token watches, and sees its event.
    let mut other = Box::pin(s.client.watch("kv/w0/", 0, None).await.unwrap());
    s.client.kv_put("w0/x", "1", PutOptions::default()).await.unwrap();
    assert!(tokio::time::timeout(WAIT, other.next()).await.unwrap().unwrap().is_ok());
    // An ended watch frees its place (the server notices at its next write).
    drop(open.remove(0));
    eventually("a watch freed", WAIT, || {
        let (busy, client) = (busy.clone(), s.client.clone());
        async move {
            client.kv_put("w0/y", "1", PutOptions::default()).await.unwrap();
            busy.watch("kv/w3/", 0, None).await.is_ok()
        }
    })
    .await;
    assert!(refusals(&s, "watches_per_token").await >= 1);
}

#[tokio::test]
async fn leases_are_bounded_in_number_and_ttl_and_ended_ones_free_their_place() {
    let limits = Limits { leases_per_token: 2, lease_ttl: Duration::from_secs(60), ..Limits::default() };
    let s = TestServer::embedded_limited(AclMode::On, limits).await;
    let (busy, _) = operator(&s, "leaser").await;
    let long = busy.grant_lease(Duration::from_secs(61)).await.unwrap_err();
    assert_eq!(long.code(), Some(ErrorCode::InvalidTtl));
    assert!(long.to_string().contains("--max-lease-ttl"), "{long}");

    let kept = busy.grant_lease(Duration::from_secs(60)).await.unwrap();
    // This one runs out: not renewed.
    let short = busy.grant_lease(Duration::from_secs(1)).await.unwrap();
    busy.kv_put("leased", "1", PutOptions { lease: Some(short.id.clone()), ..Default::default() }).await.unwrap();
    let third = busy.grant_lease(Duration::from_secs(60)).await.unwrap_err();
    assert_eq!(third.code(), Some(ErrorCode::LimitExceeded), "{third}");
    assert!(third.to_string().contains("2 live leases"), "{third}");
    // Another token is granted one meanwhile.
    s.client.grant_lease(Duration::from_secs(60)).await.unwrap();

    // Expiry frees a place, revocation another.
    eventually("the expired lease frees a place", WAIT, || {
        let busy = busy.clone();
        async move { busy.grant_lease(Duration::from_secs(60)).await.is_ok() }
    })
    .await;
    assert!(busy.kv_get("leased").await.unwrap().is_none());
    busy.revoke_lease(&kept.id).await.unwrap();
    busy.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert!(refusals(&s, "leases_per_token").await >= 1);
    assert!(refusals(&s, "lease_ttl_seconds").await >= 1);
}

#[tokio::test]
async fn a_token_over_its_keys_or_bytes_gets_413_and_deletes_and_lease_ends_give_them_back() {
    let limits = Limits { keys_per_token: 4, bytes_per_token: 1_000, ..Limits::default() };
    let s = TestServer::embedded_limited(AclMode::On, limits).await;
    let (busy, _) = operator(&s, "writer").await;
    let lease = busy.grant_lease(Duration::from_secs(1)).await.unwrap();
    busy.kv_put("leased", "v", PutOptions { lease: Some(lease.id), ..Default::default() }).await.unwrap();
    let mut written = 1;
    let refusal = loop {
        assert!(written < 20, "no refusal after {written} keys");
        match busy.kv_put(&format!("k{written}"), "v", PutOptions::default()).await {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(written, 4);
    assert_eq!(refusal.code(), Some(ErrorCode::QuotaExceeded), "{refusal}");
    assert!(refusal.to_string().contains("4 keys") && refusal.to_string().contains("--max-keys-per-token"));
    // Rewriting a key it holds is no new key; another token writes freely.
    busy.kv_put("k1", "w", PutOptions::default()).await.unwrap();
    s.client.kv_put("other", "v", PutOptions::default()).await.unwrap();
    // A delete gives one back, and so does the end of the lease.
    busy.kv_delete("k1").await.unwrap();
    busy.kv_put("k4", "v", PutOptions::default()).await.unwrap();
    eventually("the lease's key given back", WAIT, || {
        let busy = busy.clone();
        async move { busy.kv_put("k5", "v", PutOptions::default()).await.is_ok() }
    })
    .await;

    // Bytes: 4 keys of about 10 bytes held; 1,000 more do not fit.
    busy.kv_delete("k5").await.unwrap();
    let big = busy.kv_put("big", &"x".repeat(1_000), PutOptions::default()).await.unwrap_err();
    assert_eq!(big.code(), Some(ErrorCode::QuotaExceeded), "{big}");
    assert!(big.to_string().contains("--max-bytes-per-token"), "{big}");
    busy.kv_put("small", &"x".repeat(500), PutOptions::default()).await.unwrap();
    assert!(refusals(&s, "keys_per_token").await >= 1);
    assert!(refusals(&s, "bytes_per_token").await >= 1);
}

/// The finding: 20,000 requests with made-up methods (and paths)
/// grew `/metrics` from 625 B to 1.6 MB. Now every label comes from a
/// fixed set: methods fold into `other`, paths into their route or
/// `unmatched`.
#[tokio::test]
async fn made_up_methods_and_paths_leave_metrics_small() {
    let s = TestServer::embedded_limited(AclMode::Off, Limits::out_of_reach()).await;
    let http = reqwest::Client::new();
    // Every label the test will use exists once before the size is taken.
    let warm_up = [("BREW", "/nowhere"), ("BREW", "/v1/kv/x"), ("GET", "/nowhere"), ("GET", "/metrics")];
    for (method, path) in warm_up {
        http.request(Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", s.url)).send().await.unwrap();
    }
    let metrics = || async { http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap() };
    let before = metrics().await.len();
    let started = Instant::now();
    let sent = futures::stream::iter(0..20_000u32)
        .map(|n| {
            let (http, url) = (http.clone(), s.url.clone());
            async move {
                let method = Method::from_bytes(format!("M{n:05X}").as_bytes()).unwrap();
                let path = if n % 2 == 0 { format!("/p{n}/q") } else { format!("/v1/kv/key{n}") };
                http.request(method, format!("{url}{path}")).send().await.unwrap().status()
            }
        })
        .buffer_unordered(32)
        .fold(0, |count, status| async move {
            assert!(status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED, "{status}");
            count + 1
        })
        .await;
    assert_eq!(sent, 20_000);
    assert!(started.elapsed() < Duration::from_secs(60));
    let text = metrics().await;
    // The counts grow by digits, the labels not at all.
    assert!(text.len() < before + 1024, "/metrics grew from {before} to {} bytes:\n{text}", text.len());
    assert!(text.contains("method=\"other\",route=\"unmatched\",status=\"404\""), "{text}");
    assert!(text.contains("method=\"other\",route=\"/v1/kv/{*key}\",status=\"405\""), "{text}");
    assert!(!text.contains("M0000"), "{text}");
}
