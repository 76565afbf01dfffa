//! `GET /openapi.json`: an OpenAPI 3.0 description of the whole Admin API, so that clients can
//! be generated and the API can be tested black-box (`scripts/test-openapi.sh` runs
//! schemathesis against it). The document is built from the table below, once; a test holds
//! its paths and methods to exactly what the router serves, and schemathesis holds the
//! answers to its schemas.

use std::sync::OnceLock;

use axum::routing::get;
use serde_json::{json, Map, Value};

use super::respond::ok;
use super::Routes;

pub fn router() -> Routes {
    Routes::new().route("/openapi.json", get(|| async { ok(document()) }))
}

/// What an operation does, which decides its answers.
#[derive(Clone, Copy)]
enum Op {
    /// A page of entities (`size`, `offset`).
    List,
    /// A new entity from the body: 201.
    Create,
    /// Create or replace: 201 or 200. `id` in the body (collections) or the path names it.
    Upsert,
    Show,
    Update,
    Delete,
    /// A read whose body is described by a schema of its own.
    Read(&'static str),
    /// A write that answers 204 (target health).
    Mark,
    /// Prometheus text.
    Metrics,
    /// Answered 404 whatever the method: the path exists only so that Kong's answer is kept.
    Gone,
}

/// Every path but the credentials' (see [`CREDENTIALS`]).
/// A path, the entity it serves (a `components/schemas` name) and its operations by method.
type PathItem = (&'static str, &'static str, &'static [(&'static str, Op)]);

const TABLE: &[PathItem] = &[
    ("/", "", &[("get", Op::Read("Node"))]),
    ("/status", "", &[("get", Op::Read("Status"))]),
    ("/status/ready", "", &[("get", Op::Read("Ready"))]),
    ("/metrics", "", &[("get", Op::Metrics)]),
    ("/openapi.json", "", &[("get", Op::Read("Object"))]),
    ("/clustering/data-planes", "", &[("get", Op::Read("DataPlanes"))]),
    ("/services", "Service", &[("get", Op::List), ("post", Op::Create)]),
    (
        "/services/{svc}",
        "Service",
        &[("get", Op::Show), ("put", Op::Upsert), ("patch", Op::Update), ("delete", Op::Delete)],
    ),
    ("/services/{svc}/routes", "Route", &[("get", Op::List), ("post", Op::Create)]),
    ("/services/{svc}/plugins", "Plugin", &[("get", Op::List), ("post", Op::Create), ("put", Op::Upsert)]),
    ("/routes", "Route", &[("get", Op::List), ("post", Op::Create)]),
    (
        "/routes/{route}",
        "Route",
        &[("get", Op::Show), ("put", Op::Upsert), ("patch", Op::Update), ("delete", Op::Delete)],
    ),
    (
        "/routes/{route}/service",
        "Service",
        &[("get", Op::Show), ("put", Op::Upsert), ("patch", Op::Update), ("delete", Op::Delete)],
    ),
    ("/routes/{route}/plugins", "Plugin", &[("get", Op::List), ("post", Op::Create), ("put", Op::Upsert)]),
    ("/consumers", "Consumer", &[("get", Op::List), ("post", Op::Create)]),
    (
        "/consumers/{consumer}",
        "Consumer",
        &[("get", Op::Show), ("put", Op::Upsert), ("patch", Op::Update), ("delete", Op::Delete)],
    ),
    ("/consumers/{consumer}/plugins", "Plugin", &[("get", Op::List), ("post", Op::Create), ("put", Op::Upsert)]),
    (
        "/consumers/{consumer}/plugins/{id}",
        "Plugin",
        &[("get", Op::Show), ("patch", Op::Update), ("delete", Op::Delete)],
    ),
    ("/plugins", "Plugin", &[("get", Op::List), ("post", Op::Create), ("put", Op::Upsert)]),
    ("/plugins/enabled", "", &[("get", Op::Read("EnabledPlugins"))]),
    ("/plugins/schema/{name}", "", &[("get", Op::Read("Object"))]),
    ("/plugins/{id}", "Plugin", &[("get", Op::Show), ("patch", Op::Update), ("delete", Op::Delete)]),
    ("/certificates", "Certificate", &[("get", Op::List), ("post", Op::Create)]),
    (
        "/certificates/{cert}",
        "Certificate",
        &[("get", Op::Show), ("put", Op::Upsert), ("patch", Op::Update), ("delete", Op::Delete)],
    ),
    ("/certificates/{cert}/snis", "Sni", &[("get", Op::List), ("post", Op::Create)]),
    ("/snis", "Sni", &[("get", Op::List), ("post", Op::Create)]),
    ("/snis/{sni}", "Sni", &[("get", Op::Show), ("put", Op::Upsert), ("patch", Op::Update), ("delete", Op::Delete)]),
    ("/snis/{sni}/certificate", "", &[("get", Op::Gone)]),
    ("/upstreams", "Upstream", &[("get", Op::List), ("post", Op::Create), ("put", Op::Upsert)]),
    ("/upstreams/{upstream}", "Upstream", &[("get", Op::Show), ("patch", Op::Update), ("delete", Op::Delete)]),
    ("/upstreams/{upstream}/health", "", &[("get", Op::Read("TargetHealthPage"))]),
    ("/upstreams/{upstream}/targets", "Target", &[("get", Op::List), ("post", Op::Create)]),
    ("/upstreams/{upstream}/targets/all", "Target", &[("get", Op::List)]),
    ("/upstreams/{upstream}/targets/{target}", "Target", &[("delete", Op::Delete)]),
    ("/upstreams/{upstream}/targets/{target}/healthy", "", &[("post", Op::Mark)]),
    ("/upstreams/{upstream}/targets/{target}/unhealthy", "", &[("post", Op::Mark)]),
    ("/oauth2_tokens", "Oauth2Token", &[("get", Op::List), ("post", Op::Create), ("put", Op::Upsert)]),
    ("/oauth2_tokens/{credential}", "Oauth2Token", &[("get", Op::Show), ("patch", Op::Update), ("delete", Op::Delete)]),
];

