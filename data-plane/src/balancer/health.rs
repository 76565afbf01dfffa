//! Per-address health as lua-resty-healthcheck 0.5 keeps it (kong-0.14-core-behavior §6.2):
//! four 8-bit counters and a four-valued state. The whole record is packed in one `AtomicU64`
//! so that the proxy reads it with one load and reports into it with a compare-and-swap,
//! never a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

/// A target's internal state. The `Mostly` states count as their side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Healthy = 0,
    MostlyHealthy = 1,
    MostlyUnhealthy = 2,
    Unhealthy = 3,
}

impl State {
    fn from_bits(b: u64) -> State {
        match b & 0xff {
            0 => State::Healthy,
            1 => State::MostlyHealthy,
            2 => State::MostlyUnhealthy,
            _ => State::Unhealthy,
        }
    }

    pub fn healthy(self) -> bool {
        matches!(self, State::Healthy | State::MostlyHealthy)
    }
}

/// What one observation says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Success,
    HttpFailure,
    TcpFailure,
    Timeout,
}

impl Report {
    /// Bit offset of this report's counter in the packed word.
    fn shift(self) -> u32 {
        match self {
            Report::Success => 8,
            Report::HttpFailure => 16,
            Report::TcpFailure => 24,
            Report::Timeout => 32,
        }
    }
}

const FAILURE_MASK: u64 = 0xff_ffff << 16;

/// The transition for one report with threshold `limit` (0 disables the counter).
fn next(word: u64, report: Report, limit: u8) -> u64 {
    if limit == 0 {
        return word;
    }
    let state = State::from_bits(word);
    let success = report == Report::Success;
    // A success on a healthy target, or a failure on an unhealthy one, changes nothing.
    if (success && state == State::Healthy) || (!success && state == State::Unhealthy) {
        return word;
    }
    let shift = report.shift();
    let count = (((word >> shift) & 0xff) + 1).min(0xff);
    let mut w = (word & !(0xff << shift)) | (count << shift);
    // A success clears the failure counters; a failure clears the success counter.
    w &= if success { !FAILURE_MASK } else { !(0xff << 8) };
    let state = if count >= u64::from(limit) {
        if success {
            State::Healthy
        } else {
            State::Unhealthy
        }
    } else if success && state == State::Unhealthy {
        State::MostlyUnhealthy
    } else if !success && state == State::Healthy {
        State::MostlyHealthy
    } else {
        state
    };
    (w & !0xff) | state as u64
}

/// One address's health record: the packed word, and when a manual command last set it (in
/// nanoseconds since [`epoch`]), so that the result of a request that was already under way
/// cannot undo the command.
#[derive(Debug, Default)]
pub struct Health(AtomicU64, AtomicU64);

/// The process's reference instant for [`Health`]'s command times.
fn epoch() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

fn since_epoch(at: std::time::Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

impl Health {
    pub fn state(&self) -> State {
        State::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn available(&self) -> bool {
        self.state().healthy()
    }

    /// Applies a report on a request that began at `began`; returns whether the address
    /// changed sides (healthy ↔ unhealthy). A request that began before the last manual
    /// command does not count.
    pub fn report(&self, report: Report, limit: u8, began: std::time::Instant) -> bool {
        if limit == 0 || since_epoch(began) < self.1.load(Ordering::Acquire) {
            return false;
        }
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let new = next(current, report, limit);
            if new == current {
                return false;
            }
            match self.0.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return State::from_bits(current).healthy() != State::from_bits(new).healthy(),
                Err(actual) => current = actual,
            }
        }
    }

    /// Sets the state with zeroed counters (the manual endpoints); returns whether it changed sides.
    pub fn set(&self, healthy: bool) -> bool {
        let state = if healthy { State::Healthy } else { State::Unhealthy };
        // One past now: a request that began at or before this moment does not count.
        self.1.store(since_epoch(std::time::Instant::now()) + 1, Ordering::Release);
        let old = self.0.swap(state as u64, Ordering::AcqRel);
        State::from_bits(old).healthy() != healthy
    }
}

/// Status codes as a 1000-bit set: membership is one shift and mask.
#[derive(Debug, Clone, Default)]
pub struct Statuses([u64; 16]);

