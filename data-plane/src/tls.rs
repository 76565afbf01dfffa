//! TLS termination: certificates chosen by SNI from the configuration's Certificates/SNIs
//! (exact names), and a default certificate when the name is absent or unknown.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::live::Live;

/// Parses a PEM certificate chain and key into a signing identity (ring provider).
///
/// # Errors
/// A PEM that does not parse, or a key of an unsupported type.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in PEM".into());
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("invalid key: {e}"))?
        .ok_or("no private key in PEM")?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("unsupported key: {e}"))?;
    Ok(CertifiedKey::new(certs, signing))
}

/// A self-signed certificate for `localhost`, made at start-up, for clients whose SNI matches
/// no configured certificate.
///
/// # Errors
/// Generation failures.
pub fn default_certificate() -> Result<CertifiedKey, String> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).map_err(|e| e.to_string())?;
    certified_key(generated.cert.pem().as_bytes(), generated.key_pair.serialize_pem().as_bytes())
}

/// Picks the certificate for each handshake from the configuration being served.
#[derive(Debug)]
pub struct SniResolver {
    live: Arc<Live>,
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        if let Some(name) = name {
            if let Some(cert) = self.live.load().certs.get(name) {
                return Some(cert.clone());
            }
        }
        Some(self.fallback.clone())
    }
}

/// The proxy's TLS configuration: SNI resolution, ALPN h2 and http/1.1.
///
/// # Errors
/// A default certificate that cannot be made, or an unusable provider.
pub fn server_config(live: Arc<Live>, fallback: CertifiedKey) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { live, fallback: Arc::new(fallback) }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
