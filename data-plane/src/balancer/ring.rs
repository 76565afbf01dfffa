//! The wheel (kong-0.14-core-behavior §5.3–5.4): `slots` positions, each owned by one
//! address, in proportion to weight. Positions are handed out in a fixed pseudo-random order
//! so that an address's slots are spread round the wheel; a rebuild keeps every position
//! whose owner still exists and is within its share, so a target change moves as few hash
//! positions as it can.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

use super::health::Health;

/// One resolved address of a target.
#[derive(Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The target as stored (`host:port`): health reports and commands name it.
    pub target: Arc<str>,
    /// The target's host name (or IP), for TLS server names and probe `Host` headers.
    pub hostname: Arc<str>,
    /// `hostname[:port]` as the upstream's `Host` header for http and https services, the
    /// port left out when it is the scheme's default.
    pub host_headers: [HeaderValue; 2],
    /// Connection-pool keys for http and https services.
    pub pool_keys: [Arc<str>; 2],
    pub health: Arc<Health>,
}

impl Peer {
    pub fn host_header(&self, https: bool) -> &HeaderValue {
        &self.host_headers[usize::from(https)]
    }

    pub fn pool_key(&self, https: bool) -> &Arc<str> {
        &self.pool_keys[usize::from(https)]
    }

    fn key(&self) -> (&str, SocketAddr) {
        (&self.target, self.addr)
    }
}

#[derive(Debug, Default)]
pub struct Ring {
    /// Peer index per position.
    wheel: Box<[u32]>,
    pub peers: Vec<Arc<Peer>>,
}

/// The order positions are handed out in: a shuffle seeded by the size alone, so every
/// worker and every node builds the same wheel from the same targets.
fn visiting_order(slots: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..slots as u32).collect();
    fastrand::Rng::with_seed(0x6761_7465 ^ slots as u64).shuffle(&mut order);
    order
}

/// Each entry's share of `slots`, walking entries in order as Kong does.
fn shares(slots: usize, weights: &[u32]) -> Vec<usize> {
    let mut weight_left: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let mut slots_left = slots as f64;
    weights
        .iter()
        .map(|w| {
            if weight_left == 0 {
                return 0;
            }
            let count = (slots_left * f64::from(*w) / weight_left as f64 + 0.0001).floor().max(0.0);
            slots_left -= count;
            weight_left -= u64::from(*w);
            count as usize
        })
        .collect()
}

impl Ring {
    /// A wheel of `slots` positions over `entries` (peer, weight > 0), reusing `previous`'s
    /// assignments where it can.
    pub fn build(slots: usize, entries: Vec<(Arc<Peer>, u32)>, previous: Option<&Ring>) -> Ring {
        let weights: Vec<u32> = entries.iter().map(|(_, w)| *w).collect();
        let peers: Vec<Arc<Peer>> = entries.into_iter().map(|(p, _)| p).collect();
        if peers.is_empty() || weights.iter().all(|w| *w == 0) || slots == 0 {
            return Ring { wheel: Box::default(), peers };
        }
        let quota = shares(slots, &weights);
        let mut given = vec![0usize; peers.len()];
        let mut wheel = vec![u32::MAX; slots];
        let order = visiting_order(slots);
        if let Some(prev) = previous.filter(|p| p.wheel.len() == slots) {
            let index: HashMap<(&str, SocketAddr), usize> =
                peers.iter().enumerate().map(|(i, p)| (p.key(), i)).collect();
            // Walk in visiting order, so what an address keeps (and gives up) stays spread
            // round the wheel rather than one contiguous run.
            for &pos in &order {
                let pos = pos as usize;
                let Some(old) = prev.peers.get(prev.wheel[pos] as usize) else { continue };
                if let Some(&i) = index.get(&old.key()) {
                    if given[i] < quota[i] {
                        given[i] += 1;
                        wheel[pos] = i as u32;
                    }
                }
            }
        }
        // Hand the free positions out in visiting order, entries in order.
        let mut next = 0;
        for &pos in &order {
            let pos = pos as usize;
            if wheel[pos] != u32::MAX {
                continue;
            }
            while next < peers.len() && given[next] >= quota[next] {
                next += 1;
            }
            let Some(owner) = (next < peers.len()).then_some(next) else { break };
            given[owner] += 1;
            wheel[pos] = owner as u32;
        }
        // Rounding can leave a position or two: give them to the first entry.
        for w in wheel.iter_mut().filter(|w| **w == u32::MAX) {
            *w = 0;
        }
        Ring { wheel: wheel.into_boxed_slice(), peers }
    }

