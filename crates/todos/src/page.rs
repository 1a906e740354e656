//! The todo app's page at `/`: HTML, CSS and a JavaScript module embedded in the binary. The
//! script signs in through tessera.js, which it loads from tessera itself (`--tessera-public-url`),
//! so the Content-Security-Policy allows scripts, requests and frames (the library's hidden frame)
//! from there besides this origin.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::App;

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/todos.js");
const STYLE: &str = include_str!("../web/todos.css");

pub async fn index(State(app): State<App>, headers: HeaderMap) -> Response {
    let tessera = app.tessera_public_url.trim_end_matches('/');
    let html = INDEX.replace("{{TESSERA_URL}}", &escape_attribute(tessera));
    // The socket is this origin's too; `'self'` does not cover ws: in every browser.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| is_host(h)).unwrap_or("");
    let sockets = if host.is_empty() { String::new() } else { format!(" ws://{host} wss://{host}") };
    let source = if is_origin(tessera) { tessera } else { "" };
    // tessera.js may run its cross-origin refreshes in a hidden frame of tessera's own origin.
    let frames = if source.is_empty() { "'none'" } else { source };
    let csp = format!(
        "default-src 'none'; script-src 'self' {source}; style-src 'self'; connect-src 'self' {source}{sockets}; \
         frame-src {frames}; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    let mut response = asset(html, "text/html; charset=utf-8");
    if let Ok(value) = HeaderValue::try_from(csp) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

pub async fn script() -> Response {
    asset(SCRIPT.to_owned(), "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(STYLE.to_owned(), "text/css; charset=utf-8")
}

fn asset(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn escape_attribute(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `host[:port]` with nothing that could end a CSP source.
fn is_host(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

/// `scheme://host[:port]` with nothing that could end a CSP source.
fn is_origin(text: &str) -> bool {
    let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    rest.is_some_and(is_host)
}
