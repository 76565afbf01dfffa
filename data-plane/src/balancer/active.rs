//! Active probes (kong-0.14-core-behavior §6.3): a loop per direction (targets now healthy,
//! targets now unhealthy), each round splitting the addresses into `concurrency` groups probed
//! in parallel. A probe is `GET <http_path> HTTP/1.0` over plain TCP; only the status line is
//! read.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::health::Report;
use super::ring::Peer;
use super::Balancer;

/// Runs one direction's loop until the balancer is gone.
pub(super) async fn run(balancer: Weak<Balancer>, healthy_side: bool, interval: Duration) {
    loop {
        let started = Instant::now();
        {
            let Some(b) = balancer.upgrade() else { return };
            let peers: Vec<Arc<Peer>> =
                b.ring.load().peers.iter().filter(|p| p.health.available() == healthy_side).cloned().collect();
            round(&b, peers).await;
        }
        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
    }
}

async fn round(b: &Arc<Balancer>, peers: Vec<Arc<Peer>>) {
    let groups = b.checks.concurrency.min(peers.len()).max(1);
    let mut split: Vec<Vec<Arc<Peer>>> = vec![Vec::new(); groups];
    for (i, p) in peers.into_iter().enumerate() {
        split[i % groups].push(p);
    }
    let probes = split.into_iter().map(|group| async move {
        for peer in group {
            let began = std::time::Instant::now();
            if let Some(report) = probe(&peer, &b.checks.http_path, b.checks.timeout, b).await {
                b.report(&peer, report, &b.checks.active, began);
            }
        }
    });
    futures::future::join_all(probes).await;
}

async fn probe(peer: &Peer, path: &str, timeout: Duration, b: &Balancer) -> Option<Report> {
    let io_err = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            Report::Timeout
        } else {
            Report::TcpFailure
        }
    };
    let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(peer.addr)).await {
        Err(_) => return Some(Report::Timeout),
        Ok(Err(e)) => return Some(io_err(e)),
        Ok(Ok(s)) => s,
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", peer.hostname);
    match tokio::time::timeout(timeout, stream.write_all(request.as_bytes())).await {
        Err(_) => return Some(Report::Timeout),
        Ok(Err(e)) => return Some(io_err(e)),
        Ok(Ok(())) => {}
    }
    let mut buf = [0u8; 256];
    let mut len = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    while !buf[..len].contains(&b'\n') && len < buf.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[len..])).await {
            Err(_) => return Some(Report::Timeout),
            Ok(Err(e)) => return Some(io_err(e)),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => len += n,
        }
    }
    match status(&buf[..len]) {
        Some(code) => b.checks.active.classify(code),
        None => Some(Report::HttpFailure),
    }
}

/// The code of an `HTTP/x.y NNN ...` status line.
fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok().filter(|c| (100..1000).contains(c))
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines() {
        assert_eq!(super::status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(super::status(b"HTTP/1.0 503\r\n"), Some(503));
        assert_eq!(super::status(b"garbage\r\n"), None);
        assert_eq!(super::status(b""), None);
    }
}
