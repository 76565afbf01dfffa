//! Where a client connection goes once it stops being HTTP/1: after a WebSocket's 101, a
//! tunnel to the upstream.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::ClientIo;
use crate::proxy::upstream::RawConn;

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
