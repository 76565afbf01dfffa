//! ldap-auth (kong-0.14-plugins §4.6): `user:password` checked by an LDAPv3 simple bind as
//! `<attribute>=<user>,<base_dn>`, optionally after StartTLS; outcomes cached for `cache_ttl`.
//!
//! The bind is two small BER messages, encoded here rather than through a full LDAP client:
//! the plugin needs nothing else from the protocol.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::auth::{self, anonymous, decode_user_pass};
use super::{Access, BuildError, Credential, Plugin, Rejected, Reply, RequestCtx};

pub struct LdapAuth {
    host: String,
    port: u16,
    start_tls: bool,
    verify_ldap_host: bool,
    base_dn: String,
    attribute: String,
    cache_ttl: Duration,
    hide_credentials: bool,
    timeout: Duration,
    anonymous: Option<Arc<str>>,
    header_type: String,
    /// Bind outcomes by a digest of (user, password), so no password is kept in memory.
    cache: Mutex<HashMap<[u8; 32], (bool, Instant)>>,
}

#[derive(Debug, thiserror::Error)]
enum LdapError {
    #[error("cannot reach the directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("the directory timed out")]
    Timeout,
    #[error("unexpected answer from the directory")]
    Protocol,
    #[error("StartTLS refused (result {0})")]
    StartTls(u8),
}

// === BER, just enough for a bind ===

fn ber_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
}

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    ber_len(&mut out, value.len());
    out.extend_from_slice(value);
    out
}

fn message(id: u8, op: Vec<u8>) -> Vec<u8> {
    let mut body = tlv(0x02, &[id]);
    body.extend(op);
    tlv(0x30, &body)
}

fn bind_request(id: u8, dn: &str, password: &str) -> Vec<u8> {
    let mut op = tlv(0x02, &[3]);
    op.extend(tlv(0x04, dn.as_bytes()));
    op.extend(tlv(0x80, password.as_bytes()));
    message(id, tlv(0x60, &op))
}

fn start_tls_request(id: u8) -> Vec<u8> {
    message(id, tlv(0x77, &tlv(0x80, b"1.3.6.1.4.1.1466.20037")))
}

/// Reads one LDAPMessage and returns its result code (the first ENUMERATED of the op).
async fn read_result<S: AsyncRead + Unpin>(s: &mut S) -> Result<u8, LdapError> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    if head[0] != 0x30 {
        return Err(LdapError::Protocol);
    }
    let len = match head[1] {
        n if n < 0x80 => usize::from(n),
        0x81 => usize::from(s.read_u8().await?),
        0x82 => usize::from(s.read_u16().await?),
        _ => return Err(LdapError::Protocol),
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    // messageID, then the op's tag and length, then `resultCode ENUMERATED`.
    let skip_tlv = |b: &[u8]| -> Option<usize> {
        let l = *b.get(1)?;
        Some(match l {
            n if n < 0x80 => 2 + usize::from(n),
            0x81 => 3 + usize::from(*b.get(2)?),
            0x82 => 4 + (usize::from(*b.get(2)?) << 8 | usize::from(*b.get(3)?)),
            _ => return None,
        })
    };
    let after_id = skip_tlv(&body).ok_or(LdapError::Protocol)?;
    let op = body.get(after_id..).ok_or(LdapError::Protocol)?;
    let header = match op.get(1) {
        Some(n) if *n < 0x80 => 2,
        Some(0x81) => 3,
        Some(0x82) => 4,
        _ => return Err(LdapError::Protocol),
    };
    match op.get(header..header + 3) {
        Some([0x0a, 0x01, code]) => Ok(*code),
        _ => Err(LdapError::Protocol),
    }
}

async fn bind<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, dn: &str, password: &str) -> Result<bool, LdapError> {
    s.write_all(&bind_request(2, dn, password)).await?;
    Ok(read_result(s).await? == 0)
}

impl LdapAuth {
    pub fn new(config: &Value) -> Result<LdapAuth, BuildError> {
        let s = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let n = |k: &str, d: f64| config.get(k).and_then(Value::as_f64).unwrap_or(d);
        let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(false);
        Ok(LdapAuth {
            host: s("ldap_host"),
            port: u16::try_from(n("ldap_port", 389.0) as i64)
                .map_err(|_| BuildError("ldap_port out of range".into()))?,
            start_tls: flag("start_tls"),
            verify_ldap_host: flag("verify_ldap_host"),
            base_dn: s("base_dn"),
            attribute: s("attribute"),
            cache_ttl: Duration::from_secs_f64(n("cache_ttl", 60.0).max(0.0)),
            hide_credentials: flag("hide_credentials"),
            timeout: Duration::from_millis(n("timeout", 10_000.0).max(1.0) as u64),
            anonymous: anonymous(config),
            header_type: config.get("header_type").and_then(Value::as_str).unwrap_or("ldap").to_string(),
            cache: Mutex::default(),
        })
    }

