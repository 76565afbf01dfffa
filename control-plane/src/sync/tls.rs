//! mTLS between planes. In `shared` mode one certificate (from `gatehouse-cp gen-cert`) is
//! both sides' identity and the only trusted root, so only holders of its key may connect. In
//! `pki` mode each side has its own certificate and both are verified against a CA. `off`
//! is plaintext, for local development only.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The name the shared certificate is issued to; data planes verify the control plane by it.
pub const CLUSTER_NAME: &str = "gatehouse-cluster";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    Shared,
    Pki,
    Off,
}

impl std::str::FromStr for MtlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "shared" => Ok(MtlsMode::Shared),
            "pki" => Ok(MtlsMode::Pki),
            "off" => Ok(MtlsMode::Off),
            other => Err(format!("'{other}' is not one of shared, pki, off")),
        }
    }
}

/// The control plane's TLS material for the cluster listener.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub mode: MtlsMode,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cluster mTLS mode '{0}' needs {1}")]
    Missing(&'static str, &'static str),
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot generate the cluster certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}

impl ClusterTls {
    /// The server TLS configuration, or `None` in `off` mode.
    ///
    /// # Errors
    /// Missing or unreadable files.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        let (cert, key) = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => (read(c)?, read(k)?),
            _ if self.mode == MtlsMode::Off => return Ok(None),
            _ => return Err(TlsError::Missing("shared/pki", "cluster_cert and cluster_cert_key")),
        };
        let root = match self.mode {
            MtlsMode::Off => return Ok(None),
            MtlsMode::Shared => cert.clone(),
            MtlsMode::Pki => read(self.ca.as_deref().ok_or(TlsError::Missing("pki", "cluster_ca_cert"))?)?,
        };
        Ok(Some(
            ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).client_ca_root(Certificate::from_pem(root)),
        ))
    }
}

/// Writes a new shared cluster certificate and key (`gatehouse-cp gen-cert`). The key file is
/// readable by its owner only.
///
/// # Errors
/// Generation or file-system failures.
pub fn generate_shared_cert(cert: &Path, key: &Path) -> Result<(), TlsError> {
    let mut params = rcgen::CertificateParams::new(vec![CLUSTER_NAME.to_string(), "localhost".to_string()])?;
    params.distinguished_name.push(rcgen::DnType::CommonName, CLUSTER_NAME);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2044, 1, 1);
    let pair = rcgen::KeyPair::generate()?;
    let issued = params.self_signed(&pair)?;
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| TlsError::Read { path, source }
    };
    std::fs::write(cert, issued.pem()).map_err(io(cert))?; // a certificate is public
    crate::tls::write_private(key, pair.serialize_pem().as_bytes()).map_err(io(key))?;
    Ok(())
}
