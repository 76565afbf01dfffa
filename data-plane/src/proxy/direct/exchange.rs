//! One request on a connection, from its parsed head to the end of its answer: Kong's phases
//! in order — route, access, balancer pick and retries, the upstream request, header_filter
//! and body_filter, log.

use std::time::Instant;

use bytes::Buf;
use http::header::HeaderValue;
use tokio::io::AsyncWriteExt;

use super::access::{access, Accessing, Plain};
use super::answer::{answer, answer_error};
use super::log::DirectLog;
use super::request::{self, Body, RequestHead, Seen};
use super::{phases, respond, unless_client_leaves, ClientIo, Next, Scratch, CLIENT_CLOSED};
use crate::balancer::hash::{HashInput, Hashed};
use crate::codec::fields::{field, field_of, has_token, named_by, Field};
use crate::codec::framing::Framing;
use crate::message::Conn;
use crate::metrics;
use crate::proxy::h1::limits::BodyFraming;
use crate::proxy::h1::request_body::{send_streamed, SendError, Streamed};
use crate::proxy::h1::response::{read_head, relay, round_trip, Relay, Trip};
use crate::proxy::h1::write::{line, send};
use crate::proxy::upstream::Connector;
use crate::proxy::waiting::Elapsed;
use crate::proxy::{millis_between, uri, Proxy, ProxyError};
use crate::trace;
use crate::{plugins, router};

