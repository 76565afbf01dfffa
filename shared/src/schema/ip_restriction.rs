//! ip-restriction's config (priority 990): an allow or deny list of addresses and CIDR blocks.
//! IPv4 entries are parsed the way lua-resty-iputils 0.3.0 parses them (Kong 0.14's); IPv6
//! entries, which 0.14 could not hold, as Kong 2.x takes them.

use serde_json::Value;

use super::field::{Field, Kind, Object, Table};
use super::validate::display;
use super::PluginSchema;

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "ip-restriction",
    990,
    Table::new(&[
        Field::new("whitelist", Kind::Array).check(cidr_list),
        Field::new("blacklist", Kind::Array).check(cidr_list),
    ])
    .self_check(exactly_one_list),
);

fn cidr_list(value: Option<&Value>, _: &Object) -> Result<(), String> {
    for entry in value.and_then(Value::as_array).into_iter().flatten() {
        let entry = display(entry);
        if let Err(reason) = parse_cidr(&entry) {
            return Err(format!("cannot parse '{entry}': {reason}"));
        }
    }
    Ok(())
}

/// `a.b.c.d` or `a.b.c.d/n`; the prefix is checked before the address, as iputils does. An
/// entry with a `:` is IPv6, `addr` or `addr/n` with n up to 128.
fn parse_cidr(cidr: &str) -> Result<(), String> {
    if cidr.contains(':') {
        let (address, prefix) = cidr.split_once('/').unwrap_or((cidr, "128"));
        if !prefix.parse::<u8>().is_ok_and(|n| n <= 128 && prefix == n.to_string()) {
            return Err(format!("Invalid prefix: /{prefix}"));
        }
        return address.parse::<std::net::Ipv6Addr>().map(|_| ()).map_err(|_| "Invalid IP".to_string());
    }
    let (address, prefix) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let prefix_ok = prefix.parse::<u8>().is_ok_and(|n| n <= 32 && prefix == n.to_string());
    if !prefix_ok {
        return Err(format!("Invalid prefix: /{prefix}"));
    }
    let octets: Vec<&str> = address.split('.').collect();
    if octets.len() != 4 {
        return Err("Invalid IP".to_string());
    }
    for octet in octets {
        let value = super::coerce::parse_number(super::coerce::lua_trim(octet))
            .and_then(|n| n.as_f64())
            .filter(|n| (0.0..=255.0).contains(n));
        if value.is_none() {
            return Err(format!("Invalid octet: {octet}"));
        }
    }
    Ok(())
}

fn non_empty(conf: &Object, name: &str) -> bool {
    conf.get(name).and_then(Value::as_array).is_some_and(|list| !list.is_empty())
}

/// Same rule as acl's, with Kong's lower-case wording for this plugin.
fn exactly_one_list(conf: &Object) -> Result<(), String> {
    match (non_empty(conf, "whitelist"), non_empty(conf, "blacklist")) {
        (true, true) => Err("you cannot set both a whitelist and a blacklist".to_string()),
        (false, false) => Err("you must set at least a whitelist or blacklist".to_string()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cidr;

    #[test]
    fn parses_like_iputils() {
        assert_eq!(parse_cidr("10.0.0.0/8"), Ok(()));
        assert_eq!(parse_cidr("127.0.0.1"), Ok(()));
        assert_eq!(parse_cidr("0.0.0.0/0"), Ok(()));
        assert_eq!(parse_cidr("hello"), Err("Invalid IP".to_string()));
        assert_eq!(parse_cidr("1.2.3.4.5"), Err("Invalid IP".to_string()));
        assert_eq!(parse_cidr("1.2.3.400"), Err("Invalid octet: 400".to_string()));
        assert_eq!(parse_cidr("1.2.3.4/33"), Err("Invalid prefix: /33".to_string()));
        assert_eq!(parse_cidr("1.2.3.4/"), Err("Invalid prefix: /".to_string()));
        assert_eq!(parse_cidr("2001:db8::/32"), Ok(()));
        assert_eq!(parse_cidr("::1"), Ok(()));
        assert_eq!(parse_cidr("2001:db8::/129"), Err("Invalid prefix: /129".to_string()));
        assert_eq!(parse_cidr("2001:zz8::"), Err("Invalid IP".to_string()));
    }
}
