//! What an administrator finds to approve: `GET /api/v1/updates` (JSON: the catalog's updates
//! filtered, sorted and cut into pages by [`crate::catalog::listing`]), the `/updates` page (the
//! same list with a form of its filters) and `/updates/{id}` (one update: what the catalog says
//! of it, its approvals, and the computers in each state across branches).
//!
//! Per-update state counts come from one grouped read of the journal (never a read per update),
//! off the async workers. Calls
//! `catalog`, `report`, `state`, `http` and the page layout of [`super::pages`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use http::{Method, Response, StatusCode};

use super::Node;
use super::pages::{self, HtmlPage, value};
use super::reports::params;
use super::session::Session;
use crate::catalog::listing::{self, Filter, Listed, StateCounts};
use crate::catalog::{Catalog, CatalogError, Guid, UpdateType};
use crate::http::{Body, text, with_type};
use crate::report::{UpdateState, counts_by_update};
use crate::soap::escape;
use crate::soap::xsd::format_datetime;
use crate::state::Journal;

/// How many computers a page of one update's computers holds, unless said.
const COMPUTERS_PER_PAGE: usize = 100;

/// `GET /api/v1/updates`.
pub(super) async fn api(app: &dyn Node, method: &Method, query: Option<&str>) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "read-only");
    }
    let catalog = app.served().catalog();
    let pairs = params(query);
    let filter = match Filter::parse(pairs.iter().map(|(k, v)| (&k[..], &v[..])), &catalog) {
        Ok(f) => f,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let journal = app.reports().clone();
    let answer = tokio::task::spawn_blocking(move || {
        let counts = states(&journal)?;
        let page = listing::list(&catalog, &counts, &filter);
        let updates: Vec<_> = page
            .updates
            .iter()
            .map(|l| listed_json(&catalog, l))
            .collect();
        Ok::<_, CatalogError>(serde_json::json!({
            "total": page.total,
            "offset": page.offset,
            "limit": page.limit,
            "updates": updates,
        }))
    })
    .await;
    match answer {
        Ok(Ok(json)) => with_type(
            serde_json::to_string_pretty(&json).unwrap_or_default(),
            "application/json",
        ),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The computers per state of every update (one grouped read).
fn states(journal: &Mutex<Journal>) -> Result<HashMap<Guid, StateCounts>, CatalogError> {
    let rows = crate::lock::lock(journal).state_counts_by_update()?;
    Ok(counts_by_update(rows))
}

fn group_name(catalog: &Catalog, id: Guid) -> String {
    catalog
        .group(id)
        .map_or_else(|| id.to_string(), |g| g.name.clone())
}

fn listed_json(catalog: &Catalog, l: &Listed<'_>) -> serde_json::Value {
    let r = l.revision;
    let approvals: Vec<_> = l
        .approvals
        .iter()
        .map(|d| {
            serde_json::json!({
                "group": group_name(catalog, d.group),
                "group_id": d.group.to_string(),
                "action": d.action.as_str(),
                "deadline": d.deadline.map(format_datetime),
                "revision_number": catalog.revision(d.revision).map(|r| r.revision_number),
            })
        })
        .collect();
    serde_json::json!({
        "id": r.update_id.to_string(),
        "revision_number": r.revision_number,
        "title": r.title(),
        "kb": r.kb,
        "classification": l.classification.map(|c| c.title()),
        "products": l.products.iter().map(|p| p.title()).collect::<Vec<_>>(),
        "update_type": r.update_type.as_str(),
        "superseded": !l.superseded_by.is_empty(),
        "superseded_by": l.superseded_by.iter().map(Guid::to_string).collect::<Vec<_>>(),
        "declined": l.declined,
        "approved": l.approved,
        "approvals": approvals,
        "computers": l.counts,
        "needing": l.counts.needing(),
    })
}

/// A page under `/updates`: the list, or one update; None when `path` is neither.
pub(super) fn route(path: &str) -> Option<UpdatePage> {
    match path {
        "/updates" | "/updates/" => Some(UpdatePage::List),
        p => p
            .strip_prefix("/updates/")
            .map(|id| UpdatePage::One(Guid::parse(id))),
    }
}

pub(super) enum UpdatePage {
    List,
    /// None: not a GUID (no such page).
    One(Option<Guid>),
}

/// What the update pages read besides the journal.
pub(super) struct Sources {
    pub(super) catalog: Arc<Catalog>,
    pub(super) journal: Arc<Mutex<Journal>>,
    pub(super) node: String,
    /// The browser's session, if signed in: its pages carry forms that change state.
    pub(super) session: Option<Session>,
}

impl UpdatePage {
    /// The page's HTML; None when there is no such page. Blocking.
    pub(super) fn render(
        self,
        from: &Sources,
        query: &[(String, String)],
    ) -> Result<Option<Result<String, String>>, CatalogError> {
        match self {
            UpdatePage::List => list_page(from, query).map(Some),
            UpdatePage::One(None) => Ok(None),
            UpdatePage::One(Some(id)) => one_page(from, id, query),
        }
    }
}

/// `/updates`: the form, the list, the pages. `Err`: a parameter that cannot be used, said to
/// the person who sent it.
fn list_page(
    from: &Sources,
    query: &[(String, String)],
) -> Result<Result<String, String>, CatalogError> {
    let catalog = &from.catalog;
    let filter = match Filter::parse(query.iter().map(|(k, v)| (&k[..], &v[..])), catalog) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let counts = states(&from.journal)?;
    let page = listing::list(catalog, &counts, &filter);
    let mut body = form(catalog, query);
    let showing = pages::pager("/updates", query, page.offset, page.limit, page.total);
    body.push_str(&showing);
    if page.updates.is_empty() {
        body.push_str("<p>No update matches.</p>");
    } else {
        let group = group_name(catalog, filter.group);
        // Signed in: a box per update and what to do with those chosen.
        let deciding = from.session.as_ref().map(|session| {
            let next = pages::link("/updates", query, &[]);
            decision_controls(catalog, session, &next)
        });
        if let Some(controls) = &deciding {
            body.push_str("<form method=\"post\" action=\"/changes\" id=\"decide\">");
            body.push_str(controls);
        }
        let _ = write!(
            body,
            "<table><tr>{}<th>Update</th><th>KB</th><th>Classification</th><th>Products</th>\
             <th>Approval ({})</th><th>Needed</th><th>Failed</th><th>Installed</th>\
             <th>Compliant</th></tr>",
            if deciding.is_some() { "<th></th>" } else { "" },
            escape(&group)
        );
        for l in &page.updates {
            let r = l.revision;
            let mut marks = Vec::new();
            if l.declined {
                marks.push("declined");
            }
            if !l.superseded_by.is_empty() {
                marks.push("superseded");
            }
            let approval = if l.approved {
                "approved"
            } else {
                "not approved"
            };
            let c = l.counts;
            let done = c.installed + c.not_applicable;
            let _ = write!(
                body,
                "<tr>{choose}<td><a href=\"/updates/{id}\">{title}</a>{marks}</td><td>{kb}</td>\
                 <td>{classification}</td><td>{products}</td><td>{approval}</td>\
                 <td>{needing}</td><td class=\"{failed_class}\">{failed}</td><td>{installed}</td>\
                 <td>{compliant}</td></tr>",
                choose = if deciding.is_some() {
                    format!(
                        "<td><input type=\"checkbox\" name=\"update\" value=\"{}\" \
                         aria-label=\"choose {}\"></td>",
                        r.update_id,
                        escape(r.title())
                    )
                } else {
                    String::new()
                },
                id = r.update_id,
                title = escape(r.title()),
                marks = if marks.is_empty() {
                    String::new()
                } else {
                    format!(" <small>({})</small>", marks.join(", "))
                },
                kb =
                    r.kb.as_deref()
                        .map_or_else(String::new, |kb| format!("KB{}", escape(kb))),
                classification = escape(l.classification.map_or("", |c| c.title())),
                products = escape(
                    &l.products
                        .iter()
                        .map(|p| p.title())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                needing = c.needing(),
                failed_class = if c.failed > 0 { "failed" } else { "" },
                failed = c.failed,
                installed = c.installed,
                compliant = (100 * done)
                    .checked_div(c.reported())
                    .map_or_else(|| "no reports".to_owned(), |p| format!("{p}%")),
            );
        }
        body.push_str("</table>");
        if deciding.is_some() {
            body.push_str("</form>");
        }
        body.push_str(&showing);
    }
    Ok(Ok(HtmlPage {
        session: from.session.as_ref(),
        node: &from.node,
        title: "Updates",
        body: &body,
    }
    .render()))
}

/// What a signed-in administrator does with the updates a form names: approve (for install or
/// as optional), take the approval back, decline or undo a decline; for which group and by
/// which deadline (taken as UTC); then back to `next`. The session's CSRF token goes with it.
fn decision_controls(catalog: &Catalog, session: &Session, next: &str) -> String {
    let mut groups = String::new();
    for g in &catalog.groups {
        let _ = write!(
            groups,
            "<option value=\"{name}\">{name}</option>",
            name = escape(&g.name)
        );
    }
    format!(
        "<p class=\"decide\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label>Decision <select name=\"decision\" id=\"decide-decision\">\
         <option value=\"approve\">Approve for install</option>\
         <option value=\"optional\">Approve as optional</option>\
         <option value=\"unapprove\">Not approved</option>\
         <option value=\"decline\">Decline</option>\
         <option value=\"undecline\">Take back the decline</option></select></label> \
         <label>for <select name=\"group\" id=\"decide-group\">{groups}</select></label> \
         <label>deadline (UTC) <input type=\"datetime-local\" name=\"deadline\" \
         id=\"decide-deadline\"></label> <button type=\"submit\" id=\"decide-apply\">Apply</button></p>",
        csrf = escape(&session.csrf),
        next = escape(next),
    )
}

/// The filter form of `/updates`, its fields as `query` set them.
fn form(catalog: &Catalog, query: &[(String, String)]) -> String {
    let categories = |classification: bool| {
        let mut found: Vec<(String, String)> = catalog
            .revisions()
            .iter()
            .filter(|r| {
                r.update_type == UpdateType::Category
                    && (r.category_type.as_deref() == Some("UpdateClassification"))
                        == classification
                    && catalog.latest(r.update_id).is_some_and(|l| l.id == r.id)
                    && (classification
                        || matches!(
                            r.category_type.as_deref(),
                            Some("Product" | "ProductFamily")
                        ))
            })
            .map(|r| (r.update_id.to_string(), r.title().to_owned()))
            .collect();
        found.sort_by(|a, b| listing::natural_cmp(&a.1, &b.1));
        found
    };
    let groups: Vec<(String, String)> = catalog
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.name.clone()))
        .collect();
    let fixed = |choices: &[(&str, &str)]| -> Vec<(String, String)> {
        choices
            .iter()
            .map(|(v, l)| ((*v).to_owned(), (*l).to_owned()))
            .collect()
    };
    let yes_no = fixed(&[("", "any"), ("yes", "yes"), ("no", "no")]);
    let mut out = String::from("<form method=\"get\" action=\"/updates\"><p>");
    let _ = write!(
        out,
        "<label>Search <input type=\"search\" name=\"q\" value=\"{}\" \
         placeholder=\"title or KB number\"></label> ",
        escape(value(query, "q"))
    );
    let with_any = |mut list: Vec<(String, String)>| {
        list.insert(0, (String::new(), "any".to_owned()));
        list
    };
    out.push_str(&pages::select(
        "Classification",
        "classification",
        &with_any(categories(true)),
        value(query, "classification"),
    ));
    out.push_str(&pages::select(
        "Product",
        "product",
        &with_any(categories(false)),
        value(query, "product"),
    ));
    out.push_str("</p><p>");
    let group = match value(query, "group") {
        "" => catalog
            .group(crate::catalog::ALL_COMPUTERS)
            .map_or("All Computers", |g| g.name.as_str()),
        g => g,
    };
    out.push_str(&pages::select("Group", "group", &groups, group));
    out.push_str(&pages::select(
        "Approval",
        "approval",
        &fixed(&[
            ("any", "any"),
            ("approved", "approved"),
            ("unapproved", "not approved"),
        ]),
        value(query, "approval"),
    ));
    out.push_str(&pages::select(
        "Needed",
        "needed",
        &yes_no,
        value(query, "needed"),
    ));
    out.push_str(&pages::select(
        "Superseded",
        "superseded",
        &yes_no,
        value(query, "superseded"),
    ));
    out.push_str(&pages::select(
        "Declined",
        "declined",
        &yes_no,
        value(query, "declined"),
    ));
    out.push_str(&pages::select(
        "Sort",
        "sort",
        &fixed(&[("title", "by title"), ("needed", "most needed first")]),
        value(query, "sort"),
    ));
    let limit = value(query, "limit");
    if !limit.is_empty() {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"limit\" value=\"{}\">",
            escape(limit)
        );
    }
    out.push_str("<button type=\"submit\">Show</button></p></form>");
    out
}

