//! The traffic between committee nodes: TCP, each connection authenticated by both nodes'
//! keys, messages in bounded frames.
//!
//! Every node dials every other node for what it sends, and accepts their connections for
//! what it receives. A connection starts with both sides sending `magic || ledger id || node
//! key || nonce`, then a signature over a [`PeerProof`] of the other side's nonce; nothing else
//! is read before both proofs check. A frame is `length (u32 BE) || SCALE(session, message)`,
//! at most [`MAX_PEER_FRAME`] bytes. A peer that sends a bad proof, an oversized frame or a
//! message that does not decode is disconnected; it may dial again, and is refused again.
//! Messages to a peer that is unreachable wait in a bounded queue and are dropped when it is
//! full: AlephBFT asks again for what it misses.

use codec::{Decode, Encode};
use scrip_spec::OperatorId;
use scrip_spec::OperatorKey;
use scrip_spec::committee::{MAX_PEER_FRAME, PEER_MAGIC, PeerProof};
use scrip_spec::ledger::Hash32;
use scrip_spec::operator::verify_detached;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};

/// Frames waiting for one peer.
const PEER_QUEUE: usize = 4096;
/// Messages received and not yet taken by the session.
const INBOX: usize = 16_384;
/// Messages kept for the next session while this one ends.
const NEXT_SESSION_BUFFER: usize = 16_384;
/// Time for the whole handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// One node's view of the committee's transport.
pub struct PeerNetwork<D> {
    me: usize,
    outgoing: Vec<Option<mpsc::Sender<Arc<Vec<u8>>>>>,
    inbox: Mutex<Inbox<D>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Inbox<D> {
    rx: mpsc::Receiver<(u64, D)>,
    later: VecDeque<(u64, D)>,
}

impl<D> Drop for PeerNetwork<D> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Who we are and who the others are.
#[derive(Clone)]
pub struct Identity {
    /// The ledger.
    pub ledger_id: Hash32,
    /// This node's key.
    pub key: Arc<OperatorKey>,
    /// Every node's key and peer address, in committee order.
    pub nodes: Vec<(OperatorId, String)>,
}

impl<D: Encode + Decode + Send + 'static> PeerNetwork<D> {
    /// Starts accepting on `listener` and dialing every other node. A node whose committee
    /// changes starts a network for the new one on the same listener (the old one's tasks
    /// end when it is dropped).
    pub fn start(identity: Identity, listener: Arc<TcpListener>) -> Arc<Self> {
        let me = identity
            .nodes
            .iter()
            .position(|(id, _)| *id == identity.key.id())
            .unwrap_or(usize::MAX);
        let (inbox_tx, rx) = mpsc::channel(INBOX);
        let mut tasks = vec![tokio::spawn(accept_loop(
            identity.clone(),
            listener,
            inbox_tx,
        ))];
        let mut outgoing = Vec::new();
        for (index, (id, address)) in identity.nodes.iter().enumerate() {
            if index == me {
                outgoing.push(None);
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            outgoing.push(Some(tx));
            tasks.push(tokio::spawn(dial_loop(
                identity.clone(),
                *id,
                address.clone(),
                rx,
            )));
        }
        Arc::new(Self {
            me,
            outgoing,
            inbox: Mutex::new(Inbox {
                rx,
                later: VecDeque::new(),
            }),
            tasks,
        })
    }

    /// Sends `message` of `session` to node `to`, or to every other node.
    pub fn send(&self, session: u64, message: &D, to: Option<usize>) {
        let frame = Arc::new((session, message).encode());
        if frame.len() > MAX_PEER_FRAME {
            tracing::error!(bytes = frame.len(), "a consensus message too large to send");
            return;
        }
        for (index, queue) in self.outgoing.iter().enumerate() {
            let Some(queue) = queue else { continue };
            if to.is_none_or(|t| t == index) && index != self.me {
                // Full: the peer is slow or away; AlephBFT asks again for what it misses.
                let _ = queue.try_send(frame.clone());
            }
        }
    }

    /// The next message of `session`: earlier sessions' messages are dropped, later ones kept
    /// (up to a bound) for when this node gets there.
    pub async fn next(&self, session: u64) -> Option<D> {
        let mut inbox = self.inbox.lock().await;
        if let Some(at) = inbox.later.iter().position(|(s, _)| *s == session) {
            return inbox.later.remove(at).map(|(_, d)| d);
        }
        inbox.later.retain(|(s, _)| *s > session);
        loop {
            let (s, message) = inbox.rx.recv().await?;
            if s == session {
                return Some(message);
            }
            if s > session && inbox.later.len() < NEXT_SESSION_BUFFER {
                inbox.later.push_back((s, message));
            }
        }
    }
}

async fn accept_loop<D: Decode + Send + 'static>(
    identity: Identity,
    listener: Arc<TcpListener>,
    inbox: mpsc::Sender<(u64, D)>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a node connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let identity = identity.clone();
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut stream = stream;
            let peer = match tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                handshake(&identity, &mut stream, None),
            )
            .await
            {
                Ok(Ok(peer)) => peer,
                Ok(Err(e)) => {
                    tracing::warn!(%from, error = %e, "refused a node connection");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%from, "a node connection did not finish its handshake in time");
                    return;
                }
            };
            if let Err(e) = receive(&mut stream, &inbox).await {
                tracing::warn!(%from, peer = %peer, error = %e, "disconnected a node");
            }
        });
    }
}

