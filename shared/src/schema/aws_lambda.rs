//! aws-lambda's config (priority 750): the function to invoke, AWS credentials and region,
//! and which parts of the request are forwarded in the payload.

use serde_json::Value;

use super::field::{Field, Fill, Kind, Object, Table};
use super::PluginSchema;

/// The regions Kong 0.14.1 knew about.
const REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-west-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-south-1",
    "ca-central-1",
    "eu-central-1",
    "eu-west-1",
    "eu-west-2",
    "sa-east-1",
];

pub(super) static PLUGIN: PluginSchema = PluginSchema::new(
    "aws-lambda",
    750,
    Table::new(&[
        Field::new("timeout", Kind::Number).default(Fill::Int(60_000)).required(),
        Field::new("keepalive", Kind::Number).default(Fill::Int(60_000)).required(),
        Field::new("aws_key", Kind::String).required(),
        Field::new("aws_secret", Kind::String).required(),
        Field::new("aws_region", Kind::String).required().one_of(REGIONS),
        Field::new("function_name", Kind::String).required(),
        Field::new("qualifier", Kind::String),
        Field::new("invocation_type", Kind::String).required().default(Fill::Str("RequestResponse")).one_of(&[
            "RequestResponse",
            "Event",
            "DryRun",
        ]),
        Field::new("log_type", Kind::String).required().default(Fill::Str("Tail")).one_of(&["Tail", "None"]),
        Field::new("port", Kind::Number).default(Fill::Int(443)),
        // Kong 2.x's: an endpoint other than `lambda.<region>.amazonaws.com` (a local
        // Lambda-compatible service); its certificate is then not verified.
        Field::new("host", Kind::String),
        Field::new("unhandled_status", Kind::Number).check(status_code),
        Field::new("forward_request_method", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("forward_request_uri", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("forward_request_headers", Kind::Boolean).default(Fill::Bool(false)),
        Field::new("forward_request_body", Kind::Boolean).default(Fill::Bool(false)),
    ]),
);

/// It replaces the status line of an errored invocation, so it must be a 3-digit status.
fn status_code(value: Option<&Value>, _: &Object) -> Result<(), String> {
    match value.and_then(Value::as_f64) {
        Some(status) if !(100.0..=999.0).contains(&status) => {
            Err("unhandled_status must be within 100 - 999.".to_string())
        }
        _ => Ok(()),
    }
}