/// The consumer-owned credentials: (collection under a consumer, top-level collection, schema).
const CREDENTIALS: &[(&str, &str, &str)] = &[
    ("key-auth", "key-auths", "KeyAuth"),
    ("basic-auth", "basic-auths", "BasicAuth"),
    ("hmac-auth", "hmac-auths", "HmacAuth"),
    ("jwt", "jwts", "Jwt"),
    ("acls", "acls", "Acl"),
    ("oauth2", "oauth2", "Oauth2"),
];

/// The id the path parameters' examples use (`scripts/test-openapi.sh` creates entities with
/// it, and with the other examples' names, so that generated requests find something).
const EXAMPLE_ID: &str = "3f1c6a52-7d4e-4b8a-9c21-5e0f2a7b9d10";

/// The document, built on first use.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut paths = Map::new();
    let mut add = |path: &str, entity: &str, ops: &[(&str, Op)]| {
        let mut item = Map::new();
        let params = path_parameters(path);
        if !params.is_empty() {
            item.insert("parameters".into(), Value::Array(params));
        }
        for (method, op) in ops {
            item.insert((*method).into(), operation(path, method, entity, *op));
        }
        paths.insert(path.into(), Value::Object(item));
    };
    for (path, entity, ops) in TABLE {
        add(path, entity, ops);
    }
    for (nested, plural, entity) in CREDENTIALS {
        add(
            &format!("/consumers/{{consumer}}/{nested}"),
            entity,
            &[("get", Op::List), ("post", Op::Create), ("put", Op::Upsert)],
        );
        add(
            &format!("/consumers/{{consumer}}/{nested}/{{credential}}"),
            entity,
            &[("get", Op::Show), ("patch", Op::Update), ("delete", Op::Delete)],
        );
        add(&format!("/{plural}"), entity, &[("get", Op::List)]);
        add(&format!("/{plural}/{{credential}}/consumer"), "Consumer", &[("get", Op::Show)]);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Gatehouse Admin API",
            "version": super::KONG_VERSION,
            "description": "Kong 0.14's Admin API as Gatehouse serves it. Errors are Kong's: \
                {\"message\": …} or one message per invalid field. Bodies may also be sent as \
                application/x-www-form-urlencoded or multipart/form-data (nested fields as \
                `config.minute`).",
        },
        "servers": [{"url": "http://127.0.0.1:8001"}],
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer",
                "description": "Required when admin_token is set."}},
        },
        "paths": paths,
    })
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let (what, example) = match name {
                "svc" => ("a Service's id or name", "example-service"),
                "route" => ("a Route's id", EXAMPLE_ID),
                "consumer" => ("a Consumer's id or username", "alice"),
                "cert" => ("a Certificate's id or one of its SNIs", "example.test"),
                "sni" => ("an SNI's name", "example.test"),
                "upstream" => ("an Upstream's id or name", "example-upstream"),
                "target" => ("a Target's id or its host:port", "127.0.0.1:8080"),
                "credential" => ("a credential's id (or its key, username, name or client_id)", EXAMPLE_ID),
                "name" => ("a plugin's name", "key-auth"),
                _ => ("an entity's id", EXAMPLE_ID),
            };
            json!({"name": name, "in": "path", "required": true, "description": what,
                "schema": {"type": "string", "minLength": 1}, "example": example})
        })
        .collect()
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn answer(description: &str, schema: Option<Value>) -> Value {
    match schema {
        Some(s) => json!({"description": description, "content": {"application/json": {"schema": s}}}),
        None => json!({"description": description}),
    }
}

