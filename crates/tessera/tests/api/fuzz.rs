//! A fuzz test of the whole HTTP surface: random methods, paths, headers and bodies against
//! every route, with and without valid credentials. Whatever arrives, the server never answers
//! 5xx, and every answer under `/api/` is the envelope with a known code.
//!
//! The cases come from a seeded generator: `TESSERA_FUZZ_SEED` replays a run, and
//! `TESSERA_FUZZ_CASES` sets how many (default 1500). A failure prints the seed and the case.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::helpers::{PASSWORD, TestServer, unique_email};

/// The codes the error table of README, "API (v1)" documents: its rows `| status | `CODE`, … | … |`.
fn documented_codes() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    readme
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let status = cells.next()?;
            // `400`, or `404 / 405`.
            status.get(..3)?.bytes().all(|b| b.is_ascii_digit()).then(|| cells.next())?
        })
        .flat_map(|codes| codes.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// xorshift64*: small, fast, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn text(&mut self, max: usize) -> String {
        const ALPHABET: &[&str] = &[
            "a", "Z", "0", "9", " ", "\"", "'", "\\", "/", ".", "%", "%00", "%FF", "%2e%2e", "{", "}", "[", "]", ":",
            ",", "=", "&", ";", "é", "\u{200b}", "\u{feff}", "🦀", "\u{0}", "\n", "\t", "null", "..", "@",
        ];
        let len = self.below(max + 1);
        (0..len).map(|_| *self.pick(ALPHABET)).collect()
    }
}

struct Credentials {
    email: String,
    access: String,
    refresh: String,
    session_id: String,
}

