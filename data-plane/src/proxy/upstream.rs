//! Connections to upstream services: DNS through hickory (A/AAAA, and SRV for `_service._proto`
//! names; its cache honours TTLs), TCP or TLS
//! (upstream certificates are not verified, as in Kong), and a keep-alive pool per worker
//! thread, so checkout and release take no lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::ProxyError;
use crate::balancer::ring::Peer;
use crate::service::Service;
use crate::tls::NoVerify;
use crate::trace::DnsAnswer;

/// Idle connections kept per destination and worker thread.
const IDLE_PER_KEY: usize = 64;
/// The read buffer of a new or idle upstream connection.
const IDLE_BUFFER: usize = 16 * 1024;

thread_local! {
    /// Each worker's idle upstream connections, by destination.
    static RAW_POOL: RefCell<HashMap<Arc<str>, Vec<RawConn>, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// An upstream connection: the engine writes requests and reads responses on it as bytes;
/// it keeps its read buffer across requests.
pub struct RawConn {
    pub io: Stream,
    pub buf: bytes::BytesMut,
    key: Arc<str>,
    /// When a new connection's DNS resolution began and ended (a service named by host), for
    /// its trace.
    pub resolved: Option<DnsAnswer>,
}

impl RawConn {
    /// Back to this thread's pool; only a connection with nothing unread is reusable.
    pub fn release(mut self) {
        if !self.buf.is_empty() {
            return;
        }
        // A buffer grown for a long body is not kept idle.
        if self.buf.capacity() > IDLE_BUFFER {
            self.buf = bytes::BytesMut::with_capacity(IDLE_BUFFER);
        }
        RAW_POOL.with(|p| {
            let mut pool = p.borrow_mut();
            let idle = pool.entry(self.key.clone()).or_default();
            // Unless its destination has enough idle already.
            if idle.len() < IDLE_PER_KEY {
                idle.push(self);
            }
        });
    }
}

/// Makes connections: resolver and TLS client shared by all workers.
pub struct Connector {
    resolver: Option<hickory_resolver::TokioResolver>,
    tls: TlsConnector,
}

impl Connector {
    pub fn new() -> Connector {
        let resolver = match hickory_resolver::TokioResolver::builder_tokio() {
            Ok(b) => Some(b.build()),
            Err(e) => {
                tracing::warn!(error = %e, "no system DNS configuration; only IP service hosts will work");
                None
            }
        };
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| b.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify)).with_no_client_auth())
            .unwrap_or_else(|_| {
                ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerify))
                    .with_no_client_auth()
            });
        Connector { resolver, tls: TlsConnector::from(Arc::new(config)) }
    }

    /// An idle direct-path connection to a destination that has not been closed by its peer.
    /// Readiness says so without a system call: a connection nobody reads is only readable
    /// when its peer closed it or sent something unasked, and either makes it unusable.
    pub fn checkout_raw(key: &Arc<str>) -> Option<RawConn> {
        RAW_POOL.with(|p| {
            let mut pool = p.borrow_mut();
            let idle = pool.get_mut(key)?;
            while let Some(mut conn) = idle.pop() {
                if conn.io.idle_and_open() {
                    return Some(conn);
                }
            }
            None
        })
    }

    /// A new upstream connection, over TLS for an https service (its server name
    /// is the peer's or the service's host).
    /// `sni` names the server instead (a route that preserves the client's Host): such a
    /// connection serves that name only, and is not pooled.
    pub async fn connect_raw(
        &self,
        service: &Service,
        peer: Option<&Peer>,
        sni: Option<&str>,
    ) -> Result<RawConn, ProxyError> {
        let (tcp, key, resolved) = self.open_tcp(service, peer).await?;
        let io = if service.https {
            let host = peer.map_or(service.host(), |p| &*p.hostname);
            self.handshake(service, sni.unwrap_or(host), tcp).await?
        } else {
            Stream::Plain(tcp)
        };
        Ok(RawConn { io, buf: bytes::BytesMut::with_capacity(IDLE_BUFFER), key, resolved })
    }

    /// TLS over `tcp`, within the service's connect timeout.
    async fn handshake(&self, service: &Service, name: &str, tcp: TcpStream) -> Result<Stream, ProxyError> {
        let name = ServerName::try_from(name.to_string()).map_err(|e| ProxyError::Connect(e.to_string()))?;
        let tls = tokio::time::timeout(service.connect_timeout(), self.tls.connect(name, tcp))
            .await
            .map_err(|_| ProxyError::Timeout)?
            .map_err(|e| ProxyError::Connect(e.to_string()))?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    async fn open_tcp(
        &self,
        service: &Service,
        peer: Option<&Peer>,
    ) -> Result<(TcpStream, Arc<str>, Option<DnsAnswer>), ProxyError> {
        let (addr, key, resolved) = match peer {
            Some(p) => (p.addr, p.pool_key(service.https), None),
            None if service.ip.is_some() => (self.resolve(service).await?, &service.pool_key, None),
            None => {
                let start = std::time::Instant::now();
                let addr = self.resolve(service).await?;
                let resolved = DnsAnswer { start, end: std::time::Instant::now(), addr };
                (addr, &service.pool_key, Some(resolved))
            }
        };
        let tcp = tokio::time::timeout(service.connect_timeout(), TcpStream::connect(addr))
            .await
            .map_err(|_| ProxyError::Timeout)?
            .map_err(|e| ProxyError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        Ok((tcp, key.clone(), resolved))
    }

    /// The address of a service that is not balanced (its host resolved when it is a name).
    async fn resolve(&self, service: &Service) -> Result<SocketAddr, ProxyError> {
        if let Some(ip) = service.ip {
            return Ok(SocketAddr::new(ip, service.port));
        }
        let resolver = self.resolver.as_ref().ok_or(ProxyError::Dns)?;
        let (mut name, mut port) = (service.host().to_owned(), service.port);
        // SRV names (`_service._proto.domain`) supply the target and port; the record with the
        // lowest priority and highest weight is used.
        if service.host().starts_with('_') {
            let srv = resolver.srv_lookup(service.host()).await.map_err(|_| ProxyError::Dns)?;
            let best =
                srv.iter().min_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight()))).ok_or(ProxyError::Dns)?;
            name = best.target().to_utf8();
            port = best.port();
        }
        let lookup = resolver.lookup_ip(name.as_str()).await.map_err(|_| ProxyError::Dns)?;
        let ip: IpAddr = lookup.iter().next().ok_or(ProxyError::Dns)?;
        Ok(SocketAddr::new(ip, port))
    }
}

impl Default for Connector {
    fn default() -> Self {
        Connector::new()
    }
}

/// Plain TCP or TLS to the upstream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether an idle connection can take a request: its peer has neither closed it nor sent
    /// anything unasked. Told without a system call while the socket is not readable.
    fn idle_and_open(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        match self {
            Stream::Plain(tcp) => match tcp.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                // Readiness can be stale (the last read filled its buffer exactly).
                Poll::Ready(Ok(())) => {
                    matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                }
                Poll::Ready(Err(_)) => false,
            },
            // A TLS server may send records no request asked for (TLS 1.3 session tickets):
            // rustls takes those in, and only application data, an alert or the end of the
            // stream make the read complete.
            Stream::Tls(tls) => {
                let mut buf = ReadBuf::new(&mut probe);
                Pin::new(tls.as_mut()).poll_read(&mut cx, &mut buf).is_pending()
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            // Many servers close without a close_notify; nginx takes that as the end of the
            // stream, so a body delimited by the close arrives whole (a short one still fails
            // its length or chunked framing).
            Stream::Tls(s) => match Pin::new(s.as_mut()).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
                polled => polled,
            },
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