    fn realm(&self) -> String {
        let scheme = if self.header_type == "ldap" { "LDAP".to_string() } else { self.header_type.clone() };
        format!("{scheme} realm=\"kong\"")
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut d = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [self.host.as_str(), &self.port.to_string(), &self.base_dn, &self.attribute, user, password] {
            d.update(&(part.len() as u64).to_be_bytes());
            d.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(d.finish().as_ref());
        out
    }

    async fn authenticate(&self, user: &str, password: &str) -> Result<bool, LdapError> {
        let key = self.cache_key(user, password);
        if let Ok(cache) = self.cache.lock() {
            if let Some((ok, at)) = cache.get(&key) {
                if at.elapsed() < self.cache_ttl {
                    return Ok(*ok);
                }
            }
        }
        let dn = format!("{}={user},{}", self.attribute, self.base_dn);
        let ok =
            tokio::time::timeout(self.timeout, self.bind(&dn, password)).await.map_err(|_| LdapError::Timeout)??;
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (_, at)| at.elapsed() < self.cache_ttl);
            cache.insert(key, (ok, Instant::now()));
        }
        Ok(ok)
    }

    async fn bind(&self, dn: &str, password: &str) -> Result<bool, LdapError> {
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        if !self.start_tls {
            return bind(&mut tcp, dn, password).await;
        }
        tcp.write_all(&start_tls_request(1)).await?;
        let code = read_result(&mut tcp).await?;
        if code != 0 {
            return Err(LdapError::StartTls(code));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| LdapError::Io(std::io::Error::other(e)))?;
        let config = if self.verify_ldap_host {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(crate::tls::NoVerify)).with_no_client_auth()
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| LdapError::Io(std::io::Error::other(e)))?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
        bind(&mut tls, dn, password).await
    }

    async fn run(&self, ctx: &mut RequestCtx<'_>) -> Result<(), Rejected> {
        let proxy = ctx.header("proxy-authorization").map(str::to_owned);
        let plain = ctx.header("authorization").map(str::to_owned);
        if proxy.is_none() && plain.is_none() {
            let reject = Reply::message(401, "Unauthorized").header("www-authenticate", &self.realm());
            return auth::fail(ctx, self.anonymous.as_ref(), reject);
        }
        // Proxy-Authorization first, then Authorization, each bound in turn as Kong does: a
        // malformed or refused first header does not hide a good second one.
        let mut authenticated = None;
        for (user, password) in [proxy, plain]
            .into_iter()
            .flatten()
            .filter_map(|v| decode_user_pass(&v, auth::Scheme::AnyCase(&self.header_type), true))
            .filter(|(_, p)| !p.is_empty())
        {
            match self.authenticate(&user, &password).await {
                Err(e) => {
                    tracing::error!(error = %e, host = %self.host, "ldap-auth: bind failed");
                    return Err(Reply::unexpected().build());
                }
                Ok(true) => {
                    authenticated = Some(user);
                    break;
                }
                Ok(false) => {}
            }
        }
        match authenticated {
            None => auth::fail(ctx, self.anonymous.as_ref(), Reply::message(403, "Invalid authentication credentials")),
            Some(user) => {
                if self.hide_credentials {
                    ctx.headers.remove("authorization");
                    ctx.headers.remove("proxy-authorization");
                }
                for h in [
                    auth::X_CONSUMER_ID,
                    auth::X_CONSUMER_CUSTOM_ID,
                    auth::X_CONSUMER_USERNAME,
                    auth::X_ANONYMOUS_CONSUMER,
                ] {
                    ctx.headers.remove(&h);
                }
                if let Ok(v) = HeaderValue::from_str(&user) {
                    ctx.headers.insert(auth::X_CREDENTIAL_USERNAME, v);
                }
                ctx.consumer = None;
                ctx.credential = Some(Credential::Ldap { username: user });
                Ok(())
            }
        }
    }
}

impl Plugin for LdapAuth {
    fn name(&self) -> &'static str {
        "ldap-auth"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        if auth::already_authenticated(ctx, self.anonymous.as_ref()) {
            return Access::Continue;
        }
        Access::Wait(Box::pin(self.run(ctx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_request_encoding() {
        let m = bind_request(2, "cn=a", "pw");
        let expected: &[u8] = &[
            0x30, 0x12, 0x02, 0x01, 0x02, 0x60, 0x0d, 0x02, 0x01, 0x03, 0x04, 0x04, b'c', b'n', b'=', b'a', 0x80, 0x02,
            b'p', b'w',
        ];
        assert_eq!(m, expected);
    }

    #[tokio::test]
    async fn reads_a_bind_response_code() {
        // BindResponse: messageID 2, [APPLICATION 1] { resultCode 49, matchedDN "", diag "" }
        let bytes: &[u8] = &[0x30, 0x0c, 0x02, 0x01, 0x02, 0x61, 0x07, 0x0a, 0x01, 0x31, 0x04, 0x00, 0x04, 0x00];
        let mut r = bytes;
        assert_eq!(read_result(&mut r).await.unwrap(), 49);
    }
}
