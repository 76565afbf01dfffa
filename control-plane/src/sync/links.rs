//! Which traced Admin API write made each revision, so the sync span that sends the
//! revision to data planes links to it. Kept in memory, for the most recent writes of this
//! replica: a revision written through another replica is sent without a link.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Writes remembered; older ones are forgotten (a data plane that far behind gets a snapshot).
const KEPT: usize = 1024;

static WRITES: Mutex<VecDeque<(i64, SpanContext)>> = Mutex::new(VecDeque::new());

/// Remembers the current span (a traced write) as the maker of `revision`.
pub fn remember(revision: i64) {
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    // An unsampled write is exported nowhere: nothing to link to.
    if !sc.is_valid() || !sc.is_sampled() {
        return;
    }
    let mut writes = WRITES.lock().unwrap_or_else(PoisonError::into_inner);
    if writes.len() == KEPT {
        writes.pop_front();
    }
    writes.push_back((revision, sc.clone()));
}

/// The traced writes of the revisions after `from` up to `to`.
pub fn between(from: i64, to: i64) -> Vec<SpanContext> {
    let writes = WRITES.lock().unwrap_or_else(PoisonError::into_inner);
    writes.iter().filter(|(r, _)| *r > from && *r <= to).map(|(_, sc)| sc.clone()).collect()
}

/// The W3C `traceparent` of `span`, or empty when it is not traced.
pub fn traceparent(span: &tracing::Span) -> String {
    let context = span.context();
    let s = context.span();
    let sc = s.span_context();
    if !sc.is_valid() {
        return String::new();
    }
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}
