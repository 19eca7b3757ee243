//! A TCP forwarder a test can cut, for fault injection: a process connects
//! to its database through it, and [`TcpCut::cut`] closes every connection
//! and the port at once, as a network partition (or the server's host going
//! away) would. The server sees its sessions end; the process sees its
//! connections break and new ones refused.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct TcpCut {
    /// `127.0.0.1:<port>`: use it in place of the server's address.
    pub addr: String,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpCut {
    /// Listens on a free loopback port (bound before this returns) and
    /// forwards each connection to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> TcpCut {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_owned();
        let tracked = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let forward = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                tracked.lock().unwrap().push(forward);
            }
        });
        TcpCut {
            addr,
            accept,
            connections,
        }
    }

    /// Closes the port and every connection through it; returns once all
    /// are closed. Nothing passes afterwards.
    pub async fn cut(&self) {
        self.accept.abort();
        let connections: Vec<JoinHandle<()>> = self.connections.lock().unwrap().drain(..).collect();
        for connection in &connections {
            connection.abort();
        }
        for connection in connections {
            // Cancelled: the task, and both its sockets, are dropped.
            let _ = connection.await;
        }
    }
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}
