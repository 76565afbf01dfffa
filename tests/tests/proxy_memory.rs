#![allow(clippy::unwrap_used)]
//! A data plane gives back the memory of closed connections without waiting for traffic.

use std::time::Duration;

use gatehouse_tests::cluster::DbLess;
use tokio::io::AsyncWriteExt;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the data plane runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// 1,500 connections that each sent half a request head grow the data plane by tens of MB;
/// once they close and nothing else happens, that memory goes back to the system within
/// seconds (each worker trims its heap every second; before, it stayed until later
/// allocations on the worker released it, 8–10 s here and indefinitely on an idle proxy).
#[tokio::test]
async fn memory_of_closed_idle_connections_is_returned_while_idle() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kong.yml");
    std::fs::write(&file, "_format_version: \"1.1\"\n").unwrap();
    let [proxy, status] = gatehouse_tests::free_ports();
    let dp = DbLess::start(&file, proxy, status).await;
    let pid = dp.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid);

    let mut conns = Vec::new();
    for _ in 0..1500 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", proxy)).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Half: ").await.unwrap();
        conns.push(c);
    }
    // Wait until the data plane has taken them all in.
    let mut open = before;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        open = rss_kib(pid);
        if open > before + 15 * 1024 {
            break;
        }
    }
    let grown = open.saturating_sub(before);
    assert!(grown > 15 * 1024, "1,500 connections should cost over 15 MB, grew {grown} KiB; logs:\n{}", dp.logs());
    drop(conns);

    let goal = before + grown / 5;
    let mut after = open;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = rss_kib(pid);
        if after <= goal {
            break;
        }
    }
    eprintln!("RSS before {before} KiB, open {open} KiB, after {after} KiB");
    assert!(
        after <= goal,
        "RSS {before} KiB before, {open} KiB with the connections, still {after} KiB 5 s after they closed"
    );
}
