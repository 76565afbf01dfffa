//! The Certificate entity. Beyond Kong 0.14 (as Kong 1.x does), the PEM is parsed and the key
//! must match the certificate when stored, so a broken pair is refused at the Admin API rather
//! than failing later at a TLS handshake.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::{Field, Kind, Schema, Violation};

fn check_cert(pem: &str) -> Result<(), String> {
    parse_certs(pem).map(|_| ())
}

fn check_key(pem: &str) -> Result<(), String> {
    parse_key(pem).map(|_| ())
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    match certs {
        // The PEM framing alone proves nothing: the DER inside must parse as a certificate.
        Ok(c) if !c.is_empty() && c.iter().all(|der| webpki::EndEntityCert::try_from(der).is_ok()) => Ok(c),
        _ => Err("invalid certificate: not a PEM-encoded X.509 certificate".into()),
    }
}

fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    match rustls_pemfile::private_key(&mut pem.as_bytes()) {
        Ok(Some(k)) => Ok(k),
        _ => Err("invalid key: not a PEM-encoded private key".into()),
    }
}

/// Checks that `key` is a usable private key for the first certificate of `cert`.
///
/// # Errors
/// A violation on `cert` or `key` naming what is wrong.
pub fn check_key_pair(cert: &str, key: &str) -> Result<(), Violation> {
    let certs = parse_certs(cert).map_err(|e| Violation::field("cert", e))?;
    let key = parse_key(key).map_err(|e| Violation::field("key", e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| Violation::field("key", "invalid key: unsupported key type"))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|_| Violation::field("key", "invalid key: does not match the certificate"))
}

pub static CERTIFICATE: Schema = Schema {
    name: "certificates",
    has_updated_at: false,
    fields: &[
        Field::new("cert", Kind::Str).required().check(check_cert),
        Field::new("key", Kind::Str).required().check(check_key),
    ],
    entity_check: None,
};
