//! Slow clients (a stalled body gets the services' JSON 408; a head trickled in is cut off
//! after the header read timeout; the example relay has the same limits) and many idle
//! connections.

use crate::harness::{client, parse_response};
use crate::support::consortium;
use scrip_spec::encoding::b64_encode;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Slow clients.

/// What the server did with a request that stopped halfway.
#[derive(Debug)]
struct Stall {
    /// When the first byte of an answer came, if one did.
    answered_after: Option<Duration>,
    status: Option<u16>,
    body: Vec<u8>,
    /// When the server closed the connection, if it did.
    closed_after: Option<Duration>,
}

/// Sends `head` and `partial`, then nothing, and watches for up to `wait`.
fn stall(addr: SocketAddr, head: &str, partial: &[u8], wait: Duration) -> Stall {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(partial).expect("write body");
    let started = Instant::now();
    let mut got = Vec::new();
    let mut answered_after = None;
    let mut closed_after = None;
    let mut buf = [0u8; 4096];
    while started.elapsed() < wait {
        stream
            .set_read_timeout(Some(Duration::from_millis(250)))
            .expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(n) => {
                answered_after.get_or_insert(started.elapsed());
                got.extend_from_slice(&buf[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
    }
    let parsed = parse_response(&got);
    Stall {
        answered_after,
        status: parsed.as_ref().map(|a| a.status),
        body: parsed.map(|a| a.body).unwrap_or_default(),
        closed_after,
    }
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().expect("address")
}

/// Sends a whole request one byte at a time, `gap` apart, and reads the answer.
fn trickle(addr: SocketAddr, request: &[u8], gap: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    for b in request {
        stream.write_all(&[*b]).ok()?;
        std::thread::sleep(gap);
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    parse_response(&got).map(|a| a.status)
}

/// The ledger and the redeemer stop waiting for a body after 30 s, the issuer after 60 s
/// (`finish` in common/src/server.rs: tower_http's `TimeoutLayer` with 408), and close the
/// connection. A client that sends slowly but finishes in time is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_that_never_finishes_gets_408_and_the_connection_closes() {
    let (_dir, c) = consortium(&["op-a"]).await;
    let a = &c.operators[0];
    let slow = addr_of(&c.ledger_url);
    let slow_but_complete = tokio::task::spawn_blocking(move || {
        trickle(
            slow,
            b"GET /v1/info HTTP/1.1\r\nHost: scrip\r\nConnection: close\r\n\r\n",
            Duration::from_millis(20),
        )
    });
    let mut stalls = Vec::new();
    for (name, url, path, timeout) in [
        ("ledger", c.ledger_url.clone(), "/v1/entries", 30),
        ("redeemer", a.redeemer_url.clone(), "/v1/redeem", 30),
        ("issuer", a.issuer_url.clone(), "/v1/cards/balance", 60),
    ] {
        let addr = addr_of(&url);
        stalls.push((
            name,
            timeout,
            tokio::task::spawn_blocking(move || {
                stall(
                    addr,
                    &format!("POST {path} HTTP/1.1\r\nHost: scrip\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"),
                    b"{\"card_code\":",
                    Duration::from_secs(timeout + 15),
                )
            }),
        ));
    }
    assert_eq!(
        slow_but_complete.await.expect("trickle"),
        Some(200),
        "a request sent one byte every 20 ms is answered"
    );
    for (name, timeout, task) in stalls {
        let s = task.await.expect("stall");
        println!(
            "{name}: answered after {:?} with {:?}, body {:?}, closed after {:?}",
            s.answered_after,
            s.status,
            String::from_utf8_lossy(&s.body),
            s.closed_after
        );
        assert_eq!(s.status, Some(408), "{name}: {s:?}");
        assert!(
            String::from_utf8_lossy(&s.body).contains("\"code\":\"timeout\""),
            "{name}: the 408 is the JSON error: {s:?}"
        );
        let answered = s.answered_after.expect("answered");
        let limit = Duration::from_secs(timeout);
        assert!(
            answered >= limit - Duration::from_secs(1)
                && answered <= limit + Duration::from_secs(5),
            "{name} answered after {answered:?}, its limit is {limit:?}"
        );
        assert!(
            s.closed_after.is_some(),
            "{name} closes the connection after the 408"
        );
    }
}

/// A request head trickled in a byte a second is cut off after
/// `scrip_common::HEADER_READ_TIMEOUT` (axum::serve had no such limit: the services now
/// serve through `scrip_common::server::serve`).
#[tokio::test]
async fn headers_sent_one_byte_a_second_are_cut_off() {
    let (_dir, c) = consortium(&["op-a"]).await;
    let addr = addr_of(&c.ledger_url);
    let outcome = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        let head = b"GET /v1/info HTTP/1.1\r\nHost: scrip\r\nX-Slow: ";
        stream.write_all(head).expect("write");
        let started = Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_millis(10)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        while started.elapsed() < Duration::from_secs(45) {
            if stream.write_all(b"a").is_err() {
                return Some(started.elapsed());
            }
            match stream.read(&mut buf) {
                Ok(_) => return Some(started.elapsed()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(started.elapsed()),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        None
    })
    .await
    .expect("trickle");
    let cut = outcome.expect("the ledger never cut off a client trickling its headers for 45 s");
    let limit = scrip_common::HEADER_READ_TIMEOUT;
    assert!(
        cut >= limit - Duration::from_secs(1) && cut <= limit + Duration::from_secs(5),
        "cut off after {cut:?}, the limit is {limit:?}"
    );
}

/// The example relay, too, answers a body that never finishes with a 408 and closes.
#[tokio::test]
async fn the_relay_cuts_off_a_body_that_never_finishes() {
    let (_dir, c) = consortium(&["op-a"]).await;
    let addr = addr_of(&c.operators[0].relay_url);
    let s = tokio::task::spawn_blocking(move || {
        stall(
            addr,
            &format!(
                "PUT /chunks/{} HTTP/1.1\r\nHost: scrip\r\nContent-Length: 1000\r\n\r\n",
                b64_encode([3u8; 16])
            ),
            b"abc",
            Duration::from_secs(75),
        )
    })
    .await
    .expect("stall");
    assert_eq!(s.status, Some(408), "{s:?}");
    assert!(s.closed_after.is_some(), "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// Many connections.

/// The soft limit on open files, from /proc (Linux); `None` elsewhere.
fn open_file_limit() -> Option<usize> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// 500 idle connections to the ledger — half silent, half stopped inside a request head — do
/// not keep a normal request from being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_idle_connections_do_not_starve_a_normal_request() {
    let (_dir, c) = consortium(&["op-a"]).await;
    // Each connection costs this process two descriptors (both ends are here).
    let wanted = 500;
    let n = open_file_limit().map_or(wanted, |limit| wanted.min(limit.saturating_sub(400) / 2));
    assert!(n >= 100, "too few file descriptors for this test");
    let addr = addr_of(&c.ledger_url);
    let conns = tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|i| {
                let mut s = TcpStream::connect(addr).expect("connect");
                if i % 2 == 1 {
                    s.write_all(b"POST /v1/entries HTTP/1.1\r\nHost: scrip\r\nContent-")
                        .expect("write");
                }
                s
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("connect");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let http = client(None);
    let started = Instant::now();
    let resp = http
        .get(format!("{}/v1/info", c.ledger_url))
        .send()
        .await
        .expect("info");
    assert_eq!(resp.status().as_u16(), 200);
    let resp = http
        .post(format!("{}/v1/entries", c.ledger_url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("entries");
    assert_eq!(resp.status().as_u16(), 400);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "{took:?} with {n} idle connections"
    );

    // Are the idle connections still open? (Nothing in the code closes them.)
    let open = tokio::task::spawn_blocking(move || {
        conns
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).expect("nonblocking");
                let mut b = [0u8; 1];
                matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    })
    .await
    .expect("peek");
    println!(
        "{n} idle connections; two requests took {took:?}; {open} still open after the requests"
    );
}
