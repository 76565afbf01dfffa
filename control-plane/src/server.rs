//! Listeners: accept loops for the Admin API over plain HTTP and over TLS (HTTP/1.1 and h2),
//! counting connections for `/status`, and draining in-flight requests on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::admin::{AdminService, Node, Scheme};

mod refusals;
use refusals::JsonRefusals;

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
    let slots = Arc::new(tokio::sync::Semaphore::new(node.max_connections));
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
        // Past the bound a connection is told so and closed, rather than left waiting: a few
        // hundred idle sockets cannot starve the Admin API, and those are closed on the
        // header timeout anyway.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(tcp));
            continue;
        };
        let svc = service.clone();
        let hyper_svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(scheme);
            svc.clone().oneshot(req.map(Body::new))
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A head must arrive, and an idle keep-alive connection send its next one, within the
        // header timeout (hyper closes it otherwise, as nginx's `client_header_timeout`).
        builder.http1().timer(TokioTimer::new()).header_read_timeout(node.header_timeout);
        builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(node.header_timeout));
        let node = node.clone();
        match &tls {
            None => {
                let tcp = JsonRefusals::new(gatehouse_shared::idle::Idle::new(tcp, node.header_timeout));
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), hyper_svc).into_owned();
                let conn = graceful.watch(conn);
                node.counters.active.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                    node.counters.active.fetch_sub(1, Ordering::Relaxed);
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tcp = gatehouse_shared::idle::Idle::new(tcp, node.header_timeout);
                    let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    node.counters.active.fetch_add(1, Ordering::Relaxed);
                    let stream = JsonRefusals::new(stream);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_svc).into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                    node.counters.active.fetch_sub(1, Ordering::Relaxed);
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown: in-flight admin requests did not finish in time");
    }
}

/// The answer to a connection over the bound: Kong's shape, then close.
async fn refuse_busy(mut tcp: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"message":"Too many connections to the Admin API"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(answer.as_bytes())).await;
    let _ = tcp.shutdown().await;
}

/// Resolves on SIGTERM or SIGINT (the same signal handling as the data plane's).
pub use gatehouse_shared::process::shutdown_signal;
