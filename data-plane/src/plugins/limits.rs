//! What rate-limiting (and response-ratelimiting) count with: Kong's fixed calendar windows,
//! the identifier a request is counted under, and the counter stores of the `local` and
//! `redis` policies.
//!
//! A counter is keyed as Kong keys it, by the plugin row's route and service, the identifier,
//! the window's start and the period, so the same limit counted by several data planes in
//! Redis lands on the same key, and a configuration change (which rebuilds every plugin) does
//! not reset what was counted.

pub mod cluster;
pub mod local;
pub mod redis;

use std::net::IpAddr;
use std::sync::Arc;

use super::{Credential, RequestCtx};

/// Kong's periods, shortest first (the order headers and checks use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

impl Period {
    pub const ALL: [Period; 6] =
        [Period::Second, Period::Minute, Period::Hour, Period::Day, Period::Month, Period::Year];

    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    /// How long Redis keeps a counter of this period (Kong's `EXPIRATIONS`).
    pub fn ttl_secs(self) -> u64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86_400,
            Period::Month => 2_592_000,
            Period::Year => 31_536_000,
        }
    }

    /// The longest a window of this period lasts.
    pub fn longest_secs(self) -> u64 {
        match self {
            Period::Month => 31 * 86_400,
            Period::Year => 366 * 86_400,
            other => other.ttl_secs(),
        }
    }

    /// The start, in Unix seconds (UTC), of the window holding `now`.
    pub fn window_start(self, now: u64) -> u64 {
        let day = now / 86_400;
        match self {
            Period::Second => now,
            Period::Minute => now - now % 60,
            Period::Hour => now - now % 3600,
            Period::Day => day * 86_400,
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                days_from_civil(y, m, 1) * 86_400
            }
            Period::Year => {
                let (y, _, _) = civil_from_days(day);
                days_from_civil(y, 1, 1) * 86_400
            }
        }
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (days ≥ 0).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The day count since 1970-01-01 of a date on or after it.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The current time in whole Unix seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Who a request is counted as (`limit_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitBy {
    Consumer,
    Credential,
    Ip,
}

impl LimitBy {
    pub fn parse(s: Option<&str>) -> LimitBy {
        match s {
            Some("credential") => LimitBy::Credential,
            Some("ip") => LimitBy::Ip,
            _ => LimitBy::Consumer,
        }
    }
}

/// A request's identifier, borrowed where it can be.
pub enum Identifier<'a> {
    Id(&'a str),
    Ip(IpAddr),
}

impl std::fmt::Display for Identifier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identifier::Id(s) => f.write_str(s),
            Identifier::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Kong's identifier: the consumer's id (else the credential's), or the credential's, falling
/// back to the client's address; `ip` is always the address.
pub fn identifier<'c>(ctx: &'c RequestCtx<'_>, by: LimitBy) -> Identifier<'c> {
    let credential = || match &ctx.credential {
        Some(Credential::Row { id, .. }) => Some(&**id),
        _ => None,
    };
    let id = match by {
        LimitBy::Consumer => ctx.consumer.as_ref().map(|c| &*c.id).or_else(credential),
        LimitBy::Credential => credential(),
        LimitBy::Ip => None,
    };
    match id {
        Some(id) => Identifier::Id(id),
        None => Identifier::Ip(ctx.remote_addr()),
    }
}

/// The ids of the plugin row a counter belongs to (Kong's null UUID when unset).
#[derive(Debug, Clone)]
pub struct Scope {
    pub route_id: Arc<str>,
    pub service_id: Arc<str>,
}

pub const NULL_UUID: &str = "00000000-0000-0000-0000-000000000000";

impl Scope {
    /// The scope of a plugin row.
    pub fn of(row: &serde_json::Value) -> Scope {
        let id = |k: &str| row.get(k).and_then(serde_json::Value::as_str).filter(|s| !s.is_empty());
        Scope::new(id("route_id"), id("service_id"))
    }

    pub fn new(route_id: Option<&str>, service_id: Option<&str>) -> Scope {
        Scope { route_id: route_id.unwrap_or(NULL_UUID).into(), service_id: service_id.unwrap_or(NULL_UUID).into() }
    }

    /// Kong's counter key, `ratelimit:<route>:<service>:<identifier>:<window ms>:<period>`;
    /// `name` inserts a response-ratelimiting limit name before the period.
    pub fn key(&self, prefix: &str, id: &Identifier<'_>, window: u64, name: Option<&str>, period: Period) -> String {
        let (route, service) = (&self.route_id, &self.service_id);
        let window_ms = window * 1000;
        match name {
            Some(n) => format!("{prefix}:{route}:{service}:{id}:{window_ms}:{n}:{}", period.name()),
            None => format!("{prefix}:{route}:{service}:{id}:{window_ms}:{}", period.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_calendar_aligned_in_utc() {
        // 2026-12-06 13:45:17 UTC
        let t = 1_796_564_717;
        assert_eq!(Period::Second.window_start(t), t);
        assert_eq!(Period::Minute.window_start(t), t - 17);
        assert_eq!(Period::Hour.window_start(t), t - 45 * 60 - 17);
        assert_eq!(Period::Day.window_start(t), 1_796_515_200);
        assert_eq!(Period::Month.window_start(t), 1_796_083_200, "2026-12-01");
        assert_eq!(Period::Year.window_start(t), 1_767_225_600, "2026-01-01");
        // Leap day: 2024-02-29 12:00 is in February, whose window opens on the 1st.
        assert_eq!(Period::Month.window_start(1_709_208_000), 1_706_745_600);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        for day in [0, 59, 365, 10_000, 20_000, 25_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
