//! Proxy listeners: plain HTTP/1.1 and TLS (ALPN h2 or http/1.1), served by worker threads
//! that each run a single-threaded runtime and accept from the same listening socket, as
//! nginx's workers do. A connection lives and dies on the thread that accepted it: its
//! upstream connections come from that thread's pool and no task ever migrates, so the
//! request path pays no cross-thread wake-ups or work-stealing atomics. In-flight requests
//! are drained on shutdown.
//!
//! The workers share one socket (duplicated descriptors) rather than binding one each with
//! `SO_REUSEPORT`: that option would also let a second Gatehouse started by mistake on the
//! same port bind it silently and take half the connections, where now it fails to start.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::busy_poll;
use crate::live::Live;
use crate::message::Conn;
use crate::proxy::{direct, Proxy};

const HANDSHAKE: Duration = Duration::from_secs(10);
const HEADER_READ: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(15);
const BACKLOG: i32 = 4096;

/// The number of proxy workers when none is configured: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// How many worker threads serve a listener, and whether they poll while saturated.
#[derive(Debug, Clone, Copy)]
pub struct Workers {
    pub count: usize,
    /// See [`busy_poll`]; `None` parks the moment there is nothing to run.
    pub busy_poll: Option<busy_poll::Tuning>,
}

impl Workers {
    /// A worker's runtime: single-threaded, with the busy-poll hooks when asked for.
    fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_all();
        if self.busy_poll.is_some() {
            builder.on_thread_park(busy_poll::before_park).on_thread_unpark(busy_poll::after_unpark);
        }
        builder.build()
    }
}

/// Binds now (failing fast), starts the worker threads serving the address, and returns
/// the bound address and a future that ends once every worker has drained.
///
/// # Errors
/// The address cannot be bound, or a worker thread cannot start.
pub fn bind(
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
    config: Workers,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let workers = config.count.max(1);
    let first = listen(addr)?;
    let local = first.local_addr()?;
    let mut sockets = Vec::with_capacity(workers);
    for _ in 1..workers {
        sockets.push(first.try_clone()?);
    }
    sockets.push(first);
    tracing::info!(addr = %local, tls = tls.is_some(), workers, "proxy listener bound");
    let mut done = Vec::with_capacity(workers);
    for (i, socket) in sockets.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel::<()>();
        done.push(rx);
        let (tls, proxy, shutdown) = (tls.clone(), proxy.clone(), shutdown.clone());
        std::thread::Builder::new().name(format!("proxy-{}-{i}", local.port())).spawn(move || {
            let runtime = match config.runtime() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "proxy worker cannot start its runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                if let Some(tuning) = config.busy_poll {
                    busy_poll::install(tuning);
                    tokio::spawn(busy_poll::spinner());
                }
                tokio::spawn(crate::memory::trim());
                match TcpListener::from_std(socket) {
                    Ok(listener) => serve(listener, local.port(), tls, proxy, shutdown).await,
                    Err(e) => tracing::error!(error = %e, "proxy worker cannot register its listener"),
                }
            });
            let _ = tx.send(());
        })?;
    }
    Ok((local, async move {
        for rx in done {
            let _ = rx.await;
        }
    }))
}

/// A non-blocking listening socket with a deep accept queue.
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

async fn serve(
    listener: TcpListener,
    port: u16,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every connection watches `shutdown` itself (HTTP/1 between requests, HTTP/2 through h2's
    // graceful shutdown); they are counted here so shutdown can wait for them.
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let conn = Arc::new(Conn::new(peer, tls.is_some(), port).at(tcp.local_addr().ok()));
        // Held by the connection's task: counted open, and counted in metrics, until it ends.
        let held = (Counted::new(&open), crate::metrics::connection_accepted());
        let (proxy, shutdown) = (proxy.clone(), shutdown.clone());
        match tls.clone() {
            None => {
                tokio::spawn(async move {
                    let _held = held;
                    direct::serve(proxy, conn, tcp, shutdown, HEADER_READ).await;
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let _held = held;
                    let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        _ => return,
                    };
                    // HTTP/2 reaches the same engine through hyper's h2.
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        crate::proxy::h2::serve_h2(proxy, conn, stream, Bytes::new(), shutdown, HEADER_READ).await;
                    } else {
                        direct::serve(proxy, conn, stream, shutdown, HEADER_READ).await;
                    }
                });
            }
        }
    }
    drop(listener);
    let drained = async {
        while open.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::warn!("shutdown: in-flight proxy requests did not finish in time");
    }
}

/// One open plain connection, counted while it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: &Arc<AtomicUsize>) -> Counted {
        open.fetch_add(1, Ordering::AcqRel);
        Counted(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Picks the certificate for each handshake from the configuration being served.
#[derive(Debug)]
pub struct SniResolver {
    live: Arc<Live>,
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        if let Some(name) = name {
            if let Some(cert) = self.live.load().certs.get(name) {
                return Some(cert.clone());
            }
        }
        Some(self.fallback.clone())
    }
}

/// The proxy's TLS configuration: SNI resolution, ALPN h2 and http/1.1.
///
/// # Errors
/// A default certificate that cannot be made, or an unusable provider.
pub fn tls_config(live: Arc<Live>, fallback: CertifiedKey) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { live, fallback: Arc::new(fallback) }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> Arc<Proxy> {
        Proxy::unconfigured()
    }

    /// The workers share one socket, so a second gateway started on a port already served
    /// fails instead of silently taking part of its connections (as `SO_REUSEPORT` would).
    #[tokio::test]
    async fn a_port_already_served_by_workers_cannot_be_bound_again() {
        let (stop, stopped) = watch::channel(false);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let workers = Workers { count: 3, busy_poll: Some(busy_poll::Tuning::default()) };
        let (addr, drained) = bind(any, None, proxy(), stopped.clone(), workers).unwrap();
        let second = bind(addr, None, proxy(), stopped, workers).err().expect("the port is taken");
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);

        // Every worker answers (no configuration: Kong's no-route 404) and then drains.
        for _ in 0..6 {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut out = String::new();
            tcp.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), drained).await.expect("workers drain");
    }
}
