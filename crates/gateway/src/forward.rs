//! The HTTP proxy: the request as the upstream gets it, and the answer as the client gets it,
//! both streamed (nothing is buffered: a server-sent event reaches the client as it is written,
//! an upload reaches the upstream as it arrives).
//!
//! Headers (RFC 9110 §7.6.1): the hop-by-hop ones (`Connection` and every header it names,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) stay on
//! their hop, both ways. Every `X-Tessera-*` a client sends is removed, and the caller's are set
//! ([`identity`]). `Authorization` passes unchanged. `Host` becomes the upstream's; the client's is
//! `X-Forwarded-Host`, with `X-Forwarded-For` (the client's address) and `X-Forwarded-Proto`.
//! A client's own `X-Forwarded-*` are believed only from `--trusted-proxies`.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::header::{self, HeaderName};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use tessera_verify::Authenticated;
use tessera_verify::http::identity;
use tokio::time::error::Elapsed;

use crate::metrics::Outcome;
use crate::{Gateway, error, upstream};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub async fn proxy(gateway: &Gateway, peer: SocketAddr, caller: Option<&Authenticated>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let Some(uri) = gateway.settings.upstream.target(&parts.uri) else {
        gateway.metrics.count(Outcome::BadRequest);
        return error(StatusCode::BAD_REQUEST, "invalid_request", "the request target cannot be forwarded");
    };
    prepare_headers(gateway, peer, caller, &mut parts.headers, false);
    parts.uri = uri;
    let upstream = Request::from_parts(parts, body);
    let sent = tokio::time::timeout(gateway.settings.upstream_timeout, gateway.upstream.send(upstream)).await;
    match answer(gateway, sent) {
        Ok(mut response) => {
            gateway.metrics.count(Outcome::Forwarded);
            remove_hop_by_hop(response.headers_mut(), false);
            response
        }
        Err(failure) => failure,
    }
}

/// The upstream's answer, or the client's `502` or `504` when it failed or did not come within
/// `--upstream-timeout` (`sent` is the answer under [`tokio::time::timeout`]; a plain function,
/// so that the request's future holds the upstream's only once).
#[allow(clippy::result_large_err, reason = "the error is the client's answer, sent as it is")]
pub fn answer<B>(
    gateway: &Gateway,
    sent: Result<Result<Response<B>, upstream::Error>, Elapsed>,
) -> Result<Response<B>, Response> {
    match sent {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => {
            tracing::warn!(error = %tessera_server::telemetry::error_chain(&*e), "the upstream cannot be reached");
            gateway.metrics.count(Outcome::BadGateway);
            Err(error(StatusCode::BAD_GATEWAY, "bad_gateway", "the service behind the gateway cannot be reached"))
        }
        Err(_) => {
            gateway.metrics.count(Outcome::GatewayTimeout);
            let timeout = gateway.settings.upstream_timeout;
            let description =
                format!("the service behind the gateway did not answer within {}s", timeout.as_secs_f64());
            Err(error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", &description))
        }
    }
}

/// The request's headers as the upstream gets them (see the module docs). For a WebSocket
/// handshake (`upgrade`), `Upgrade` and `Connection: upgrade` stay.
pub fn prepare_headers(
    gateway: &Gateway,
    peer: SocketAddr,
    caller: Option<&Authenticated>,
    headers: &mut HeaderMap,
    upgrade: bool,
) {
    let original_host = headers.get(header::HOST).cloned();
    remove_hop_by_hop(headers, upgrade);
    let spoofed: Vec<HeaderName> = headers.keys().filter(|name| identity::is_identity_header(name)).cloned().collect();
    for name in spoofed {
        headers.remove(name);
    }
    if let Some(caller) = caller {
        identity::insert(headers, &caller.claims);
    }
    let trusted = gateway.settings.trusted_proxies.contains(peer.ip());
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(chain) if trusted => format!("{chain}, {}", peer.ip()),
        _ => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match original_host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    headers.insert(header::HOST, gateway.settings.upstream.host.clone());
}

/// Removes the headers of one hop: `Connection`, those it names, and the fixed list. With
/// `upgrade`, a WebSocket handshake keeps `Upgrade` and a `Connection: upgrade`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in
        [header::CONNECTION, KEEP_ALIVE, PROXY_CONNECTION, header::TE, header::TRAILER, header::TRANSFER_ENCODING]
    {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "text/plain"),
            ("authorization", "Bearer x"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut headers, false);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type", "authorization"]);
    }

    #[test]
    fn a_websocket_handshake_keeps_its_upgrade() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade, keep-alive"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        remove_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
    }
}
