//! Where a client connection goes when it is not HTTP/1: HTTP/2 to hyper (the general path),
//! or, after a WebSocket's 101, a tunnel to the upstream.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::ClientIo;
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

/// An HTTP/2 connection (negotiated with ALPN, or spoken over TLS with prior knowledge, its
/// first bytes already read): hyper's h2 serves it until it ends or shutdown drains it.
pub async fn serve_h2<S: ClientIo>(
    proxy: Arc<Proxy>,
    conn: Arc<Conn>,
    tcp: S,
    read: Bytes,
    mut shutdown: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let service = crate::server::service(proxy, conn);
    let connection = builder.serve_connection(TokioIo::new(Rewind { read, inner: tcp }), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = shutdown.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
