//! aws-lambda (kong-0.14-plugins §6.4): invokes a Lambda function instead of proxying, and
//! answers with what it returned. The request is signed with AWS Signature Version 4 by the
//! `aws-sigv4` crate. `host` and `port` (Kong 2.x's fields) point it at another
//! Lambda-compatible endpoint; AWS's own endpoint is reached over verified TLS, another one
//! without verification (as Kong 0.14 reached every endpoint).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use super::log::tcp_log::{self, Target};
use super::{Access, BuildError, Plugin, Rejected, Reply, RequestCtx};
use crate::message::{ResBody, SERVER_TOKEN};

struct Function {
    target: Target,
    /// AWS's own endpoint: its certificate is verified.
    verified: bool,
    host: String,
    path_and_query: String,
    region: String,
    key: String,
    secret: String,
    invocation_type: HeaderValue,
    log_type: HeaderValue,
    unhandled_status: Option<http::StatusCode>,
    forward_method: bool,
    forward_uri: bool,
    forward_headers: bool,
    forward_body: bool,
    /// Connections kept for `keepalive` after use (never held across a request's own I/O).
    idle: Mutex<Vec<(http1::SendRequest<Full<Bytes>>, tokio::time::Instant)>>,
}

pub struct AwsLambda {
    function: Arc<Function>,
}

