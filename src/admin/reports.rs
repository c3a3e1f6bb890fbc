//! What clients reported, as the admin API shows it: the computers of this node and of every
//! server below with their update counts per state (`/api/v1/computers?state=&branch=`, also
//! as CSV), one computer's updates (`/api/v1/computers/{id}`), and one update across computers
//! and branches (`/api/v1/updates/{id}/status`); `/api/v1/updates`, the list of updates to
//! approve, is [`super::updates`]'s.
//! Read-only; reads `report` on its own connection, off the async workers.

use std::sync::{Arc, Mutex};

use http::{Method, Response, StatusCode};

use super::Node;
use crate::catalog::{CatalogError, Guid};
use crate::http::{Body, text, with_type};
use crate::report::{ComputerFilter, ComputerStatus, UpdateState};
use crate::soap::xsd::format_datetime;
use crate::state::Journal;

/// The answer to a GET under `/api/v1/computers` or `/api/v1/updates`; None when `path` is
/// neither.
pub(crate) async fn respond(
    app: &dyn Node,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<Response<Body>> {
    if path == "/api/v1/updates" {
        return Some(super::updates::api(app, method, query).await);
    }
    let view = if path == "/api/v1/computers" || path == "/api/v1/computers.csv" {
        let Some(filter) = ComputerFilter::parse(param(query, "state").as_deref()) else {
            return Some(text(
                StatusCode::BAD_REQUEST,
                "state: needed, downloaded, installed, failed, installed_pending_reboot, \
                 not_applicable, up_to_date or all",
            ));
        };
        View::Computers {
            filter,
            branch: param(query, "branch").filter(|b| !b.is_empty()),
            csv: path.ends_with(".csv").then(|| app.name().to_owned()),
        }
    } else if let Some(id) = path.strip_prefix("/api/v1/computers/") {
        View::Computer(id.to_owned())
    } else if let Some(rest) = path.strip_prefix("/api/v1/updates/") {
        match rest.strip_suffix("/status").map(Guid::parse) {
            Some(Some(id)) => View::Update(id),
            _ => return Some(text(StatusCode::NOT_FOUND, "/api/v1/updates/{GUID}/status")),
        }
    } else {
        return None;
    };
    if method != Method::GET && method != Method::HEAD {
        return Some(text(StatusCode::METHOD_NOT_ALLOWED, "read-only"));
    }
    let journal = app.reports().clone();
    let catalog = app.served().catalog();
    let title = move |id: Guid| catalog.latest(id).map(|r| r.title().to_owned());
    let answer = tokio::task::spawn_blocking(move || view.answer(&journal, title)).await;
    Some(match answer {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    })
}

enum View {
    Computers {
        filter: ComputerFilter,
        /// A server below (its id or name), or `local` for this node's own computers.
        branch: Option<String>,
        /// As CSV, this node's name being the branch of its own computers.
        csv: Option<String>,
    },
    Computer(String),
    Update(Guid),
}

impl View {
    fn answer(
        self,
        journal: &Mutex<Journal>,
        title: impl Fn(Guid) -> Option<String>,
    ) -> Result<Response<Body>, CatalogError> {
        let journal = crate::lock::lock(journal);
        Ok(match self {
            View::Computers {
                filter,
                branch,
                csv,
            } => {
                let mut computers = journal.computers(filter)?;
                if let Some(branch) = branch {
                    let server = match branch.as_str() {
                        "local" => None,
                        b => match server_id(&journal, b)? {
                            Some(id) => Some(id),
                            None => return Ok(text(StatusCode::NOT_FOUND, "no such branch")),
                        },
                    };
                    computers.retain(|c| {
                        c.parent_server.as_deref().map(str::to_ascii_lowercase) == server
                    });
                }
                if let Some(node) = csv {
                    let names = journal.server_names()?;
                    let branch = |c: &ComputerStatus| match &c.parent_server {
                        None => node.clone(),
                        Some(s) => {
                            let id = s.to_ascii_lowercase();
                            names.get(&id).cloned().unwrap_or(id)
                        }
                    };
                    with_type(computers_csv(&computers, branch), "text/csv; charset=utf-8")
                } else {
                    let list: Vec<_> = computers.iter().map(computer_json).collect();
                    json(&serde_json::Value::Array(list))
                }
            }
            View::Computer(id) => {
                let computer = journal
                    .computers(ComputerFilter::All)?
                    .into_iter()
                    .find(|c| c.client_id.eq_ignore_ascii_case(&id));
                let Some(computer) = computer else {
                    return Ok(text(StatusCode::NOT_FOUND, "no computer of that id"));
                };
                let updates: Vec<_> = journal
                    .computer_updates(&computer.client_id)?
                    .into_iter()
                    .map(|(update, state, changed)| {
                        serde_json::json!({
                            "update": update.to_string(),
                            "title": title(update),
                            "state": state.name(),
                            "changed": changed,
                        })
                    })
                    .collect();
                let mut body = computer_json(&computer);
                body["update_states"] = serde_json::Value::Array(updates);
                json(&body)
            }
            View::Update(id) => {
                let names: std::collections::HashMap<String, String> = journal
                    .downstreams()?
                    .into_iter()
                    .map(|d| (d.id.to_ascii_lowercase(), d.name))
                    .collect();
                let mut all = serde_json::Map::new();
                let mut branches = serde_json::Map::new();
                for (server, state, n) in journal.update_counts(id)? {
                    let total = all.entry(state.name()).or_insert(serde_json::json!(0));
                    *total = serde_json::json!(total.as_u64().unwrap_or(0) + n);
                    // By server id (names need not be unique), with the name beside.
                    let (key, name) = match server {
                        None => ("local".to_owned(), None),
                        Some(s) => {
                            let id = s.to_ascii_lowercase();
                            let name = names.get(&id).cloned();
                            (id, name)
                        }
                    };
                    let entry = branches
                        .entry(key)
                        .or_insert(serde_json::json!({ "name": name }));
                    entry[state.name()] = serde_json::json!(n);
                }
                json(&serde_json::json!({
                    "update": id.to_string(),
                    "title": title(id),
                    "computers": all,
                    "branches": branches,
                }))
            }
        })
    }
}

/// The id (lower case) of the server below named `branch` by id or name.
fn server_id(journal: &Journal, branch: &str) -> Result<Option<String>, CatalogError> {
    Ok(journal
        .downstreams()?
        .into_iter()
        .find(|d| d.id.eq_ignore_ascii_case(branch) || d.name.eq_ignore_ascii_case(branch))
        .map(|d| d.id.to_ascii_lowercase()))
}

fn json(value: &serde_json::Value) -> Response<Body> {
    with_type(
        serde_json::to_string_pretty(value).unwrap_or_default(),
        "application/json",
    )
}

fn computer_json(c: &ComputerStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    v["up_to_date"] = serde_json::Value::Bool(c.up_to_date());
    v
}

/// One record per computer, the update counts in [`UpdateState::ALL`] order; `branch` names
/// the server a computer reports to. RFC 4180: a header, CRLF after every record; times in
/// RFC 3339 (UTC), empty when never.
fn computers_csv(
    computers: &[ComputerStatus],
    branch: impl Fn(&ComputerStatus) -> String,
) -> String {
    let mut out = String::from(
        "client_id,dns_name,branch,os_version,manufacturer,model,registered_at,last_sync,\
         last_status",
    );
    for s in UpdateState::ALL {
        out.push(',');
        out.push_str(s.name());
    }
    out.push_str(",up_to_date\r\n");
    let time = |t: Option<i64>| t.map(format_datetime).unwrap_or_default();
    for c in computers {
        let fields = [
            c.client_id.clone(),
            c.dns_name.clone(),
            branch(c),
            c.os_version.clone(),
            c.manufacturer.clone(),
            c.model.clone(),
            format_datetime(c.registered_at),
            time(c.last_sync),
            time(c.last_status),
        ];
        let counts = UpdateState::ALL
            .iter()
            .map(|s| c.updates.get(s.name()).copied().unwrap_or(0).to_string());
        let line: Vec<String> = fields
            .iter()
            .map(|f| csv_field(f))
            .chain(counts)
            .chain(std::iter::once(c.up_to_date().to_string()))
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// RFC 4180: quoted when it holds a comma, quote or line break; a leading `=`, `+`, `-` or `@`
/// is prefixed with `'` so that a spreadsheet does not run it as a formula.
fn csv_field(f: &str) -> String {
    let f = if f.starts_with(['=', '+', '-', '@']) {
        format!("'{f}")
    } else {
        f.to_owned()
    };
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

/// Every parameter of a query, (name, value), `+` and `%XX` decoded, in order.
pub(super) fn params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A query parameter's value (`+` and `%XX` decoded); None when absent.
fn param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| decode(v))
    })
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// For the admin state: a journal connection of its own for these reads.
pub fn open(database: &crate::state::Database) -> Result<Arc<Mutex<Journal>>, CatalogError> {
    Ok(Arc::new(Mutex::new(Journal::open(database)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_and_csv_fields() {
        assert_eq!(
            param(Some("state=failed&x=1"), "state").as_deref(),
            Some("failed")
        );
        assert_eq!(param(Some("a=b%20c+d"), "a").as_deref(), Some("b c d"));
        assert_eq!(param(Some("a=%zz%4"), "a").as_deref(), Some("%zz%4"));
        assert_eq!(param(None, "state"), None);
        assert_eq!(param(Some("state"), "state").as_deref(), Some(""));
        assert_eq!(csv_field("pc1"), "pc1");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }

    #[test]
    fn csv_records_end_in_crlf_with_rfc3339_times_and_the_branch() {
        let computer = ComputerStatus {
            client_id: "c1".into(),
            dns_name: "pc1, the first".into(),
            os_version: "10.0".into(),
            manufacturer: String::new(),
            model: String::new(),
            registered_at: 1_800_000_000,
            last_sync: None,
            last_status: Some(1_800_000_060),
            parent_server: Some("s1".into()),
            updates: [("failed", 2)].into_iter().collect(),
        };
        let csv = computers_csv(&[computer], |c| format!("via {:?}", c.parent_server));
        let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
        assert_eq!(csv.matches('\n').count(), 2, "{csv}");
        assert!(lines[0].starts_with("client_id,dns_name,branch,os_version,"));
        assert_eq!(
            lines[1],
            "c1,\"pc1, the first\",\"via Some(\"\"s1\"\")\",10.0,,,2027-01-15T08:00:00Z,,\
             2027-01-15T08:01:00Z,0,0,0,0,2,0,false"
        );
    }
}