fn operation(path: &str, method: &str, entity: &str, op: Op) -> Value {
    let error = |why: &str| answer(why, Some(reference("Error")));
    let mut responses = Map::new();
    let mut put = |code: &str, v: Value| {
        responses.insert(code.into(), v);
    };
    let entity_ref = || reference(entity);
    let mut request = None;
    match op {
        Op::List => {
            put("200", answer("A page", Some(page(entity))));
            put("400", error("An invalid size or offset"));
            put("404", error("The parent entity does not exist"));
        }
        Op::Create | Op::Upsert | Op::Update => {
            request = Some(json!({"required": matches!(op, Op::Create), "content": {
                "application/json": {"schema": reference(&format!("{entity}Input"))},
                "application/x-www-form-urlencoded": {"schema": reference(&format!("{entity}Input"))},
            }}));
            match op {
                Op::Create => put("201", answer("Created", Some(entity_ref()))),
                Op::Upsert => {
                    put("200", answer("Replaced", Some(entity_ref())));
                    put("201", answer("Created", Some(entity_ref())));
                }
                _ => put("200", answer("Updated", Some(entity_ref()))),
            }
            put("400", error("Invalid fields, or a body that cannot be read"));
            put("404", error("The entity or its parent does not exist"));
            put("409", error("A unique field is taken"));
            put("413", error("The body is too large"));
            put("415", error("The content type is not JSON, a form or multipart"));
        }
        Op::Show => {
            put("200", answer("The entity", Some(entity_ref())));
            put("400", error("An invalid reference"));
            put("404", error("Not found"));
        }
        Op::Delete => {
            put("204", answer("Deleted", None));
            put("400", error("The entity is still referenced"));
            put("404", error("Not found"));
        }
        Op::Read(schema) => {
            put("200", answer("OK", Some(reference(schema))));
            if path == "/status/ready" {
                put("503", error("Not ready: the database does not answer or migrations are pending"));
            }
            put("400", error("Invalid parameters"));
            put("404", error("Not found"));
        }
        Op::Mark => {
            put("204", answer("Marked", None));
            put("400", error("Health checks are off for this upstream"));
            put("404", error("No such upstream or target"));
        }
        Op::Metrics => {
            put(
                "200",
                json!({"description": "Prometheus text exposition (format 0.0.4)",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}),
            );
        }
        Op::Gone => {
            put("404", error("Not found"));
        }
    }
    // What any request may get: a wrong token, a Host that is not served, a URL that cannot
    // be read.
    put("401", error("admin_token is set and the request does not carry it"));
    put("403", error("The Host is not a loopback name or one of admin_server_names"));
    put("414", error("The URL is too long"));
    let mut out = json!({
        "operationId": format!("{method}{}", path.replace(['/', '{', '}', '-', '.'], "_")),
        "responses": responses,
    });
    if let Some(r) = request {
        out["requestBody"] = r;
    }
    out
}

/// Old-DAO collections carry `total`; services and routes (the new DAO) do not.
fn page(entity: &str) -> Value {
    json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "array", "items": reference(entity)},
            "total": {"type": "integer", "minimum": 0},
            "next": {"type": "string", "nullable": true},
            "offset": {"type": "string"},
        },
    })
}

