//! The admin listener: `/livez`, `/readyz`, `/metrics` (Prometheus text), `/api/v1/status`
//! (JSON), `/api/v1/content/<sha1>` (what the cache holds of one object), the target groups and
//! approvals of the catalog (`/api/v1/groups`, `/api/v1/approvals`, `/api/v1/declines`), what
//! clients reported (`reports`), and the status pages (`pages`).
//!
//! Reading is open from loopback and from `admin.read_networks` (elsewhere it needs a token;
//! `/livez` and `/readyz` are open to all); a change (POST) needs a bearer token from
//! `admin.token_file`, and without that file the listener is read-only. Accepted tokens are kept
//! as SHA-256 digests and compared as such, so comparison time tells nothing about a token.
//! Every request but the probes must name the listener by one of its own names in `Host`
//! ([`host_is_ours`]): a web page that rebinds its DNS name to this machine is refused.
//! Reads the node through [`Node`], the narrow view the composition root gives it. Calls `http`
//! (request bodies, answers), `served` (the catalog in service and changes to it), `catalog`,
//! `content` (stats), `config` and `metrics`. Never `server`, which routes to it.

use http::{HeaderValue, Method, Response, StatusCode};

use crate::auth::{Tokens, unauthorized};
use crate::catalog::{Action, Decision, Guid};
use crate::config::units::format_bytes;
use crate::content::Digest;
use crate::error::Result;
use crate::http::{Body, BodyError, RequestBody, read_body, text, with_type};
use changes::Change;
use session::Session;

mod audit;
mod changes;
mod pages;
mod reports;
mod session;
mod updates;
pub use reports::open as open_reports;

/// The most a change request's JSON may be.
const MAX_BODY: usize = 64 << 10;

/// What the admin listener reads of a running node, and nothing more: not the client
/// protocol, the parsers, the downstream tokens or what a reload changes. The composition root
/// (`node`) implements it for the node it built.
pub trait Node: Send + Sync {
    fn name(&self) -> &str;
    fn started(&self) -> std::time::Instant;
    fn listening(&self) -> crate::app::Listening;
    fn readiness(&self) -> crate::app::Readiness;
    fn metrics(&self) -> &crate::metrics::Metrics;
    /// How long a request body may take to arrive.
    fn body_timeout(&self) -> std::time::Duration;
    /// The names the admin listener answers to (lower case), besides IP literals and
    /// localhost.
    fn names(&self) -> &[String];
    /// Who may read without a token, besides loopback (as SIGHUP last set it).
    fn read_networks(&self) -> Vec<crate::config::Network>;
    /// Who may change state.
    fn tokens(&self) -> &Tokens;
    fn content(&self) -> &crate::content::Store;
    /// The catalog in service, and changes to it.
    fn served(&self) -> &std::sync::Arc<crate::served::Served>;
    fn reports(&self) -> &std::sync::Arc<std::sync::Mutex<crate::state::Journal>>;
    /// The server-server protocol's view of the downstream servers.
    fn wsusss(&self) -> &std::sync::Arc<crate::wsusss::Service>;
    fn upstream(&self) -> Option<&std::sync::Arc<crate::upstream::Upstream>>;
    /// `[upstream]` as the node was started with it (None: a root).
    fn upstream_config(&self) -> Option<&crate::config::Upstream>;
    fn replica(&self) -> Option<&std::sync::Arc<crate::wsusss::replica::Replica>>;
    fn rollup(&self) -> Option<&std::sync::Arc<crate::wsusss::rollup_client::Rollup>>;
}

/// The tokens that may change state: none configured, nothing is accepted.
pub fn tokens(admin: &crate::config::Admin) -> Result<Tokens> {
    Tokens::from_file("admin.token_file", admin.token_file.as_deref())
}

