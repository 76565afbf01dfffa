//! Body types for both directions, as enums rather than boxes: a request body as plugins see
//! it (nothing, in memory, or unread: it streams upstream after them); a response body that
//! Gatehouse wrote itself (an error page, a plugin's answer), or the engine's answer on its
//! way to an HTTP/2 client.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::plugins::{BodyFilter, LogEntry, Resolved};

pub enum ReqBody {
    Empty,
    /// A body read into memory (and maybe rewritten by a plugin).
    Full(Bytes),
    /// A body longer than plugins read ([`crate::plugins::ctx::BODY_LIMIT`]), or one no plugin
    /// on the route reads: plugins see it unread, and it streams upstream as it comes once
    /// they are done.
    Unread,
}

impl ReqBody {
    /// Whether the request carries a body at all (as the log records it).
    pub fn has_body(&self) -> bool {
        match self {
            ReqBody::Empty => false,
            ReqBody::Full(b) => !b.is_empty(),
            ReqBody::Unread => true,
        }
    }
}

pub enum ResBody {
    Full(Option<Bytes>),
    /// The engine's answer to an HTTP/2 request, and its stream's place among the open ones
    /// (see `super::h2`).
    Engine(Incoming, super::h2::Open),
    /// A body Gatehouse wrote itself, passing through plugins' `body_filter`, whose `log`
    /// phase runs once it is sent.
    Filtered(Box<Filtered>),
}

/// The plugin side of one of Gatehouse's own answers: its body filtered, then logged.
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

    /// The body, run through the filters and counted as sent; the log phase runs when this is
    /// dropped.
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
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResBody::Engine(body, _) => Pin::new(body).poll_frame(cx),
            ResBody::Filtered(f) => {
                let data = if f.flushed { None } else { f.take_full() };
                f.finish();
                Poll::Ready(data.filter(|d| !d.is_empty()).map(|d| Ok(Frame::data(d))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResBody::Full(b) => b.is_none(),
            ResBody::Engine(body, _) => body.is_end_stream(),
            ResBody::Filtered(f) => f.flushed,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResBody::Full(None) => SizeHint::with_exact(0),
            ResBody::Engine(body, _) => body.size_hint(),
            // Filters may change the length.
            ResBody::Filtered(_) => SizeHint::default(),
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