/// `/updates/{id}`: the update, its approvals, its computers in each state across branches.
fn one_page(
    from: &Sources,
    id: Guid,
    query: &[(String, String)],
) -> Result<Option<Result<String, String>>, CatalogError> {
    let catalog = &from.catalog;
    if catalog.latest(id).is_none() {
        return Ok(None);
    }
    let state = match value(query, "state") {
        "" | "all" => None,
        s => match UpdateState::from_name(s) {
            Some(s) => Some(s),
            None => {
                return Ok(Some(Err(format!(
                    "state: {s:?}: needed, downloaded, failed, installed_pending_reboot, \
                     installed, not_applicable or all"
                ))));
            }
        },
    };
    let (offset, limit) = match pages::offset_limit(query, COMPUTERS_PER_PAGE) {
        Ok(v) => v,
        Err(message) => return Ok(Some(Err(message))),
    };
    let journal = crate::lock::lock(&from.journal);
    let by_server = journal.update_counts(id)?;
    let names = journal.server_names()?;
    let mut counts = StateCounts::default();
    for (_, s, n) in &by_server {
        s.count_into(&mut counts, *n);
    }
    let Some(l) = listing::describe(catalog, counts, id) else {
        return Ok(None);
    };
    let computers = journal.update_computers(id, state, offset, limit)?;
    drop(journal);
    let r = l.revision;
    let update_link = |u: &Guid| {
        format!(
            "<a href=\"/updates/{u}\">{}</a>",
            escape(catalog.latest(*u).map_or(&u.to_string()[..], |r| r.title()))
        )
    };
    let links = |ids: &[Guid]| {
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.iter().map(update_link).collect::<Vec<_>>().join(", ")
        }
    };
    let mut body = format!(
        "<table><tr><th>Update</th><td>{id}</td></tr>\
         <tr><th>Revision</th><td>{revision}</td></tr>\
         <tr><th>KB</th><td>{kb}</td></tr>\
         <tr><th>Type</th><td>{kind}</td></tr>\
         <tr><th>Classification</th><td>{classification}</td></tr>\
         <tr><th>Products</th><td>{products}</td></tr>\
         <tr><th>Superseded by</th><td>{superseded_by}</td></tr>\
         <tr><th>Supersedes</th><td>{supersedes}</td></tr>\
         <tr><th>Declined</th><td>{declined}</td></tr></table>",
        revision = r.revision_number,
        kb =
            r.kb.as_deref()
                .map_or_else(|| "none".to_owned(), |kb| format!("KB{}", escape(kb))),
        kind = r.update_type.as_str(),
        classification = escape(l.classification.map_or("none", |c| c.title())),
        products = escape(
            &l.products
                .iter()
                .map(|p| p.title())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        superseded_by = links(&l.superseded_by),
        supersedes = links(&r.superseded),
        declined = if l.declined { "yes" } else { "no" },
    );
    body.push_str("<h2>Approvals</h2>");
    if l.approvals.is_empty() {
        body.push_str("<p>Not approved for any group.</p>");
    } else {
        body.push_str("<table><tr><th>Group</th><th>Action</th><th>Deadline</th></tr>");
        for d in &l.approvals {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&group_name(catalog, d.group)),
                d.action.as_str(),
                d.deadline
                    .map_or_else(|| "none".to_owned(), format_datetime),
            );
        }
        body.push_str("</table>");
    }

    if let Some(session) = &from.session {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/changes\" id=\"decide\">\
             <input type=\"hidden\" name=\"update\" value=\"{id}\">{}</form>",
            decision_controls(catalog, session, &format!("/updates/{id}"))
        );
    }

    // Computers per state, in all and per branch.
    body.push_str("<h2>Computers</h2><table><tr><th>Branch</th>");
    for s in UpdateState::by_urgency() {
        let _ = write!(
            body,
            "<th><a href=\"/updates/{id}?state={}\">{}</a></th>",
            s.name(),
            label(s)
        );
    }
    body.push_str("</tr>");
    let mut branches: Vec<(Option<String>, HashMap<UpdateState, u64>)> = Vec::new();
    for (server, s, n) in by_server {
        let server = server.map(|s| s.to_ascii_lowercase());
        match branches.iter_mut().find(|(b, _)| *b == server) {
            Some((_, counts)) => *counts.entry(s).or_default() += n,
            None => branches.push((server, HashMap::from([(s, n)]))),
        }
    }
    branches.sort_by(|a, b| {
        let name = |s: &Option<String>| s.as_ref().map(|s| names.get(s).unwrap_or(s).clone());
        name(&a.0).cmp(&name(&b.0))
    });
    let total_of = |counts: &HashMap<UpdateState, u64>| -> u64 { counts.values().sum() };
    let mut all: HashMap<UpdateState, u64> = HashMap::new();
    for (server, counts) in &branches {
        let _ = write!(
            body,
            "<tr><td>{}</td>",
            branch_link(server.as_deref(), &names, &from.node)
        );
        for s in UpdateState::by_urgency() {
            let n = counts.get(&s).copied().unwrap_or(0);
            *all.entry(s).or_default() += n;
            let _ = write!(body, "<td>{n}</td>");
        }
        body.push_str("</tr>");
    }
    body.push_str("<tr><th>All</th>");
    for s in UpdateState::by_urgency() {
        let _ = write!(body, "<th>{}</th>", all.get(&s).copied().unwrap_or(0));
    }
    body.push_str("</tr></table>");

    let total = match state {
        Some(s) => all.get(&s).copied().unwrap_or(0),
        None => total_of(&all),
    };
    let path = format!("/updates/{id}");
    if let Some(s) = state {
        let _ = write!(
            body,
            "<p>Showing the computers where it is {}; <a href=\"{path}\">show all</a>.</p>",
            s.name().replace('_', " ")
        );
    }
    let showing = pages::pager(&path, query, offset, limit, total as usize);
    body.push_str(&showing);
    let mut current = None;
    for c in &computers {
        if current != Some(c.state) {
            if current.is_some() {
                body.push_str("</table>");
            }
            current = Some(c.state);
            let _ = write!(
                body,
                "<h3 id=\"{}\">{}</h3><table><tr><th>Computer</th><th>Branch</th><th>Since</th></tr>",
                c.state.name(),
                label(c.state)
            );
        }
        let name = if c.dns_name.is_empty() {
            &c.client_id
        } else {
            &c.dns_name
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"/computers/{id}\">{name}</a></td><td>{branch}</td><td>{since}</td></tr>",
            id = pages::encode(&c.client_id),
            name = escape(name),
            branch = branch_link(c.parent_server.as_deref(), &names, &from.node),
            since = format_datetime(c.changed_at),
        );
    }
    if current.is_some() {
        body.push_str("</table>");
        body.push_str(&showing);
    }
    Ok(Some(Ok(HtmlPage {
        session: from.session.as_ref(),
        node: &from.node,
        title: r.title(),
        body: &body,
    }
    .render())))
}

/// A state as a heading says it ("Needed", "Installed pending reboot").
fn label(state: UpdateState) -> String {
    let words = state.name().replace('_', " ");
    let mut chars = words.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// A link to the branch page of `server` (none: this node's), by its name.
pub(super) fn branch_link(
    server: Option<&str>,
    names: &HashMap<String, String>,
    node: &str,
) -> String {
    match server {
        None => format!(
            "<a href=\"/branches/local\">{} (this node)</a>",
            escape(node)
        ),
        Some(id) => {
            let id = id.to_ascii_lowercase();
            let name = names.get(&id).unwrap_or(&id);
            format!(
                "<a href=\"/branches/{}\">{}</a>",
                pages::encode(&id),
                escape(name)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_as_headings() {
        assert_eq!(label(UpdateState::NotInstalled), "Needed");
        assert_eq!(
            label(UpdateState::InstalledPendingReboot),
            "Installed pending reboot"
        );
        assert!(matches!(route("/updates"), Some(UpdatePage::List)));
        assert!(matches!(route("/updates/x"), Some(UpdatePage::One(None))));
        assert!(route("/updatesx").is_none());
    }
}
