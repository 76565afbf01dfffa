//! HTTP/2 clients, fed to the one request pipeline.
//!
//! hyper's h2 speaks the protocol; each request it yields is handed, as HTTP/1.1, to the same
//! engine that serves HTTP/1 clients (`direct::serve`), over an in-memory pipe: routing,
//! plugins, balancing, retries, the gateway's own fields and pages, logging and metrics are
//! written once, for both protocols. The pipe costs an encode and a parse of each head in
//! memory, which is small next to the TLS and framing work an HTTP/2 request already does,
//! and it keeps a second copy of the pipeline (which used to drift from the first) from
//! existing at all.
//!
//! What differs between the protocols is settled here, on the way in and out:
//! - `:authority` is the request's Host (RFC 9113 §8.3.1), and the target is sent in origin
//!   form;
//! - split `cookie` fields are joined with `; ` (RFC 9113 §8.2.3);
//! - the engine learns, from the connection, that the client speaks HTTP/2, so that plugins
//!   and loggers see version 2;
//! - fields that only mean something to an HTTP/1 connection (`Connection`, `Keep-Alive`,
//!   `Transfer-Encoding`, `Upgrade`) are dropped from the answer, as HTTP/2 forbids them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use super::direct::{self, ClientIo};
use super::h1::rewind::Rewind;
use super::{Proxy, ProxyError};
use crate::codec::fields::{field, Field};
use crate::message::Conn;

/// The fields an answer from the engine may carry: the upstream's (at most
/// `codec::framing::MAX_UPSTREAM_HEADERS`), the gateway's own and what plugins add. hyper's
/// default (100) would refuse a full upstream answer.
const ANSWER_FIELDS: usize = 1000;

/// How much of a body the pipe between the HTTP/2 stream and the engine holds in each
/// direction before it pushes back.
const PIPE: usize = 64 * 1024;

