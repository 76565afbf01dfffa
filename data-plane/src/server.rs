//! Proxy listeners: plain HTTP/1.1 and TLS (ALPN h2 or http/1.1), one task per connection,
//! draining in-flight requests on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::head_guard::{HeadGuard, Smuggling};
use crate::proxy::{Conn, Proxy};

const HANDSHAKE: Duration = Duration::from_secs(10);
const HEADER_READ: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(15);

/// Binds now (failing fast) and returns the accept loop.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, tls = tls.is_some(), "proxy listener bound");
    Ok((local, serve(listener, local.port(), tls, proxy, shutdown)))
}

async fn serve(
    listener: TcpListener,
    port: u16,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
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
        let conn = Conn { peer, https: tls.is_some(), listener_port: port };
        match &tls {
            None => {
                let (io, smuggling) = HeadGuard::new(tcp);
                let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
                builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ).keep_alive(true);
                let service = service(proxy.clone(), conn, smuggling);
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = watched.await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        _ => return,
                    };
                    let (io, smuggling) = HeadGuard::new(stream);
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ);
                    let service = service(proxy, conn, smuggling);
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
                    let _ = watcher.watch(connection).await;
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown: in-flight proxy requests did not finish in time");
    }
}

/// The per-connection service: ambiguous framing is refused, everything else proxied.
fn service(
    proxy: Arc<Proxy>,
    conn: Conn,
    smuggling: Smuggling,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<crate::proxy::ResBody>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<hyper::Response<crate::proxy::ResBody>, std::convert::Infallible>>
                 + Send,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let proxy = proxy.clone();
        let smuggling = smuggling.clone();
        async move {
            if smuggling.detected() {
                return Ok(proxy.refuse_smuggling(&req));
            }
            Ok(proxy.handle(req, conn).await)
        }
    })
}
