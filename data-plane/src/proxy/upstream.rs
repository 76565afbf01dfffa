//! Connections to upstream services: DNS through hickory (its cache honours TTLs), TCP or TLS
//! (upstream certificates are not verified, as in Kong), HTTP/1.1 handshakes, and a keep-alive
//! pool per worker thread, so checkout and release take no lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::body::ReqBody;
use super::error::ProxyError;
use crate::compiled::Service;

/// Idle connections kept per destination and worker thread.
const IDLE_PER_KEY: usize = 64;

thread_local! {
    static POOL: RefCell<HashMap<Arc<str>, Vec<SendRequest<ReqBody>>>> = RefCell::new(HashMap::new());
}

/// A connection checked out for one request; [`Pooled::release`] returns it for reuse.
pub struct Pooled {
    key: Arc<str>,
    sender: SendRequest<ReqBody>,
}

impl Pooled {
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            let idle = pool.entry(self.key).or_default();
            if idle.len() < IDLE_PER_KEY {
                idle.push(self.sender);
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

    /// An idle pooled connection to `service`'s destination, if one is ready.
    pub fn checkout(service: &Service) -> Option<Pooled> {
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            let idle = pool.get_mut(&service.pool_key)?;
            while let Some(sender) = idle.pop() {
                if sender.is_ready() {
                    return Some(Pooled { key: service.pool_key.clone(), sender });
                }
            }
            None
        })
    }

    /// A new connection, within the service's connect timeout.
    pub async fn connect(&self, service: &Service, upgrades: bool) -> Result<Pooled, ProxyError> {
        let addr = self.resolve(service).await?;
        let tcp = tokio::time::timeout(service.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ProxyError::Timeout)?
            .map_err(|e| ProxyError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io = if service.https {
            let name = ServerName::try_from(service.host.clone()).map_err(|e| ProxyError::Connect(e.to_string()))?;
            let tls = tokio::time::timeout(service.connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| ProxyError::Timeout)?
                .map_err(|e| ProxyError::Connect(e.to_string()))?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        let (sender, conn) =
            http1::handshake(TokioIo::new(io)).await.map_err(|e| ProxyError::Connect(e.to_string()))?;
        if upgrades {
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
        } else {
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        Ok(Pooled { key: service.pool_key.clone(), sender })
    }

    async fn resolve(&self, service: &Service) -> Result<SocketAddr, ProxyError> {
        if let Some(ip) = service.ip {
            return Ok(SocketAddr::new(ip, service.port));
        }
        let resolver = self.resolver.as_ref().ok_or(ProxyError::Dns)?;
        let lookup = resolver.lookup_ip(service.host.as_str()).await.map_err(|_| ProxyError::Dns)?;
        let ip: IpAddr = lookup.iter().next().ok_or(ProxyError::Dns)?;
        Ok(SocketAddr::new(ip, service.port))
    }
}

impl Default for Connector {
    fn default() -> Self {
        Connector::new()
    }
}

impl Pooled {
    pub fn sender(&mut self) -> &mut SendRequest<ReqBody> {
        &mut self.sender
    }
}

/// Kong does not verify upstream certificates; neither do we (the Service owner chose the host).
#[derive(Debug)]
struct NoVerify;

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Plain TCP or TLS to the upstream.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
