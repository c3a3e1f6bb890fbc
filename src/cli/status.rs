//! `status` and `health`: a running node asked over its admin listener (`--admin`, else the
//! configuration's `listen.admin`), and `/api/v1/status` as lines for people.
//! Calls `super` (`Exit`, `load`, `AdminAddress`) and the crate's `config`, `clock`,
//! `soap::xsd`; no sibling.

use std::path::Path;
use std::time::Duration;

use crate::config::units::{format_bytes, format_duration};
use crate::error::{Error, Kind};

use super::{AdminAddress, Exit, load};

/// The admin listener to ask: `--admin`, else the configuration's `listen.admin` (an unspecified
/// address means this machine).
fn admin_url(
    path: Option<&Path>,
    env: &[(String, String)],
    admin: &AdminAddress,
) -> Option<String> {
    if let Some(url) = &admin.admin {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let config = load(path, env)?;
    let mut addr = config.listen.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(format!("http://{addr}"))
}

/// GET `url` (plain HTTP) within a few seconds: (status, body).
async fn admin_get(url: &str, token_file: Option<&Path>) -> Result<(u16, String), Error> {
    use http_body_util::BodyExt as _;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::internal(Kind::Config, format!("--admin {url}: {e}")))?;
    let mut request = http::Request::get(uri);
    if let Some(file) = token_file {
        let token = crate::config::read_tokens("--token-file", file)
            .map_err(|p| Error::internal(Kind::Config, p.to_string()))?;
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {}", token[0]));
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| Error::internal(Kind::Config, format!("--admin {url}: {e}")))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            Error::internal(Kind::Io, format!("{url}: no answer (is the node running?)"))
                .with_source(e)
        })?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::internal(Kind::Io, format!("{url}: {e}")))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| Error::internal(Kind::Io, format!("{url}: no answer within 10 s")))?
}

/// `wsus-edge health`: 0 when /livez (or /readyz) answers 200.
pub(super) async fn health(
    path: Option<&Path>,
    env: &[(String, String)],
    admin: &AdminAddress,
    ready: bool,
) -> Exit {
    let Some(base) = admin_url(path, env, admin) else {
        return Exit::Usage;
    };
    let probe = if ready { "/readyz" } else { "/livez" };
    match admin_get(&format!("{base}{probe}"), None).await {
        Ok((200, body)) => {
            println!("{}", body.trim());
            Exit::Ok
        }
        Ok((status, body)) => {
            println!("{status}: {}", body.trim());
            Exit::Failure
        }
        Err(e) => {
            eprintln!("wsus-edge health: {e}");
            Exit::Failure
        }
    }
}

/// `wsus-edge status`: what a running node says of itself, for people (or as JSON).
pub(super) async fn status(
    path: Option<&Path>,
    env: &[(String, String)],
    admin: &AdminAddress,
    json: bool,
) -> Exit {
    let Some(base) = admin_url(path, env, admin) else {
        return Exit::Usage;
    };
    let url = format!("{base}/api/v1/status");
    let body = match admin_get(&url, admin.token_file.as_deref()).await {
        Ok((200, body)) => body,
        Ok((status, body)) => {
            eprintln!("wsus-edge status: {url}: {status} {}", body.trim());
            return Exit::Failure;
        }
        Err(e) => {
            eprintln!("wsus-edge status: {e}");
            return Exit::Failure;
        }
    };
    if json {
        println!("{}", body.trim());
        return Exit::Ok;
    }
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(value) => {
            print!("{}", describe_status(&value, crate::clock::unix_now()));
            Exit::Ok
        }
        Err(e) => {
            eprintln!("wsus-edge status: {url}: not JSON ({e})");
            Exit::Failure
        }
    }
}