#[derive(Debug, thiserror::Error)]
enum InvokeError {
    #[error("connecting: {0}")]
    Connect(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("signing: {0}")]
    Sign(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl AwsLambda {
    pub fn new(config: &Value) -> Result<AwsLambda, BuildError> {
        let text = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_owned);
        let need = |k: &str| text(k).ok_or_else(|| BuildError(format!("{k} is required")));
        let region = need("aws_region")?;
        let custom = text("host").filter(|h| !h.is_empty());
        let host = custom.clone().unwrap_or_else(|| format!("lambda.{region}.amazonaws.com"));
        let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(false);
        let ms = |k: &str| Duration::from_millis(config.get(k).and_then(Value::as_u64).unwrap_or(60_000));
        let mut path_and_query = format!("/2015-03-31/functions/{}/invocations", need("function_name")?);
        if let Some(q) = text("qualifier").filter(|q| !q.is_empty()) {
            path_and_query.push_str(&format!("?Qualifier={q}"));
        }
        let header = |k: &str, d: &str| {
            HeaderValue::from_str(&text(k).unwrap_or_else(|| d.to_owned())).map_err(|e| BuildError(e.to_string()))
        };
        Ok(AwsLambda {
            function: Arc::new(Function {
                target: Target {
                    host: host.clone(),
                    port: u16::try_from(config.get("port").and_then(Value::as_u64).unwrap_or(443))
                        .map_err(|_| BuildError("port must be at most 65535".into()))?,
                    timeout: ms("timeout"),
                    keepalive: ms("keepalive"),
                    tls: Some(host.clone()),
                },
                verified: custom.is_none(),
                host,
                path_and_query,
                region,
                key: need("aws_key")?,
                secret: need("aws_secret")?,
                invocation_type: header("invocation_type", "RequestResponse")?,
                log_type: header("log_type", "Tail")?,
                unhandled_status: config
                    .get("unhandled_status")
                    .and_then(Value::as_u64)
                    .map(|n| u16::try_from(n).ok().and_then(|n| http::StatusCode::from_u16(n).ok()))
                    .map(|s| s.ok_or_else(|| BuildError("unhandled_status must be a status code".into())))
                    .transpose()?,
                forward_method: flag("forward_request_method"),
                forward_uri: flag("forward_request_uri"),
                forward_headers: flag("forward_request_headers"),
                forward_body: flag("forward_request_body"),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }
}

impl Function {
    /// The payload, as Kong builds it: the `forward_request_*` parts asked for, or (with none
    /// asked for) the query and body arguments merged.
    fn payload(&self, ctx: &RequestCtx<'_>) -> Value {
        let target = ctx.target.to_owned();
        if !(self.forward_method || self.forward_uri || self.forward_headers || self.forward_body) {
            let mut args = match super::log::query_json(&target) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            if let Some(Value::Object(body)) = super::body::parse(ctx) {
                args.extend(body);
            }
            return Value::Object(args);
        }
        let mut p = Map::new();
        if self.forward_method {
            p.insert("request_method".into(), json!(ctx.method.as_str()));
        }
        if self.forward_headers {
            p.insert("request_headers".into(), super::log::headers_json(ctx.headers));
        }
        if self.forward_uri {
            p.insert("request_uri".into(), json!(target));
            p.insert("request_uri_args".into(), super::log::query_json(&target));
        }
        if self.forward_body {
            let known = ctx.header("content-type").is_some_and(|ct| {
                let ct = ct.to_ascii_lowercase();
                ct.contains("json") || ct.contains("x-www-form-urlencoded") || ct.contains("multipart/form-data")
            });
            let raw = ctx.read_body().unwrap_or_default();
            let args = if known { super::body::parse(ctx).unwrap_or(json!({})) } else { json!({}) };
            if known {
                p.insert("request_body".into(), json!(String::from_utf8_lossy(&raw)));
            } else {
                // A body of a type Kong does not know is sent in base64.
                p.insert("request_body".into(), json!(base64::engine::general_purpose::STANDARD.encode(&raw)));
                p.insert("request_body_base64".into(), json!(true));
            }
            p.insert("request_body_args".into(), args);
        }
        Value::Object(p)
    }

    /// The signed invocation request.
    fn request(&self, body: Bytes) -> Result<http::Request<Full<Bytes>>, InvokeError> {
        let uri = format!("https://{}:{}{}", self.host, self.target.port, self.path_and_query);
        let mut req = http::Request::builder()
            .method("POST")
            .uri(&uri)
            .header("host", &self.host)
            .header("x-amz-target", "invoke")
            .header("x-amz-invocation-type", self.invocation_type.clone())
            .header("x-amz-log-type", self.log_type.clone())
            .header("content-type", "application/x-amz-json-1.1")
            .header("content-length", body.len())
            .body(Full::new(body.clone()))
            .map_err(|e| InvokeError::Sign(e.to_string()))?;
        sign(&mut req, &body, &self.key, &self.secret, &self.region)?;
        // Sent in origin form; the host travels in Host.
        *req.uri_mut() =
            self.path_and_query.parse().map_err(|e: http::uri::InvalidUri| InvokeError::Sign(e.to_string()))?;
        Ok(req)
    }

    async fn connection(&self) -> Result<http1::SendRequest<Full<Bytes>>, InvokeError> {
        {
            let mut idle = self.idle.lock().await;
            while let Some((sender, used)) = idle.pop() {
                if used.elapsed() <= self.target.keepalive && !sender.is_closed() {
                    return Ok(sender);
                }
            }
        }
        let io = if self.verified {
            tcp_log::connect_verified(&self.target).await?
        } else {
            tcp_log::connect(&self.target).await?
        };
        let (sender, driver) = http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(sender)
    }

    async fn invoke(&self, payload: Bytes) -> Result<http::Response<Bytes>, InvokeError> {
        let exchange = async {
            let mut sender = self.connection().await?;
            sender.ready().await?;
            let resp = sender.send_request(self.request(payload)?).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            self.idle.lock().await.push((sender, tokio::time::Instant::now()));
            Ok::<_, InvokeError>(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(self.target.timeout, exchange)
            .await
            .map_err(|_| InvokeError::Timeout(self.target.timeout))?
    }

    async fn run(self: Arc<Self>, ctx: &mut RequestCtx<'_>) -> Result<(), Rejected> {
        let payload = Bytes::from(self.payload(ctx).to_string());
        let answer = match self.invoke(payload).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, function = %self.path_and_query, "aws-lambda: invocation failed");
                return Err(Reply::unexpected().build());
            }
        };
        let (parts, body) = answer.into_parts();
        let unhandled = parts.headers.get("x-amz-function-error").is_some_and(|v| v == "Unhandled");
        let status = match (self.unhandled_status, unhandled) {
            (Some(s), true) => s,
            _ => parts.status,
        };
        let mut resp = http::Response::new(ResBody::full(body));
        *resp.status_mut() = status;
        for (name, value) in &parts.headers {
            if !matches!(name.as_str(), "connection" | "keep-alive" | "transfer-encoding" | "content-length") {
                resp.headers_mut().append(name.clone(), value.clone());
            }
        }
        resp.headers_mut().insert(http::header::VIA, HeaderValue::from_static(SERVER_TOKEN));
        Err(Box::new(resp))
    }
}

/// Signs `req` for the Lambda service with AWS Signature Version 4.
fn sign(
    req: &mut http::Request<Full<Bytes>>,
    body: &[u8],
    key: &str,
    secret: &str,
    region: &str,
) -> Result<(), InvokeError> {
    use aws_sigv4::http_request::{sign as sigv4, SignableBody, SignableRequest, SigningSettings};
    let identity = aws_credential_types::Credentials::new(key, secret, None, None, "plugin-config").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("lambda")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| InvokeError::Sign(e.to_string()))?
        .into();
    let headers: Vec<(&str, &str)> =
        req.headers().iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))).collect();
    let uri = req.uri().to_string();
    let signable = SignableRequest::new("POST", &uri, headers.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| InvokeError::Sign(e.to_string()))?;
    let (instructions, _) = sigv4(signable, &params).map_err(|e| InvokeError::Sign(e.to_string()))?.into_parts();
    let (headers, _) = instructions.into_parts();
    for header in headers {
        let name = HeaderName::from_bytes(header.name().as_bytes()).map_err(|e| InvokeError::Sign(e.to_string()))?;
        let value = HeaderValue::from_str(header.value()).map_err(|e| InvokeError::Sign(e.to_string()))?;
        req.headers_mut().insert(name, value);
    }
    Ok(())
}

impl Plugin for AwsLambda {
    fn name(&self) -> &'static str {
        "aws-lambda"
    }

    /// The body's arguments (or the body itself) go into the payload.
    fn reads_body(&self, _chunked: bool) -> bool {
        true
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        Access::Wait(Box::pin(self.function.clone().run(ctx)))
    }
}
