//! The status pages of the admin listener: plain server-rendered HTML (no script), so they
//! work in any browser and behind any proxy. `/`: this node and every server below it, with
//! its last contact (stale ones marked) and computer counts; `/branches/{id}` (or `local`):
//! a branch's computers; `/computers/{id}`: one computer's updates; `/updates`: compliance of
//! every approved update across all computers. Reads `report` off the async workers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::{Method, Response, StatusCode};

use super::Node;
use super::node_summary;
use crate::catalog::{CatalogError, Guid};
use crate::clock::unix_now;
use crate::http::{Body, text, with_type};
use crate::report::{ComputerFilter, ComputerStatus, UpdateState};
use crate::soap::escape;
use crate::soap::xsd::format_datetime;
use crate::state::Journal;

/// A server not heard from (sync or rollup) for longer than this is shown as stale (seconds).
pub(crate) const STALE_AFTER: i64 = 2 * 3600;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
    td,th{padding:.25em .8em;text-align:left;border-bottom:1px solid #ddd}\
    th{background:#f3f3f3}tr.stale td{background:#fde2e2;color:#8a1010}\
    .failed{color:#b00020;font-weight:bold}.ok{color:#0a6b2d}nav a{margin-right:1em}";

pub(crate) async fn respond(app: &dyn Node, method: &Method, path: &str) -> Option<Response<Body>> {
    let page = match path {
        "/" => Page::Home,
        "/updates" => Page::Updates,
        p => {
            if let Some(id) = p.strip_prefix("/branches/") {
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
    let name = app.name().to_owned();
    let catalog = app.served().catalog();
    let journal = app.reports().clone();
    let answer = tokio::task::spawn_blocking(move || {
        let journal = crate::lock::lock(&journal);
        page.render(
            &journal,
            &catalog,
            &name,
            summary.unwrap_or_default(),
            unix_now(),
        )
    })
    .await;
    Some(match answer {
        Ok(Ok(Some(html))) => with_type(html, "text/html; charset=utf-8"),
        Ok(Ok(None)) => text(StatusCode::NOT_FOUND, "not found"),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    })
}

enum Page {
    Home,
    Branch(String),
    Computer(String),
    Updates,
}

fn page(node: &str, title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} · wsus-edge {node}</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"/\">Branches</a><a href=\"/branches/local\">This node's computers</a>\
         <a href=\"/updates\">Updates</a><a href=\"/metrics\">Metrics</a>\
         <a href=\"/api/v1/status\">Status (JSON)</a></nav><h1>{title}</h1>{body}</body></html>\n",
        node = escape(node),
        title = escape(title),
    )
}

fn when(t: Option<i64>) -> String {
    t.map_or_else(|| "never".to_owned(), format_datetime)
}

fn count(c: &ComputerStatus, state: UpdateState) -> u64 {
    c.updates.get(state.name()).copied().unwrap_or(0)
}

impl Page {
    fn render(
        self,
        journal: &Journal,
        catalog: &crate::catalog::Catalog,
        node: &str,
        summary: String,
        now: i64,
    ) -> Result<Option<String>, CatalogError> {
        let title = |id: Guid| {
            catalog
                .latest(id)
                .map_or_else(|| id.to_string(), |r| r.title().to_owned())
        };
        Ok(Some(match self {
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
                page(node, &format!("wsus-edge: {node}"), &body)
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
                let wanted = server.as_ref().map(|d| d.id.to_ascii_lowercase());
                let heading = server
                    .as_ref()
                    .map_or_else(|| format!("{node} (this node)"), |d| d.name.clone());
                let mut body = String::from(
                    "<table><tr><th>Computer</th><th>Last sync</th><th>Last status</th>\
                     <th>Needed</th><th>Failed</th><th>Installed</th><th>State</th></tr>",
                );
                for c in journal.computers(ComputerFilter::All)? {
                    if c.parent_server.as_deref().map(str::to_ascii_lowercase) != wanted {
                        continue;
                    }
                    let failed = count(&c, UpdateState::Failed);
                    let needed =
                        count(&c, UpdateState::NotInstalled) + count(&c, UpdateState::Downloaded);
                    let _ = write!(
                        body,
                        "<tr><td><a href=\"/computers/{id}\">{name}</a></td><td>{}</td><td>{}</td>\
                         <td>{needed}</td><td>{failed}</td><td>{}</td><td class=\"{class}\">{state}</td></tr>",
                        when(c.last_sync),
                        when(c.last_status),
                        count(&c, UpdateState::Installed),
                        id = escape(&c.client_id),
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
                if let Some(d) = &server {
                    body.push_str(&rolled_up(d));
                }
                page(node, &format!("Computers of {heading}"), &body)
            }
            Page::Computer(id) => {
                let Some(c) = journal
                    .computers(ComputerFilter::All)?
                    .into_iter()
                    .find(|c| c.client_id.eq_ignore_ascii_case(&id))
                else {
                    return Ok(None);
                };
                let mut body = format!(
                    "<table><tr><th>Id</th><td>{}</td></tr><tr><th>OS</th><td>{}</td></tr>\
                     <tr><th>Make</th><td>{} {}</td></tr><tr><th>Last sync</th><td>{}</td></tr>\
                     <tr><th>Last status</th><td>{}</td></tr></table>\
                     <h2>Updates</h2><table><tr><th>Update</th><th>State</th><th>Since</th></tr>",
                    escape(&c.client_id),
                    escape(&c.os_version),
                    escape(&c.manufacturer),
                    escape(&c.model),
                    when(c.last_sync),
                    when(c.last_status),
                );
                for (update, state, changed) in journal.computer_updates(&c.client_id)? {
                    let _ = write!(
                        body,
                        "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
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
                page(node, name, &body)
            }
            Page::Updates => {
                let mut approved: BTreeMap<String, Guid> = BTreeMap::new();
                for d in &catalog.deployments {
                    if let Some(r) = catalog.revision(d.revision)
                        && d.action.is_offered()
                    {
                        approved.insert(title(r.update_id), r.update_id);
                    }
                }
                let mut body = String::from(
                    "<table><tr><th>Update</th><th>Installed</th><th>Needed</th><th>Failed</th>\
                     <th>Compliant</th></tr>",
                );
                for (name, id) in approved {
                    let mut by_state: BTreeMap<UpdateState, u64> = BTreeMap::new();
                    for (_, state, n) in journal.update_counts(id)? {
                        *by_state.entry(state).or_default() += n;
                    }
                    let get = |s| by_state.get(&s).copied().unwrap_or(0);
                    let done = get(UpdateState::Installed) + get(UpdateState::NotApplicable);
                    let needed = get(UpdateState::NotInstalled)
                        + get(UpdateState::Downloaded)
                        + get(UpdateState::InstalledPendingReboot);
                    let failed = get(UpdateState::Failed);
                    let total = done + needed + failed;
                    let _ = write!(
                        body,
                        "<tr><td>{}</td><td>{}</td><td>{needed}</td><td class=\"{}\">{failed}</td>\
                         <td>{}</td></tr>",
                        escape(&name),
                        get(UpdateState::Installed),
                        if failed > 0 { "failed" } else { "" },
                        (100 * done)
                            .checked_div(total)
                            .map_or_else(|| "no reports".to_owned(), |p| format!("{p}%")),
                    );
                }
                body.push_str("</table>");
                page(node, "Updates", &body)
            }
        }))
    }
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