/// Whether `host` (a Host header's value) names this admin listener: an IP literal (the peer
/// reached an address of this machine), `localhost`, or one of `names` (this machine's host
/// name, the node's name, `admin.server_names`, all lower case), or a name below this machine's
/// host name (its FQDN). The port is not looked at.
pub fn host_is_ours(host: &str, names: &[String]) -> bool {
    let host = host.trim();
    if host.starts_with('[') {
        // An IPv6 literal, with or without a port.
        return host
            .split_once(']')
            .is_some_and(|(ip, _)| ip[1..].parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || names.iter().any(|ours| {
            *ours == name
                || name
                    .strip_prefix(ours.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
}

/// Whether the request comes from a browser showing pages (it accepts HTML).
fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// Whether a peer may read the admin views without a token: loopback, or one of `networks`.
fn may_read(peer: Option<std::net::IpAddr>, networks: &[crate::config::Network]) -> bool {
    peer.is_some_and(|ip| {
        ip.to_canonical().is_loopback() || networks.iter().any(|n| n.contains(ip))
    })
}

pub async fn respond(
    app: &dyn Node,
    parts: &http::request::Parts,
    body: RequestBody,
) -> Response<Body> {
    let path = parts.uri.path();
    let method = &parts.method;
    // Reading is open to loopback and the configured networks (and to a token); health
    // probes to anyone who reaches the listener.
    let reading = method == Method::GET || method == Method::HEAD;
    let probe = reading && matches!(path, "/livez" | "/readyz");
    if !probe {
        let host = parts
            .headers
            .get(http::header::HOST)
            .map(|h| h.to_str().unwrap_or(""))
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        if let Some(host) = host.filter(|h| !host_is_ours(h, app.names())) {
            app.metrics().refused("admin_host");
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "this admin listener does not answer to the name {host:?}; add it to \
                     admin.server_names if it is this node's"
                ),
            );
        }
    }
    if session::handles(path) {
        return session::respond(app, parts, body).await;
    }
    if reading && !probe {
        let peer = parts
            .extensions
            .get::<crate::access::Peer>()
            .map(|p| p.0.ip());
        let open = {
            let networks = app.read_networks();
            may_read(peer, &networks)
        };
        if !open
            && !app.tokens().accepts(&parts.headers)
            && Session::of(app, &parts.headers).is_none()
        {
            return match wants_html(&parts.headers) {
                // A person's browser: to the sign-in form, and back here after it.
                true => session::to_sign_in(parts.uri.path_and_query().map_or("/", |p| p.as_str())),
                false => unauthorized("Bearer realm=\"wsus-edge admin\""),
            };
        }
    }
    if reading && path == "/metrics" {
        return metrics(app, &parts.headers).await;
    }
    if reading && path == "/api/v1/status" {
        return status_json(app).await;
    }
    let session = reading.then(|| Session::of(app, &parts.headers)).flatten();
    if reading
        && let Some(answer) = audit::respond(app, path, parts.uri.query(), session.as_ref()).await
    {
        return answer;
    }
    if let Some(answer) = reports::respond(app, method, path, parts.uri.query()).await {
        return answer;
    }
    if let Some(answer) = pages::respond(app, method, path, parts.uri.query(), session).await {
        return answer;
    }
    let kind = match path {
        "/api/v1/groups" => ApiChange::AddGroup,
        "/api/v1/approvals" => ApiChange::Approve,
        "/api/v1/declines" => ApiChange::Decline,
        "/api/v1/sync" => ApiChange::Sync,
        "/api/v1/rules" if method == Method::GET || method == Method::HEAD => {
            return rules_json(app).await;
        }
        "/api/v1/rules" => ApiChange::Rule,
        "/api/v1/downstreams" if method == Method::GET || method == Method::HEAD => {
            return downstreams_json(app).await;
        }
        _ => return read_only(app, method, path),
    };
    if method == Method::GET || method == Method::HEAD {
        return read_only(app, method, path);
    }
    if method != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or POST");
        r.headers_mut().insert(
            http::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST"),
        );
        return r;
    }
    if app.tokens().is_empty() {
        return read_only_node();
    }
    let Some(token) = app.tokens().presented(&parts.headers) else {
        return unauthorized("Bearer realm=\"wsus-edge admin\"");
    };
    let bytes = match read_body(&parts.headers, body, MAX_BODY, app.body_timeout()).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "at most 64 KiB of JSON");
        }
        Err(e) => return e.response(MAX_BODY),
    };
    let change = match kind.parse(&bytes) {
        Ok(change) => change,
        Err((status, message)) => return text(status, &message),
    };
    let actor = changes::Actor {
        who: format!("token {}", crate::auth::fingerprint(&token)),
        via: "api",
    };
    match changes::apply(app, &actor, change).await {
        Ok((status, json)) => {
            let mut r = with_type(json.to_string(), "application/json");
            *r.status_mut() = status;
            r
        }
        Err((status, message)) => text(status, &message),
    }
}

