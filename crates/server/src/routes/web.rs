//! The web page at `/`, embedded in the binary: plain HTML, CSS and a JavaScript module, nothing
//! loaded from elsewhere. The Content-Security-Policy allows scripts, styles and requests only
//! from this origin, so an injected script has nowhere to load from or send to.
//!
//! `/tessera-frame.html` is the hidden frame through which tessera.js, on a page of another
//! origin listed in `--allowed-origins`, takes this origin's refresh lock and hears this origin's
//! tab channel (see tessera-frame.js). Only those origins may frame it (`frame-ancestors`).

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/app.css");
/// tessera.js, the browser client library the page is built on, which other origins import too.
const LIBRARY: &str = include_str!("../../web/tessera.js");
/// The script of `/tessera-frame.html`.
const FRAME_SCRIPT: &str = include_str!("../../web/tessera-frame.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// `GET /tessera.js`: the client library, importable as a module from any origin (a module
/// script of another origin needs CORS) and cacheable for a few minutes.
pub async fn library() -> Response {
    let headers: [(HeaderName, HeaderValue); 4] = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (headers, LIBRARY).into_response()
}

pub async fn frame_script() -> Response {
    asset(FRAME_SCRIPT, "text/javascript; charset=utf-8")
}

/// An origin as it may appear in a CSP source list and an HTML attribute: `scheme://host[:port]`
/// spelled with the few characters that needs. Anything else is left out of the frame's lists.
fn plain_origin(origin: &str) -> bool {
    let Some((scheme, host)) = origin.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && !host.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

/// `GET /tessera-frame.html`: the hidden frame of tessera.js on the allowed origins. The page
/// names them in a `<meta>` (the script answers only their messages), and its CSP lets only them
/// frame it (`'none'` when there are none).
pub async fn frame(State(state): State<AppState>) -> Response {
    let origins: Vec<&str> =
        state.cookies().allowed_origins.iter().map(String::as_str).filter(|o| plain_origin(o)).collect();
    let ancestors = if origins.is_empty() { "'none'".to_owned() } else { origins.join(" ") };
    let csp = format!(
        "default-src 'none'; script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors {ancestors}"
    );
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>tessera</title>\n  \
         <meta name=\"tessera-allowed-origins\" content=\"{}\">\n  \
         <script type=\"module\" src=\"/tessera-frame.js\"></script>\n</head>\n<body></body>\n</html>\n",
        origins.join(" ")
    );
    // The origins were filtered to header-safe characters; were one not, nobody may frame it.
    let csp = HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static(CSP));
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, html).into_response()
}

#[cfg(test)]
mod tests {
    use super::plain_origin;

    #[test]
    fn only_plain_origins_reach_the_frame_page() {
        for ok in ["https://app.example", "http://127.0.0.1:9000", "http://[::1]:8080", "https://a-b.example.com"] {
            assert!(plain_origin(ok), "{ok}");
        }
        for bad in [
            "*",
            "null",
            "app.example",
            "https://",
            "https://a.example/path",
            "https://a\".example",
            "https://a b",
            "'self'",
        ] {
            assert!(!plain_origin(bad), "{bad}");
        }
    }
}
