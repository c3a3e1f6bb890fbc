//! The status pages of the admin listener: plain server-rendered HTML (no script), so they
//! work in any browser and behind any proxy. `/`: this node and every server below it, with
//! its last contact (stale ones marked) and computer counts; `/branches/{id}` (or `local`):
//! a branch's computers, a page at a time, by state and name; `/computers/{id}`: one
//! computer's branch, target groups and updates; `/updates` and `/updates/{id}`: what to
//! approve ([`super::updates`]). Everything a page shows is HTML-escaped, every link's
//! parameters percent-encoded. Reads `report` off the async workers.

use std::fmt::Write as _;

use http::{Method, Response, StatusCode};

use super::Node;
use super::node_summary;
use super::reports::params;
use super::session::Session;
use super::updates::{self, UpdatePage};
use crate::catalog::{CatalogError, Guid};
use crate::clock::unix_now;
use crate::http::{Body, text, with_type};
use crate::report::{ComputerFilter, ComputerQuery, ComputerStatus, ServerChoice, UpdateState};
use crate::soap::escape;
use crate::soap::xsd::format_datetime;

/// A server not heard from (sync or rollup) for longer than this is shown as stale (seconds).
pub(crate) const STALE_AFTER: i64 = 2 * 3600;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
    td,th{padding:.25em .8em;text-align:left;border-bottom:1px solid #ddd}\
    th{background:#f3f3f3}tr.stale td{background:#fde2e2;color:#8a1010}\
    .failed{color:#b00020;font-weight:bold}.ok{color:#0a6b2d}nav a{margin-right:1em}";

/// How many computers a page of a branch's computers holds, unless said.
const COMPUTERS_PER_PAGE: usize = 100;

pub(crate) async fn respond(
    app: &dyn Node,
    method: &Method,
    path: &str,
    query: Option<&str>,
    session: Option<Session>,
) -> Option<Response<Body>> {
    let page = match path {
        "/" => Page::Home,
        p => {
            if let Some(update) = updates::route(p) {
                Page::Update(update)
            } else if let Some(id) = p.strip_prefix("/branches/") {
                Page::Branch(id.to_owned())
            } else if let Some(id) = p.strip_prefix("/computers/") {
                Page::Computer(id.to_owned())
            } else {
                return None;
            }
        }
    };
    if method != Method::GET && method != Method::HEAD {
        return Some(text(StatusCode::METHOD_NOT_ALLOWED, "read-only"));
    }
    let summary = matches!(page, Page::Home).then(|| node_summary(app));
    let from = updates::Sources {
        catalog: app.served().catalog(),
        journal: app.reports().clone(),
        node: app.name().to_owned(),
        session,
    };
    let query = params(query);
    let answer = tokio::task::spawn_blocking(move || {
        page.render(&from, &query, summary.unwrap_or_default(), unix_now())
    })
    .await;
    Some(match answer {
        Ok(Ok(Some(Ok(html)))) => with_type(html, "text/html; charset=utf-8"),
        Ok(Ok(Some(Err(message)))) => text(StatusCode::BAD_REQUEST, &message),
        Ok(Ok(None)) => text(StatusCode::NOT_FOUND, "not found"),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    })
}

enum Page {
    Home,
    Branch(String),
    Computer(String),
    Update(UpdatePage),
}

/// A page of the admin listener: the navigation, a heading, `body` (HTML already).
pub(super) struct HtmlPage<'a> {
    pub(super) node: &'a str,
    /// Plain text (escaped here).
    pub(super) title: &'a str,
    pub(super) body: &'a str,
    /// The browser's session: who, and its sign-out form; None: a link to sign in.
    pub(super) session: Option<&'a Session>,
}

impl HtmlPage<'_> {
    pub(super) fn render(&self) -> String {
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{title} · wsus-edge {node}</title><style>{STYLE}</style></head><body>\
             <nav><a href=\"/\">Branches</a><a href=\"/branches/local\">This node's computers</a>\
             <a href=\"/updates\">Updates</a><a href=\"/metrics\">Metrics</a>\
             <a href=\"/api/v1/status\">Status (JSON)</a><a href=\"/audit\">Audit log</a>{session}\
             </nav><h1>{title}</h1>{body}</body></html>\n",
            session = match self.session {
                Some(session) => super::session::sign_out_form(session),
                None => "<a href=\"/signin\" id=\"signin\">Sign in</a>".to_owned(),
            },
            node = escape(self.node),
            title = escape(self.title),
            body = self.body,
        )
    }
}

