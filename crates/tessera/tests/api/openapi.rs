//! The OpenAPI document at `/openapi.json` describes every route and every status it answers, on
//! every backend (that it lists exactly the error codes each route answers is checked in process,
//! with store faults, by `crates/server/tests/documented_errors.rs`).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// One request: the document's path template and method, and what to send.
struct Case {
    template: &'static str,
    method: Method,
    path: String,
    bearer: Option<String>,
    body: Option<Body>,
    headers: Vec<(&'static str, String)>,
}

enum Body {
    Json(Value),
    Form(Vec<(&'static str, String)>),
    Raw(&'static str, String),
}

fn case(template: &'static str, method: Method) -> Case {
    Case { template, method, path: template.to_owned(), bearer: None, body: None, headers: Vec::new() }
}

impl Case {
    fn path(mut self, path: String) -> Self {
        self.path = path;
        self
    }
    fn bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_owned());
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Some(Body::Json(body));
        self
    }
    fn form(mut self, form: &[(&'static str, &str)]) -> Self {
        self.body = Some(Body::Form(form.iter().map(|(k, v)| (*k, v.to_string())).collect()));
        self
    }
    fn raw(mut self, content_type: &'static str, body: String) -> Self {
        self.body = Some(Body::Raw(content_type, body));
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    async fn status(&self, server: &TestServer) -> u16 {
        let mut request = http_client().request(self.method.clone(), server.url(&self.path));
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        request = match &self.body {
            Some(Body::Json(v)) => request.json(v),
            Some(Body::Form(f)) => request.form(f),
            Some(Body::Raw(content_type, body)) => request.header("content-type", *content_type).body(body.clone()),
            None => request,
        };
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        // Only the status matters; the feed's stream is not read.
        request.send().await.expect("request").status().as_u16()
    }
}

#[tokio::test]
async fn the_document_lists_every_route_and_every_status_it_answers() {
    let server = TestServer::start_with(&["--login-rate-limit", "100/min", "--allow-anonymous"]).await;
    let doc = server.send(Method::GET, "/openapi.json", None, None, &[]).await.body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);

    let email = unique_email();
    let t = server.user(&email).await;
    let other = server.login(&email).await;
    let spare = server.login(&email).await;
    let other_sid = jwt_parts(&other.access).1["sid"].as_str().unwrap().to_owned();
    let (client_id, secret) = crate::oauth::add_client(&server, "docs");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{client_id}:{secret}"))
    );
    let pw = PASSWORD;
    let huge = "x".repeat(20_000);
    let guest = tokens_of(&server.post("/api/auth/anonymous", json!({})).await);
    let doomed_guest = tokens_of(&server.post("/api/auth/anonymous", json!({})).await);
    let (changer, deleted) = (unique_email(), unique_email());
    let changer_tokens = server.user(&changer).await;
    let deleted_tokens = server.user(&deleted).await;
    use Method as M;
    let cases = vec![
        case("/api/auth/register", M::POST).json(json!({"email": unique_email(), "password": pw})),
        case("/api/auth/register", M::POST).json(json!({"email": email, "password": pw})),
        case("/api/auth/register", M::POST).json(json!({"email": "nope", "password": pw})),
        case("/api/auth/register", M::POST).raw("text/plain", "hi".into()),
        case("/api/auth/register", M::POST).raw("application/json", huge.clone()),
        case("/api/auth/login", M::POST).json(json!({"email": email, "password": pw})),
        case("/api/auth/login", M::POST).json(json!({"email": email, "password": "wrong password"})),
        case("/api/auth/login", M::POST).json(json!({"email": email})),
        case("/api/auth/refresh", M::POST).json(json!({"refresh_token": spare.refresh})),
        case("/api/auth/refresh", M::POST).json(json!({"refresh_token": "garbage"})),
        case("/api/auth/refresh", M::POST),
        case("/api/auth/refresh", M::POST).header("cookie", "__Secure-tessera_refresh=x"),
        case("/api/auth/logout", M::POST),
        case("/api/auth/logout-all", M::POST),
        case("/api/auth/settings", M::GET),
        case("/api/auth/anonymous", M::POST),
        case("/api/auth/anonymous", M::POST).json(json!({"refresh_transport": "nope"})),
        case("/api/auth/upgrade", M::POST)
            .json(json!({"email": unique_email(), "password": pw, "refresh_token": guest.refresh}))
            .bearer(&guest.access),
        case("/api/auth/upgrade", M::POST).json(json!({"email": email, "password": pw})).bearer(&t.access),
        case("/api/auth/upgrade", M::POST).json(json!({"email": "nope", "password": pw})).bearer(&t.access),
        case("/api/auth/upgrade", M::POST).json(json!({"email": email, "password": pw})),
        case("/api/auth/password", M::POST)
            .json(json!({"current_password": pw, "new_password": "a new password"}))
            .bearer(&changer_tokens.access),
        case("/api/auth/password", M::POST)
            .json(json!({"current_password": "wrong password", "new_password": "a new password"}))
            .bearer(&t.access),
        case("/api/auth/password", M::POST).json(json!({"current_password": pw})).bearer(&t.access),
        case("/api/auth/password", M::POST)
            .json(json!({"current_password": pw, "new_password": "another one"}))
            .bearer(&doomed_guest.access),
        case("/api/auth/password", M::POST).json(json!({"current_password": pw, "new_password": "x"})),
        case("/api/auth/account", M::DELETE).json(json!({"password": "wrong password"})).bearer(&t.access),
        case("/api/auth/account", M::DELETE).json(json!({"password": pw})).bearer(&deleted_tokens.access),
        case("/api/auth/account", M::DELETE).json(json!([])).bearer(&t.access),
        case("/api/auth/account", M::DELETE),
        case("/api/auth/me", M::GET).bearer(&t.access),
        case("/api/auth/me", M::GET),
        case("/api/auth/verify", M::GET).bearer(&t.access),
        case("/api/auth/verify", M::GET),
        case("/api/auth/sessions", M::GET).bearer(&t.access),
        case("/api/auth/sessions", M::GET),
        case("/api/auth/sessions/{id}", M::DELETE).path(format!("/api/auth/sessions/{other_sid}")).bearer(&t.access),
        case("/api/auth/sessions/{id}", M::DELETE).path("/api/auth/sessions/nobody".into()).bearer(&t.access),
        case("/api/auth/sessions/{id}", M::DELETE).path("/api/auth/sessions/nobody".into()),
        case("/api/auth/revocations", M::GET),
        case("/api/auth/revocations", M::GET).path("/api/auth/revocations?after=x".into()),
        case("/.well-known/jwks.json", M::GET),
        case("/.well-known/oauth-authorization-server", M::GET),
        case("/oauth/token", M::POST).form(&[("grant_type", "refresh_token"), ("refresh_token", &t.refresh)]),
        case("/oauth/token", M::POST).form(&[("grant_type", "password")]),
        case("/oauth/token", M::POST).form(&[("grant_type", "refresh_token"), ("refresh_token", &huge)]),
        case("/oauth/token", M::GET),
        case("/oauth/revoke", M::POST).form(&[("token", "garbage")]),
        case("/oauth/revoke", M::POST).form(&[]),
        case("/oauth/introspect", M::POST).form(&[("token", &t.access)]).header("authorization", &basic),
        case("/oauth/introspect", M::POST).form(&[("token", &t.access)]),
        case("/healthz", M::GET),
        case("/readyz", M::GET),
        case("/metrics", M::GET),
        case("/api/auth/logout-all", M::POST).bearer(&spare.access),
        case("/api/auth/logout", M::POST).bearer(&t.access),
    ];

    let mut exercised = BTreeSet::new();
    for c in &cases {
        let status = c.status(&server).await;
        let method = c.method.as_str().to_lowercase();
        let operation = &doc["paths"][c.template][&method];
        if !operation.is_object() {
            // A method the path does not have: 405, and the path is in the document.
            assert!(doc["paths"][c.template].is_object(), "{} is not in the document", c.template);
            assert_eq!(status, 405, "{} {}", c.method, c.path);
            continue;
        }
        assert!(
            operation["responses"].get(status.to_string()).is_some(),
            "{} {} answered {status}, which the document does not list",
            c.method,
            c.path
        );
        exercised.insert((c.template.to_owned(), method));
    }
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (path.clone(), m.clone())))
        .filter(|(_, m)| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
        .collect();
    assert_eq!(documented, exercised, "every documented operation is exercised here, and nothing else exists");
}