fn string() -> Value {
    json!({"type": "string"})
}
fn nullable_string() -> Value {
    json!({"type": "string", "nullable": true})
}
fn integer(min: i64, max: i64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}
fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}
fn nullable_strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}, "nullable": true})
}
fn boolean() -> Value {
    json!({"type": "boolean"})
}
fn id() -> Value {
    json!({"type": "string", "format": "uuid"})
}
fn nullable_id() -> Value {
    json!({"type": "string", "format": "uuid", "nullable": true})
}
fn timestamp() -> Value {
    json!({"type": "integer", "minimum": 0})
}
fn object() -> Value {
    json!({"type": "object"})
}

/// An entity's answer and its input: the answer adds what the store generates.
fn entity(schemas: &mut Map<String, Value>, name: &str, fields: Value, required: &[&str], updated_at: bool) {
    let fields = fields.as_object().cloned().unwrap_or_default();
    let mut output = fields.clone();
    output.insert("id".into(), id());
    output.insert("created_at".into(), timestamp());
    if updated_at {
        output.insert("updated_at".into(), timestamp());
    }
    let mut input = fields;
    input.insert("id".into(), id());
    schemas.insert(name.into(), json!({"type": "object", "required": ["id", "created_at"], "properties": output}));
    schemas.insert(format!("{name}Input"), json!({"type": "object", "required": required, "properties": input}));
}