    pub fn slots(&self) -> usize {
        self.wheel.len()
    }

    /// The first available peer at or after `position` (wrapping); `None` when a whole turn
    /// finds none.
    #[inline]
    pub fn pick(&self, position: usize) -> Option<&Arc<Peer>> {
        let n = self.wheel.len();
        if n == 0 {
            return None;
        }
        let start = position % n;
        let first = &self.peers[self.wheel[start] as usize];
        if first.health.available() {
            return Some(first);
        }
        if !self.peers.iter().any(|p| p.health.available()) {
            return None;
        }
        (1..n).map(|i| &self.peers[self.wheel[(start + i) % n] as usize]).find(|p| p.health.available())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> Arc<Peer> {
        Arc::new(Peer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            target: format!("127.0.0.1:{port}").into(),
            hostname: "127.0.0.1".into(),
            host_headers: [HeaderValue::from_static("127.0.0.1"), HeaderValue::from_static("127.0.0.1")],
            pool_keys: [format!("http://127.0.0.1:{port}").into(), format!("https://127.0.0.1:{port}").into()],
            health: Arc::default(),
        })
    }

    fn counts(ring: &Ring) -> HashMap<u16, usize> {
        let mut c = HashMap::new();
        for i in 0..ring.slots() {
            *c.entry(ring.pick(i).unwrap().addr.port()).or_default() += 1;
        }
        c
    }

    #[test]
    fn shares_follow_weights() {
        let ring = Ring::build(1000, vec![(peer(1), 100), (peer(2), 200), (peer(3), 700)], None);
        let c = counts(&ring);
        assert_eq!((c[&1], c[&2], c[&3]), (100, 200, 700));
    }

    #[test]
    fn shares_of_uneven_weights_fill_every_slot() {
        let ring = Ring::build(10, vec![(peer(1), 1), (peer(2), 1), (peer(3), 1)], None);
        let c = counts(&ring);
        assert_eq!(c.values().sum::<usize>(), 10);
        assert!(c.values().all(|n| (3..=4).contains(n)), "{c:?}");
    }

    #[test]
    fn adding_a_target_moves_only_its_share() {
        let before = Ring::build(1000, vec![(peer(1), 100), (peer(2), 100)], None);
        let after = Ring::build(1000, vec![(peer(1), 100), (peer(2), 100), (peer(3), 100)], Some(&before));
        let moved = (0..1000).filter(|i| before.pick(*i).unwrap().addr != after.pick(*i).unwrap().addr).count();
        assert!(moved <= 334 + 1, "{moved} positions moved");
        // Kong's share formula: floor(1000/3), floor(667/2), and the 334 left.
        assert_eq!(counts(&after)[&3], 334);
    }

    #[test]
    fn a_grown_wheel_stays_interleaved() {
        let one = Ring::build(1000, vec![(peer(1), 1)], None);
        let two = Ring::build(1000, vec![(peer(1), 1), (peer(2), 1)], Some(&one));
        // Round robin over any 40 consecutive positions reaches both peers.
        for start in (0..1000).step_by(40) {
            let ports: std::collections::HashSet<u16> =
                (start..start + 40).map(|i| two.pick(i).unwrap().addr.port()).collect();
            assert_eq!(ports.len(), 2, "positions {start}..{} all on one peer", start + 40);
        }
    }

    #[test]
    fn unhealthy_peers_are_skipped_and_none_when_all_are() {
        let ring = Ring::build(100, vec![(peer(1), 1), (peer(2), 1)], None);
        ring.peers[0].health.set(false);
        assert!((0..100).all(|i| ring.pick(i).unwrap().addr.port() == 2));
        ring.peers[1].health.set(false);
        assert!(ring.pick(7).is_none());
    }

    #[test]
    fn no_weight_no_peer() {
        assert!(Ring::build(100, vec![], None).pick(0).is_none());
    }
}
