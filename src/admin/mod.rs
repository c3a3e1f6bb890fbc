//! The admin listener: `/livez`, `/readyz`, `/metrics` (Prometheus text), `/api/v1/status`
//! (JSON), `/api/v1/content/<sha1>` (what the cache holds of one object) and the status page
//! under `/`. Read-only for now; nothing here changes state.
//! Calls `server` (for the node's shared state), `content` (stats and response helpers),
//! `config` (unit formatting) and `metrics`.

use std::sync::atomic::Ordering;

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};

use crate::config::units::format_bytes;
use crate::content::Digest;
use crate::content::response::{Body, full_body, text};
use crate::server::App;

pub async fn respond(app: &App, method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "read-only");
    }
    match path {
        "/livez" => text(StatusCode::OK, "ok"),
        "/readyz" => {
            if app.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
            }
        }
        "/metrics" => with_type(
            app.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/api/v1/status" => with_type(status_json(app), "application/json"),
        "/" => with_type(status_page(app), "text/html; charset=utf-8"),
        _ => match path.strip_prefix("/api/v1/content/").map(Digest::from_hex) {
            Some(Some(digest)) => match app.store.describe(&digest) {
                Some(info) => with_type(
                    serde_json::to_string_pretty(&info).unwrap_or_default(),
                    "application/json",
                ),
                None => text(StatusCode::NOT_FOUND, "not in the cache"),
            },
            Some(None) => text(StatusCode::BAD_REQUEST, "expected a SHA-1 in hex"),
            None => text(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

fn with_type(body: String, content_type: &'static str) -> Response<Body> {
    let len = body.len();
    let mut response = Response::new(full_body(body));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(serde::Serialize)]
struct Status<'a> {
    name: &'a str,
    version: &'static str,
    role: &'static str,
    upstream: Option<UpstreamStatus<'a>>,
    uptime_seconds: u64,
    ready: bool,
    listen: crate::server::Listening,
    cache: crate::content::Stats,
}

#[derive(serde::Serialize)]
struct UpstreamStatus<'a> {
    url: &'a str,
    transport: crate::upstream::TransportStatus,
}

fn status(app: &App) -> Status<'_> {
    Status {
        name: &app.name,
        version: env!("CARGO_PKG_VERSION"),
        role: if app.upstream.is_some() {
            "downstream"
        } else {
            "root"
        },
        upstream: app.upstream.as_ref().map(|u| UpstreamStatus {
            url: u.url(),
            transport: u.transport_status(),
        }),
        uptime_seconds: app.started.elapsed().as_secs(),
        ready: app.ready.load(Ordering::Relaxed),
        listen: app.listen,
        cache: app.store.stats(),
    }
}

fn status_json(app: &App) -> String {
    serde_json::to_string_pretty(&status(app)).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn status_page(app: &App) -> String {
    let s = status(app);
    let upstream = match &s.upstream {
        Some(u) => format!(
            "{} (transport {}: last used {}, QUIC {})",
            escape(u.url),
            u.transport.mode,
            u.transport.last_used.unwrap_or("none yet"),
            u.transport.quic
        ),
        None => "none (root)".into(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>wsus-edge {name}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em 1em;text-align:left}}</style></head>\
         <body><h1>wsus-edge: {name}</h1><table>\
         <tr><th>Role</th><td>{role}</td></tr>\
         <tr><th>Upstream</th><td>{upstream}</td></tr>\
         <tr><th>Uptime</th><td>{uptime} s</td></tr>\
         <tr><th>Clients</th><td>http://{http}/</td></tr>\
         <tr><th>Cached objects</th><td>{objects} ({disk} on disk, {filling} filling)</td></tr>\
         <tr><th>Memory tier</th><td>{memory}</td></tr>\
         </table><p><a href=\"/metrics\">metrics</a> · <a href=\"/api/v1/status\">status (JSON)</a></p>\
         </body></html>\n",
        name = escape(s.name),
        role = s.role,
        uptime = s.uptime_seconds,
        http = s.listen.http,
        objects = s.cache.objects,
        disk = format_bytes(s.cache.disk_bytes),
        filling = s.cache.filling,
        memory = format_bytes(s.cache.memory_bytes),
    )
}