async fn receive<D: Decode>(
    stream: &mut TcpStream,
    inbox: &mpsc::Sender<(u64, D)>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let len = stream.read_u32().await? as usize;
        if len > MAX_PEER_FRAME {
            return Err(std::io::Error::other(format!(
                "a frame of {len} bytes, more than the {MAX_PEER_FRAME} allowed"
            )));
        }
        buf.resize(len, 0);
        stream.read_exact(&mut buf).await?;
        let message = <(u64, D)>::decode(&mut &buf[..])
            .map_err(|e| std::io::Error::other(format!("a message that does not decode: {e}")))?;
        match inbox.try_send(message) {
            Ok(()) => {}
            // The session is not keeping up: dropping is what a lossy network does, and
            // AlephBFT recovers from it.
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!("consensus inbox full; a message was dropped");
            }
            // This node stopped: let the peer see the connection close and dial again.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(std::io::Error::other("this node stopped"));
            }
        }
    }
}

async fn dial_loop(
    identity: Identity,
    peer: OperatorId,
    address: String,
    mut queue: mpsc::Receiver<Arc<Vec<u8>>>,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        let connected = async {
            let mut stream = TcpStream::connect(&address).await?;
            let _ = stream.set_nodelay(true);
            tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                handshake(&identity, &mut stream, Some(peer)),
            )
            .await
            .map_err(|_| std::io::Error::other("the handshake timed out"))??;
            Ok::<_, std::io::Error>(stream)
        }
        .await;
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(peer = %peer, %address, error = %e, retry_ms = pause.as_millis() as u64, "cannot reach a node");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        tracing::info!(peer = %peer, %address, "connected to a node");
        pause = Duration::from_millis(50);
        while let Some(frame) = queue.recv().await {
            let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            let sent = async {
                stream.write_u32(len).await?;
                stream.write_all(&frame).await
            }
            .await;
            if let Err(e) = sent {
                tracing::info!(peer = %peer, error = %e, "lost the connection to a node; dialing again");
                break;
            }
        }
        if queue.is_closed() {
            return;
        }
    }
}

