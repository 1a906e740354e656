//! Every error code the OpenAPI document lists for a route is one the route answers, and every
//! code a route answers is listed: the test makes each failure happen — the store unreachable
//! or broken too, through a fault store — and compares what the routes answered with what the
//! document says, both ways. In process (`oneshot`), so that faults and a slow body are exact;
//! the end-to-end suite checks the statuses against the real server on every backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use base64::Engine;
use serde_json::{Value, json};
use tessera_core::Timestamp;
use tessera_core::clients::Clients;
use tessera_core::testing::faults::{Faults, FaultyStore, Op};
use tessera_core::testing::memory::MemoryStore;
use tessera_proto::ErrorCode;
use tessera_server::config::{ServeArgs, Settings, StoreArgs};
use tessera_server::{Stores, app, build_state};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery";

/// What the store does during a call.
#[derive(Clone, Copy, PartialEq)]
enum Store {
    Healthy,
    /// Every operation fails as an unreachable backend does.
    Unreachable,
    /// Every operation fails as a broken backend does (corrupt data, a bug).
    Broken,
}

/// One request, rebuilt for each send.
#[derive(Clone)]
struct Call {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, Vec<u8>)>,
    /// A body that starts and never ends.
    stalled: bool,
    /// The peer address; `None`: a new one for this call, so that address limits stay out of it.
    peer: Option<[u8; 4]>,
    store: Store,
    /// A session opened just before the call (so that no other call has ended it): its access
    /// token as the `Bearer` when `bearer`, its refresh token in place of [`FRESH`] in the body.
    session: Option<(Who, bool)>,
    /// Sent to the second instance (over the same stores), which has cached nothing of the
    /// session the first one opened.
    elsewhere: bool,
}

#[derive(Clone)]
enum Who {
    /// A new registered account, so that no failure budget of an account carries over.
    Registered,
    Guest,
}

/// In a body, the refresh token of the call's fresh session.
const FRESH: &str = "FRESH_REFRESH_TOKEN";

fn call(method: Method, path: &str) -> Call {
    Call {
        method,
        path: path.to_owned(),
        headers: Vec::new(),
        body: None,
        stalled: false,
        peer: None,
        store: Store::Healthy,
        session: None,
        elsewhere: false,
    }
}

impl Call {
    fn json(mut self, body: Value) -> Self {
        self.body = Some(("application/json", body.to_string().into_bytes()));
        self
    }
    fn raw(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some((content_type, body.into()));
        self
    }
    fn form(self, pairs: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        self.raw("application/x-www-form-urlencoded", body)
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    /// As a fresh session of `who`, its access token the `Bearer`.
    fn signed_in(mut self, who: &Who) -> Self {
        self.session = Some((who.clone(), true));
        self
    }
    /// With a fresh session of `who` whose refresh token replaces [`FRESH`], and no `Bearer`.
    fn fresh_refresh_of(mut self, who: &Who) -> Self {
        self.session = Some((who.clone(), false));
        self
    }
    fn elsewhere(mut self) -> Self {
        self.elsewhere = true;
        self
    }
    fn stalled(mut self) -> Self {
        self.stalled = true;
        self
    }
    fn from(mut self, peer: [u8; 4]) -> Self {
        self.peer = Some(peer);
        self
    }
    fn store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }
}

