//! TLS for the Admin API's HTTPS listener: the configured certificate, or a self-signed one
//! generated on first start and kept under the prefix so restarts present the same one.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Pem(String),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io { path: path.display().to_string(), source })
}

fn parse(cert: &[u8], key: &[u8]) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert[..])
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("invalid certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate in PEM".into()));
    }
    let key = rustls_pemfile::private_key(&mut &key[..])
        .map_err(|e| TlsError::Pem(format!("invalid key PEM: {e}")))?
        .ok_or_else(|| TlsError::Pem("no private key in PEM".into()))?;
    Ok((certs, key))
}

/// Loads `cert`/`key`, or generates (once) a self-signed pair in `prefix`.
///
/// # Errors
/// Unreadable or invalid files.
pub fn server_config(cert: Option<&Path>, key: Option<&Path>, prefix: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_pem, key_pem) = match (cert, key) {
        (Some(c), Some(k)) => (read(c)?, read(k)?),
        _ => self_signed(prefix)?,
    };
    let (certs, key) = parse(&cert_pem, &key_pem)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn self_signed(prefix: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let cert_path = prefix.join("admin-ssl.crt");
    let key_path = prefix.join("admin-ssl.key");
    if cert_path.exists() && key_path.exists() {
        return Ok((read(&cert_path)?, read(&key_path)?));
    }
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert = generated.cert.pem().into_bytes();
    let key = generated.key_pair.serialize_pem().into_bytes();
    let io = |path: &Path| {
        let p = path.display().to_string();
        move |source| TlsError::Io { path: p, source }
    };
    gatehouse_shared::private_fs::create_dir(prefix).map_err(io(prefix))?;
    std::fs::write(&cert_path, &cert).map_err(io(&cert_path))?;
    write_private(&key_path, &key).map_err(io(&key_path))?;
    Ok((cert, key))
}

/// Writes a file readable by its owner only (private keys).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    gatehouse_shared::private_fs::write(path, bytes)
}
