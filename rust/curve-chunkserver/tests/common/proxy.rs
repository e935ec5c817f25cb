//! A TCP forwarder in front of one chunkserver that a test can cut: while cut, bytes
//! stop moving both ways (as across a partition: the peers see a hung server); on
//! `restore`, every connection opened before is reset, so bytes held back are never
//! delivered late, and new connections pass again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Proxy {
    addr: SocketAddr,
    listener: Mutex<Option<TcpListener>>,
    cut: watch::Sender<bool>,
    connections: Arc<Mutex<JoinSet<()>>>,
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Proxy {
    pub async fn bind() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(Proxy {
            addr: listener.local_addr()?,
            listener: Mutex::new(Some(listener)),
            cut: watch::channel(false).0,
            connections: Arc::new(Mutex::new(JoinSet::new())),
            accepting: Mutex::new(None),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts forwarding every accepted connection to `target`.
    pub fn forward_to(&self, target: SocketAddr) {
        let Some(listener) = lock(&self.listener).take() else {
            return;
        };
        let cut = self.cut.subscribe();
        let connections = self.connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let cut = cut.clone();
                lock(&connections).spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let (a_read, a_write) = inbound.into_split();
                        let (b_read, b_write) = outbound.into_split();
                        tokio::join!(
                            pipe(a_read, b_write, cut.clone()),
                            pipe(b_read, a_write, cut)
                        );
                    }
                });
            }
        });
        *lock(&self.accepting) = Some(task);
    }

    /// Bytes stop moving on every connection, old and new.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Resets the connections opened so far and lets bytes move again.
    pub fn restore(&self) {
        // Dropping a pipe drops its sockets; with nothing unread left that is a FIN, so
        // the peers see the connection end, and nothing it held back is ever sent.
        lock(&self.connections).abort_all();
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.accepting).take() {
            task.abort();
        }
        lock(&self.connections).abort_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Hold still while cut; the kernel buffers fill and the sender blocks, as
        // behind a partition.
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => n,
            _ = cut.wait_for(|c| *c) => continue,
        };
        let Ok(n) = n else { return };
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
