//! Target name resolution (kong-0.14-core-behavior §5.6), cached per TTL and refreshed off
//! the request path. A records (AAAA only when a name has no A record); `_service._proto`
//! names through SRV, whose records give port and weight.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

/// A failed lookup is retried after this long (Kong: 30 s).
pub const RETRY_FAILED: Duration = Duration::from_secs(30);
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(3600);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// One address a name resolved to; SRV records carry their own port and weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub ip: IpAddr,
    pub port: Option<u16>,
    pub weight: Option<u32>,
}

/// A cached answer: `None` addresses when the name did not resolve.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub addresses: Option<Vec<Address>>,
    pub expires: Instant,
}

fn ttl(valid_until: Instant) -> Instant {
    let now = Instant::now();
    now + valid_until.saturating_duration_since(now).clamp(MIN_TTL, MAX_TTL)
}

/// Resolves `host` now.
pub async fn resolve(resolver: Option<&TokioResolver>, host: &str) -> Resolution {
    let failed = Resolution { addresses: None, expires: Instant::now() + RETRY_FAILED };
    let Some(resolver) = resolver else { return failed };
    match tokio::time::timeout(LOOKUP_TIMEOUT, lookup(resolver, host)).await {
        Ok(Some((addresses, valid_until))) if !addresses.is_empty() => {
            Resolution { addresses: Some(addresses), expires: ttl(valid_until) }
        }
        _ => {
            tracing::warn!(host, "target name did not resolve");
            failed
        }
    }
}

async fn lookup(resolver: &TokioResolver, host: &str) -> Option<(Vec<Address>, Instant)> {
    if host.starts_with('_') {
        let srv = resolver.srv_lookup(host).await.ok()?;
        let top = srv.iter().map(|r| r.priority()).min()?;
        let mut out = Vec::new();
        let mut until = srv.as_lookup().valid_until();
        let mut records: Vec<_> = srv.iter().filter(|r| r.priority() == top).collect();
        records.sort_by_key(|r| (r.target().to_utf8(), r.port(), r.weight()));
        for r in records {
            let (ips, valid) = ips(resolver, &r.target().to_utf8()).await?;
            until = until.min(valid);
            let weight = u32::from(r.weight()).max(1);
            out.extend(ips.into_iter().map(|ip| Address {
                ip,
                port: Some(r.port()).filter(|p| *p != 0),
                weight: Some(weight),
            }));
        }
        return Some((out, until));
    }
    let (ips, until) = ips(resolver, host).await?;
    Some((ips.into_iter().map(|ip| Address { ip, port: None, weight: None }).collect(), until))
}

/// IPv4 addresses sorted by their text (as Kong orders them); IPv6 only when there is no IPv4.
async fn ips(resolver: &TokioResolver, host: &str) -> Option<(Vec<IpAddr>, Instant)> {
    let lookup = resolver.lookup_ip(host).await.ok()?;
    let until = lookup.valid_until();
    let all: Vec<IpAddr> = lookup.iter().collect();
    let mut chosen: Vec<IpAddr> = all.iter().copied().filter(IpAddr::is_ipv4).collect();
    if chosen.is_empty() {
        chosen = all;
    }
    chosen.sort_by_key(ToString::to_string);
    chosen.dedup();
    Some((chosen, until))
}