/// One request on the direct path.
pub(super) async fn exchange(
    proxy: &Proxy,
    conn: &Conn,
    trusted: bool,
    req: &httparse::Request<'_, '_>,
    body: Body<'_, '_>,
    client: &mut impl ClientIo,
    scratch: &mut Scratch,
) -> Next {
    let Scratch { up, out, answer_by, tally, early } = scratch;
    let started = tally.started;
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        // A head parsed whole has all three.
        return Next::Close;
    };
    let mut seen = Seen { head: method == "HEAD", http10: version == 0, ..Seen::default() };
    // A logging route's entry, finished by whichever answer the request gets.
    let mut log: Option<Box<DirectLog>> = None;
    // A route whose plugins act on answers: what they do to it.
    let mut phased = None;
    // A gateway is no tunnel: CONNECT is refused and its connection closed, so nothing after
    // it is read as a request.
    if method == "CONNECT" {
        return answer_error(
            client,
            out,
            ProxyError::BadRequest("CONNECT is not supported"),
            &seen,
            proxy.headers,
            None,
            log.take(),
        )
        .await;
    }
    let mut client_head = RequestHead::read(req.headers, &mut seen);
    if seen.options > request::MAX_CONNECTION_OPTIONS {
        let refused = ProxyError::BadRequest("too many Connection options");
        return answer_error(client, out, refused, &seen, proxy.headers, None, log.take()).await;
    }
    // Until a streamed body has gone whole, the connection cannot carry another request (what
    // follows may still be body): every answer before that closes it.
    let client_close = seen.close;
    if matches!(body, Body::Streamed(_)) {
        seen.close = true;
    }
    if crate::trace::on() {
        tally.trace = client_head.begin_trace(tally.started);
    }
    let dropped = |name: &str| !seen.connection.is_empty() && named_by(&seen.connection, name);
    let addressed = match request::address(target, &seen) {
        Ok(a) => a,
        Err(refused) => return answer_error(client, out, refused, &seen, proxy.headers, None, log.take()).await,
    };
    let (target, host) = (addressed.target(), addressed.host);
    let config = proxy.live.load();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if crate::proxy::headers::climbs_above_root(path) {
        let refused = ProxyError::BadRequest("the path climbs above the root");
        return answer_error(client, out, refused, &seen, proxy.headers, None, log.take()).await;
    }
    let routing = trace::clock(&tally.trace);
    let found = config.router.find(&router::Request { method, path, host });
    trace::phase(&mut tally.trace, routing, "kong.router", Vec::new);
    let Some(m) = found else {
        return answer_error(client, out, ProxyError::NoRoute, &seen, proxy.headers, None, log.take()).await;
    };
    let route = &m.route;
    let chain = config.chain(route);
    let service = &route.service;
    tally.series = route.series;
    if let Some(t) = tally.trace.as_mut() {
        t.attributes.extend(crate::trace::request(method, path, host, &route.id, &route.service.id));
    }
    if route.https_only && !conn.https {
        return answer_error(client, out, ProxyError::HttpsRequired, &seen, proxy.headers, None, log.take()).await;
    }
    let hashing = service.balancer.as_ref().is_some_and(|b| !b.hash.is_none());
    // A hash on a field the gateway writes itself (Host, a length, a forwarding field) or one
    // `Connection` names reads the fields as forwarded, once the upstream request is written.
    let hash_forwarded = hashing
        && service
            .balancer
            .as_ref()
            .is_some_and(|b| b.hash.header_names().any(|n| field(n.as_str()) != Field::Other || dropped(n.as_str())));
    let host_no_port = crate::proxy::headers::without_port(host);
    // A preserved Host is also the TLS server name: such connections serve that name only.
    let sni = (service.https && route.preserve_host).then_some(host_no_port);
    let (mut body, mut streamed) = match body {
        Body::Inline(b) => (b, None),
        Body::Streamed(s) => (&[][..], Some(s)),
    };
    // Plugins may read the body: on their routes a body is read whole first when one of them
    // may read it, as nginx buffers it, up to what plugins read (a client awaiting `100
    // Continue` is told to send it first). A longer one, or one no plugin reads, they see
    // unread, and it streams upstream after them (a waiting client is told to send it then).
    let whole;
    let mut unread = false;
    // Whether the client was told `100 Continue` already.
    let mut continued = false;
    if let Some(s) = streamed.as_deref_mut().filter(|_| !chain.is_empty()) {
        let (too_long, chunked) = match s.framing() {
            BodyFraming::Length(n) => (n > plugins::ctx::BODY_LIMIT as u64, false),
            BodyFraming::Chunked => (false, true),
        };
        if too_long || !chain.reads_body(chunked) {
            unread = true;
        } else {
            if s.expect && !s.started() && !seen.http10 {
                if !send(client, b"HTTP/1.1 100 Continue\r\n\r\n").await {
                    return Next::Close;
                }
                continued = true;
            }
            match s.read_whole(client, plugins::ctx::BODY_LIMIT).await {
                Ok(Some(data)) => {
                    whole = data;
                    body = &whole;
                    streamed = None;
                    seen.close = client_close;
                }
                Ok(None) => unread = true,
                Err(e) => {
                    seen.close = true;
                    return answer_error(client, out, e.refusal(), &seen, proxy.headers, None, log.take()).await;
                }
            }
        }
    }
    let accessed = if chain.is_empty() {
        None
    } else {
        let mut request = Plain {
            method,
            http10: seen.http10,
            target,
            path,
            query,
            body,
            unread,
            started,
            trace: tally.trace.take(),
        };
        // Plugins see no field `Connection` names (a Host or length among them: the gateway
        // writes those all the same).
        let fields = client_head.fields().filter(|(h, kind)| match kind {
            // Framing and upgrades are the gateway's to write; `Kong-Debug` is the gateway's own.
            // `Expect` they see (request-size-limiting answers it with a 417), and it goes no further.
            Field::HopByHop | Field::Connection | Field::TransferEncoding | Field::Upgrade => false,
            Field::KongDebug => false,
            _ => !dropped(h.name),
        });
        let accessing = access(proxy, conn, trusted, &config, route, &mut request, fields).await;
        tally.trace = request.trace.take();
        match accessing {
            Accessing::Forward(mut a) => {
                log = a.log.take();
                phased = a.phases.take();
                // A plugin replaced a body too long for it to read: the client's is not sent
                // (nor read: the connection ends after the answer).
                if unread && !a.streams {
                    streamed = None;
                }
                Some(a)
            }
            Accessing::Answer(reply) => {
                let close = seen.close;
                return answer(client, out, *reply, &seen, close, proxy.headers, None).await;
            }
            Accessing::Refused(refused) => {
                return answer_error(client, out, refused, &seen, proxy.headers, None, log.take()).await;
            }
        }
    };
    let (body, query) = match &accessed {
        Some(a) => (&a.body[..], a.query.as_deref()),
        None => (body, query),
    };
    // A plugin may send the request on with another method or Host.
    let overrides = accessed.as_ref().and_then(|a| a.overrides.as_deref());
    let method = overrides.and_then(|o| o.method.as_ref()).map_or(method, http::Method::as_str);
    let plugin_host = overrides.and_then(|o| o.host.as_ref()).map(HeaderValue::as_bytes);
    let preserved = route.preserve_host.then_some(host.as_bytes());
    // The upstream's answer is framed by the method it got (a plugin may have changed it).
    let upstream_head = method == "HEAD";
    let consumer = accessed.as_ref().and_then(|a| a.overrides.as_ref()).and_then(|o| o.consumer.as_deref());
    // Balanced services hash once per request, on the fields as they
    // are forwarded: as the client sent them or as plugins left them (with the consumer they
    // found), or, for a field the gateway writes, as written below.
    let mut hashed = match (&service.balancer, &accessed) {
        (Some(b), Some(a)) if hashing && !hash_forwarded => {
            b.hash.hash(&HashInput { headers: &a.headers, client_ip: conn.peer.ip(), consumer })
        }
        (Some(b), None) if hashing && !hash_forwarded => b.hash.hash_fields(req.headers, conn.peer.ip()),
        _ => Hashed::default(),
    };

    // The upstream request, all but its Host line (which depends on the peer).
    let strip = if route.strip_path { m.strip } else { None };
    up.clear();
    up.extend_from_slice(method.as_bytes());
    up.push(b' ');
    uri::write_upstream_target(up, path, strip, service.path.as_deref(), query);
    up.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(a) = &accessed {
        a.write_fields(up, req.headers, (conn, trusted, host_no_port), streamed.as_deref().map(Streamed::framing));
    } else {
        let framing = match streamed.as_deref() {
            Some(s) => Ok(s.framing()),
            None => Err(body.len()),
        };
        client_head.write_forwarded(up, &seen, conn, trusted, host_no_port, framing);
    }
    // As Kong's nginx asks for it (`$upstream_connection`, `$upstream_upgrade`).
    if seen.websocket {
        up.extend_from_slice(b"Connection: upgrade\r\nUpgrade: websocket\r\n");
    }
    if let Some(t) = &tally.trace {
        line(up, &[b"traceparent: ", t.traceparent().as_bytes()]);
    }
    if let Some(b) = service.balancer.as_ref().filter(|_| hash_forwarded) {
        // The Host sent to the service, not to a peer (hashed once for every try).
        let host = upstream_host(plugin_host, preserved, None, service);
        let headers = crate::codec::fields::forwarded_fields(up, host);
        hashed = b.hash.hash(&HashInput { headers: &headers, client_ip: conn.peer.ip(), consumer });
    }
    let hash = hashed.hash;
    let base = up.len();

    // Tries = 1 + retries, on failures before a response head (connect errors, timeouts,
    // closed connections), as nginx's `proxy_next_upstream error timeout`.
    // A body held in memory is sent again (as nginx replays the body it buffered); a streamed
    // body only while none of it has gone.
    let idempotent = !matches!(method, "POST" | "PATCH" | "LOCK");
    let replayable =
        |streamed: &Option<&mut Streamed<'_>>| idempotent && streamed.as_ref().is_none_or(|s| s.forwarded == 0);
    // The client waiting to send its body is told to, once it is wanted.
    let waiting = streamed.as_ref().is_some_and(|s| s.expect && !s.started()) && !seen.http10 && !continued;
    if waiting && !send(client, b"HTTP/1.1 100 Continue\r\n\r\n").await {
        return Next::Close;
    }
    if let Some(l) = log.as_mut() {
        let e = &mut l.entry;
        e.method = method.to_owned();
        // The upstream target, as written on the request line.
        e.upstream_uri = up
            .get(method.len() + 1..)
            .and_then(|rest| rest.iter().position(|b| *b == b' ').map(|end| &rest[..end]))
            .map(|t| String::from_utf8_lossy(t).into_owned());
        e.kong_latency_ms = started.elapsed().as_millis() as u64;
    }
    let sent = Instant::now();
    let proxy_latency = millis_between(started, sent);
    let went_upstream = Some((&proxy_latency, sent));
    let mut tries_left = service.retries;
    let mut try_number = 0;
    let mut reused_once = false;
    let mut last_failure = None;
    let (mut upstream, head, peer) = loop {
        let picking = trace::clock(&tally.trace);
        let peer = match &service.balancer {
            Some(b) => match b.ring().pick(b.position(hash, try_number)) {
                Some(p) => Some(p.clone()),
                None => {
                    return answer_error(
                        client,
                        out,
                        last_failure.unwrap_or(ProxyError::NoPeer),
                        &seen,
                        proxy.headers,
                        went_upstream,
                        log.take(),
                    )
                    .await
                }
            },
            None => None,
        };
        try_number += 1;
        if let Some(l) = log.as_mut() {
            l.try_peer(service, peer.as_deref());
        }
        trace::phase(&mut tally.trace, picking, "kong.balancer", || trace::peer(service, peer.as_deref(), try_number));
        up.truncate(base);
        line(up, &[b"Host: ", upstream_host(plugin_host, preserved, peer.as_deref(), service)]);
        up.extend_from_slice(b"\r\n");
        up.extend_from_slice(body);
        let key = peer.as_ref().map_or(&service.pool_key, |p| p.pool_key(service.https));
        // A connection that will be upgraded is a tunnel of its own: never a pooled one.
        let pooled = if seen.websocket || sni.is_some() { None } else { Connector::checkout_raw(key) };
        let from_pool = pooled.is_some();
        let connecting = trace::clock(&tally.trace);
        let mut raw = match pooled {
            Some(c) => c,
            None => match proxy.connector.connect_raw(service, peer.as_deref(), sni).await {
                Ok(c) => {
                    crate::trace::dns(tally.trace.as_deref_mut(), service, c.resolved);
                    trace::call(&mut tally.trace, connecting, "kong.upstream.connect", || {
                        trace::peer(service, peer.as_deref(), try_number)
                    });
                    c
                }
                Err(e @ (ProxyError::Connect(_) | ProxyError::Timeout)) => {
                    if let (Some(b), Some(p)) = (&service.balancer, &peer) {
                        b.observe_failure(p, matches!(e, ProxyError::Timeout), sent);
                    }
                    if tries_left == 0 {
                        return answer_error(client, out, e, &seen, proxy.headers, went_upstream, log.take()).await;
                    }
                    if let Some(l) = log.as_mut() {
                        l.failed(&e);
                    }
                    tries_left -= 1;
                    last_failure = Some(e);
                    continue;
                }
                Err(e) => return answer_error(client, out, e, &seen, proxy.headers, went_upstream, log.take()).await,
            },
        };
        // The first try on a pooled connection starts when the request was sent; others, after
        // their connect.
        let began = if from_pool && try_number == 1 && !reused_once { sent } else { Instant::now() };
        let answer_at = tokio::time::Instant::from_std(began) + service.read_timeout();
        let tripped = match streamed.as_deref_mut() {
            None => {
                let trip = answer_by.within(answer_at, round_trip(&mut raw, up, upstream_head, seen.websocket));
                match unless_client_leaves(client, early, trip).await {
                    Some(tripped) => tripped,
                    // The upstream's connection goes with the request it holds; the request is
                    // counted as nginx's 499 and, as in Kong, not logged.
                    None => {
                        tally.status = CLIENT_CLOSED;
                        return Next::Close;
                    }
                }
            }
            Some(body) => match send_streamed(&mut raw, up, client, body, service.write_timeout(), answer_by).await {
                Ok(()) => {
                    // The rest of a body the upstream answered before taking is not read: the
                    // connection cannot carry another request.
                    seen.close = client_close || !body.sent();
                    let answer_at = tokio::time::Instant::now() + service.read_timeout();
                    answer_by.within(answer_at, read_head(&mut raw, upstream_head, seen.websocket)).await
                }
                Err(SendError::Upstream(trip)) => Ok(Err(trip)),
                Err(SendError::UpstreamTimeout) => Err(Elapsed),
                // The client's fault: the upstream's connection goes (it holds part of a request).
                Err(SendError::Client(refusal)) => {
                    seen.close = true;
                    return answer_error(client, out, refusal, &seen, proxy.headers, None, log.take()).await;
                }
            },
        };
        trace::call(&mut tally.trace, Some(began), "kong.upstream.response", || {
            let status = match &tripped {
                Ok(Ok(head)) => Some(head.code),
                _ => None,
            };
            trace::answered(trace::peer(service, peer.as_deref(), try_number), status)
        });
        let failure = match tripped {
            Ok(Ok(head)) => break (raw, head, peer),
            // A pooled connection the upstream had closed: once, for free.
            Ok(Err(Trip::Stale)) if from_pool && !reused_once && replayable(&streamed) => {
                reused_once = true;
                try_number -= 1;
                if let Some(l) = log.as_mut() {
                    l.entry.tries.pop();
                }
                continue;
            }
            // An answer that is not HTTP is not retried (nginx's `invalid_header` is not among
            // Kong's `proxy_next_upstream error timeout`).
            Ok(Err(e @ (Trip::Invalid | Trip::TooLarge))) => {
                if let (Some(b), Some(p)) = (&service.balancer, &peer) {
                    b.observe_failure(p, false, sent);
                }
                return answer_error(
                    client,
                    out,
                    ProxyError::Upstream(e.to_string()),
                    &seen,
                    proxy.headers,
                    went_upstream,
                    log.take(),
                )
                .await;
            }
            Ok(Err(e)) => ProxyError::Upstream(e.to_string()),
            Err(_) => ProxyError::Timeout,
        };
        if let (Some(b), Some(p)) = (&service.balancer, &peer) {
            b.observe_failure(p, matches!(failure, ProxyError::Timeout), sent);
        }
        if tries_left == 0 || service.retries == 0 || !replayable(&streamed) {
            return answer_error(client, out, failure, &seen, proxy.headers, went_upstream, log.take()).await;
        }
        // Kong marks a try failed when another follows it.
        if let Some(l) = log.as_mut() {
            l.failed(&failure);
        }
        tries_left -= 1;
        last_failure = Some(failure);
    };
    let answered = Instant::now();
    let upstream_latency = millis_between(sent, answered);
    tally.upstream_ms = Some(metrics::ms(sent, answered));
    tally.kong_ms = Some(metrics::ms(started, sent));

    // The response head, rewritten for the client.
    let (head_len, framing) = (head.len, head.framing);
    let head_buf = &upstream.buf[..head_len];
    let status = head.code;
    if let (Some(b), Some(p)) = (&service.balancer, &peer) {
        b.observe_status(p, status, sent);
    }
    let mut connection: smallvec::SmallVec<[&[u8]; 2]> = smallvec::SmallVec::new();
    for (name, value) in head.fields(head_buf) {
        if field_of(name) == Field::Connection {
            connection.push(value);
        }
    }
    // The upstream keeps the connection unless it says otherwise (HTTP/1.0: unless it says so).
    let keeps_alive =
        if head.version == 1 { !has_token(&connection, b"close") } else { has_token(&connection, b"keep-alive") };
    // An upstream that answered before taking all of a streamed body still expects the rest.
    let body_sent = streamed.as_ref().is_none_or(|s| s.sent());
    let mut upstream_reusable = !matches!(framing, Framing::Close) && keeps_alive && body_sent && sni.is_none();
    // A body that ends when the upstream closes goes to the client chunked (as nginx does), so
    // the client's connection outlives it. An HTTP/1.0 client cannot read chunks: a body
    // without a length ends with its connection.
    let unsized_body = matches!(framing, Framing::Chunked | Framing::Close);
    let close = seen.close || (seen.http10 && unsized_body);
    out.clear();
    let answer_head = respond::Answer {
        head: &head,
        buf: head_buf,
        connection: &connection,
        on: proxy.headers,
        upstream_latency: &upstream_latency,
        proxy_latency: &proxy_latency,
        answered,
        debug: seen.debug.then_some(&**route),
        set_cookie: hashed.set_cookie.as_ref(),
    };
    // The upstream agreed to the WebSocket: its answer goes on as it is, with Gatehouse's own
    // fields, and the connection becomes a tunnel (`serve` relays it).
    if status == 101 {
        answer_head.write_switch(out);
        drop(connection);
        if let Some(mut l) = log.take() {
            l.answered(out);
            l.finish(out.len() as u64);
        }
        tally.status = 101;
        tally.egress = out.len() as u64;
        if !send(client, out).await {
            return Next::Close;
        }
        upstream.buf.advance(head_len);
        return Next::Upgrade(Box::new(upstream));
    }
    let Ok(code) = http::StatusCode::from_u16(status) else {
        tally.upstream_ms = None;
        return answer_error(
            client,
            out,
            ProxyError::Upstream("invalid status".into()),
            &seen,
            proxy.headers,
            went_upstream,
            log.take(),
        )
        .await;
    };
    // Fields plugins set replace the upstream's of the same name.
    let plugin_fields = accessed.as_ref().map(|a| &a.response).filter(|r| !r.is_empty());
    let respond::Written { reframed, emptied, status: answered_status, close } =
        answer_head.write(out, code, plugin_fields, phased, seen.http10, close);
    drop(connection);
    let mut log = log.take();
    if let Some(l) = &mut log {
        l.answered(out);
        l.entry.proxy_latency_ms = Some(answered.saturating_duration_since(sent).as_millis() as u64);
        if l.resolved.captures_bodies() {
            l.entry.response_body = Some(bytes::BytesMut::new());
        }
    }
    // The body as sent, for a logger that keeps it (galileo).
    let kept = log.as_mut().map(|l| &mut l.entry.response_body).filter(|b| b.is_some());

    // The body: what came with the head, then the rest as it arrives.
    upstream.buf.advance(head_len);
    let mut bytes_sent = 0;
    let read_timeout = service.read_timeout();
    // A HEAD sent upstream as another method (a plugin changed it): the client gets no body.
    let head_only = seen.head && !upstream_head && !matches!(framing, Framing::NoBody);
    let done = if emptied || head_only {
        // The upstream's body is not read: its connection goes.
        upstream_reusable = false;
        match send(client, out).await {
            true => {
                bytes_sent = out.len() as u64;
                Relay::Done { extra: false }
            }
            false => Relay::ClientGone,
        }
    } else if reframed.is_some() || (kept.is_some() && !matches!(framing, Framing::NoBody)) {
        // Filtered and re-chunked; or, for a logger that keeps bodies, as it came (a length
        // kept, data re-chunked), each piece copied for the log.
        let chunked = !seen.http10 && (reframed.is_some() || !matches!(framing, Framing::Length(_)));
        let filters = reframed.unwrap_or_default();
        phases::relay_filtered(
            &mut upstream,
            client,
            out,
            (framing, chunked),
            filters,
            kept,
            read_timeout,
            answer_by,
            &mut bytes_sent,
            conn.http2,
        )
        .await
    } else {
        let watch = conn.http2;
        relay(&mut upstream, client, out, framing, seen.http10, read_timeout, answer_by, &mut bytes_sent, watch).await
    };
    if let Some(l) = log {
        let logging = Instant::now();
        l.finish(bytes_sent);
        if let Some(t) = tally.trace.as_mut() {
            t.child("kong.log", logging, Instant::now(), Vec::new());
        }
    }
    tally.status = answered_status;
    tally.egress = bytes_sent;
    match done {
        Relay::Done { extra } => upstream_reusable &= !extra,
        Relay::UpstreamBroken | Relay::ClientGone => return Next::Close,
    }
    if upstream_reusable {
        upstream.buf.clear();
        upstream.release();
    }
    if close {
        let _ = client.shutdown().await;
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// The upstream request's Host: a plugin's, else the client's on a route that preserves it,
/// else the peer's (a balanced service) or the service's own.
fn upstream_host<'a>(
    plugin: Option<&'a [u8]>,
    preserved: Option<&'a [u8]>,
    peer: Option<&'a crate::balancer::ring::Peer>,
    service: &'a crate::service::Service,
) -> &'a [u8] {
    match (plugin.or(preserved), peer) {
        (Some(h), _) => h,
        (None, Some(p)) => p.host_header(service.https).as_bytes(),
        (None, None) => service.host_header.as_bytes(),
    }
}
