//! A TCP proxy on loopback that forwards to a service and can lose, replace or delay its
//! answers, and logs every byte clients sent: the network faults a wallet must survive (a
//! spend that committed but whose 200 never came back, a 5xx or 408 after the work was done)
//! and the observer a privacy test needs (what did the ledger see?).
//!
//! The fault is read when the first bytes of an answer arrive from the service, so the
//! service has always received and processed the whole request: exactly the "done, but the
//! client does not know" case. A faulted connection is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with the service's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through.
    Forward,
    /// Forward the request, then close the client's connection instead of answering.
    DropResponse,
    /// Forward the request, then answer the client this status (with a JSON error body)
    /// instead of the service's answer.
    ReplaceResponse(u16),
    /// Hold each answer this long before passing it on.
    DelayResponse(Duration),
    /// Close every new connection at once, forwarding nothing (the service looks down).
    RefuseConnection,
}

#[derive(Debug)]
struct State {
    fault: Fault,
    /// Apply the fault to one answer, then go back to [`Fault::Forward`].
    once: bool,
    /// Apply it only to answers to requests whose request line contains this.
    only_for: Option<String>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    /// Bytes clients sent, one buffer per connection.
    sent: Mutex<Vec<Vec<u8>>>,
    connections: AtomicUsize,
    faults_applied: AtomicUsize,
}

impl Shared {
    /// The fault for the answer arriving now to `request` (its request line); a one-shot
    /// fault is used up.
    fn take_fault(&self, request: &str) -> Fault {
        let mut s = self.state.lock().expect("proxy state");
        if s.only_for.as_deref().is_some_and(|p| !request.contains(p)) {
            return Fault::Forward;
        }
        let fault = s.fault;
        if s.once && fault != Fault::Forward {
            s.fault = Fault::Forward;
            s.once = false;
        }
        fault
    }
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of the service at `upstream` (its base URL,
    /// `http://127.0.0.1:PORT`, or a bare address).
    pub async fn start(upstream: &str) -> Self {
        let hostport = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream: SocketAddr = hostport.parse().expect("upstream is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State {
                fault: Fault::Forward,
                once: false,
                only_for: None,
            }),
            sent: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            faults_applied: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Self { addr, shared, task }
    }

    /// The proxy's base URL, to give the client instead of the service's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to every answer from now on.
    pub fn set(&self, fault: Fault) {
        self.arm(State {
            fault,
            once: false,
            only_for: None,
        });
    }

    /// Applies `fault` to the next answer only (or the next connection, for
    /// [`Fault::RefuseConnection`]).
    pub fn once(&self, fault: Fault) {
        self.arm(State {
            fault,
            once: true,
            only_for: None,
        });
    }

    /// Applies `fault` from now on to answers to requests whose head (request line and
    /// headers) contains `request` (`"POST /v1/cards/open"`, `"PrivateToken token="`),
    /// passing every other answer through.
    pub fn set_for(&self, request: &str, fault: Fault) {
        self.arm(State {
            fault,
            once: false,
            only_for: Some(request.to_owned()),
        });
    }

    /// Applies `fault` to the next answer to a request whose head contains `request` only,
    /// passing every other answer through: a client's background calls (a committee
    /// refresh, a report) cannot use the fault up first.
    pub fn once_for(&self, request: &str, fault: Fault) {
        self.arm(State {
            fault,
            once: true,
            only_for: Some(request.to_owned()),
        });
    }

    /// Replaces what the proxy does from now on.
    fn arm(&self, state: State) {
        *self.shared.state.lock().expect("proxy state") = state;
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Answers dropped, replaced or delayed, and connections refused, so far.
    pub fn faults_applied(&self) -> usize {
        self.shared.faults_applied.load(Ordering::SeqCst)
    }

    /// Everything clients sent, one buffer per connection in the order accepted.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.shared.sent.lock().expect("proxy log").clone()
    }

    /// Everything clients sent, as (lossy) text, all connections together.
    pub fn sent_text(&self) -> String {
        self.sent()
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        shared.connections.fetch_add(1, Ordering::SeqCst);
        if shared.state.lock().expect("proxy state").fault == Fault::RefuseConnection {
            shared.take_fault("");
            shared.faults_applied.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        let index = {
            let mut sent = shared.sent.lock().expect("proxy log");
            sent.push(Vec::new());
            sent.len() - 1
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Ok(upstream) = TcpStream::connect(shared.upstream).await {
                pipe(&shared, index, client, upstream).await;
            }
        });
    }
}