/// 403: no token file, no change.
fn read_only_node() -> Response<Body> {
    text(
        StatusCode::FORBIDDEN,
        "read-only: changes need admin.token_file in the configuration",
    )
}

/// What a POST to the JSON API asks for, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApiChange {
    AddGroup,
    Approve,
    Decline,
    /// A downstream server syncs now.
    Sync,
    Rule,
}

impl ApiChange {
    /// The change a request body of this kind asks for, or the answer that says what is wrong
    /// with it.
    fn parse(self, bytes: &[u8]) -> std::result::Result<Change, changes::Refused> {
        let invalid = |message: String| (StatusCode::UNPROCESSABLE_ENTITY, message);
        let bad_json = |e: &serde_json::Error| (StatusCode::BAD_REQUEST, format!("JSON: {e}"));
        match self {
            ApiChange::Sync => Ok(Change::Sync),
            ApiChange::Rule => Ok(Change::PutRule(
                serde_json::from_slice(bytes).map_err(|e| bad_json(&e))?,
            )),
            ApiChange::AddGroup => {
                let g: NewGroup = serde_json::from_slice(bytes).map_err(|e| bad_json(&e))?;
                Ok(Change::AddGroup {
                    name: g.name,
                    parent: g.parent,
                })
            }
            ApiChange::Approve => {
                let a: Approval = serde_json::from_slice(bytes).map_err(|e| bad_json(&e))?;
                let (updates, decision, deadline) = a.validate().map_err(invalid)?;
                Ok(Change::Decide {
                    updates,
                    group: a.group,
                    decision,
                    deadline,
                })
            }
            ApiChange::Decline => {
                let d: Declines = serde_json::from_slice(bytes).map_err(|e| bad_json(&e))?;
                match guids(&d.updates) {
                    Ok(updates) if !updates.is_empty() => Ok(Change::Decline {
                        updates,
                        undo: d.undo,
                    }),
                    Ok(_) => Err(invalid("updates: none given".into())),
                    Err(message) => Err(invalid(message)),
                }
            }
        }
    }
}

/// `POST /api/v1/declines`: the same choices as `wsus-edge decline`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Declines {
    updates: Vec<String>,
    #[serde(default)]
    undo: bool,
}

/// Update ids as GUIDs, or which one is not.
fn guids(updates: &[String]) -> std::result::Result<Vec<Guid>, String> {
    updates
        .iter()
        .map(|u| Guid::parse(u).ok_or_else(|| format!("updates: {u:?} is not a GUID")))
        .collect()
}

/// `POST /api/v1/groups`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
    /// The parent group's name; All Computers when absent.
    parent: Option<String>,
}

/// `POST /api/v1/approvals`: the same choices as `wsus-edge approve`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Approval {
    group: String,
    /// Update ids (their latest revision is approved).
    #[serde(default)]
    updates: Vec<String>,
    /// Every explicitly deployable software update instead of `updates`.
    #[serde(default)]
    all: bool,
    /// install (default), optional, uninstall, block or notapproved.
    action: Option<String>,
    /// An xs:dateTime.
    deadline: Option<String>,
}

