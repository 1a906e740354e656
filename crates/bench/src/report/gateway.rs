//! The report's lines about the gateway rows: how they were measured, and what the table does
//! not show — the latency the gateway adds, its CPU per request, its memory with idle sockets.

use super::{Context, MEMORY_TARGET_MIB, Row, verdict};
use crate::scenario::{GATEWAY, NGINX_AUTH_REQUEST, NGINX_PROXY, UPSTREAM_DIRECT};

/// The most CPU time the gateway may spend on a request, in microseconds (an Istio sidecar
/// spends about 200).
pub const MAX_CPU_US: f64 = 25.0;
/// The most the gateway may add to the direct row's p99, in milliseconds.
pub const MAX_ADDED_P99_MS: f64 = 1.0;

/// How the gateway rows were measured, when they ran.
pub fn setup_lines(ctx: &Context, rows: &[Row]) -> Vec<String> {
    let mut lines = Vec::new();
    if rows.iter().any(|r| r.label == GATEWAY) {
        lines.push(format!(
            "- gateway rows: the same `GET /api/auth/me` with the same bearer token to a trivial upstream \
             (`tessera-bench serve-trivial`) reached directly (`{UPSTREAM_DIRECT}`), through Debian's nginx as a plain \
             reverse proxy (`nginx-proxy`: a worker per core, keep-alive to the upstream, no authentication: the \
             machine's proxy ceiling), through nginx with `auth_request` to tessera's `/api/auth/verify` \
             (`nginx-auth-request`, keep-alive to both; its server CPU is tessera's) and through `tessera gateway` \
             (`gateway`, its defaults: one worker, every token checked locally), taking turns run by run on {} connections; the gateway's \
             \"ratio to ceiling\" is to nginx-proxy",
            ctx.connections
        ));
    }
    if rows.iter().any(|r| r.label.starts_with("socket-close")) {
        lines.push(
            "- socket-close: a WebSocket through the gateway for each of 100 sessions, the sessions logged out on \
             tessera one after another; a sample is the time from a logout's answer to its socket's close frame \
             (4001 session ended)"
                .to_owned(),
        );
    }
    lines
}

/// What the gateway adds over the direct row, its CPU per request and its memory with idle
/// sockets.
pub fn result_lines(ctx: &Context, rows: &[Row]) -> Vec<String> {
    let mut lines = Vec::new();
    let find = |label: &str| rows.iter().find(|r| r.label == label).map(|r| &r.summary);
    if let (Some(gateway), Some(direct)) = (find(GATEWAY), find(UPSTREAM_DIRECT)) {
        let (p50, p99) = (gateway.p50_ms - direct.p50_ms, gateway.p99_ms - direct.p99_ms);
        lines.push(format!(
            "gateway latency added over {UPSTREAM_DIRECT} (median runs): p50 {p50:+.2} ms, p99 {p99:+.2} ms \
             (target p99 ≤ +{MAX_ADDED_P99_MS:.0} ms: {})",
            verdict(Some(p99 <= MAX_ADDED_P99_MS))
        ));
    }
    if let Some(us) = find(GATEWAY).and_then(|s| s.cpu_us_per_request) {
        let cpu = |label: &str| find(label).and_then(|s| s.cpu_us_per_request);
        let mut others: Vec<String> = Vec::new();
        if let Some(nginx) = cpu(NGINX_PROXY) {
            others.push(format!("{NGINX_PROXY} {nginx:.1} µs"));
        }
        if let Some(nginx) = cpu(NGINX_AUTH_REQUEST) {
            let tessera = find(NGINX_AUTH_REQUEST).and_then(|s| s.server_cpu_us);
            let tessera = tessera.map_or_else(String::new, |t| format!(" + tessera {t:.1} µs"));
            others.push(format!("{NGINX_AUTH_REQUEST} {nginx:.1} µs{tessera}"));
        }
        let others = if others.is_empty() { String::new() } else { format!("; nginx's: {}", others.join(", ")) };
        lines.push(format!(
            "gateway CPU per request (the `tessera gateway` process's CPU time in the measured window / requests): \
             {us:.1} µs (target ≤ {MAX_CPU_US:.0} µs: {}){others}",
            verdict(Some(us <= MAX_CPU_US))
        ));
    }
    if let Some(idle) = &ctx.idle_sockets {
        let mib = idle.mib_at(idle.wanted);
        let measured = if idle.sockets == idle.wanted {
            String::new()
        } else {
            format!(
                " (extrapolated: the open-file limit left room for {} sockets, {:.1} MiB resident with them)",
                idle.sockets,
                idle.after_kib as f64 / 1024.0
            )
        };
        lines.push(format!(
            "gateway with {} idle proxied WebSockets of {} sessions (a fresh `tessera gateway`): {mib:.1} MiB \
             resident{measured}, {:.1} KiB per socket over its {:.1} MiB with none (target ≤ \
             {MEMORY_TARGET_MIB:.0} MiB: {})",
            idle.wanted,
            idle.sessions,
            idle.per_socket_kib(),
            idle.before_kib as f64 / 1024.0,
            verdict(Some(mib <= MEMORY_TARGET_MIB))
        ));
    }
    lines
}
