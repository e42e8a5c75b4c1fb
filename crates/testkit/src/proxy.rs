//! A TCP proxy that a test can cut and restore, to put between a service and
//! a real server (MongoDB, RabbitMQ, Redis) and simulate the network failing.
//!
//! While cut, the proxy closes every open connection and refuses new ones
//! (it accepts and closes them at once), which is what a client sees when a
//! server goes away. Restoring lets new connections through again.
//!
//! Held, it keeps every connection open and passes the server's bytes on,
//! but keeps back what clients send: a consumer still gets its messages,
//! and its acks never arrive, as when a process dies between the two.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy from a local port to `upstream`.
pub struct TcpProxy {
    local: SocketAddr,
    cut: Arc<AtomicBool>,
    /// `true` while client-to-server bytes are kept back.
    held: watch::Sender<bool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (held, _) = watch::channel(false);
        let task = {
            let cut = cut.clone();
            let generation = generation.clone();
            let held = held.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let mut cut_rx = generation.subscribe();
                    let held_rx = held.subscribe();
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (mut client_read, mut client_write) = inbound.into_split();
                        let (mut server_read, mut server_write) = outbound.into_split();
                        let up = forward(&mut client_read, &mut server_write, Some(held_rx));
                        let down = forward(&mut server_read, &mut client_write, None);
                        tokio::select! {
                            _ = async { tokio::join!(up, down) } => {}
                            // Returning drops both sides, closing the client's connection.
                            _ = cut_rx.changed() => {}
                        }
                    });
                }
            })
        };
        Ok(Self {
            local,
            cut,
            held,
            generation,
            task,
        })
    }

    /// Keeps back every byte clients send from now on (the server's still
    /// reach them) until [`TcpProxy::release`] or a cut.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Passes on what clients send again, including what was kept back.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// The address clients should use.
    pub fn addr(&self) -> SocketAddr {
        self.local
    }

    /// `host:port` of the proxy.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.local.port())
    }

    /// A MongoDB connection string through this proxy, straight to the one
    /// server behind it (no replica-set discovery around the proxy).
    pub fn mongodb_uri(&self) -> String {
        format!("mongodb://{}/?directConnection=true", self.host_port())
    }

    /// Drops every connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either side closes. With `held`, a chunk
/// read while it is `true` waits until it turns `false` again.
async fn forward(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    mut held: Option<watch::Receiver<bool>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(held) = &mut held
            && held.wait_for(|h| !*h).await.is_err()
        {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Resolves `host:port` (or a URL's authority) to a socket address.
pub fn resolve(host_port: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    host_port.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn forwards_then_cuts_then_restores() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        assert_eq!(roundtrip(proxy.addr()).await.unwrap(), b"ping");

        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.unwrap();
        proxy.cut();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            open.read_to_end(&mut rest),
        )
        .await;
        assert!(closed.is_ok(), "an open connection is closed by a cut");
        assert!(
            roundtrip(proxy.addr()).await.is_err(),
            "new connections fail while cut"
        );

        proxy.restore();
        assert_eq!(roundtrip(proxy.addr()).await.unwrap(), b"ping");
    }
}