impl Approval {
    /// (updates, None = all; action; deadline) or what is wrong, naming the field.
    #[allow(clippy::type_complexity)]
    fn validate(&self) -> std::result::Result<(Option<Vec<Guid>>, Decision, Option<i64>), String> {
        let updates = match (self.all, self.updates.is_empty()) {
            (true, true) => None,
            (false, false) => Some(guids(&self.updates)?),
            _ => return Err("give either \"updates\" or \"all\": true".into()),
        };
        let action = match self.action.as_deref() {
            None => Decision::Approve(Action::Install),
            Some(a) => {
                Decision::parse(a).ok_or_else(|| format!("action: {a:?}: {}", Decision::CHOICES))?
            }
        };
        let deadline = match self.deadline.as_deref() {
            None => None,
            Some(d) => Some(
                crate::soap::xsd::parse_datetime(d)
                    .ok_or_else(|| format!("deadline: {d:?} is not an xs:dateTime"))?,
            ),
        };
        Ok((updates, action, deadline))
    }
}

fn read_only(app: &dyn Node, method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "read-only");
    }
    match path {
        "/livez" => text(StatusCode::OK, "ok"),
        "/readyz" => {
            let r = app.readiness();
            let mut lines = if r.ready {
                vec!["ready".to_owned()]
            } else {
                std::iter::once("not ready".to_owned())
                    .chain(r.reasons)
                    .collect()
            };
            lines.extend(r.notes);
            let status = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, &lines.join("\n"))
        }
        "/api/v1/groups" => with_type(groups_json(app), "application/json"),
        "/api/v1/approvals" => with_type(approvals_json(app), "application/json"),
        _ => match path.strip_prefix("/api/v1/content/").map(Digest::from_hex) {
            Some(Some(digest)) => match app.content().describe(&digest) {
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

/// `/metrics`: the gauges that describe state are brought up to date first. OpenMetrics to a
/// scraper that asks for it (Prometheus does), else the Prometheus text format.
async fn metrics(app: &dyn Node, headers: &http::HeaderMap) -> Response<Body> {
    let m = &app.metrics();
    m.ready.set(i64::from(app.readiness().ready));
    let stats = app.content().stats();
    m.fills_in_progress.set(stats.filling as i64);
    if let Ok(fs) = rustix::fs::statvfs(&app.content().settings().data_dir) {
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        m.data_dir_free.set(i64::try_from(free).unwrap_or(i64::MAX));
    }
    if let Some(replica) = app.replica() {
        let last = replica.status().borrow().last_success.unwrap_or(0);
        m.sync_last_success.set(last);
    }
    if let Some(rollup) = app.rollup() {
        let last = rollup.status().borrow().last_success.unwrap_or(0);
        m.rollup_last_success.set(last);
    }
    let reports = app.reports().clone();
    let downstream = app.upstream().is_some();
    let backlog = tokio::task::spawn_blocking(move || crate::lock::lock(&reports).backlog()).await;
    match backlog {
        Ok(Ok((pending, computers))) => {
            m.reports_pending
                .set(if downstream { pending as i64 } else { 0 });
            m.computers.set(computers as i64);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "reading the report backlog for /metrics"),
        Err(e) => tracing::warn!(error = %e, "reading the report backlog for /metrics"),
    }
    let open_metrics = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if open_metrics {
        with_type(
            m.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        with_type(m.encode_text(), "text/plain; version=0.0.4; charset=utf-8")
    }
}

/// The automatic approval rules, with their categories and group by name and how many
/// approvals each made.
async fn rules_json(app: &dyn Node) -> Response<Body> {
    let served = app.served().clone();
    let catalog = app.served().catalog();
    let rules = tokio::task::spawn_blocking(move || served.read(|s| s.rules())).await;
    let title = |id: &Guid| {
        catalog
            .latest(*id)
            .map_or_else(|| id.to_string(), |r| r.title().to_owned())
    };
    match rules {
        Ok(Ok(rules)) => {
            let list: Vec<_> = rules
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "id": r.id,
                        "name": r.name,
                        "classifications": r.classifications.iter().map(title).collect::<Vec<_>>(),
                        "products": r.products.iter().map(title).collect::<Vec<_>>(),
                        "group": catalog.group(r.group).map(|g| g.name.as_str()),
                        "action": r.action.as_str(),
                        "deadline_days": r.deadline_days,
                        "enabled": r.enabled,
                        "approved": r.approved,
                    })
                })
                .collect();
            with_type(
                serde_json::Value::Array(list).to_string(),
                "application/json",
            )
        }
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The downstream servers that authorized here (MS-WSUSSS), most recently seen first.
async fn downstreams_json(app: &dyn Node) -> Response<Body> {
    let wsusss = app.wsusss().clone();
    match tokio::task::spawn_blocking(move || wsusss.downstreams()).await {
        Ok(Ok(list)) => with_type(
            serde_json::to_string_pretty(&list).unwrap_or_default(),
            "application/json",
        ),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn groups_json(app: &dyn Node) -> String {
    let catalog = app.served().catalog();
    let groups: Vec<_> = catalog
        .groups
        .iter()
        .map(|g| {
            serde_json::json!({
                "id": g.id.to_string(),
                "name": g.name,
                "parent": g.parent.and_then(|p| catalog.group(p)).map(|p| p.name.as_str()),
                "builtin": g.builtin,
            })
        })
        .collect();
    serde_json::Value::Array(groups).to_string()
}

fn approvals_json(app: &dyn Node) -> String {
    let catalog = app.served().catalog();
    let approvals: Vec<_> = catalog
        .deployments
        .iter()
        .filter_map(|d| {
            let r = catalog.revision(d.revision)?;
            Some(serde_json::json!({
                "update": r.update_id.to_string(),
                "revision_number": r.revision_number,
                "title": r.title(),
                "group": catalog.group(d.group).map(|g| g.name.as_str()),
                "action": d.action.as_str(),
                "deadline": d.deadline.map(crate::soap::xsd::format_datetime),
                "changed": crate::soap::xsd::format_datetime(d.last_change),
            }))
        })
        .collect();
    serde_json::Value::Array(approvals).to_string()
}

#[derive(serde::Serialize)]
struct Status<'a> {
    name: &'a str,
    version: &'static str,
    role: &'static str,
    upstream: Option<UpstreamStatus<'a>>,
    commit: &'static str,
    uptime_seconds: u64,
    ready: bool,
    readiness: crate::app::Readiness,
    listen: crate::app::Listening,
    cache: crate::content::Stats,
    cache_disk_limit: u64,
    /// Computers this node knows; None when state.db could not be read.
    computers: Option<u64>,
    /// Client events not yet acknowledged by the upstream.
    reports_pending: Option<u64>,
}

#[derive(serde::Serialize)]
struct UpstreamStatus<'a> {
    url: &'a str,
    transport: crate::upstream::TransportStatus,
    /// The syncs and prefetches from it.
    sync: Option<crate::wsusss::replica::ReplicaStatus>,
    /// The rollups of client status to it.
    rollup: Option<crate::wsusss::rollup_client::RollupStatus>,
}

fn status(app: &dyn Node, backlog: Option<(u64, u64)>) -> Status<'_> {
    let readiness = app.readiness();
    Status {
        commit: crate::metrics::COMMIT,
        ready: readiness.ready,
        readiness,
        cache_disk_limit: app.content().settings().disk_bytes,
        computers: backlog.map(|(_, c)| c),
        reports_pending: backlog.map(|(p, _)| if app.upstream().is_some() { p } else { 0 }),
        name: app.name(),
        version: env!("CARGO_PKG_VERSION"),
        role: if app.upstream().is_some() {
            "downstream"
        } else {
            "root"
        },
        upstream: app.upstream().map(|u| UpstreamStatus {
            url: u.url(),
            transport: u.transport_status(),
            sync: app.replica().map(|r| r.status().borrow().clone()),
            rollup: app.rollup().map(|r| r.status().borrow().clone()),
        }),
        uptime_seconds: app.started().elapsed().as_secs(),
        listen: app.listening(),
        cache: app.content().stats(),
    }
}