/// Moves bytes both ways until either side closes or a fault ends the connection.
async fn pipe(shared: &Shared, index: usize, mut client: TcpStream, mut upstream: TcpStream) {
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_upstream = vec![0u8; 16 * 1024];
    let mut client_open = true;
    // The head of the latest request on this connection, for `set_for`.
    let mut request_line = String::new();
    loop {
        tokio::select! {
            read = client.read(&mut from_client), if client_open => match read {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = upstream.shutdown().await;
                }
                Ok(n) => {
                    let chunk = &from_client[..n];
                    if let Some(line) = request_head(chunk) {
                        request_line = line;
                    }
                    shared.sent.lock().expect("proxy log")[index].extend_from_slice(chunk);
                    if upstream.write_all(&from_client[..n]).await.is_err() {
                        return;
                    }
                }
            },
            read = upstream.read(&mut from_upstream) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let fault = shared.take_fault(&request_line);
                    if fault != Fault::Forward {
                        shared.faults_applied.fetch_add(1, Ordering::SeqCst);
                    }
                    match fault {
                        Fault::Forward | Fault::RefuseConnection => {}
                        Fault::DelayResponse(d) => tokio::time::sleep(d).await,
                        Fault::DropResponse => return,
                        Fault::ReplaceResponse(status) => {
                            let body = format!(
                                r#"{{"error":{{"code":"proxy_fault","message":"answer replaced by the test proxy with {status}"}}}}"#
                            );
                            let head = format!(
                                "HTTP/1.1 {status} Fault\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            );
                            let _ = client.write_all(head.as_bytes()).await;
                            let _ = client.write_all(body.as_bytes()).await;
                            let _ = client.shutdown().await;
                            return;
                        }
                    }
                    if client.write_all(&from_upstream[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// The request line if `chunk` starts a request (a method, a space, a target).
fn request_head(chunk: &[u8]) -> Option<String> {
    let end = chunk.iter().position(|&b| b == b'\r')?;
    let line = std::str::from_utf8(&chunk[..end]).ok()?;
    let method = line.split(' ').next()?;
    let is_request = !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && line.contains(" HTTP/");
    // The request line and the headers this read holds, so `set_for` can match either.
    let head_end = chunk
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(chunk.len());
    is_request.then(|| String::from_utf8_lossy(&chunk[..head_end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP service that answers every request 200 and counts them.
    async fn service() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let served = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&served);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        let body = "{\"ok\":true}";
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, served)
    }

    #[tokio::test]
    async fn faults_reach_the_client_after_the_service_did_the_work() {
        let (url, served) = service().await;
        let proxy = FaultProxy::start(&url).await;
        let client = reqwest::Client::new();
        let get = || client.get(format!("{}/x?secret=abc", proxy.url())).send();

        assert_eq!(get().await.expect("forwarded").status(), 200);

        proxy.once(Fault::DropResponse);
        assert!(get().await.is_err(), "the answer is lost");
        assert_eq!(get().await.expect("forwarded again").status(), 200);

        proxy.once(Fault::ReplaceResponse(503));
        assert_eq!(get().await.expect("replaced").status(), 503);

        proxy.set(Fault::RefuseConnection);
        let served_before = served.load(Ordering::SeqCst);
        assert!(get().await.is_err(), "refused");
        assert_eq!(
            served.load(Ordering::SeqCst),
            served_before,
            "nothing forwarded"
        );
        proxy.set(Fault::Forward);

        // A fault for one kind of request only.
        proxy.set_for("GET /y", Fault::ReplaceResponse(500));
        assert_eq!(get().await.expect("not /y").status(), 200);
        let y = client.get(format!("{}/y", proxy.url())).send().await;
        assert_eq!(y.expect("/y").status(), 500);
        proxy.set(Fault::Forward);

        // The dropped and the replaced requests reached the service all the same.
        assert_eq!(served.load(Ordering::SeqCst), 6);
        assert_eq!(proxy.faults_applied(), 4);
        assert!(proxy.sent_text().contains("secret=abc"));
        assert!(proxy.connections() >= 3);
    }
}
