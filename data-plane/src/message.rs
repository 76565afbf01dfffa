//! What both the engine and the plugins handle of one exchange: the client connection it
//! came on, the request body as plugins see it, and the answers Gatehouse writes itself.
//! It sits below both (the engine drives plugins; plugins answer with these types), so that
//! neither reaches into the other for them.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

/// The `Server` and `Via` token of Gatehouse's answers.
pub const SERVER_TOKEN: &str = concat!("gatehouse/", env!("CARGO_PKG_VERSION"));

/// Where a request came in: one per client connection, shared by its requests.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    pub https: bool,
    pub listener_port: u16,
    /// The peer's address and the listener's port as header values, formatted once per
    /// connection rather than once per request (X-Forwarded-For, X-Real-IP, X-Forwarded-Port).
    pub(crate) peer_value: HeaderValue,
    pub(crate) port_value: HeaderValue,
    /// The address the client connected to (nginx's `$server_addr`), when known.
    pub local: Option<SocketAddr>,
    /// This connection's number among the process's (nginx's `$connection`).
    pub serial: u64,
    /// Requests that reached plugins on this connection (nginx's `$connection_requests`, as
    /// far as plugins can see it).
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    /// The client speaks HTTP/2 (its requests reach the engine through `proxy::h2`).
    pub http2: bool,
}

impl Conn {
    pub fn new(peer: SocketAddr, https: bool, listener_port: u16) -> Conn {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let peer_value = HeaderValue::try_from(peer.ip().to_string()).unwrap_or(HeaderValue::from_static(""));
        Conn {
            peer,
            https,
            listener_port,
            peer_value,
            port_value: HeaderValue::from(listener_port),
            local: None,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests: Arc::default(),
            http2: false,
        }
    }

    /// The same, knowing the local address.
    pub fn at(mut self, local: Option<SocketAddr>) -> Conn {
        self.local = local;
        self
    }
}

/// A request body as plugins see it.
pub enum ReqBody {
    Empty,
    /// A body read into memory (and maybe rewritten by a plugin).
    Full(Bytes),
    /// A body longer than plugins read (`plugins::ctx::BODY_LIMIT`), or one no plugin on the
    /// route reads: plugins see it unread, and once they are done it goes upstream as the
    /// client sends it (streamed, or from where the engine read it with the head).
    Unread,
}

impl ReqBody {
    /// Whether the request carries a body at all (as the log records it).
    pub fn has_body(&self) -> bool {
        match self {
            ReqBody::Empty => false,
            ReqBody::Full(b) => !b.is_empty(),
            ReqBody::Unread => true,
        }
    }
}

/// The body of an answer Gatehouse writes itself (an error page, a plugin's answer): always
/// in memory, so the engine writes it with its length in one send.
pub enum ResBody {
    Full(Option<Bytes>),
    /// A body plugins still act on (see [`Phased`]).
    Phased(Box<dyn Phased>),
}

/// An answer's body that plugins act on after `access`: their `body_filter` runs when it is
/// taken, and their `log` phase once it has been sent and this is dropped. Implemented by the
/// plugin runtime (`plugins::Filtered`); a trait so that this layer need not know plugins.
pub trait Phased: Send {
    /// The body, filtered and counted as sent (once; `None` after).
    fn take_full(&mut self) -> Option<Bytes>;
}

impl ResBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResBody {
        ResBody::Full(Some(bytes.into()))
    }

    /// The bytes to send: filtered by plugins that act on them (once).
    pub fn take(&mut self) -> Bytes {
        match self {
            ResBody::Full(b) => b.take().unwrap_or_default(),
            ResBody::Phased(p) => p.take_full().unwrap_or_default(),
        }
    }
}
