//! What the general path counts for `crate::metrics` and traces while it answers a request.

use std::time::Instant;

use http::header::HeaderValue;
use http::{Request, Response};

use super::{body, ResBody};
use crate::metrics::{self, Series};
use crate::plugins;

/// What the general path learns of a request for `crate::metrics` while answering it.
pub(super) struct Measured {
    pub(super) started: Instant,
    pub(super) series: Series,
    pub(super) ingress: u64,
    pub(super) upstream_ms: Option<u64>,
    pub(super) kong_ms: Option<u64>,
    pub(super) trace: Option<Box<crate::trace::Trace>>,
}

impl Measured {
    pub(super) fn begin<B: hyper::body::Body>(req: &Request<B>) -> Measured {
        let series = Series::unrouted();
        let mut ingress = 0;
        if series != Series::OFF {
            metrics::request_started();
            // The head as sent (close enough for HTTP/2), and the body its length announces.
            let line = req.method().as_str().len() + req.uri().path_and_query().map_or(1, |p| p.as_str().len()) + 10;
            ingress = plugins::log::head_size(line, req.headers()) + req.body().size_hint().exact().unwrap_or(0);
        }
        let trace = if crate::trace::on() { begin_trace(req.headers()) } else { None };
        Measured { started: Instant::now(), series, ingress, upstream_ms: None, kong_ms: None, trace }
    }

    /// The answer, its body counted and its request recorded once the body is done.
    pub(super) fn count(mut self, resp: Response<ResBody>, started: Instant) -> Response<ResBody> {
        // Handed to the body from here: nothing is left for `Drop`.
        let series = std::mem::replace(&mut self.series, Series::OFF);
        let trace = self.trace.take();
        if series == Series::OFF && trace.is_none() {
            return resp;
        }
        let (parts, inner) = resp.into_parts();
        let egress = plugins::log::head_size(13 + parts.status.canonical_reason().map_or(0, str::len), &parts.headers);
        let observation = metrics::Observation {
            series,
            status: parts.status.as_u16(),
            request_ms: 0,
            upstream_ms: self.upstream_ms,
            kong_ms: self.kong_ms.unwrap_or_else(|| metrics::ms(started, Instant::now())),
            ingress: self.ingress,
            egress,
        };
        let pending = metrics::Pending { observation, started, trace };
        Response::from_parts(parts, ResBody::Counted(Box::new(body::Counted { inner, pending })))
    }
}

/// A request whose client went away before it was answered (hyper dropped its future): it
/// is counted, and its trace ended, with nginx's 499, as Kong logs such a request.
impl Drop for Measured {
    fn drop(&mut self) {
        let series = std::mem::replace(&mut self.series, Series::OFF);
        if series == Series::OFF && self.trace.is_none() {
            return;
        }
        let observation = metrics::Observation {
            series,
            status: CLIENT_CLOSED,
            request_ms: 0,
            upstream_ms: self.upstream_ms,
            kong_ms: self.kong_ms.unwrap_or(0),
            ingress: self.ingress,
            egress: 0,
        };
        let mut pending = metrics::Pending { observation, started: self.started, trace: self.trace.take() };
        pending.finish();
    }
}

/// nginx's status for a request its client closed before the answer.
const CLIENT_CLOSED: u16 = 499;

/// The trace of a request on the general path, when it is sampled.
fn begin_trace(h: &http::HeaderMap) -> Option<Box<crate::trace::Trace>> {
    let incoming = crate::trace::incoming(|name| h.get(name).map(HeaderValue::as_bytes));
    crate::trace::Trace::begin(incoming, Instant::now())
}