fn path(rng: &mut Rng, who: &Credentials) -> String {
    const PATHS: &[&str] = &[
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/logout-all",
        "/api/auth/me",
        "/api/auth/verify",
        "/api/auth/sessions",
        "/api/auth/sessions/{id}",
        "/api/auth/revocations",
        "/api/auth/nothing-here",
        "/api/",
        "/api/auth",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/oauth/token",
        "/oauth/revoke",
        "/oauth/introspect",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/",
        "/app.js",
    ];
    let mut path = rng.pick(PATHS).to_string();
    if path.contains("{id}") {
        let id = match rng.below(4) {
            0 => who.session_id.clone(),
            1 => "00000000-0000-0000-0000-000000000000".into(),
            2 => rng.text(40),
            _ => "%FF%FE".into(),
        };
        path = path.replace("{id}", &id);
    }
    match rng.below(10) {
        0 => path.push('/'),
        1 => path.push_str(&format!("?{}={}", rng.text(8), rng.text(8))),
        2 => path.push_str("/%C3%28"),
        3 => path = path.to_uppercase(),
        _ => {}
    }
    // Only what a URI may carry: the rest percent-encoded, as a client library would send it.
    path.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"/-._~?=&%:@!$'()*+,;".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn json_body(rng: &mut Rng, who: &Credentials) -> Value {
    let pick_value = |rng: &mut Rng| -> Value {
        match rng.below(12) {
            0 => Value::Null,
            1 => json!(rng.next() as i64),
            2 => json!(true),
            3 => json!([rng.text(5)]),
            4 => json!({"nested": rng.text(5)}),
            5 => json!(who.email),
            6 => json!(PASSWORD),
            7 => json!(who.refresh),
            8 => json!(who.access),
            9 => json!("cookie"),
            10 => json!(f64::MAX),
            _ => json!(rng.text(40)),
        }
    };
    const FIELDS: &[&str] =
        &["email", "password", "refresh_token", "refresh_transport", "grant_type", "token", "", "émail", "__proto__"];
    let mut object = serde_json::Map::new();
    for _ in 0..rng.below(5) {
        let field = rng.pick(FIELDS).to_string();
        let value = pick_value(rng);
        object.insert(field, value);
    }
    match rng.below(8) {
        0 => json!([object]),
        1 => pick_value(rng),
        _ => Value::Object(object),
    }
}

fn body(rng: &mut Rng, who: &Credentials) -> Option<Vec<u8>> {
    match rng.below(8) {
        0 => None,
        1 => Some(Vec::new()),
        2 => Some((0..rng.below(300)).map(|_| rng.next() as u8).collect()),
        3 => {
            let text = json_body(rng, who).to_string();
            let cut = rng.below(text.len() + 1);
            Some(text.as_bytes()[..cut].to_vec())
        }
        4 => Some(vec![b'{'; 20_000]),
        5 => Some(format!("grant_type={}&token={}", rng.text(10), who.refresh).into_bytes()),
        _ => Some(json_body(rng, who).to_string().into_bytes()),
    }
}

fn headers(rng: &mut Rng, who: &Credentials) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for _ in 0..rng.below(5) {
        let header = match rng.below(12) {
            0 => ("authorization".into(), format!("Bearer {}", who.access)),
            1 => ("authorization".into(), format!("Bearer {}", rng.text(30))),
            2 => (
                "authorization".into(),
                rng.pick(&["Basic Zm9vOmJhcg==", "Bearer", "bearer  x", "Basic !!"]).to_string(),
            ),
            3 => ("cookie".into(), format!("__Secure-tessera_refresh={}", rng.pick(&[who.refresh.as_str(), "x", ""]))),
            4 => ("x-requested-with".into(), rng.pick(&["tessera", "XMLHttpRequest"]).to_string()),
            5 => ("origin".into(), rng.pick(&["null", "https://evil.example", "http://127.0.0.1"]).to_string()),
            6 => (
                "content-type".into(),
                rng.pick(&[
                    "application/json",
                    "application/json; charset=utf-8",
                    "application/x-www-form-urlencoded",
                    "text/plain",
                    "application/vnd.api+json",
                    "multipart/form-data; boundary=x",
                ])
                .to_string(),
            ),
            7 => ("sec-websocket-protocol".into(), format!("tessera, tessera.bearer.{}", who.access)),
            8 => ("last-event-id".into(), rng.pick(&["0-0", "-1", "99999999999999999999-1", "x"]).to_string()),
            9 => ("x-request-id".into(), rng.text(80)),
            10 => ("accept".into(), rng.pick(&["*/*", "text/event-stream", "application/json"]).to_string()),
            _ => ("x-forwarded-for".into(), rng.pick(&["203.0.113.1", "garbage", "::1"]).to_string()),
        };
        headers.push(header);
    }
    // Header values must be visible ASCII for the HTTP client to send them at all.
    headers.retain(|(_, v)| v.bytes().all(|b| (0x20..0x7f).contains(&b)));
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_get_a_5xx_and_api_answers_are_always_the_envelope() {
    let seed = std::env::var("TESSERA_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    let cases: usize = std::env::var("TESSERA_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1500);
    let codes = documented_codes();
    assert!(codes.len() > 20 && codes.iter().any(|c| c == "METHOD_NOT_ALLOWED"), "{codes:?}");
    let server = TestServer::start_with(&["--body-timeout", "2s"]).await;
    let email = unique_email();
    let tokens = server.user(&email).await;
    let me = server.me(&tokens.access).await;
    let who = Credentials {
        email,
        access: tokens.access.clone(),
        refresh: tokens.refresh.clone(),
        session_id: me.data()["session_id"].as_str().unwrap().to_owned(),
    };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut rng = Rng(seed);
    const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FROB"];
    for case in 0..cases {
        let method = Method::from_bytes(rng.pick(METHODS).as_bytes()).unwrap();
        let path = path(&mut rng, &who);
        let headers = headers(&mut rng, &who);
        let body = body(&mut rng, &who);
        let described = format!(
            "seed {seed} case {case}: {method} {path} headers {headers:?} body {:?}",
            body.as_ref().map(|b| String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned())
        );
        let mut request = client.request(method.clone(), server.url(&path));
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{described}: no answer: {e}"));
        let status = response.status();
        let streaming = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("text/event-stream"));
        assert!(status.as_u16() < 500, "{described}: answered {status}");
        if streaming || method == Method::HEAD {
            continue;
        }
        let text = response.text().await.unwrap_or_else(|e| panic!("{described}: body: {e}"));
        if !path.starts_with("/api/") {
            continue;
        }
        let envelope: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{described}: not JSON ({status}): {text}"));
        let success = envelope["success"].as_bool().unwrap_or_else(|| panic!("{described}: no `success`: {text}"));
        assert_eq!(success, status.is_success(), "{described}: {text}");
        if !success {
            let code = envelope["error"]["code"].as_str().unwrap_or_else(|| panic!("{described}: no code: {text}"));
            assert!(codes.iter().any(|c| c == code), "{described}: undocumented code {code}");
            assert!(envelope["error"]["message"].is_string(), "{described}: {text}");
        }
    }
    // The user, whatever the cases did to the session, can still sign in.
    let login = server.post("/api/auth/login", json!({"email": who.email, "password": PASSWORD})).await;
    assert!(login.status == 200 || login.status == 429, "{}", login.body);
}
