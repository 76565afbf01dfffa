//! Body types for both directions, as enums rather than boxes: a request body is the client's
//! stream (or nothing); a response body is the upstream's stream (returning its connection to
//! the pool when it ends) or a short body Gatehouse wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::upstream::Pooled;
use crate::plugins::{BodyFilter, LogEntry, Resolved};

pub enum ReqBody {
    Empty,
    Stream(Incoming),
    /// A body a plugin read into memory (and maybe rewrote).
    Full(Bytes),
    /// A body a plugin began to read and gave up on (too large): what was read, then the rest.
    Prefixed(Option<Bytes>, Incoming),
    /// On the direct path, a body longer than plugins read ([`crate::plugins::ctx::BODY_LIMIT`])
    /// or one no plugin on the route reads: plugins see it unread, and it streams upstream as it
    /// comes once they are done. It never reaches hyper, which sees it as empty.
    Unread,
}

impl ReqBody {
    /// Whether the request carries a body at all (as the log records it).
    pub fn has_body(&self) -> bool {
        match self {
            ReqBody::Empty => false,
            ReqBody::Full(b) => !b.is_empty(),
            ReqBody::Stream(_) | ReqBody::Prefixed(..) | ReqBody::Unread => true,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Empty | ReqBody::Unread => Poll::Ready(None),
            ReqBody::Stream(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Prefixed(prefix, rest) => match prefix.take() {
                Some(p) => Poll::Ready(Some(Ok(Frame::data(p)))),
                None => Pin::new(rest).poll_frame(cx),
            },
            ReqBody::Full(b) => {
                let data = std::mem::take(b);
                if data.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty | ReqBody::Unread => true,
            ReqBody::Stream(b) => b.is_end_stream(),
            ReqBody::Full(b) => b.is_empty(),
            ReqBody::Prefixed(p, rest) => p.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty | ReqBody::Unread => SizeHint::with_exact(0),
            ReqBody::Stream(b) => b.size_hint(),
            ReqBody::Full(b) => SizeHint::with_exact(b.len() as u64),
            ReqBody::Prefixed(p, rest) => {
                let extra = p.as_ref().map_or(0, |p| p.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}

pub enum ResBody {
    Full(Option<Bytes>),
    /// The upstream's body; the connection goes back to the pool once it is fully read.
    Upstream(Incoming, Option<Pooled>),
    /// A body passing through plugins' `body_filter`, whose `log` phase runs once it ends.
    Filtered(Box<Filtered>),
    /// A body whose bytes are counted, its request recorded in `crate::metrics` once it is
    /// dropped (sent whole, or abandoned with its connection).
    Counted(Box<Counted>),
}

/// See [`ResBody::Counted`].
pub struct Counted {
    pub inner: ResBody,
    pub pending: crate::metrics::Pending,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.pending.finish();
    }
}

/// The plugin side of a response body: filters each chunk, then logs off the response path.
pub struct Filtered {
    pub inner: ResBody,
    filters: Vec<Box<dyn BodyFilter>>,
    /// The filters' last words have been sent.
    flushed: bool,
    pub plugins: Option<Resolved>,
    entry: Option<LogEntry>,
}

impl Filtered {
    /// `body` passing through the plugins' body filters (chosen on the response's head) and
    /// log phase (with `entry`, when a plugin logs), or `body` as it is when none of them
    /// wants it.
    pub fn wrap(body: ResBody, plugins: Resolved, head: &http::response::Parts, entry: Option<LogEntry>) -> ResBody {
        if !plugins.wants_body() {
            return body;
        }
        let filters = plugins.body_filters(head);
        let mut entry = entry;
        if let Some(e) = entry.as_mut().filter(|_| plugins.captures_bodies()) {
            e.response_body = Some(bytes::BytesMut::new());
        }
        ResBody::Filtered(Box::new(Filtered { inner: body, filters, flushed: false, entry, plugins: Some(plugins) }))
    }

    /// Runs a chunk through every filter in order.
    fn filter(&mut self, data: Bytes) -> Bytes {
        run_filters(&mut self.filters, data)
    }

    /// What the filters add after the last chunk (once).
    fn flush(&mut self) -> Option<Bytes> {
        if self.flushed {
            return None;
        }
        self.flushed = true;
        end_filters(&mut self.filters)
    }

    /// The body, when it is in memory (a plugin's own answer on the direct path), run through
    /// the filters and counted as sent; the log phase runs when this is dropped.
    pub fn take_full(&mut self) -> Option<Bytes> {
        let ResBody::Full(b) = &mut self.inner else { return None };
        let mut bytes = b.take().unwrap_or_default();
        if !self.filters.is_empty() {
            bytes = self.filter(bytes);
            if let Some(tail) = self.flush() {
                bytes = if bytes.is_empty() { tail } else { [bytes, tail].concat().into() };
            }
        }
        self.sent(&bytes);
        self.flushed = true;
        Some(bytes)
    }

    fn finish(&mut self) {
        if let (Some(plugins), Some(entry)) = (self.plugins.take(), self.entry.take()) {
            plugins.log(entry);
        }
    }

    /// Counts body bytes sent, for the log's `response.size`, and keeps them when a logger
    /// records bodies (a body past the limit is not kept at all, rather than cut).
    fn sent(&mut self, data: &Bytes) {
        if let Some(e) = &mut self.entry {
            e.response_size.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(kept) = &mut e.response_body {
                if kept.len() + data.len() > crate::plugins::ctx::BODY_LIMIT {
                    e.response_body = None;
                } else {
                    kept.extend_from_slice(data);
                }
            }
        }
    }
}

impl Drop for Filtered {
    /// A client that goes away mid-body is still logged.
    fn drop(&mut self) {
        self.finish();
    }
}

impl ResBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResBody {
        ResBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> ResBody {
        ResBody::Full(None)
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResBody::Upstream(body, pooled) => {
                if let Some(conn) = pooled {
                    if !conn.drive(cx) {
                        *pooled = None;
                    }
                }
                let polled = Pin::new(&mut *body).poll_frame(cx);
                // hyper stops polling once `is_end_stream` says so, so the end is noticed
                // either way: a final `None` or a frame after which the body is done.
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    _ => false,
                };
                if ended {
                    if let Some(conn) = pooled.take() {
                        conn.release();
                    }
                }
                polled
            }
            ResBody::Counted(c) => {
                let polled = Pin::new(&mut c.inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(data) = frame.data_ref() {
                        c.pending.observation.egress += data.len() as u64;
                    }
                }
                polled
            }
            ResBody::Filtered(f) => loop {
                if f.flushed {
                    f.finish();
                    return Poll::Ready(None);
                }
                match Pin::new(&mut f.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let frame = match frame.into_data() {
                            Ok(data) if !f.filters.is_empty() => {
                                let data = f.filter(data);
                                // A chunk held back entirely is not sent as an empty frame.
                                if data.is_empty() {
                                    continue;
                                }
                                Frame::data(data)
                            }
                            Ok(data) => Frame::data(data),
                            Err(other) => other,
                        };
                        if let Some(data) = frame.data_ref() {
                            f.sent(data);
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Poll::Ready(None) => {
                        if let Some(tail) = f.flush() {
                            f.sent(&tail);
                            return Poll::Ready(Some(Ok(Frame::data(tail))));
                        }
                        f.finish();
                        return Poll::Ready(None);
                    }
                    other => return other,
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResBody::Full(b) => b.is_none(),
            ResBody::Upstream(body, _) => body.is_end_stream(),
            // Not over until the filters have had their say and the log phase its entry.
            ResBody::Filtered(f) => f.flushed,
            ResBody::Counted(c) => c.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResBody::Full(None) => SizeHint::with_exact(0),
            ResBody::Upstream(body, _) => body.size_hint(),
            // Filters may change the length.
            ResBody::Filtered(_) => SizeHint::default(),
            ResBody::Counted(c) => c.inner.size_hint(),
        }
    }
}

/// Runs a chunk of a response body through every filter in order.
pub(crate) fn run_filters(filters: &mut [Box<dyn BodyFilter>], mut data: Bytes) -> Bytes {
    for f in filters {
        data = f.chunk(data);
    }
    data
}

/// What the filters add after the body's last chunk: each one's end, passed through the
/// filters after it.
pub(crate) fn end_filters(filters: &mut [Box<dyn BodyFilter>]) -> Option<Bytes> {
    let mut out: Option<Bytes> = None;
    for filter in filters {
        let mut carried = match out.take() {
            Some(d) => filter.chunk(d),
            None => Bytes::new(),
        };
        if let Some(tail) = filter.end() {
            carried = if carried.is_empty() { tail } else { [carried, tail].concat().into() };
        }
        out = (!carried.is_empty()).then_some(carried);
    }
    out
}