fn schemas() -> Map<String, Value> {
    let mut s = Map::new();
    let timeout = integer(1, 2_147_483_646);
    entity(
        &mut s,
        "Service",
        json!({
            "name": nullable_string(),
            "protocol": {"type": "string", "enum": ["http", "https"]},
            "host": string(),
            "port": integer(0, 65535),
            "path": nullable_string(),
            "retries": integer(0, 32767),
            "connect_timeout": timeout,
            "write_timeout": timeout,
            "read_timeout": timeout,
            "url": {"type": "string", "description": "Input only: sets protocol, host, port and path"},
        }),
        &[],
        true,
    );
    entity(
        &mut s,
        "Route",
        json!({
            "protocols": strings(),
            "methods": nullable_strings(),
            "hosts": nullable_strings(),
            "paths": nullable_strings(),
            "regex_priority": {"type": "integer"},
            "strip_path": boolean(),
            "preserve_host": boolean(),
            "service": {"type": "object", "properties": {"id": id()}},
        }),
        &[],
        true,
    );
    entity(&mut s, "Consumer", json!({"username": string(), "custom_id": string()}), &[], false);
    entity(
        &mut s,
        "Plugin",
        json!({
            "name": string(),
            "config": object(),
            "enabled": boolean(),
            "service_id": nullable_id(),
            "route_id": nullable_id(),
            "consumer_id": nullable_id(),
        }),
        &["name"],
        false,
    );
    entity(&mut s, "Certificate", json!({"cert": string(), "key": string(), "snis": strings()}), &[], false);
    entity(&mut s, "Sni", json!({"name": string(), "ssl_certificate_id": id()}), &[], false);
    entity(
        &mut s,
        "Upstream",
        json!({
            "name": string(),
            "slots": integer(10, 65536),
            "hash_on": string(),
            "hash_fallback": string(),
            "hash_on_header": string(),
            "hash_fallback_header": string(),
            "hash_on_cookie": string(),
            "hash_on_cookie_path": string(),
            "healthchecks": object(),
        }),
        &[],
        false,
    );
    entity(&mut s, "Target", json!({"target": string(), "weight": integer(0, 1000), "upstream_id": id()}), &[], false);
    let owned = |fields: Value| {
        let mut m = fields.as_object().cloned().unwrap_or_default();
        m.insert("consumer_id".into(), id());
        Value::Object(m)
    };
    entity(&mut s, "KeyAuth", owned(json!({"key": string()})), &[], false);
    entity(&mut s, "BasicAuth", owned(json!({"username": string(), "password": string()})), &[], false);
    entity(&mut s, "HmacAuth", owned(json!({"username": string(), "secret": string()})), &[], false);
    entity(
        &mut s,
        "Jwt",
        owned(json!({"key": string(), "secret": string(), "rsa_public_key": string(), "algorithm": string()})),
        &[],
        false,
    );
    entity(&mut s, "Acl", owned(json!({"group": string()})), &[], false);
    entity(
        &mut s,
        "Oauth2",
        owned(json!({"name": string(), "client_id": string(), "client_secret": string(), "redirect_uri": strings()})),
        &[],
        false,
    );
    entity(
        &mut s,
        "Oauth2Token",
        json!({
            "credential_id": id(),
            "service_id": nullable_id(),
            "token_type": string(),
            "access_token": string(),
            "refresh_token": string(),
            "expires_in": {"type": "integer"},
            "scope": string(),
            "authenticated_userid": string(),
        }),
        &[],
        false,
    );
    s.insert(
        "Error".into(),
        json!({"type": "object", "minProperties": 1, "description": "{\"message\": …}, or one message per field"}),
    );
    s.insert("Object".into(), object());
    s.insert(
        "Node".into(),
        json!({"type": "object", "required": ["version", "plugins", "configuration"], "properties": {
            "tagline": string(), "version": string(), "hostname": string(), "node_id": string(),
            "plugins": {"type": "object", "properties": {
                "available_on_server": {"type": "object", "additionalProperties": boolean()},
                "enabled_in_cluster": strings()}},
            "configuration": object()}}),
    );
    let count = || json!({"type": "integer", "minimum": 0});
    s.insert(
        "Status".into(),
        json!({"type": "object", "required": ["server", "database"], "properties": {
            "server": {"type": "object", "properties": {
                "total_requests": count(), "connections_active": count(), "connections_accepted": count(),
                "connections_handled": count(), "connections_reading": count(),
                "connections_writing": count(), "connections_waiting": count()}},
            "database": {"type": "object", "properties": {"reachable": boolean()}},
            "config_revision": count()}}),
    );
    s.insert("Ready".into(), json!({"type": "object", "properties": {"ready": boolean()}}));
    s.insert("EnabledPlugins".into(), json!({"type": "object", "properties": {"enabled_plugins": strings()}}));
    s.insert(
        "DataPlanes".into(),
        json!({"type": "object", "properties": {"data": {"type": "array", "items": object()}}}),
    );
    s.insert(
        "TargetHealthPage".into(),
        json!({"type": "object", "properties": {"data": {"type": "array", "items": {
            "type": "object", "properties": {"target": string(), "health": string()}}}}}),
    );
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use axum::body::Body;
    use http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use crate::admin::{Admin, Node};
    use crate::store::Store;

    /// The document names exactly the paths the router has, and on each exactly the methods
    /// it answers (axum's 405 lists them in `Allow`; a path that answers every method is
    /// documented with GET).
    #[tokio::test]
    async fn document_matches_the_router() {
        let doc = super::document();
        let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
        let routed: BTreeSet<String> = crate::admin::paths().into_iter().collect();
        assert_eq!(
            routed.difference(&documented).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "routed but not documented"
        );
        assert_eq!(
            documented.difference(&routed).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "documented but not routed"
        );

        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("a.db").display())).await.unwrap();
        store.migrate_up().await.unwrap();
        let api = crate::admin::router(Admin { store, node: Arc::new(Node::default()) });
        let mut wrong = Vec::new();
        for path in &routed {
            let concrete: String =
                path.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/");
            let req = Request::builder()
                .method(Method::TRACE)
                .uri(&concrete)
                .header(http::header::HOST, "localhost")
                .body(Body::empty())
                .unwrap();
            let resp = api.clone().oneshot(req).await.unwrap();
            let mut methods: BTreeSet<String> = if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
                let allow = resp.headers().get(http::header::ALLOW).expect("a 405 lists the methods");
                allow
                    .to_str()
                    .unwrap()
                    .split(',')
                    .map(|m| m.trim().to_ascii_lowercase())
                    .filter(|m| m != "head")
                    .collect()
            } else {
                ["get".to_owned()].into()
            };
            methods.remove("");
            let documented: BTreeSet<String> =
                doc["paths"][path].as_object().unwrap().keys().filter(|k| *k != "parameters").cloned().collect();
            if methods != documented {
                wrong.push(format!("{path}: routed {methods:?}, documented {documented:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
