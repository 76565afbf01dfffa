//! Responses plugins produce (kong-0.14-plugins §1.5): the legacy helper's
//! `{"message":"…"}` followed by a newline, the PDK exit's (key-auth) without it, or a JSON
//! object as it is.

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, SERVER};
use http::{Response, StatusCode};
use serde_json::Value;

use crate::message::{ResBody, SERVER_TOKEN};

/// Builder for a plugin's own response.
pub struct Reply(Response<ResBody>);

fn json_escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl Reply {
    fn with_body(status: u16, body: String) -> Reply {
        let mut r = Response::new(ResBody::full(body));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        h.insert(SERVER, HeaderValue::from_static(SERVER_TOKEN));
        Reply(r)
    }

    /// No body, no Content-Type: Kong's responses helper for a status with no text.
    pub fn empty(status: u16) -> Reply {
        let mut r = Reply::with_body(status, String::new());
        r.0.headers_mut().remove(CONTENT_TYPE);
        r
    }

    /// Kong's responses helper in full: the text, or the status's default text (401, 404,
    /// 405, 503; 500 always its fixed one), or no body at all.
    pub fn helper(status: u16, text: Option<&str>) -> Reply {
        let default = match status {
            401 => Some("Unauthorized"),
            404 => Some("Not found"),
            405 => Some("Method not allowed"),
            503 => Some("Service unavailable"),
            _ => None,
        };
        match (status, text.or(default)) {
            (500, _) => Reply::unexpected(),
            (_, Some(t)) => Reply::message(status, t),
            (_, None) => Reply::empty(status),
        }
    }

    /// A body sent as it is, with its own Content-Type (request-termination's `body`).
    pub fn raw(status: u16, body: bytes::Bytes, content_type: &str) -> Reply {
        let mut r = Reply::with_body(status, String::new());
        *r.0.body_mut() = ResBody::full(body);
        match HeaderValue::from_str(content_type) {
            Ok(v) => r.0.headers_mut().insert(CONTENT_TYPE, v),
            Err(_) => r.0.headers_mut().remove(CONTENT_TYPE),
        };
        r
    }

    /// `{"message":"<text>"}\n`, as Kong's responses helper sends it.
    pub fn message(status: u16, text: &str) -> Reply {
        Reply::with_body(status, format!("{{\"message\":{}}}\n", json_escape(text)))
    }

    /// `{"message":"<text>"}` without the newline, as the PDK's `kong.response.exit` sends it.
    pub fn exit(status: u16, text: &str) -> Reply {
        Reply::with_body(status, format!("{{\"message\":{}}}", json_escape(text)))
    }

    /// A JSON object body as it is (oauth2 and jwt errors), newline-terminated.
    pub fn object(status: u16, body: &Value) -> Reply {
        Reply::with_body(status, format!("{body}\n"))
    }

    /// 500 with Kong's fixed text; the cause is only logged.
    pub fn unexpected() -> Reply {
        Reply::message(500, "An unexpected error occurred")
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.0.headers_mut().insert(HeaderName::from_static(name), v);
        }
        self
    }

    pub fn build(self) -> Rejected {
        Box::new(self.0)
    }
}

/// A plugin's answer instead of the upstream's (boxed: it is the rare path).
pub type Rejected = Box<Response<ResBody>>;
