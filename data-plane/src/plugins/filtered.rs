//! The plugin side of one of Gatehouse's own answers (a plugin's, or an error page on a
//! route whose plugins filter bodies or log): its body run through the plugins' body filters,
//! then their log phase once it has been sent.

use bytes::Bytes;

use super::{BodyFilter, LogEntry, Resolved};
use crate::message::{Phased, ResBody};

/// An answer's body on its way through the plugins' `body_filter` and `log` phases.
pub struct Filtered {
    inner: Option<Bytes>,
    filters: Vec<Box<dyn BodyFilter>>,
    plugins: Option<Resolved>,
    entry: Option<LogEntry>,
}

impl Filtered {
    /// `body` passing through the plugins' body filters (chosen on the response's head) and
    /// log phase (with `entry`, when a plugin logs), or `body` as it is when none of them
    /// wants it.
    pub fn wrap(
        mut body: ResBody,
        plugins: Resolved,
        head: &http::response::Parts,
        entry: Option<LogEntry>,
    ) -> ResBody {
        if !plugins.wants_body() {
            return body;
        }
        let filters = plugins.body_filters(head);
        let mut entry = entry;
        if let Some(e) = entry.as_mut().filter(|_| plugins.captures_bodies()) {
            e.response_body = Some(bytes::BytesMut::new());
        }
        let inner = Some(body.take());
        ResBody::Phased(Box::new(Filtered { inner, filters, entry, plugins: Some(plugins) }))
    }

    /// Counts body bytes sent, for the log's `response.size`, and keeps them when a logger
    /// records bodies (a body past the limit is not kept at all, rather than cut).
    fn sent(&mut self, data: &Bytes) {
        if let Some(e) = &mut self.entry {
            e.response_size.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(kept) = &mut e.response_body {
                if kept.len() + data.len() > super::ctx::BODY_LIMIT {
                    e.response_body = None;
                } else {
                    kept.extend_from_slice(data);
                }
            }
        }
    }
}

impl Phased for Filtered {
    fn take_full(&mut self) -> Option<Bytes> {
        let mut bytes = self.inner.take()?;
        if !self.filters.is_empty() {
            bytes = run_filters(&mut self.filters, bytes);
            if let Some(tail) = end_filters(&mut self.filters) {
                bytes = if bytes.is_empty() { tail } else { [bytes, tail].concat().into() };
            }
        }
        self.sent(&bytes);
        Some(bytes)
    }
}

impl Drop for Filtered {
    /// The log phase, once the answer has gone (or the client has: it is still logged).
    fn drop(&mut self) {
        if let (Some(plugins), Some(entry)) = (self.plugins.take(), self.entry.take()) {
            plugins.log(entry);
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