/// An HTTP/2 connection (negotiated with ALPN, or spoken over TLS with prior knowledge, its
/// first bytes already read): hyper's h2 serves it until it ends, shutdown drains it, or it
/// has had no stream open for `header_read` (as an HTTP/1 connection may wait that long
/// between requests); then it is told to go away (GOAWAY) once its last stream is done.
pub async fn serve_h2<S: ClientIo>(
    proxy: Arc<Proxy>,
    conn: Arc<Conn>,
    tcp: S,
    read: Bytes,
    mut shutdown: watch::Receiver<bool>,
    header_read: Duration,
) {
    let conn = Arc::new(Conn { http2: true, ..Conn::clone(&conn) });
    let (count, mut open_streams) = watch::channel(0usize);
    let count = Arc::new(count);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (proxy, conn, open) = (proxy.clone(), conn.clone(), Open::new(&count));
        async move { Ok::<_, Infallible>(stream(proxy, conn, req, header_read, open).await) }
    });
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(Rewind { read, inner: tcp }), service);
    let mut connection = std::pin::pin!(connection);
    loop {
        let idle = *open_streams.borrow_and_update() == 0;
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = shutdown.changed() => break,
            // A stream opened or ended: the idle limit counts from the last one's end.
            Ok(()) = open_streams.changed() => {}
            () = tokio::time::sleep(header_read), if idle => break,
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// [`serve_h2`] for a connection the engine found speaking HTTP/2 with prior knowledge. Boxed,
/// because HTTP/2 hands its streams back to the engine, and a future type cannot contain
/// itself; rare, so the box is paid here rather than for every stream.
pub(super) fn prior_knowledge<S: ClientIo>(
    proxy: Arc<Proxy>,
    conn: Arc<Conn>,
    tcp: S,
    read: Bytes,
    shutdown: watch::Receiver<bool>,
    header_read: Duration,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(serve_h2(proxy, conn, tcp, read, shutdown, header_read))
}

/// One HTTP/2 request, answered by the HTTP/1 engine over a pipe of its own.
async fn stream(
    proxy: Arc<Proxy>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
    header_read: Duration,
    open: Open,
) -> Response<StreamBody> {
    let Some(req) = as_http1(req) else {
        return own(&proxy, ProxyError::BadRequest("an invalid request target"));
    };
    let (ours, engine) = tokio::io::duplex(PIPE);
    // Shutdown is the HTTP/2 connection's to handle (it drains its streams): a pipe carries one
    // request, which its engine must not drop for a shutdown it sees first.
    static NEVER: std::sync::LazyLock<watch::Sender<bool>> = std::sync::LazyLock::new(|| watch::channel(false).0);
    tokio::spawn(direct::serve(proxy.clone(), conn, engine, NEVER.subscribe(), header_read));
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::Builder::new().max_headers(ANSWER_FIELDS).handshake(TokioIo::new(ours)).await
    else {
        return own(&proxy, ProxyError::RequestTimeout);
    };
    // Driven here until the answer's head is in, so that a stream the client resets (which
    // drops this future) closes the pipe, and the engine sees its client leave, as it sees
    // an HTTP/1 client leave.
    let mut connection = Box::pin(connection);
    let answer = sender.send_request(req);
    let mut answer = std::pin::pin!(answer);
    let mut ended = false;
    let answered = loop {
        tokio::select! {
            biased;
            a = answer.as_mut() => break a,
            _ = connection.as_mut(), if !ended => ended = true,
        }
    };
    if !ended {
        // The body is still to come through the pipe.
        tokio::spawn(connection);
    }
    match answered {
        Ok(resp) => for_http2(resp.map(|body| StreamBody::Engine { body, _open: open })),
        // An answer that does not parse (past the fields above): the upstream's, as a 502.
        Err(e) if e.is_parse() => own(&proxy, ProxyError::Upstream(e.to_string())),
        // The engine ends a request without an answer when its client stops sending a short
        // body before the head deadline, as it closes an HTTP/1 connection then: nginx's 408.
        Err(e) => {
            tracing::debug!(error = %e, "an HTTP/2 request was not answered by the engine");
            own(&proxy, ProxyError::RequestTimeout)
        }
    }
}

/// One open stream of an HTTP/2 connection, counted until its answer is sent or abandoned.
pub struct Open(Arc<watch::Sender<usize>>);

impl Open {
    fn new(count: &Arc<watch::Sender<usize>>) -> Open {
        count.send_modify(|n| *n += 1);
        Open(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What an HTTP/2 stream's answer carries: the engine's answer as it streams through the pipe
/// (and the stream's place among the open ones), or a page of the adapter's own.
pub enum StreamBody {
    /// The stream stays counted as open until its answer is sent or abandoned.
    Engine {
        body: Incoming,
        _open: Open,
    },
    Page(Option<Bytes>),
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            StreamBody::Engine { body, .. } => std::pin::Pin::new(body).poll_frame(cx),
            StreamBody::Page(b) => std::task::Poll::Ready(b.take().map(|b| Ok(hyper::body::Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            StreamBody::Engine { body, .. } => body.is_end_stream(),
            StreamBody::Page(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            StreamBody::Engine { body, .. } => body.size_hint(),
            StreamBody::Page(b) => hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// The HTTP/2 request as an HTTP/1.1 one, its body streaming as it comes; `None` for a
/// target that has no origin form.
fn as_http1(req: Request<Incoming>) -> Option<Request<Incoming>> {
    use hyper::body::Body as _;
    let (mut parts, body) = req.into_parts();
    if let Some(authority) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
        parts.headers.insert(header::HOST, authority);
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = Uri::try_from(target).ok()?;
    parts.version = Version::HTTP_11;
    join_cookies(&mut parts.headers);
    // An interim `100 Continue` cannot reach an HTTP/2 client from here (hyper's h2 sends
    // none, and its HTTP/1 client swallows the engine's): the client sends its body after its
    // own wait, and the engine takes it as any other body.
    parts.headers.remove(header::EXPECT);
    // A body without a length goes chunked: hyper would drop one on a GET or HEAD.
    if !body.is_end_stream() && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        parts.headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    Some(Request::from_parts(parts, body))
}

/// HTTP/2 lets a client split its cookies over several fields; HTTP/1.1 carries one.
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else { return };
    let mut joined = first.as_bytes().to_vec();
    for c in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(c.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// One of Gatehouse's own pages for a request the engine could not take, with `Server` only
/// if the `headers` setting lets it (as the engine writes its own).
fn own(proxy: &Proxy, e: ProxyError) -> Response<StreamBody> {
    let mut resp = e.into_response(None).map(|mut page| StreamBody::Page(Some(page.take())));
    if !proxy.headers.server {
        resp.headers_mut().remove(header::SERVER);
    }
    for_http2(resp)
}

/// An answer as HTTP/2 carries it: without the fields that only mean something to an HTTP/1
/// connection, which HTTP/2 forbids.
fn for_http2(mut resp: Response<StreamBody>) -> Response<StreamBody> {
    // Names of fields to remove, collected first (the map cannot be changed while read); on
    // the stack, as an answer has a few such fields at most.
    let http1_only: smallvec::SmallVec<[header::HeaderName; 4]> = resp
        .headers()
        .keys()
        .filter(|n| {
            matches!(field(n.as_str()), Field::HopByHop | Field::Connection | Field::TransferEncoding | Field::Upgrade)
        })
        .cloned()
        .collect();
    for name in http1_only {
        resp.headers_mut().remove(name);
    }
    *resp.version_mut() = Version::HTTP_2;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that has had no stream open for the idle limit is closed; one whose
    /// stream just ended is not closed at once.
    #[tokio::test]
    async fn a_connection_with_no_stream_open_is_closed_after_the_idle_limit() {
        let proxy = Proxy::unconfigured();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let conn = Arc::new(Conn::new(peer, true, addr.port()));
            let (_stop, stopped) = watch::channel(false);
            serve_h2(proxy, conn, tcp, Bytes::new(), stopped, Duration::from_millis(400)).await;
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        // One request (no configuration: Kong's 404), then nothing.
        let req = Request::get("https://a.test/x").body(http_body_util::Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 404);
        drop(resp);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!served.is_finished(), "closed before the idle limit");
        tokio::time::timeout(Duration::from_secs(5), served).await.expect("the idle connection is closed").unwrap();
    }

    #[test]
    fn split_cookies_are_joined_in_order() {
        let mut h = http::HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
    }
}
