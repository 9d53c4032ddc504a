//! A body over the limit always gets its JSON 413, read in full by the client: the server never
//! invites the body with `100 Continue`, and never resets the connection under the answer
//! (PROTOCOL.md section 1.4).

use axum::Router;
use axum::routing::post;
use scrip_common::metrics::MetricsBuilder;
use scrip_common::server::{ApiJson, finish, serve};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const LIMIT: usize = 4096;
const TEN_MB: usize = 10 * 1024 * 1024;

async fn spawn_app() -> SocketAddr {
    let routes = Router::new().route(
        "/echo",
        post(|ApiJson(v): ApiJson<serde_json::Value>| async move { axum::Json(v) }),
    );
    let registry = MetricsBuilder::new("test").build();
    let app = finish(routes, LIMIT, Duration::from_secs(30), &registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, app, std::future::pending()));
    addr
}

fn assert_json_413(status: u16, body: &str) {
    assert_eq!(status, 413, "{body}");
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(v["error"]["code"], "body_too_large", "{body}");
}

/// Reads one HTTP/1.1 answer head and a Content-Length body from a raw stream.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read the answer");
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned();
                return (head, body);
            }
        }
    }
}

fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_without_100_continue() {
    let addr = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {TEN_MB}\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    let (head, body) = read_answer(&mut stream).await;
    assert!(
        !head.starts_with("HTTP/1.1 100"),
        "the body was invited: {head}"
    );
    assert_json_413(status_of(&head), &body);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "the connection cannot carry another request: {head}"
    );
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_its_answer_while_it_is_still_being_sent() {
    let addr = spawn_app().await;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    writer.write_all(head.as_bytes()).await.expect("send head");
    // The client goes on sending its megabytes after the answer, as a simple client does.
    let sending = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
        for _ in 0..(TEN_MB / (64 * 1024)) {
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                return false;
            }
        }
        writer.write_all(b"0\r\n\r\n").await.is_ok()
    });
    let mut got = Vec::new();
    reader
        .read_to_end(&mut got)
        .await
        .expect("the answer is read to the server's close, with no reset");
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text.split_once("\r\n\r\n").expect("an answer");
    assert_json_413(status_of(head), body);
    assert!(
        sending.await.expect("sender"),
        "the server read the rest of the body instead of resetting the connection"
    );
}

/// The finding: about 4 in 1,700 such posts got a reset instead of the 413. A
/// thousand in a row, four at a time, must each get the JSON answer.
#[tokio::test]
async fn a_thousand_10_mb_posts_each_get_their_json_413() {
    let addr = spawn_app().await;
    let client = reqwest::Client::new();
    let body = axum::body::Bytes::from(vec![b' '; TEN_MB]);
    let url = format!("http://{addr}/echo");
    let mut failures = Vec::new();
    let mut next = 0usize;
    while next < 1000 {
        let batch: Vec<_> = (next..(next + 4).min(1000))
            .map(|i| {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    match sent {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            match resp.text().await {
                                Ok(text) if status == 413 && text.contains("body_too_large") => {
                                    None
                                }
                                Ok(text) => Some(format!("post {i}: {status} {text}")),
                                Err(e) => Some(format!("post {i}: {status}, body lost: {e}")),
                            }
                        }
                        Err(e) => Some(format!("post {i}: no answer: {e:?}")),
                    }
                })
            })
            .collect();
        next += batch.len();
        for task in batch {
            if let Some(failure) = task.await.expect("task") {
                failures.push(failure);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 1000 posts got no JSON 413: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
