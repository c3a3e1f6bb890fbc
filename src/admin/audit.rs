//! The audit log as the admin listener shows it: `/api/v1/audit` (JSON, newest first,
//! `offset` and `limit`) and the page `/audit`. Read-only; reads `state` (the journal) off the
//! async workers.

use std::fmt::Write as _;

use http::{Response, StatusCode};

use super::Node;
use super::pages::HtmlPage;
use super::session::Session;
use crate::http::{Body, text, with_type};
use crate::report::AuditEntry;
use crate::soap::escape;
use crate::soap::xsd::format_datetime;

/// Entries a page or an API answer holds unless asked for fewer.
const PER_PAGE: usize = 50;

/// The answer for `path` (`/audit` or `/api/v1/audit`); None for any other.
pub(crate) async fn respond(
    app: &dyn Node,
    path: &str,
    query: Option<&str>,
    session: Option<&Session>,
) -> Option<Response<Body>> {
    let page = match path {
        "/audit" => true,
        "/api/v1/audit" => false,
        _ => return None,
    };
    let params = super::reports::params(query);
    let number = |name: &str, default: usize, max: usize| -> Result<usize, String> {
        match params.iter().find(|(k, _)| k == name) {
            None => Ok(default),
            Some((_, v)) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{name}: a number up to {max}")),
        }
    };
    let (offset, limit) = match (
        number("offset", 0, usize::MAX / 2),
        number("limit", PER_PAGE, crate::state::audit::MAX_READ),
    ) {
        (Ok(o), Ok(l)) if l > 0 => (o, l),
        (Err(m), _) | (_, Err(m)) => return Some(text(StatusCode::BAD_REQUEST, &m)),
        _ => return Some(text(StatusCode::BAD_REQUEST, "limit: at least 1")),
    };
    let journal = app.reports().clone();
    let read =
        tokio::task::spawn_blocking(move || crate::lock::lock(&journal).audit_log(offset, limit))
            .await;
    let (total, entries) = match read {
        Ok(Ok(log)) => log,
        Ok(Err(e)) => return Some(text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
        Err(e) => return Some(text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    };
    Some(if page {
        with_type(
            render(app.name(), session, total, offset, limit, &entries),
            "text/html; charset=utf-8",
        )
    } else {
        let json = serde_json::json!({
            "total": total,
            "offset": offset,
            "limit": limit,
            "entries": entries.iter().map(|e| serde_json::json!({
                "id": e.id,
                "at": format_datetime(e.at),
                "who": e.who,
                "via": e.via,
                "action": e.action,
                "detail": e.detail,
            })).collect::<Vec<_>>(),
        });
        with_type(json.to_string(), "application/json")
    })
}

fn render(
    node: &str,
    session: Option<&Session>,
    total: u64,
    offset: usize,
    limit: usize,
    entries: &[AuditEntry],
) -> String {
    let mut body = String::from(
        "<table id=\"audit\"><tr><th>When (UTC)</th><th>Who</th><th>Via</th><th>What</th>\
         <th>Detail</th></tr>",
    );
    for e in entries {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            format_datetime(e.at),
            escape(&e.who),
            escape(&e.via),
            escape(&e.action),
            escape(&e.detail)
        );
    }
    body.push_str("</table>");
    let shown = entries.len();
    let _ = write!(
        body,
        "<p>{} of {total}",
        if shown == 0 {
            "0".to_owned()
        } else {
            format!("{}–{}", offset + 1, offset + shown)
        }
    );
    if offset > 0 {
        let _ = write!(
            body,
            " · <a href=\"/audit?offset={}&amp;limit={limit}\">newer</a>",
            offset.saturating_sub(limit)
        );
    }
    if ((offset + shown) as u64) < total {
        let _ = write!(
            body,
            " · <a href=\"/audit?offset={}&amp;limit={limit}\">older</a>",
            offset + shown
        );
    }
    body.push_str("</p>");
    HtmlPage {
        node,
        title: "Audit log",
        body: &body,
        session,
    }
    .render()
}
