//! Where a client connection goes when the direct path lets go of it: to hyper (the general
//! path), or, after a WebSocket's 101, into a tunnel to the upstream.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::ClientIo;
use crate::proxy::h1::limits::HYPER_MAX_BUF;
use crate::proxy::h1::rewind::Rewind;
use crate::proxy::upstream::RawConn;
use crate::proxy::{Conn, Proxy};

/// Relays a WebSocket both ways until either side ends, beginning with what each side sent
/// right after the switch (`early` from the client, the upstream's in its buffer).
pub(super) async fn tunnel<S: ClientIo>(mut client: S, early: BytesMut, mut upstream: RawConn) {
    if !early.is_empty() && upstream.io.write_all(&early).await.is_err() {
        return;
    }
    if !upstream.buf.is_empty() && (client.write_all(&upstream.buf).await.is_err() || client.flush().await.is_err()) {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream.io).await;
}

/// hyper serves the rest of the connection, beginning with the bytes already read (none for
/// a connection that negotiated HTTP/2), until it ends or shutdown drains it.
pub async fn handoff<S: ClientIo>(
    proxy: Arc<Proxy>,
    conn: Arc<Conn>,
    tcp: S,
    read: Bytes,
    mut shutdown: watch::Receiver<bool>,
    header_read: Duration,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let https = conn.https;
    let (io, refusals) = crate::head_guard::HeadGuard::new(Rewind { read, inner: tcp });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Over TLS without ALPN a client may still speak HTTP/2 (prior knowledge): hyper tells.
    if !https {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .keep_alive(true)
        .max_buf_size(HYPER_MAX_BUF);
    let service = crate::server::service(proxy, conn, refusals);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = shutdown.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
