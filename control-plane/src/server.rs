//! Listeners: accept loops for the Admin API over plain HTTP and over TLS (HTTP/1.1 and h2),
//! counting connections for `/status`, and draining in-flight requests on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::admin::{AdminService, Node, Scheme};

/// How long shutdown waits for in-flight requests before it gives up on them.
const DRAIN: Duration = Duration::from_secs(10);
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Binds `addr` now (so start-up fails fast on a taken port) and returns the serving future.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    service: AdminService,
    node: Arc<Node>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, tls = tls.is_some(), "admin listener bound");
    Ok(serve(listener, tls, service, node, shutdown))
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: AdminService,
    node: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let scheme = if tls.is_some() { Scheme::Https } else { Scheme::Http };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        node.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let svc = service.clone();
        let hyper_svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(scheme);
            svc.clone().oneshot(req.map(Body::new))
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let node = node.clone();
        match &tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), hyper_svc).into_owned();
                let conn = graceful.watch(conn);
                node.counters.active.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                    node.counters.active.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    node.counters.active.fetch_add(1, Ordering::Relaxed);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_svc).into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                    node.counters.active.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown: in-flight admin requests did not finish in time");
    }
}

/// Resolves on SIGTERM or SIGINT (the same signal handling as the data plane's).
pub use gatehouse_data_plane::shutdown_signal;
