//! A service that answers without end (a faulty or hostile one: a committee peer, a ledger, an
//! issuer) gets a clear error from the typed clients once its answer passes
//! [`MAX_ANSWER_BYTES`], and the rest is never read: a client's memory is bounded by the bound,
//! not by what the other side sends.

use scrip_common::clients::{AnswerError, ClientError, LedgerClient, MAX_ANSWER_BYTES};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the endless server declares in its answer's head.
#[derive(Clone, Copy)]
enum Head {
    /// `status`, chunked, and chunks of `[` for ever.
    Endless { status: u16 },
    /// A 200 declaring a body of 1 GiB, of which it sends what the client takes.
    Declared,
}

/// A server on loopback answering every request as `head` says; returns its URL and the
/// bytes of body it managed to write before the client stopped reading.
async fn endless_server(head: Head) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let written = Arc::new(AtomicUsize::new(0));
    let count = written.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                // The request head; its body, if any, is not needed.
                let mut buf = [0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let chunk = vec![b'['; 64 * 1024];
                let answer_head = match head {
                    Head::Endless { status } => format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         transfer-encoding: chunked\r\n\r\n"
                    ),
                    Head::Declared => "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: 1073741824\r\n\r\n"
                        .to_owned(),
                };
                if stream.write_all(answer_head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    let sent = match head {
                        Head::Endless { .. } => {
                            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                            framed.extend_from_slice(&chunk);
                            framed.extend_from_slice(b"\r\n");
                            stream.write_all(&framed).await
                        }
                        Head::Declared => stream.write_all(&chunk).await,
                    };
                    if sent.is_err() {
                        return;
                    }
                    count.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            });
        }
    });
    (url, written)
}

/// Waits until the server's count stops moving (the client let the connection go), and checks
/// that it wrote no more than `bound` bytes of body.
async fn assert_wrote_at_most(written: &AtomicUsize, bound: usize) {
    let mut last = written.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = written.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    assert!(last <= bound, "the client read on: {last} bytes");
}

/// Whatever the kernel's socket buffers hold beyond what the client read.
const BUFFERED: usize = 32 * 1024 * 1024;

#[tokio::test]
async fn an_endless_answer_is_refused_once_past_the_bound() {
    let (url, written) = endless_server(Head::Endless { status: 200 }).await;
    // A minute to answer: on a client that read until the end, the test would run that long
    // and read gigabytes.
    let client = LedgerClient::with_timeout(&url, Duration::from_secs(60));
    let err = client.info().await.expect_err("no answer to read");
    assert!(
        matches!(
            err,
            ClientError::BadAnswer {
                source: AnswerError::TooLarge {
                    limit: MAX_ANSWER_BYTES
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.outcome_unknown(),
        "an unread answer leaves the outcome unknown"
    );
    assert_wrote_at_most(&written, MAX_ANSWER_BYTES + BUFFERED).await;
}

#[tokio::test]
async fn an_endless_error_answer_is_refused_once_past_the_bound() {
    let (url, written) = endless_server(Head::Endless { status: 500 }).await;
    let client = LedgerClient::with_timeout(&url, Duration::from_secs(60));
    let err = client.info().await.expect_err("a refusal");
    // The status is kept; the message is not read.
    assert_eq!(err.status(), Some(500), "{err:?}");
    assert_wrote_at_most(&written, MAX_ANSWER_BYTES + BUFFERED).await;
}

#[tokio::test]
async fn a_declared_length_past_the_bound_is_refused_unread() {
    let (url, written) = endless_server(Head::Declared).await;
    let client = LedgerClient::with_timeout(&url, Duration::from_secs(60));
    let err = client.info().await.expect_err("no answer to read");
    assert!(
        matches!(
            err,
            ClientError::BadAnswer {
                source: AnswerError::TooLarge { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_wrote_at_most(&written, BUFFERED).await;
}