impl Statuses {
    fn from(v: Option<&Value>, default: &[u16]) -> Statuses {
        let mut s = Statuses::default();
        let codes: Vec<u16> = match v.and_then(Value::as_array) {
            Some(a) => a.iter().filter_map(Value::as_u64).filter_map(|c| u16::try_from(c).ok()).collect(),
            None => default.to_vec(),
        };
        for c in codes.into_iter().filter(|c| *c < 1024) {
            s.0[usize::from(c / 64)] |= 1 << (c % 64);
        }
        s
    }

    pub fn contains(&self, code: u16) -> bool {
        code < 1024 && self.0[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }
}

/// Thresholds for one side (active or passive). 0 disables a counter.
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    pub healthy_statuses: Statuses,
    pub unhealthy_statuses: Statuses,
    pub successes: u8,
    pub http_failures: u8,
    pub tcp_failures: u8,
    pub timeouts: u8,
}

impl Thresholds {
    pub fn limit(&self, report: Report) -> u8 {
        match report {
            Report::Success => self.successes,
            Report::HttpFailure => self.http_failures,
            Report::TcpFailure => self.tcp_failures,
            Report::Timeout => self.timeouts,
        }
    }

    /// How a response status counts: success, HTTP failure, or nothing.
    pub fn classify(&self, status: u16) -> Option<Report> {
        if self.healthy_statuses.contains(status) {
            Some(Report::Success)
        } else if self.unhealthy_statuses.contains(status) {
            Some(Report::HttpFailure)
        } else {
            None
        }
    }

    fn passive_enabled(&self) -> bool {
        self.successes > 0 || self.http_failures > 0 || self.tcp_failures > 0 || self.timeouts > 0
    }
}

/// An upstream's `healthchecks`, parsed.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    pub active: Thresholds,
    pub passive: Thresholds,
    /// Probe loops for healthy and unhealthy targets; `None` when the interval is 0.
    pub healthy_interval: Option<Duration>,
    pub unhealthy_interval: Option<Duration>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub http_path: String,
}

fn count(v: Option<&Value>) -> u8 {
    // The health-check library keeps 8-bit counters: larger thresholds saturate.
    v.and_then(Value::as_u64).map_or(0, |n| n.min(255) as u8)
}

fn seconds(v: Option<&Value>) -> Option<Duration> {
    v.and_then(Value::as_f64).filter(|s| *s > 0.0 && s.is_finite()).map(Duration::from_secs_f64)
}

impl Checks {
    pub fn parse(hc: Option<&Value>) -> Checks {
        let get = |path: &[&str]| {
            let mut v = hc?;
            for k in path {
                v = v.get(*k)?;
            }
            Some(v)
        };
        let side = |s: &str, healthy_default: &[u16], unhealthy_default: &[u16]| Thresholds {
            healthy_statuses: Statuses::from(get(&[s, "healthy", "http_statuses"]), healthy_default),
            unhealthy_statuses: Statuses::from(get(&[s, "unhealthy", "http_statuses"]), unhealthy_default),
            successes: count(get(&[s, "healthy", "successes"])),
            http_failures: count(get(&[s, "unhealthy", "http_failures"])),
            tcp_failures: count(get(&[s, "unhealthy", "tcp_failures"])),
            timeouts: count(get(&[s, "unhealthy", "timeouts"])),
        };
        Checks {
            active: side("active", &[200, 302], &[429, 404, 500, 501, 502, 503, 504, 505]),
            passive: side(
                "passive",
                &[200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306, 307, 308],
                &[429, 500, 503],
            ),
            healthy_interval: seconds(get(&["active", "healthy", "interval"])),
            unhealthy_interval: seconds(get(&["active", "unhealthy", "interval"])),
            timeout: seconds(get(&["active", "timeout"])).unwrap_or(Duration::from_secs(1)),
            concurrency: get(&["active", "concurrency"]).and_then(Value::as_u64).map_or(10, |c| c.clamp(1, 1024))
                as usize,
            http_path: get(&["active", "http_path"]).and_then(Value::as_str).unwrap_or("/").to_string(),
        }
    }