/// Both sides: hello, then proof. Returns the peer's key. `expected` is the node dialed.
async fn handshake(
    identity: &Identity,
    stream: &mut TcpStream,
    expected: Option<OperatorId>,
) -> std::io::Result<OperatorId> {
    let refuse = |why: &str| std::io::Error::other(why.to_owned());
    let mine = identity.key.id();
    let mut nonce = [0u8; 32];
    rand::fill(&mut nonce);
    let mut hello = Vec::with_capacity(104);
    hello.extend_from_slice(PEER_MAGIC);
    hello.extend_from_slice(&identity.ledger_id.0);
    hello.extend_from_slice(&mine.0);
    hello.extend_from_slice(&nonce);
    stream.write_all(&hello).await?;
    let mut theirs = [0u8; 104];
    stream.read_exact(&mut theirs).await?;
    if &theirs[..8] != PEER_MAGIC {
        return Err(refuse("not a scrip ledger node (wrong magic)"));
    }
    if theirs[8..40] != identity.ledger_id.0 {
        return Err(refuse("a node of another ledger"));
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&theirs[40..72]);
    let peer = OperatorId(id);
    if peer == mine || !identity.nodes.iter().any(|(n, _)| *n == peer) {
        return Err(refuse("a key that is not another node of the committee"));
    }
    if expected.is_some_and(|e| e != peer) {
        return Err(refuse(
            "the node at this address is not the one the genesis names",
        ));
    }
    let mut their_nonce = [0u8; 32];
    their_nonce.copy_from_slice(&theirs[72..104]);
    let proof = PeerProof {
        ledger_id: identity.ledger_id,
        from: mine,
        to: peer,
        nonce: their_nonce,
    };
    stream
        .write_all(&identity.key.sign_detached(&proof))
        .await?;
    let mut signature = [0u8; 64];
    stream.read_exact(&mut signature).await?;
    let expected_proof = PeerProof {
        ledger_id: identity.ledger_id,
        from: peer,
        to: mine,
        nonce,
    };
    verify_detached(&peer, &expected_proof, &signature)
        .map_err(|_| refuse("the node's proof of its key does not verify"))?;
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn committee(n: usize) -> (Vec<Identity>, Vec<TcpListener>) {
        let keys: Vec<Arc<OperatorKey>> =
            (0..n).map(|_| Arc::new(OperatorKey::generate())).collect();
        let mut listeners = Vec::new();
        let mut nodes = Vec::new();
        for key in &keys {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            nodes.push((key.id(), l.local_addr().expect("addr").to_string()));
            listeners.push(l);
        }
        let ids = keys
            .iter()
            .map(|key| Identity {
                ledger_id: Hash32([7; 32]),
                key: key.clone(),
                nodes: nodes.clone(),
            })
            .collect();
        (ids, listeners)
    }

    #[tokio::test]
    async fn messages_reach_their_peers_by_session_and_garbage_is_cut_off() {
        let (ids, listeners) = committee(3).await;
        let address = ids[0].nodes[0].1.clone();
        let node_two = ids[2].clone();
        let nets: Vec<Arc<PeerNetwork<Vec<u8>>>> = ids
            .into_iter()
            .zip(listeners)
            .map(|(id, l)| PeerNetwork::start(id, Arc::new(l)))
            .collect();
        nets[1].send(5, &b"later".to_vec(), Some(0));
        nets[1].send(4, &b"to zero".to_vec(), Some(0));
        nets[2].send(4, &b"everyone".to_vec(), None);
        let wait = |net: Arc<PeerNetwork<Vec<u8>>>, s| async move {
            tokio::time::timeout(Duration::from_secs(10), async move { net.next(s).await })
                .await
                .expect("a message in time")
                .expect("open")
        };
        let mut at_zero = vec![
            wait(nets[0].clone(), 4).await,
            wait(nets[0].clone(), 4).await,
        ];
        at_zero.sort();
        assert_eq!(at_zero, vec![b"everyone".to_vec(), b"to zero".to_vec()]);
        assert_eq!(wait(nets[1].clone(), 4).await, b"everyone".to_vec());
        assert_eq!(
            wait(nets[0].clone(), 5).await,
            b"later".to_vec(),
            "kept for its session"
        );

        // A stranger is refused at the handshake; a frame over the bound is cut off.
        let mut stranger = TcpStream::connect(&address).await.expect("connect");
        let mut hello = Vec::new();
        hello.extend_from_slice(PEER_MAGIC);
        hello.extend_from_slice(&[7; 32]);
        hello.extend_from_slice(&OperatorKey::generate().id().0);
        hello.extend_from_slice(&[0; 32]);
        stranger.write_all(&hello).await.expect("hello");
        let mut answer = [0u8; 104];
        stranger.read_exact(&mut answer).await.expect("their hello");
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stranger.read_to_end(&mut rest))
            .await
            .expect("closed in time");
        assert!(
            read.is_err() || rest.is_empty(),
            "nothing after the refusal"
        );
        // A member that sends an oversized frame, or a frame that does not decode, is
        // disconnected.
        for frame in [
            ((MAX_PEER_FRAME + 1) as u32).to_be_bytes().to_vec(),
            [&4u32.to_be_bytes()[..], &[0xff; 4]].concat(),
        ] {
            let mut member = TcpStream::connect(&address).await.expect("connect");
            let peer = handshake(&node_two, &mut member, Some(node_two.nodes[0].0))
                .await
                .expect("a member's handshake");
            assert_eq!(peer, node_two.nodes[0].0);
            member.write_all(&frame).await.expect("frame");
            let mut rest = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(10), member.read_to_end(&mut rest)).await;
            assert!(closed.is_ok(), "the node closes the connection");
        }
        // The nodes still talk.
        nets[1].send(6, &b"still here".to_vec(), Some(0));
        assert_eq!(wait(nets[0].clone(), 6).await, b"still here".to_vec());
    }
}
