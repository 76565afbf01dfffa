//! Responses Gatehouse writes itself, in Kong's shapes: the router's JSON bodies and the
//! upstream error bodies negotiated by `Accept` (kong-0.14-core-behavior §4.8).

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, SERVER, UPGRADE};
use http::{Response, StatusCode};

use crate::message::ResBody;

use crate::message::SERVER_TOKEN;

/// Why a request was not proxied, tagged by where the failure came from (as in Pingora).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route")]
    NoRoute,
    #[error("https required")]
    HttpsRequired,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request line too long")]
    UriTooLong,
    /// The client stopped sending its body (nginx's `client_body_timeout`).
    #[error("the client's body did not come in time")]
    RequestTimeout,
    /// A transfer coding Gatehouse does not decode (nginx's 501).
    #[error("unknown transfer coding")]
    NotImplemented,
    #[error("upstream connect failed: {0}")]
    Connect(String),
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream failed: {0}")]
    Upstream(String),
    #[error("name resolution failed")]
    Dns,
    #[error("no available peer in the upstream's ring")]
    NoPeer,
}

fn json(status: StatusCode, body: &'static str) -> Response<ResBody> {
    let mut resp = Response::new(ResBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    h.insert(SERVER, HeaderValue::from_static(SERVER_TOKEN));
    resp
}

impl ProxyError {
    /// A failure of the upstream itself (connect, timeout, a broken answer), met after the
    /// request was handed to it: Kong's page for it counts as proxied.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(self, ProxyError::Connect(_) | ProxyError::Timeout | ProxyError::Upstream(_))
    }

    pub fn into_response(self, accept: Option<&HeaderValue>) -> Response<ResBody> {
        match self {
            ProxyError::NoRoute => {
                json(StatusCode::NOT_FOUND, "{\"message\":\"no route and no API found with those values\"}\n")
            }
            ProxyError::HttpsRequired => {
                let mut r = json(StatusCode::UPGRADE_REQUIRED, "{\"message\":\"Please use HTTPS protocol\"}\n");
                r.headers_mut().insert(CONNECTION, HeaderValue::from_static("Upgrade"));
                r.headers_mut().insert(UPGRADE, HeaderValue::from_static("TLS/1.2, HTTP/1.1"));
                r
            }
            ProxyError::Dns => json(StatusCode::SERVICE_UNAVAILABLE, "{\"message\":\"name resolution failed\"}\n"),
            ProxyError::NoPeer => json(
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"message\":\"failure to get a peer from the ring-balancer\"}\n",
            ),
            // A request refused for its head: nothing after it on the connection can be trusted.
            ProxyError::BadRequest(_) => closing(StatusCode::BAD_REQUEST, accept),
            ProxyError::NotImplemented => closing(StatusCode::NOT_IMPLEMENTED, accept),
            ProxyError::UriTooLong => closing(StatusCode::URI_TOO_LONG, accept),
            ProxyError::RequestTimeout => closing(StatusCode::REQUEST_TIMEOUT, accept),
            ProxyError::Connect(_) | ProxyError::Upstream(_) => negotiated(StatusCode::BAD_GATEWAY, accept),
            ProxyError::Timeout => negotiated(StatusCode::GATEWAY_TIMEOUT, accept),
        }
    }
}

/// The negotiated page, with `Connection: close`.
fn closing(status: StatusCode, accept: Option<&HeaderValue>) -> Response<ResBody> {
    let mut r = negotiated(status, accept);
    r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

fn message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad request",
        404 => "Not found",
        408 => "Request timeout",
        411 => "Length required",
        412 => "Precondition failed",
        413 => "Payload too large",
        414 => "URI too long",
        417 => "Expectation failed",
        494 => "Request Header Or Cookie Too Large",
        501 => "Not implemented",
        502 => "An invalid response was received from the upstream server",
        503 => "The upstream server is currently unavailable",
        504 => "The upstream server is timing out",
        _ => "An unexpected error occurred",
    }
}

/// The error page in the format the client's `Accept` asks for (html, json, xml, else text).
pub fn negotiated(status: StatusCode, accept: Option<&HeaderValue>) -> Response<ResBody> {
    let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
    let msg = message(status);
    let (content_type, body) = if accept.contains("text/html") {
        (
            "text/html; charset=utf-8",
            format!(
                "<html><head><title>Kong Error</title></head><body><h1>Kong Error</h1><p>{msg}.</p></body></html>\n"
            ),
        )
    } else if accept.contains("application/json") {
        ("application/json; charset=utf-8", format!("{{\"message\":\"{msg}\"}}\n"))
    } else if accept.contains("application/xml") {
        (
            "application/xml; charset=utf-8",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error><message>{msg}</message></error>\n"),
        )
    } else {
        ("text/plain; charset=utf-8", format!("{msg}\n"))
    };
    let mut resp = Response::new(ResBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(SERVER, HeaderValue::from_static(SERVER_TOKEN));
    resp
}