    /// Kong's rule for `HEALTHCHECKS_OFF`: no probe loop and no passive failure counter.
    pub fn enabled(&self) -> bool {
        self.healthy_interval.is_some()
            || self.unhealthy_interval.is_some()
            || self.passive.tcp_failures > 0
            || self.passive.timeouts > 0
            || self.passive.http_failures > 0
    }

    pub fn passive_enabled(&self) -> bool {
        self.passive.passive_enabled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_under_way_before_a_manual_command_does_not_undo_it() {
        let h = Health::default();
        let began = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        h.set(false);
        assert!(!h.report(Report::Success, 1, began), "began before the command: ignored");
        assert!(!h.available());
        assert!(h.report(Report::Success, 1, std::time::Instant::now()), "a later request counts");
        assert!(h.available());
    }

    #[test]
    fn failures_accumulate_to_the_threshold() {
        let h = Health::default();
        assert!(!h.report(Report::HttpFailure, 3, std::time::Instant::now()));
        assert_eq!(h.state(), State::MostlyHealthy);
        assert!(h.available());
        assert!(!h.report(Report::HttpFailure, 3, std::time::Instant::now()));
        assert!(h.report(Report::HttpFailure, 3, std::time::Instant::now()), "the third failure crosses");
        assert_eq!(h.state(), State::Unhealthy);
        assert!(!h.report(Report::HttpFailure, 3, std::time::Instant::now()), "a failure on unhealthy is ignored");
    }

    #[test]
    fn a_disabled_counter_ignores_reports() {
        let h = Health::default();
        for _ in 0..10 {
            assert!(!h.report(Report::TcpFailure, 0, std::time::Instant::now()));
        }
        assert_eq!(h.state(), State::Healthy);
    }

    #[test]
    fn successes_bring_a_target_back_and_clear_failures() {
        let h = Health::default();
        h.report(Report::Timeout, 1, std::time::Instant::now());
        assert_eq!(h.state(), State::Unhealthy);
        assert!(!h.report(Report::Success, 2, std::time::Instant::now()));
        assert_eq!(h.state(), State::MostlyUnhealthy);
        assert!(!h.available());
        assert!(h.report(Report::Success, 2, std::time::Instant::now()));
        assert_eq!(h.state(), State::Healthy);
        // The failure counters were cleared by the successes: one failure does not trip a limit of 2.
        h.report(Report::Timeout, 2, std::time::Instant::now());
        assert_eq!(h.state(), State::MostlyHealthy);
    }

    #[test]
    fn a_failure_resets_the_success_counter_only() {
        let h = Health::default();
        h.report(Report::HttpFailure, 3, std::time::Instant::now());
        h.report(Report::HttpFailure, 3, std::time::Instant::now());
        h.report(Report::TcpFailure, 5, std::time::Instant::now());
        // The HTTP failure counter is kept: one more trips it.
        assert!(h.report(Report::HttpFailure, 3, std::time::Instant::now()));
    }

    #[test]
    fn manual_set_zeroes_counters() {
        let h = Health::default();
        h.report(Report::HttpFailure, 2, std::time::Instant::now());
        assert!(h.set(false));
        assert!(!h.available());
        assert!(h.set(true));
        assert!(!h.report(Report::HttpFailure, 2, std::time::Instant::now()), "the counter restarted from zero");
    }

    #[test]
    fn statuses_and_defaults() {
        let c = Checks::parse(Some(&gatehouse_shared::upstream::healthchecks_default()));
        assert!(!c.enabled());
        assert_eq!(c.passive.classify(200), Some(Report::Success));
        assert_eq!(c.passive.classify(500), Some(Report::HttpFailure));
        assert_eq!(c.passive.classify(502), None, "502 is not in the default passive list");
        assert_eq!(c.active.classify(404), Some(Report::HttpFailure));
        let on = serde_json::json!({"active": {"unhealthy": {"interval": 0.5}}});
        let c = Checks::parse(Some(&on));
        assert!(c.enabled());
        assert_eq!(c.unhealthy_interval, Some(Duration::from_millis(500)));
    }
}
