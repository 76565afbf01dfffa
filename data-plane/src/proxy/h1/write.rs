//! Writing to the client: bounded by nginx's `send_timeout`, and the few fields every answer's
//! head is built from.

use std::future::Future as _;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::proxy::direct::ClientIo;

/// How long a client may take to accept bytes of a response before it is dropped.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes to the client, which has [`SEND_TIMEOUT`] to take the bytes (nginx's
/// `send_timeout`); false when it did not or has gone. The timer only exists if the socket's
/// buffer is full, so a write that completes at once costs none.
pub(crate) async fn send(client: &mut impl ClientIo, bytes: &[u8]) -> bool {
    // TLS holds written records until flushed; for plain TCP the flush is a no-op.
    let write = async {
        client.write_all(bytes).await?;
        client.flush().await
    };
    let mut write = std::pin::pin!(write);
    // Polled once before any timer exists: most writes complete at once.
    match std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        Poll::Ready(done) => done.is_ok(),
        Poll::Pending => matches!(tokio::time::timeout(SEND_TIMEOUT, write).await, Ok(Ok(()))),
    }
}

/// The answer's own `Connection` field: `close` when the connection ends with it, and for an
/// HTTP/1.0 client that stays, `keep-alive` (its default is to close), as nginx sends them.
pub(crate) fn connection_field(out: &mut Vec<u8>, close: bool, http10: bool) {
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}

pub(crate) fn line(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

/// The Date header, formatted once a second per thread (as hyper does). `now` is a reading
/// the caller has already taken: the wall clock is read only when its second turns.
pub(crate) fn date(out: &mut Vec<u8>, now: Instant) {
    use std::cell::RefCell;
    use std::time::SystemTime;
    thread_local! {
        /// The header's text, and until when it is right.
        static CACHED: RefCell<Option<(Instant, String)>> = const { RefCell::new(None) };
    }
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        let text = match &mut *c {
            Some((until, text)) if now < *until => text,
            cached => {
                let wall = SystemTime::now();
                let into_second =
                    wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_nanos()));
                let until = now + Duration::from_nanos(1_000_000_000 - into_second);
                &mut cached.insert((until, httpdate::fmt_http_date(wall))).1
            }
        };
        line(out, &[b"Date: ", text.as_bytes()]);
    });
}
