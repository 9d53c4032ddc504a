//! TCP proxies in front of each node's peer port that can cut the links between chosen
//! nodes: a partition. A proxy learns who dials from the dialer's hello (its node key is in
//! bytes 40..72), so it cuts by pair, in both directions, and closes links already open.

use scrip_spec::OperatorId;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Partition {
    nodes: Mutex<Vec<OperatorId>>,
    cut: Mutex<HashSet<(usize, usize)>>,
    links: Mutex<Vec<(usize, usize, tokio::task::AbortHandle)>>,
}

impl Partition {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            nodes: Mutex::new(Vec::new()),
            cut: Mutex::new(HashSet::new()),
            links: Mutex::new(Vec::new()),
        })
    }

    pub fn name_nodes(&self, nodes: Vec<OperatorId>) {
        *self.nodes.lock().expect("nodes") = nodes;
    }

    /// Names one more node, the next by index.
    pub fn name_another_node(&self, node: OperatorId) {
        self.nodes.lock().expect("nodes").push(node);
    }

    /// A proxy for node `to`, forwarding to its real peer port; returns the proxy's address.
    pub async fn proxy(self: &Arc<Self>, to: usize, real_port: u16) -> String {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy");
        let address = listener.local_addr().expect("addr").to_string();
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move { this.forward(inbound, to, real_port).await });
            }
        });
        address
    }

    async fn forward(self: Arc<Self>, mut inbound: TcpStream, to: usize, real_port: u16) {
        let mut hello = [0u8; 104];
        if inbound.read_exact(&mut hello).await.is_err() {
            return;
        }
        let from_key = OperatorId(hello[40..72].try_into().expect("32 bytes"));
        let Some(from) = self
            .nodes
            .lock()
            .expect("nodes")
            .iter()
            .position(|n| *n == from_key)
        else {
            return;
        };
        if self.is_cut(from, to) {
            return;
        }
        let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", real_port)).await else {
            return;
        };
        if outbound.write_all(&hello).await.is_err() {
            return;
        }
        let task = tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
        self.links
            .lock()
            .expect("links")
            .push((from, to, task.abort_handle()));
    }

    fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut.lock().expect("cut").contains(&(from, to))
    }

    /// Cuts every link between `a` and `b`, both ways, open ones included.
    pub fn split(&self, a: &[usize], b: &[usize]) {
        let mut cut = self.cut.lock().expect("cut");
        for x in a {
            for y in b {
                cut.insert((*x, *y));
                cut.insert((*y, *x));
            }
        }
        for (from, to, link) in self.links.lock().expect("links").iter() {
            if cut.contains(&(*from, *to)) {
                link.abort();
            }
        }
    }

    /// Lets every link through again (the nodes dial again by themselves).
    pub fn heal(&self) {
        self.cut.lock().expect("cut").clear();
    }
}