fn page(from: &updates::Sources, title: &str, body: &str) -> String {
    HtmlPage {
        node: &from.node,
        title,
        body,
        session: from.session.as_ref(),
    }
    .render()
}

/// `s` percent-encoded for a path segment or a query value: everything but RFC 3986's
/// unreserved characters.
pub(super) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `offset` (from 0) and `limit` (1 to 1000, `default` when absent) of a paged page's query,
/// or what is wrong with them, naming the parameter.
pub(super) fn offset_limit(
    query: &[(String, String)],
    default: usize,
) -> Result<(usize, usize), String> {
    let get = |name: &str| {
        query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let offset = match get("offset") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| format!("offset: {v:?} is not a whole number from 0"))?,
    };
    let limit = match get("limit") {
        None => default,
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("limit: {v:?} is not a whole number from 1 to 1000"))?,
    };
    Ok((offset, limit))
}

/// `path` with the parameters of `query`, those named in `set` replaced by its values (not
/// HTML-escaped).
pub(super) fn link(path: &str, query: &[(String, String)], set: &[(&str, String)]) -> String {
    let kept = query
        .iter()
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let pairs: Vec<String> = kept
        .chain(set.iter().map(|(k, v)| (*k, v.as_str())))
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    if pairs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

/// "N–M of T" with links to the previous and next pages of `path`, the other parameters of
/// `query` kept.
pub(super) fn pager(
    path: &str,
    query: &[(String, String)],
    offset: usize,
    limit: usize,
    total: usize,
) -> String {
    let link = |to: usize| escape(&link(path, query, &[("offset", to.to_string())])).into_owned();
    let shown = if total == 0 || offset >= total {
        format!("0 of {total}")
    } else {
        format!("{}–{} of {total}", offset + 1, (offset + limit).min(total))
    };
    let mut out = String::from("<p class=\"pager\">");
    if offset > 0 {
        let _ = write!(
            out,
            "<a rel=\"prev\" href=\"{}\">← previous</a> ",
            link(
                offset
                    .saturating_sub(limit)
                    .min(total.saturating_sub(1) / limit * limit)
            )
        );
    }
    out.push_str(&shown);
    if offset.saturating_add(limit) < total {
        let _ = write!(
            out,
            " <a rel=\"next\" href=\"{}\">next →</a>",
            link(offset + limit)
        );
    }
    out.push_str("</p>");
    out
}

/// A labelled `<select>` of (value, label) choices, `selected` chosen.
pub(super) fn select(
    label: &str,
    name: &str,
    choices: &[(String, String)],
    selected: &str,
) -> String {
    let mut out = format!(
        "<label>{} <select name=\"{}\">",
        escape(label),
        escape(name)
    );
    for (value, text) in choices {
        let chosen = if value.eq_ignore_ascii_case(selected) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<option value=\"{}\"{chosen}>{}</option>",
            escape(value),
            escape(text)
        );
    }
    out.push_str("</select></label> ");
    out
}

fn when(t: Option<i64>) -> String {
    t.map_or_else(|| "never".to_owned(), format_datetime)
}

fn count(c: &ComputerStatus, state: UpdateState) -> u64 {
    c.updates.get(state.name()).copied().unwrap_or(0)
}

