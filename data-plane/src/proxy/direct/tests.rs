use super::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A direct-path listener with no configuration, whose heads are due within `header_read`.
async fn serving(header_read: Duration) -> std::net::SocketAddr {
    let proxy = Proxy::unconfigured();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        let conn = Arc::new(Conn::new(peer, false, addr.port()));
        let (_stop, stopped) = watch::channel(false);
        serve(proxy, conn, tcp, stopped, header_read).await;
    });
    addr
}

/// Writes `bytes` one at a time, `gap` apart, until the connection refuses one; returns
/// how many went.
async fn trickle(client: &mut TcpStream, bytes: &[u8], gap: Duration) -> usize {
    let mut sent = 0;
    for b in bytes {
        if client.write_all(&[*b]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(gap).await;
    }
    sent
}

/// Between line ends an unfinished head is not parsed again; the one that ends it is.
#[tokio::test]
async fn a_head_trickled_byte_by_byte_is_answered_when_it_ends() {
    let addr = serving(Duration::from_secs(10)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let head = b"GET /trickled HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n";
    assert_eq!(trickle(&mut client, head, Duration::from_millis(2)).await, head.len());
    let mut answer = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut answer)).await.unwrap().unwrap();
    // No configuration: the no-route 404, written as soon as the blank line came.
    assert_eq!(&answer, b"HTTP/1.1 404");
}

/// A client trickling its request head one byte at a time is cut off when the head's
/// deadline passes, however recent its last byte.
#[tokio::test]
async fn a_trickled_head_is_cut_off_at_its_deadline() {
    let addr = serving(Duration::from_millis(300)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let head = b"GET /a-rather-long-path-sent-slowly HTTP/1.1\r\nHost: x\r\n\r\n";
    let sent = trickle(&mut client, head, Duration::from_millis(50)).await;
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest).await;
    assert!(sent < head.len(), "the connection outlived the head's deadline");
    assert!(rest.is_empty(), "nothing is answered to an incomplete head: {rest:?}");
}

/// A head with more fields than the direct path parses is still read here, under the
/// deadline it began with, until it ends: hyper, taking it unfinished, would start afresh.
#[tokio::test]
async fn a_head_with_many_fields_keeps_its_deadline() {
    let addr = serving(Duration::from_millis(1000)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // More fields than the direct path parses, 700 ms in, with 300 ms left.
    for i in 0..MAX_HEADERS + 1 {
        client.write_all(format!("X-F{i}: 1\r\n").as_bytes()).await.unwrap();
    }
    client.write_all(b"X-Pad: ").await.unwrap();
    // At 50 ms a byte, the head's deadline allows about 6 more bytes; a fresh one, about 20.
    let sent = trickle(&mut client, &[b'a'; 60], Duration::from_millis(50)).await;
    assert!(sent < 13, "{sent} bytes were taken after the head's deadline");
}

#[test]
fn absolute_form_targets_split_into_authority_and_origin_form() {
    assert_eq!(super::request::absolute_form("http://a.test/x?y=1"), Some(("a.test", "/x?y=1")));
    assert_eq!(super::request::absolute_form("HTTPS://a.test:8443/"), Some(("a.test:8443", "/")));
    assert_eq!(super::request::absolute_form("http://a.test"), Some(("a.test", "/")));
    assert_eq!(
        super::request::absolute_form("http://a.test?y=1"),
        Some(("a.test", "?y=1")),
        "a query after the authority"
    );
    assert_eq!(super::request::absolute_form("http://a.test#f"), Some(("a.test", "/")), "a fragment alone");
    assert_eq!(super::request::absolute_form("/x?next=http://b.test/"), None, "origin form");
    assert_eq!(super::request::absolute_form("ftp://a.test/x"), Some(("a.test", "/x")), "any scheme");
    assert_eq!(super::request::absolute_form("1a://a.test/x"), None, "not a scheme");
    assert_eq!(super::request::absolute_form("*"), None);
}
