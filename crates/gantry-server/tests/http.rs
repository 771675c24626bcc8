//! Requests no client library sends, written on a TcpStream byte for
//! byte: raw bytes that are not UTF-8 in the path, escapes that decode to
//! no text, dot segments (which URL libraries resolve before sending).

use std::time::Duration;

use gantry_api::{ErrorBody, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TestServer;

/// One request on a connection of its own; the answer's status, head and body.
async fn exchange(url: &str, request_line: &[u8], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
    let head = format!("host: gantry\r\nconnection: close\r\ncontent-length: {}\r\n\r\n", body.len());
    tcp.write_all(&[request_line, b"\r\n", head.as_bytes(), body].concat()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await.unwrap().unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole answer");
    let head = String::from_utf8(answer[..split].to_vec()).unwrap();
    (head[9..12].parse().unwrap(), head, answer[split + 4..].to_vec())
}

#[tokio::test]
async fn paths_that_do_not_decode_are_json_400s_and_store_nothing() {
    let s = TestServer::embedded().await;
    let before = s.client.health().await.unwrap().revision;
    let cases: [(&[u8], u16, ErrorCode); 5] = [
        (b"PUT /v1/kv/%ff%fe HTTP/1.1", 400, ErrorCode::InvalidPath),
        (b"PUT /v1/kv/50%off HTTP/1.1", 400, ErrorCode::InvalidPath),
        (b"GET /v1/machines/%C3 HTTP/1.1", 400, ErrorCode::InvalidPath),
        (b"PUT /v1/machines/.. HTTP/1.1", 400, ErrorCode::InvalidId),
        (b"GET /v1/services/./instances HTTP/1.1", 400, ErrorCode::InvalidId),
    ];
    for (request_line, status, code) in cases {
        let what = String::from_utf8_lossy(request_line).into_owned();
        let (got, head, body) = exchange(&s.url, request_line, br#"{"id": ".."}"#).await;
        assert_eq!(got, status, "{what}: {head}");
        let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{what}: {e}: {head}"));
        assert_eq!(error.error.code, code, "{what}: {}", error.error.message);
    }
    assert_eq!(s.client.health().await.unwrap().revision, before, "nothing was stored");
}

/// Bytes that are not UTF-8, raw in the request line: hyper refuses the
/// request line itself (`http::Uri` holds UTF-8 only) with a 400 and closes
/// the connection, before any of Gantry's code runs, so this 400 is the
/// one rejection whose body is not an `ErrorBody` (see ARCHITECTURE.md,
/// gantry-server). Nothing is stored and the server goes on serving.
#[tokio::test]
async fn raw_bytes_that_are_not_utf8_in_the_path_are_refused() {
    let s = TestServer::embedded().await;
    let before = s.client.health().await.unwrap().revision;
    for request_line in [&b"PUT /v1/kv/\xff\xfe HTTP/1.1"[..], b"GET /v1/machines/m\xc3 HTTP/1.1"] {
        let (status, head, _) = exchange(&s.url, request_line, b"value").await;
        assert_eq!(status, 400, "{}: {head}", String::from_utf8_lossy(request_line));
    }
    assert_eq!(s.client.health().await.unwrap().revision, before, "nothing was stored");
    // Raw UTF-8 is a path like any other.
    let (status, head, _) = exchange(&s.url, "PUT /v1/kv/caf\u{e9} HTTP/1.1".as_bytes(), b"value").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(s.client.kv_get("caf\u{e9}").await.unwrap().unwrap().value, "value");
}