struct Harness {
    router: axum::Router,
    second: axum::Router,
    faults: Faults,
    memory: Arc<MemoryStore>,
    peers: AtomicU32,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(allow_anonymous: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let args = ServeArgs {
            stores: StoreArgs { data_dir: Some(dir.path().to_owned()), ..StoreArgs::default() },
            argon2_memory_kib: Some(1024),
            argon2_iterations: Some(1),
            login_rate_limit: Some("5/min".into()),
            login_failure_limit: Some("3/min".into()),
            anonymous_rate_limit: Some("5/h".into()),
            allow_anonymous: Some(allow_anonymous),
            body_limit: Some(1024),
            body_timeout: Some("1s".into()),
            ..ServeArgs::default()
        };
        let settings = Settings::resolve(args).unwrap();
        let memory = Arc::new(MemoryStore::new());
        let faulty = Arc::new(FaultyStore::new(memory.clone()));
        let faults = faulty.faults();
        let mut routers = Vec::new();
        for _ in 0..2 {
            let stores =
                Stores { users: faulty.clone(), clients: faulty.clone(), sessions: faulty.clone(), limits: None };
            let state = build_state(&settings, SocketAddr::from(([127, 0, 0, 1], 8080)), stores).await.unwrap();
            routers.push(app(state));
        }
        let (second, router) = (routers.pop().unwrap(), routers.pop().unwrap());
        Self { router, second, faults, memory, peers: AtomicU32::new(1), _dir: dir }
    }

    async fn send(&self, call: &Call) -> (u16, Value) {
        let mut call = call.clone();
        if let Some((who, bearer)) = call.session.take() {
            let tokens = self.open(&who).await;
            if bearer {
                call = call.bearer(&tokens.access);
            }
            if let Some((_, body)) = &mut call.body {
                *body = String::from_utf8(body.clone()).unwrap().replace(FRESH, &tokens.refresh).into_bytes();
            }
        }
        self.dispatch(&call).await
    }

    async fn dispatch(&self, call: &Call) -> (u16, Value) {
        let peer =
            call.peer.unwrap_or_else(|| (0x0a00_0000 + self.peers.fetch_add(1, Ordering::Relaxed)).to_be_bytes());
        let mut request = Request::builder().method(call.method.clone()).uri(&call.path);
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        let (content_type, bytes) = call.body.clone().unwrap_or(("", Vec::new()));
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let body = if call.stalled {
            let start = futures_util::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from(bytes))]);
            Body::from_stream(futures_util::StreamExt::chain(start, futures_util::stream::pending()))
        } else {
            Body::from(bytes)
        };
        let mut request = request.body(body).unwrap();
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 40_000))));
        for op in Op::ALL {
            match call.store {
                Store::Healthy => {}
                Store::Unreachable => self.faults.fail_always(op),
                Store::Broken => self.faults.break_always(op),
            }
        }
        let router = if call.elsewhere { &self.second } else { &self.router };
        let response = router.clone().oneshot(request).await.unwrap();
        self.faults.heal();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.dispatch(&call(Method::POST, path).json(body)).await;
        assert!(status < 300, "{path}: {status} {body}");
        body
    }

    /// A registered user's email and token pair.
    async fn user(&self, name: &str) -> (String, Tokens) {
        let email = format!("{name}@example.com");
        self.post("/api/auth/register", json!({"email": email, "username": name, "password": PASSWORD})).await;
        let tokens = self.login(&email).await;
        (email, tokens)
    }

    async fn login(&self, email: &str) -> Tokens {
        tokens(&self.post("/api/auth/login", json!({"email": email, "password": PASSWORD})).await)
    }

    async fn guest(&self) -> Tokens {
        tokens(&self.post("/api/auth/anonymous", json!({})).await)
    }

    async fn open(&self, who: &Who) -> Tokens {
        match who {
            Who::Registered => {
                let name = format!("user{}", self.peers.fetch_add(1, Ordering::Relaxed));
                self.user(&name).await.1
            }
            Who::Guest => self.guest().await,
        }
    }
}

struct Tokens {
    access: String,
    refresh: String,
}

fn tokens(body: &Value) -> Tokens {
    let data = &body["data"];
    Tokens { access: data["token"].as_str().unwrap().into(), refresh: data["refresh_token"].as_str().unwrap().into() }
}

/// The code of an answer: the envelope's `error.code`, or an RFC 6749 `error`.
fn code_of(body: &Value) -> Option<String> {
    body["error"]["code"].as_str().or_else(|| body["error"].as_str()).map(str::to_owned)
}

