//! ip-restriction (kong-0.14-plugins §5.3): a deny or allow list of addresses and CIDR blocks,
//! IPv4 and IPv6, checked against the client's address. It runs after the auth plugins, so a
//! consumer can have a list of its own.

use std::net::IpAddr;

use serde_json::Value;

use super::{Access, BuildError, Plugin, Reply, RequestCtx};
use crate::ip_net::IpNet;

pub struct IpRestriction {
    /// Parsed once per configuration.
    list: Vec<IpNet>,
    /// A whitelist (block what is outside) rather than a blacklist (block what is inside).
    allow: bool,
}

/// An entry as the schema accepted it: IPv4 octets may carry leading zeros or blanks, as
/// lua-resty-iputils reads them.
fn parse_net(entry: &str) -> Result<IpNet, BuildError> {
    let entry = entry.trim();
    if let Ok(net) = entry.parse() {
        return Ok(net);
    }
    let (address, prefix) = entry.split_once('/').unwrap_or((entry, "32"));
    let octets: Option<Vec<u8>> = address.split('.').map(|o| o.trim().parse().ok()).collect();
    match octets.as_deref() {
        Some([a, b, c, d]) => format!("{a}.{b}.{c}.{d}/{prefix}").parse().map_err(BuildError),
        _ => Err(BuildError(format!("cannot parse '{entry}'"))),
    }
}

impl IpRestriction {
    pub fn new(config: &Value) -> Result<IpRestriction, BuildError> {
        let entries = |k: &str| -> Result<Vec<IpNet>, BuildError> {
            let items = config.get(k).and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            items.iter().filter_map(Value::as_str).map(parse_net).collect()
        };
        let (whitelist, blacklist) = (entries("whitelist")?, entries("blacklist")?);
        // The schema allows exactly one non-empty list; Kong's handler lets the whitelist win.
        Ok(if whitelist.is_empty() {
            IpRestriction { list: blacklist, allow: false }
        } else {
            IpRestriction { list: whitelist, allow: true }
        })
    }

    fn blocks(&self, ip: IpAddr) -> bool {
        // An IPv4 client on an IPv6 socket is matched as the IPv4 address it is.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.list.iter().any(|net| net.contains(ip)) != self.allow
    }
}

impl Plugin for IpRestriction {
    fn name(&self) -> &'static str {
        "ip-restriction"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        if self.blocks(ctx.remote_addr()) {
            return Access::Respond(Reply::message(403, "Your IP address is not allowed").build());
        }
        Access::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_block_and_allow_v4_and_v6() {
        let deny = IpRestriction::new(&json!({"blacklist": ["10.0.0.0/8", "2001:db8::/32"]})).unwrap();
        assert!(deny.blocks("10.1.2.3".parse().unwrap()));
        assert!(deny.blocks("::ffff:10.1.2.3".parse().unwrap()), "v4-mapped");
        assert!(deny.blocks("2001:db8::1".parse().unwrap()));
        assert!(!deny.blocks("11.0.0.1".parse().unwrap()));
        let allow = IpRestriction::new(&json!({"whitelist": ["127.0.0.001"]})).unwrap();
        assert!(!allow.blocks("127.0.0.1".parse().unwrap()));
        assert!(allow.blocks("127.0.0.2".parse().unwrap()));
        assert!(allow.blocks("::1".parse().unwrap()));
    }
}