async fn status_json(app: &dyn Node) -> Response<Body> {
    let reports = app.reports().clone();
    let backlog = tokio::task::spawn_blocking(move || crate::lock::lock(&reports).backlog())
        .await
        .ok()
        .and_then(|r| r.ok());
    let json = serde_json::to_string_pretty(&status(app, backlog))
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    with_type(json, "application/json")
}

/// The node in a table: role, upstream, uptime, cache.
fn node_summary(app: &dyn Node) -> String {
    let s = status(app, None);
    let upstream = match &s.upstream {
        Some(u) => format!(
            "{} (transport {}: last used {}, QUIC {})",
            crate::soap::escape(u.url),
            u.transport.mode,
            u.transport.last_used.unwrap_or("none yet"),
            u.transport.quic
        ),
        None => "none (root)".into(),
    };
    format!(
        "<table>\
         <tr><th>Role</th><td>{role}</td></tr>\
         <tr><th>Upstream</th><td>{upstream}</td></tr>\
         <tr><th>Uptime</th><td>{uptime} s</td></tr>\
         <tr><th>Clients</th><td>http://{http}/</td></tr>\
         <tr><th>Cached objects</th><td>{objects} ({disk} on disk, {filling} filling)</td></tr>\
         <tr><th>Memory tier</th><td>{memory}</td></tr>\
         </table>",
        role = s.role,
        uptime = s.uptime_seconds,
        http = s.listen.http,
        objects = s.cache.objects,
        disk = format_bytes(s.cache.disk_bytes),
        filling = s.cache.filling,
        memory = format_bytes(s.cache.memory_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_listener_knows_its_own_names() {
        let names = vec!["branch-12".to_owned(), "wsus.example.org".to_owned()];
        for ours in [
            "127.0.0.1:8540",
            "10.1.2.3",
            "[::1]:8540",
            "[fd00::1]",
            "localhost",
            "LOCALHOST:8540",
            "app.localhost",
            "branch-12",
            "branch-12.corp.example:8540",
            "wsus.example.org.",
        ] {
            assert!(host_is_ours(ours, &names), "{ours}");
        }
        for theirs in [
            "attacker.example",
            "branch-12evil.example",
            "example.org",
            "",
            ":8540",
            "[not-an-ip]",
            "10.1.2.3.attacker.example",
        ] {
            assert!(!host_is_ours(theirs, &names), "{theirs}");
        }
    }
    use crate::config::Network;

    #[test]
    fn reading_is_open_to_loopback_and_the_configured_networks() {
        let nets = [
            Network::parse("10.20.0.0/16").unwrap(),
            Network::parse("fd00::/8").unwrap(),
            Network::parse("192.168.1.7").unwrap(),
        ];
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        assert!(may_read(ip("127.0.0.1"), &[]));
        assert!(may_read(ip("::1"), &[]));
        assert!(may_read(ip("::ffff:127.0.0.1"), &[]));
        assert!(may_read(ip("10.20.3.4"), &nets));
        assert!(may_read(ip("::ffff:10.20.3.4"), &nets));
        assert!(may_read(ip("fd12::1"), &nets));
        assert!(may_read(ip("192.168.1.7"), &nets));
        assert!(!may_read(ip("192.168.1.8"), &nets));
        assert!(!may_read(ip("10.21.0.1"), &nets));
        assert!(!may_read(ip("10.20.3.4"), &[]));
        assert!(!may_read(None, &nets));
        assert_eq!(Network::parse("10.0.0.0/33"), None);
        assert_eq!(Network::parse("nonsense"), None);
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}