const OAUTH_CODES: [&str; 8] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unsupported_grant_type",
    "unsupported_token_type",
    "server_error",
    "temporarily_unavailable",
    "slow_down",
];

/// The codes a response's description lists: the words in backticks that are error codes.
fn documented_codes(description: &str) -> Vec<String> {
    description
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| OAUTH_CODES.contains(word) || serde_json::from_value::<ErrorCode>(Value::from(*word)).is_ok())
        .map(str::to_owned)
        .collect()
}

type Answer = (String, String, u16, String);

fn documented(doc: &Value) -> BTreeSet<Answer> {
    let mut all = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let status: u16 = status.parse().unwrap();
                for code in documented_codes(response["description"].as_str().unwrap_or_default()) {
                    all.insert((path.clone(), method.clone(), status, code));
                }
            }
        }
    }
    all
}

#[tokio::test]
async fn every_documented_error_code_is_answered_and_every_answered_code_documented() {
    let h = Harness::start(true).await;
    let no_guests = Harness::start(false).await;
    let (email, _) = h.user("ada").await;
    let ada = Who::Registered;
    let (_, limited) = h.user("limited").await;
    let (_, other) = h.user("grace").await;
    let guest = Who::Guest;
    // A session of somebody else's: not the caller's, so not found.
    let other_sid = {
        let claims = other.access.split('.').nth(1).unwrap();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap();
        serde_json::from_slice::<Value>(&claims).unwrap()["sid"].as_str().unwrap().to_owned()
    };
    let (client, secret) = Clients::new(h.memory.clone()).register("docs", Timestamp::now()).await.unwrap();
    let basic = |id: &str, secret: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    };
    let client_auth = basic(&client.id, secret.expose());
    let huge = "x".repeat(2048);
    let cookie = "__Secure-tessera_refresh";
    let csrf = ("x-requested-with", "tessera");
    let pw = PASSWORD;
    use Method as M;

    // The failures routes share, made happen on each route that declares them: each route with
    // a JSON body, as whom, and a body it would accept.
    let json_routes: Vec<(&str, Method, Option<&Who>, Value)> = vec![
        ("/api/auth/register", M::POST, None, json!({"email": "new@example.com", "password": pw})),
        ("/api/auth/login", M::POST, None, json!({"email": email, "password": pw})),
        ("/api/auth/refresh", M::POST, None, json!({"refresh_token": FRESH})),
        ("/api/auth/logout", M::POST, Some(&ada), json!({})),
        ("/api/auth/anonymous", M::POST, None, json!({})),
        (
            "/api/auth/upgrade",
            M::POST,
            Some(&guest),
            json!({"email": "up@example.com", "password": pw, "refresh_token": FRESH}),
        ),
        ("/api/auth/password", M::POST, Some(&ada), json!({"current_password": pw, "new_password": pw})),
        ("/api/auth/account", M::DELETE, Some(&ada), json!({"password": "wrong password"})),
    ];
    // Each route with a Bearer token, and whether it reads the store.
    let bearer_routes: Vec<(&str, Method, bool)> = vec![
        ("/api/auth/logout", M::POST, true),
        ("/api/auth/logout-all", M::POST, true),
        ("/api/auth/me", M::GET, true),
        ("/api/auth/verify", M::GET, false),
        ("/api/auth/upgrade", M::POST, true),
        ("/api/auth/password", M::POST, true),
        ("/api/auth/account", M::DELETE, true),
        ("/api/auth/sessions", M::GET, true),
        ("/api/auth/sessions/{id}", M::DELETE, true),
    ];
    let mut cases: Vec<(&str, Call)> = Vec::new();
    for (path, method, who, valid) in &json_routes {
        let base = || {
            let c = call(method.clone(), path);
            match who {
                Some(who) => c.signed_in(who),
                None => c.fresh_refresh_of(&ada),
            }
        };
        cases.push((path, base().json(json!([]))));
        cases.push((path, base().raw("text/plain", "hi")));
        cases.push((path, base().raw("application/json", huge.clone())));
        cases.push((path, base().raw("application/json", "{").stalled()));
        cases.push((path, base().json(valid.clone()).store(Store::Unreachable)));
        cases.push((path, base().json(valid.clone()).store(Store::Broken)));
    }
    for (path, method, reads_the_store) in &bearer_routes {
        let concrete = path.replace("{id}", &other_sid);
        cases.push((path, call(method.clone(), &concrete)));
        cases.push((path, call(method.clone(), &concrete).bearer("a").bearer("b")));
        if *reads_the_store && !json_routes.iter().any(|(p, ..)| p == path) {
            for store in [Store::Unreachable, Store::Broken] {
                // `/me` reads the store only where the caller's profile is not cached.
                cases.push((path, call(method.clone(), &concrete).signed_in(&ada).store(store).elsewhere()));
            }
        }
    }
    for (path, who, body) in [
        ("/api/auth/refresh", None, json!({})),
        ("/api/auth/upgrade", Some(&guest), json!({"email": "up@example.com", "password": pw})),
    ] {
        let base = || {
            let c = call(M::POST, path).json(body.clone());
            if let Some(who) = who { c.signed_in(who) } else { c }
        };
        cases.push((path, base()));
        cases.push((path, base().header("cookie", &format!("{cookie}=a; {cookie}=b")).header(csrf.0, csrf.1)));
        cases.push((path, base().header("cookie", &format!("{cookie}=a"))));
    }
    for path in ["/oauth/token", "/oauth/revoke", "/oauth/introspect"] {
        let base = || call(M::POST, path).header("authorization", &client_auth);
        cases.push((path, call(M::GET, path)));
        cases.push((path, base().form(&[])));
        cases.push((path, base().form(&[("token", &huge)])));
        cases.push((path, base().raw("application/x-www-form-urlencoded", "token=").stalled()));
        let valid = [("grant_type", "refresh_token"), ("refresh_token", FRESH), ("token", FRESH)];
        for store in [Store::Unreachable, Store::Broken] {
            cases.push((path, base().form(&valid).fresh_refresh_of(&ada).store(store)));
        }
    }

    // Each route's own failures.
    let upgrade = |body: Value| ("/api/auth/upgrade", call(M::POST, "/api/auth/upgrade").json(body).signed_in(&guest));
    let password = |body: Value| ("/api/auth/password", call(M::POST, "/api/auth/password").json(body));
    cases.extend([
        ("/api/auth/register", call(M::POST, "/api/auth/register").json(json!({"email": "nope", "password": pw}))),
        (
            "/api/auth/register",
            call(M::POST, "/api/auth/register").json(json!({"username": "no spaces", "password": pw})),
        ),
        (
            "/api/auth/register",
            call(M::POST, "/api/auth/register").json(json!({"email": "w@example.com", "password": "x"})),
        ),
        ("/api/auth/register", call(M::POST, "/api/auth/register").json(json!({"password": pw}))),
        ("/api/auth/register", call(M::POST, "/api/auth/register").json(json!({"email": email, "password": pw}))),
        ("/api/auth/register", call(M::POST, "/api/auth/register").json(json!({"username": "ada", "password": pw}))),
        (
            "/api/auth/login",
            call(M::POST, "/api/auth/login").json(json!({"email": email, "password": "wrong password"})),
        ),
        ("/api/auth/login", call(M::POST, "/api/auth/login").json(json!({"password": pw}))),
        ("/api/auth/refresh", call(M::POST, "/api/auth/refresh").json(json!({"refresh_token": "garbage"}))),
        ("/api/auth/sessions/{id}", call(M::DELETE, &format!("/api/auth/sessions/{other_sid}")).signed_in(&ada)),
        ("/api/auth/revocations", call(M::GET, "/api/auth/revocations?after=x")),
        upgrade(json!({"email": "nope", "password": pw, "refresh_token": FRESH})),
        upgrade(json!({"username": "no spaces", "password": pw, "refresh_token": FRESH})),
        upgrade(json!({"email": "w@example.com", "password": "x", "refresh_token": FRESH})),
        upgrade(json!({"email": email, "password": pw, "refresh_token": FRESH})),
        upgrade(json!({"username": "ada", "password": pw, "refresh_token": FRESH})),
        upgrade(json!({"email": "up@example.com", "password": pw, "refresh_token": "garbage"})),
        (
            "/api/auth/upgrade",
            call(M::POST, "/api/auth/upgrade")
                .json(json!({"email": "up@example.com", "password": pw, "refresh_token": FRESH}))
                .signed_in(&ada),
        ),
        {
            let (path, c) = password(json!({"current_password": pw, "new_password": "x"}));
            (path, c.signed_in(&ada))
        },
        {
            let (path, c) = password(json!({"current_password": "wrong password", "new_password": pw}));
            (path, c.signed_in(&ada))
        },
        {
            let (path, c) = password(json!({"current_password": pw, "new_password": pw}));
            (path, c.signed_in(&guest))
        },
        ("/api/auth/account", call(M::DELETE, "/api/auth/account").json(json!({})).signed_in(&ada)),
        (
            "/oauth/token",
            call(M::POST, "/oauth/token").form(&[("grant_type", "refresh_token"), ("refresh_token", "garbage")]),
        ),
        ("/oauth/token", call(M::POST, "/oauth/token").form(&[("grant_type", "password")])),
        ("/oauth/introspect", call(M::POST, "/oauth/introspect").form(&[("token", "x")])),
    ]);
    // Limits: the same address, or the same account, until it is refused.
    for _ in 0..6 {
        let register = json!({"email": "nope", "password": pw});
        cases.push(("/api/auth/register", call(M::POST, "/api/auth/register").json(register).from([192, 0, 2, 1])));
        let login = json!({"email": "nope", "password": pw});
        cases.push(("/api/auth/login", call(M::POST, "/api/auth/login").json(login).from([192, 0, 2, 2])));
        cases.push(("/api/auth/anonymous", call(M::POST, "/api/auth/anonymous").from([192, 0, 2, 3])));
    }
    for _ in 0..4 {
        let (path, c) = password(json!({"current_password": "wrong password", "new_password": pw}));
        cases.push((path, c.bearer(&limited.access)));
        let wrong = json!({"password": "wrong password"});
        cases.push(("/api/auth/account", call(M::DELETE, "/api/auth/account").json(wrong).bearer(&limited.access)));
        let auth = basic(&client.id, "wrong secret");
        let introspect = call(M::POST, "/oauth/introspect").form(&[("token", "x")]).header("authorization", &auth);
        cases.push(("/oauth/introspect", introspect));
    }

    let mut answered = BTreeSet::new();
    let mut record = |template: &str, call: &Call, status: u16, body: &Value| {
        if let Some(code) = code_of(body).filter(|_| status >= 400) {
            // A method a path does not have is documented on the one it has.
            let method = if status == 405 { "post".to_owned() } else { call.method.as_str().to_lowercase() };
            answered.insert((template.to_owned(), method, status, code));
        }
    };
    for (template, c) in &cases {
        let (status, body) = h.send(c).await;
        record(template, c, status, &body);
    }
    let disabled = call(M::POST, "/api/auth/anonymous");
    let (status, body) = no_guests.send(&disabled).await;
    record("/api/auth/anonymous", &disabled, status, &body);

    let (_, doc) = h.send(&call(M::GET, "/openapi.json")).await;
    let documented = documented(&doc);
    let lines = |answers: Vec<&Answer>| -> String {
        answers.iter().map(|(path, method, status, code)| format!("\n  {method} {path} {status} {code}")).collect()
    };
    let unanswered = lines(documented.difference(&answered).collect());
    let undocumented = lines(answered.difference(&documented).collect());
    assert!(
        unanswered.is_empty() && undocumented.is_empty(),
        "documented but never answered:{unanswered}\nanswered but not documented:{undocumented}"
    );
}
