//! Throttling: moto never throttles, so a small proxy in front of it
//! answers the first N requests as EC2 does when throttling (HTTP 503,
//! `RequestLimitExceeded`) and forwards the rest to moto.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Moto, aws_command, example_for_moto};
use crate::Run;

const THROTTLED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>gantry-test</RequestID></Response>";

/// The proxy: its URL, and how many requests it has seen.
struct Throttle {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl Throttle {
    /// Throttles the first `first` requests, forwards the others to `moto`.
    /// One request per connection (`Connection: close`), as moto does too.
    fn start(moto: &Moto, first: usize) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let (counter, upstream) = (requests.clone(), moto.port);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || answer(client, n < first, upstream));
            }
        });
        Throttle { url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(mut client: TcpStream, throttle: bool, upstream: u16) {
    let request = read_request(&mut client);
    if throttle {
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            THROTTLED.len()
        );
        let _ = client.write_all(head.as_bytes()).and_then(|()| client.write_all(THROTTLED.as_bytes()));
        return;
    }
    let mut moto = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
    moto.write_all(&request).unwrap();
    let mut response = Vec::new();
    moto.read_to_end(&mut response).unwrap();
    let _ = client.write_all(&response);
}

/// One HTTP/1.1 request, head and body, with `Connection: close` so that
/// moto closes after its answer.
fn read_request(client: &mut TcpStream) -> Vec<u8> {
    let mut reader = BufReader::new(client);
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
            if name.eq_ignore_ascii_case("connection") {
                continue;
            }
        }
        if line == "\r\n" {
            head.push_str("Connection: close\r\n\r\n");
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    [head.into_bytes(), body].concat()
}

fn instance_list(s: &super::Scratch, url: &str) -> Run {
    Run::from(aws_command(s.dir.path(), &["instance:list", "--json"]).env("AWS_ENDPOINT_URL", url).output().unwrap())
}

#[test]
fn throttled_calls_are_retried_with_backoff_then_reported() {
    let moto = Moto::start();
    let s = example_for_moto(&moto);

    // Throttled twice, then answered: the command works.
    let throttle = Throttle::start(&moto, 2);
    let listed: serde_json::Value = serde_json::from_str(&instance_list(&s, &throttle.url).ok()).unwrap();
    assert_eq!(listed, serde_json::json!([]));
    assert_eq!(throttle.requests(), 3, "two throttled attempts, then the one that went through");

    // Throttled for good: five attempts, then a message that says so.
    let throttle = Throttle::start(&moto, usize::MAX);
    let run = instance_list(&s, &throttle.url);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "error: AWS kept throttling DescribeInstances after 5 attempts with backoff; try again in a minute\n"
    );
    assert_eq!(throttle.requests(), 5);
}
