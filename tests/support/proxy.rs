//! A TCP proxy that tests put between clients and a server, to make the network slow,
//! silent or broken on demand.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards everything at once.
    Pass,
    /// Holds every chunk this long before forwarding it (a slow network or broker).
    Delay(Duration),
    /// Accepts connections and reads, forwards nothing (a partition that drops
    /// packets: the peers wait for their timeouts).
    Blackhole,
}

/// A running proxy: forwards `address` to its target until dropped.
#[derive(Debug)]
pub struct Proxy {
    /// `host:port` clients connect to.
    pub address: String,
    mode: watch::Sender<Mode>,
    /// Bumped to close every open connection.
    resets: watch::Sender<u64>,
    connections: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let (resets, resets_rx) = watch::channel(0u64);
        let connections = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                *counted.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                let target = target.clone();
                let (mode, resets) = (mode_rx.clone(), resets_rx.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let mut reset = resets.clone();
                    reset.mark_unchanged();
                    tokio::select! {
                        () = pipe(client_read, server_write, mode.clone()) => {}
                        () = pipe(server_read, client_write, mode) => {}
                        _ = reset.changed() => {} // dropping both halves closes the connection
                    }
                });
            }
        });
        Proxy {
            address,
            mode,
            resets,
            connections,
            task,
        }
    }

    /// Switches how traffic is treated, for open and new connections.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes every open connection (the peers see them reset and reconnect).
    pub fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        *self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset();
    }
}

/// Copies `from` to `to`, chunk by chunk, as `mode` says, until either side closes.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let current = *mode.borrow();
        match current {
            Mode::Pass => {}
            Mode::Delay(delay) => tokio::time::sleep(delay).await,
            Mode::Blackhole => continue,
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