/// `/api/v1/status` as lines for people; `now` in seconds since the epoch.
fn describe_status(s: &serde_json::Value, now: i64) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let int = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let ago = |v: &serde_json::Value| match v.as_i64() {
        Some(t) => format!(
            "{} ({} ago)",
            crate::soap::xsd::format_datetime(t),
            format_duration(Duration::from_secs(now.saturating_sub(t).max(0) as u64))
        ),
        None => "never".to_owned(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node         {} ({}), wsus-edge {} (commit {}), up {}",
        text(&s["name"]),
        text(&s["role"]),
        text(&s["version"]),
        text(&s["commit"]),
        format_duration(Duration::from_secs(int(&s["uptime_seconds"])))
    );
    let readiness = &s["readiness"];
    let reasons: Vec<String> = readiness["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(readiness["notes"].as_array().into_iter().flatten())
        .map(text)
        .collect();
    let _ = writeln!(
        out,
        "ready        {}{}",
        if s["ready"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        },
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" — {}", reasons.join("; "))
        }
    );
    let listen = &s["listen"];
    let _ = writeln!(
        out,
        "listening    http {}, https {}, admin {}",
        text(&listen["http"]),
        text(&listen["https"]),
        text(&listen["admin"])
    );
    let up = &s["upstream"];
    if up.is_object() {
        let t = &up["transport"];
        let _ = writeln!(
            out,
            "upstream     {} (transport {}, last used {})",
            text(&up["url"]),
            text(&t["mode"]),
            text(&t["last_used"])
        );
        // A periodic job of a downstream server: when it last succeeded, how it fails now.
        let job = |out: &mut String, label: &str, v: &serde_json::Value| {
            let _ = writeln!(
                out,
                "{label:<12} {}; {} failed in a row{}",
                ago(&v["last_success"]),
                int(&v["failures_in_a_row"]),
                v["last_error"]
                    .as_str()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
        };
        let sync = &up["sync"];
        if sync.is_object() {
            job(&mut out, "last sync", sync);
            let running = &sync["prefetch_in_progress"];
            if running.is_object() {
                let _ = writeln!(
                    out,
                    "prefetch     running: {}/{} files, {} of {} still to fetch",
                    int(&running["done"]),
                    int(&running["files"]),
                    format_bytes(int(&running["pending_bytes"])),
                    format_bytes(int(&running["bytes"]))
                );
            }
            let last = &sync["last_prefetch"];
            if last.is_object() {
                let _ = writeln!(
                    out,
                    "last prefetch {} files: {} fetched ({}), {} failed, in {}",
                    int(&last["files"]),
                    int(&last["fetched"]),
                    format_bytes(int(&last["bytes"])),
                    int(&last["failed"]),
                    format_duration(Duration::from_millis(int(&last["elapsed_ms"])))
                );
            }
        }
        let rollup = &up["rollup"];
        if rollup.is_object() {
            job(&mut out, "last rollup", rollup);
        }
    } else {
        let _ = writeln!(out, "upstream     none (a root)");
    }
    let cache = &s["cache"];
    let _ = writeln!(
        out,
        "cache        {} objects, {} of {} on disk, {} filling; memory tier {}",
        int(&cache["objects"]),
        format_bytes(int(&cache["disk_bytes"])),
        format_bytes(int(&s["cache_disk_limit"])),
        int(&cache["filling"]),
        format_bytes(int(&cache["memory_bytes"]))
    );
    let _ = writeln!(
        out,
        "computers    {}; {} client events not yet acknowledged upstream",
        int(&s["computers"]),
        int(&s["reports_pending"])
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_as_lines_for_people() {
        let now = 1_796_400_000;
        let json = serde_json::json!({
            "name": "branch-a", "role": "downstream", "version": "0.1.0",
            "commit": "1a2b3c4d5e6f", "uptime_seconds": 11_520, "ready": true,
            "readiness": {"ready": true, "reasons": [],
                          "notes": ["the last 2 syncs from the upstream failed; the catalog in service is kept"]},
            "listen": {"http": "0.0.0.0:8530", "https": null, "admin": "127.0.0.1:8540"},
            "upstream": {
                "url": "https://central.example.org:8531",
                "transport": {"mode": "auto", "last_used": "http3", "quic": "connected"},
                "sync": {"last_success": now - 570, "failures_in_a_row": 2,
                         "last_error": "upstream error: cannot connect",
                         "prefetch_in_progress": {"started_at": now - 60, "files": 412, "done": 400,
                                                  "bytes": 4_000_000_000u64, "pending_bytes": 2_147_483_648u64},
                         "last_prefetch": {"files": 412, "fetched": 12, "bytes": 2_040_109_465u64,
                                           "failed": 0, "elapsed_ms": 242_000}},
                "rollup": {"last_success": now - 361, "failures_in_a_row": 0, "last_error": null}
            },
            "cache": {"objects": 3108, "filling": 0, "disk_bytes": 194_562_755_788u64,
                      "memory_bytes": 536_870_912u64},
            "cache_disk_limit": 214_748_364_800u64,
            "computers": 412, "reports_pending": 1280
        });
        let text = describe_status(&json, now);
        for line in [
            "node         branch-a (downstream), wsus-edge 0.1.0 (commit 1a2b3c4d5e6f), up ",
            "ready        yes — the last 2 syncs from the upstream failed",
            "listening    http 0.0.0.0:8530, https -, admin 127.0.0.1:8540",
            "upstream     https://central.example.org:8531 (transport auto, last used http3)",
            "; 2 failed in a row (last error: upstream error: cannot connect)",
            "prefetch     running: 400/412 files, ",
            "last prefetch 412 files: 12 fetched (",
            "last rollup  ",
            "cache        3108 objects, ",
            "computers    412; 1280 client events not yet acknowledged upstream",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        let root = serde_json::json!({"name": "central", "role": "root", "upstream": null});
        assert!(describe_status(&root, now).contains("upstream     none (a root)"));
    }
}