impl Page {
    /// The page's HTML; `Ok(None)`: no such page; `Some(Err)`: a parameter that cannot be
    /// used, said to the person who sent it. Blocking.
    fn render(
        self,
        from: &updates::Sources,
        query: &[(String, String)],
        summary: String,
        now: i64,
    ) -> Result<Option<Result<String, String>>, CatalogError> {
        if let Page::Update(update) = self {
            return update.render(from, query);
        }
        let catalog = &from.catalog;
        let node = from.node.as_str();
        let journal = crate::lock::lock(&from.journal);
        let title = |id: Guid| {
            catalog
                .latest(id)
                .map_or_else(|| id.to_string(), |r| r.title().to_owned())
        };
        Ok(Some(Ok(match self {
            Page::Update(_) => return Ok(None),
            Page::Home => {
                let computers = journal.computers(ComputerFilter::All)?;
                let local: Vec<_> = computers
                    .iter()
                    .filter(|c| c.parent_server.is_none())
                    .collect();
                let mut body = summary;
                body.push_str(
                    "<h2>Branches</h2><table><tr><th>Server</th><th>Last contact</th>\
                     <th>Computers</th><th>Needing updates</th><th>With errors</th>\
                     <th>Up to date</th></tr>",
                );
                let _ = write!(
                    body,
                    "<tr><td><a href=\"/branches/local\">{} (this node)</a></td><td>now</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(node),
                    local.len(),
                    local.iter().filter(|c| !c.up_to_date()).count(),
                    local
                        .iter()
                        .filter(|c| count(c, UpdateState::Failed) > 0)
                        .count(),
                    local.iter().filter(|c| c.up_to_date()).count(),
                );
                for d in journal.downstreams()? {
                    let contact = d.last_seen.max(d.last_rollup.unwrap_or(0));
                    let stale = now - contact > STALE_AFTER;
                    let _ = write!(
                        body,
                        "<tr{class}><td><a href=\"/branches/{id}\">{name}</a></td>\
                         <td>{contact}{mark}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        d.computers.unwrap_or(0),
                        d.needing_updates.unwrap_or(0),
                        d.with_errors.unwrap_or(0),
                        d.up_to_date.unwrap_or(0),
                        class = if stale { " class=\"stale\"" } else { "" },
                        id = escape(&d.id),
                        name = escape(if d.name.is_empty() { &d.id } else { &d.name }),
                        contact = format_datetime(contact),
                        mark = if stale { " (stale)" } else { "" },
                    );
                }
                body.push_str("</table>");
                page(from, &format!("wsus-edge: {node}"), &body)
            }
            Page::Branch(id) => {
                let server = match id.as_str() {
                    "local" => None,
                    other => {
                        let Some(d) = journal
                            .downstreams()?
                            .into_iter()
                            .find(|d| d.id.eq_ignore_ascii_case(other))
                        else {
                            return Ok(None);
                        };
                        Some(d)
                    }
                };
                let state = value(query, "state");
                let Some(filter) = ComputerFilter::parse(Some(state)) else {
                    return Ok(Some(Err(format!(
                        "state: {state:?}: needed, downloaded, installed, failed, \
                         installed_pending_reboot, not_applicable, up_to_date or all"
                    ))));
                };
                let (offset, limit) = match offset_limit(query, COMPUTERS_PER_PAGE) {
                    Ok(v) => v,
                    Err(message) => return Ok(Some(Err(message))),
                };
                let name = value(query, "q").trim();
                let (total, computers) = journal.computer_page(&ComputerQuery {
                    server: server
                        .as_ref()
                        .map_or(ServerChoice::Local, |d| ServerChoice::Below(d.id.clone())),
                    client_id: None,
                    filter,
                    name: Some(name.to_owned()).filter(|n| !n.is_empty()),
                    offset,
                    limit,
                })?;
                let heading = server
                    .as_ref()
                    .map_or_else(|| format!("{node} (this node)"), |d| d.name.clone());
                let path = format!("/branches/{}", encode(&id));
                let states: Vec<(String, String)> = ["all", "needed", "downloaded", "failed"]
                    .into_iter()
                    .chain(["installed_pending_reboot", "installed", "not_applicable"])
                    .chain(["up_to_date"])
                    .map(|s| (s.to_owned(), s.replace('_', " ")))
                    .collect();
                let mut body = format!(
                    "<form method=\"get\" action=\"{}\"><p><label>Name <input type=\"search\" \
                     name=\"q\" value=\"{}\"></label> {}<button type=\"submit\">Show</button>\
                     </p></form>",
                    escape(&path),
                    escape(name),
                    select("With updates", "state", &states, state),
                );
                let showing = pager(&path, query, offset, limit, total as usize);
                body.push_str(&showing);
                body.push_str(
                    "<table><tr><th>Computer</th><th>Last sync</th><th>Last status</th>\
                     <th>Needed</th><th>Failed</th><th>Installed</th><th>State</th></tr>",
                );
                for c in &computers {
                    let failed = count(c, UpdateState::Failed);
                    let needed =
                        count(c, UpdateState::NotInstalled) + count(c, UpdateState::Downloaded);
                    let _ = write!(
                        body,
                        "<tr><td><a href=\"/computers/{id}\">{name}</a></td><td>{}</td><td>{}</td>\
                         <td>{needed}</td><td>{failed}</td><td>{}</td><td class=\"{class}\">{state}</td></tr>",
                        when(c.last_sync),
                        when(c.last_status),
                        count(c, UpdateState::Installed),
                        id = encode(&c.client_id),
                        name = escape(if c.dns_name.is_empty() {
                            &c.client_id
                        } else {
                            &c.dns_name
                        }),
                        class = if failed > 0 {
                            "failed"
                        } else if c.up_to_date() {
                            "ok"
                        } else {
                            ""
                        },
                        state = if failed > 0 {
                            "errors"
                        } else if c.up_to_date() {
                            "up to date"
                        } else {
                            "needs updates"
                        },
                    );
                }
                body.push_str("</table>");
                if total as usize > limit {
                    body.push_str(&showing);
                }
                if let Some(d) = &server {
                    body.push_str(&rolled_up(d));
                }
                page(from, &format!("Computers of {heading}"), &body)
            }
            Page::Computer(id) => {
                let Some(c) = journal.computer(&id)? else {
                    return Ok(None);
                };
                let names = journal.server_names()?;
                let groups: Vec<String> = journal
                    .computer_groups(&c.client_id)?
                    .into_iter()
                    .map(|g| {
                        escape(
                            &catalog
                                .group(g)
                                .map_or_else(|| g.to_string(), |g| g.name.clone()),
                        )
                        .into_owned()
                    })
                    .collect();
                let mut body = format!(
                    "<table><tr><th>Id</th><td>{}</td></tr><tr><th>Branch</th><td>{}</td></tr>\
                     <tr><th>Target groups</th><td>{}</td></tr><tr><th>OS</th><td>{}</td></tr>\
                     <tr><th>Make</th><td>{} {}</td></tr><tr><th>Last sync</th><td>{}</td></tr>\
                     <tr><th>Last status</th><td>{}</td></tr></table>\
                     <h2>Updates</h2><table><tr><th>Update</th><th>State</th><th>Since</th></tr>",
                    escape(&c.client_id),
                    updates::branch_link(c.parent_server.as_deref(), &names, node),
                    if groups.is_empty() {
                        "none".to_owned()
                    } else {
                        groups.join(", ")
                    },
                    escape(&c.os_version),
                    escape(&c.manufacturer),
                    escape(&c.model),
                    when(c.last_sync),
                    when(c.last_status),
                );
                for (update, state, changed) in journal.computer_updates(&c.client_id)? {
                    let _ = write!(
                        body,
                        "<tr><td><a href=\"/updates/{update}\">{}</a></td><td class=\"{}\">{}</td>\
                         <td>{}</td></tr>",
                        escape(&title(update)),
                        if state == UpdateState::Failed {
                            "failed"
                        } else {
                            ""
                        },
                        state.name().replace('_', " "),
                        format_datetime(changed),
                    );
                }
                body.push_str("</table>");
                let name = if c.dns_name.is_empty() {
                    &c.client_id
                } else {
                    &c.dns_name
                };
                page(from, name, &body)
            }
        })))
    }
}

/// The value of `name` among a query's pairs ("" when absent; the last when repeated).
pub(super) fn value<'q>(query: &'q [(String, String)], name: &str) -> &'q str {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// What a branch's last rollup said of itself: its summary and its computers by operating
/// system, with the installs they reported.
fn rolled_up(d: &crate::report::Downstream) -> String {
    let mut out = String::new();
    if let Some(summary) = &d.summary {
        out.push_str("<h2>Its last rollup</h2><table>");
        for (label, n) in summary.labelled() {
            let _ = write!(out, "<tr><th>{label}</th><td>{n}</td></tr>");
        }
        out.push_str("</table>");
    }
    if !d.clients.is_empty() {
        out.push_str(
            "<h2>Computers by operating system</h2><table><tr><th>Version</th><th>Locale</th>\
             <th>Architecture</th><th>Computers</th><th>Installs</th><th>Failed installs</th></tr>",
        );
        for c in &d.clients {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.os.version.map(|n| n.to_string()).join("."),
                escape(&c.os.locale),
                escape(&c.os.processor),
                c.computers,
                c.installs_succeeded,
                c.installs_failed
            );
        }
        out.push_str("</table>");
    }
    out
}
