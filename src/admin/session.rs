//! Browser sessions of the admin listener. An administrator signs in once (`/signin`: a name
//! and an admin token) and gets a session cookie: sealed like the protocol's cookies (so every
//! node sharing the cookie key, as central nodes on one database do, accepts it), `HttpOnly`,
//! `SameSite=Strict`, `Path=/`, good for [`LIFETIME`] seconds, and `Secure` when the browser
//! came over HTTPS (a TLS proxy in front says so with `X-Forwarded-Proto: https`). The session
//! lets the browser read the admin views, and change state through forms (`POST /changes`),
//! each of which must carry the session's CSRF token: a digest of the cookie, which a page of
//! another site can neither read nor guess. A session names the person (as they signed in)
//! and the token (by fingerprint); removing that token from `admin.token_file` ends it.
//!
//! Calls `served` (the cookie key), `auth` (tokens), `report` (audit entries) and `changes`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderValue, Method, Response, StatusCode, header};

use super::Node;
use super::changes::{self, Actor, Change};
use super::pages::HtmlPage;
use crate::catalog::{Action, Decision, Guid};
use crate::http::{Body, BodyError, RequestBody, read_body, text, with_type};
use crate::report::AuditEntry;
use crate::served::cookie::{Claims, Kind};
use crate::soap::escape;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "wsus_edge_session";
/// How long a session lasts (seconds): a working day.
pub(crate) const LIFETIME: i64 = 8 * 3600;
/// The most a form may be.
const MAX_FORM: usize = 64 << 10;
/// The most characters of a name given at sign-in.
const MAX_NAME: usize = 64;
/// The most updates one form may name.
const MAX_UPDATES: usize = 1000;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The name given at sign-in.
    pub name: String,
    /// The first 16 bytes of the SHA-256 of the token signed in with.
    token: [u8; 16],
    /// What every change from this session must carry.
    pub csrf: String,
}

impl Session {
    /// The session of `headers`' cookie, if it is one of ours, unexpired, and its token still
    /// accepted.
    pub(crate) fn of(app: &dyn Node, headers: &http::HeaderMap) -> Option<Session> {
        let value = cookie(headers, COOKIE)?;
        let sealed = URL_SAFE_NO_PAD.decode(value).ok()?;
        let claims = app
            .served()
            .sealer()
            .open_cookie(&sealed, Kind::AdminSession)
            .ok()?;
        if claims.expires <= crate::clock::unix_now() {
            return None;
        }
        let token = claims.groups.first()?.0.to_le_bytes();
        if !app.tokens().holds(&token) {
            return None;
        }
        Some(Session {
            name: claims.client_id,
            token,
            csrf: csrf_of(value),
        })
    }

    /// Who, for the audit log.
    pub(crate) fn who(&self) -> String {
        format!(
            "{} (token {})",
            self.name,
            crate::auth::fingerprint(&self.token)
        )
    }
}

/// The CSRF token of a session cookie's value: its SHA-256, which names the session without
/// revealing the cookie.
fn csrf_of(cookie: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        cookie.as_bytes(),
    ))
}

/// The value of cookie `name` among `headers`' Cookie headers.
fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Whether [`respond`] answers `path`.
pub(crate) fn handles(path: &str) -> bool {
    matches!(path, "/signin" | "/signout" | "/changes")
}

/// The answers of `/signin`, `/signout` and `/changes`. Open to anyone who reaches the
/// listener: signing in needs a token, the rest a session.
pub(crate) async fn respond(
    app: &dyn Node,
    parts: &http::request::Parts,
    body: RequestBody,
) -> Response<Body> {
    Box::pin(answer(app, parts, body))
        .await
        .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found"))
}

async fn answer(
    app: &dyn Node,
    parts: &http::request::Parts,
    body: RequestBody,
) -> Option<Response<Body>> {
    let path = parts.uri.path();
    let method = &parts.method;
    if path == "/signin" && (method == Method::GET || method == Method::HEAD) {
        let next = super::reports::params(parts.uri.query())
            .into_iter()
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v);
        if let Some(session) = Session::of(app, &parts.headers) {
            return Some(signed_in_page(app, &session));
        }
        return Some(sign_in_page(
            app,
            StatusCode::OK,
            "",
            local(next.as_deref()),
        ));
    }
    if method != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "POST");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Some(r);
    }
    if app.tokens().is_empty() {
        return Some(text(
            StatusCode::FORBIDDEN,
            "read-only: changes need admin.token_file in the configuration",
        ));
    }
    let form = match read_body(&parts.headers, body, MAX_FORM, app.body_timeout()).await {
        Ok(bytes) => super::reports::params(Some(&String::from_utf8_lossy(&bytes))),
        Err(BodyError::TooLarge) => {
            return Some(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "at most 64 KiB of form",
            ));
        }
        Err(e) => return Some(e.response(MAX_FORM)),
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let next = local(field("next")).to_owned();
    if path == "/signin" {
        return Some(sign_in(app, parts, field("name"), field("token"), &next).await);
    }
    // Everything else changes state: a session, and its CSRF token.
    let Some(session) = Session::of(app, &parts.headers) else {
        return Some(to_sign_in(&next));
    };
    if field("csrf") != Some(session.csrf.as_str()) {
        return Some(text(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is not this session's: load the page again",
        ));
    }
    if path == "/signout" {
        let mut r = see_other("/signin");
        set_cookie(&mut r, parts, "", 0);
        return Some(r);
    }
    let change = match form_change(&form) {
        Ok(change) => change,
        Err(message) => {
            return Some(error_page(
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                &message,
                &next,
            ));
        }
    };
    let actor = Actor {
        who: session.who(),
        via: "browser",
    };
    Some(match changes::apply(app, &actor, change).await {
        Ok(_) => see_other(&next),
        Err((status, message)) => error_page(app, status, &message, &next),
    })
}

async fn sign_in(
    app: &dyn Node,
    parts: &http::request::Parts,
    name: Option<&str>,
    token: Option<&str>,
    next: &str,
) -> Response<Body> {
    let Some(digest) = token.and_then(|t| app.tokens().accepted(t)) else {
        // Not written to the audit log: anyone who reaches the listener could fill it.
        tracing::warn!(peer = ?parts.extensions.get::<crate::access::Peer>().map(|p| p.0),
            "admin sign-in refused: not an accepted token");
        return sign_in_page(
            app,
            StatusCode::UNAUTHORIZED,
            "That is not an admin token of this node.",
            next,
        );
    };
    let name: String = name
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    if name.is_empty() {
        return sign_in_page(
            app,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Your name is needed: the audit log says who made each change.",
            next,
        );
    }
    let now = crate::clock::unix_now();
    let mut prefix = [0u8; 16];
    prefix.copy_from_slice(&digest[..16]);
    let claims = Claims {
        kind: Kind::AdminSession,
        server_id: app.served().server_id(),
        issued: now,
        expires: now + LIFETIME,
        config_change: 0,
        anchor: 0,
        groups: vec![Guid(u128::from_le_bytes(prefix))],
        client_id: name.clone(),
        protocol: String::new(),
    };
    let value = URL_SAFE_NO_PAD.encode(app.served().sealer().seal(&claims));
    let session = Session {
        name,
        token: prefix,
        csrf: csrf_of(&value),
    };
    changes::record(
        app,
        AuditEntry {
            id: 0,
            at: now,
            who: session.who(),
            via: "browser".into(),
            action: "sign-in".into(),
            detail: "a browser session began".into(),
        },
    )
    .await;
    let mut r = see_other(next);
    set_cookie(&mut r, parts, &value, LIFETIME);
    r
}

/// Set (or, with `max_age` 0, clear) the session cookie on `response`.
fn set_cookie(
    response: &mut Response<Body>,
    parts: &http::request::Parts,
    value: &str,
    max_age: i64,
) {
    let https = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if https { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// The change a browser's form asks for: `decision` (approve, optional, unapprove, decline,
/// undecline), `update` (one field per update), `group` (for approvals) and `deadline` (a
/// browser's datetime-local, taken as UTC, or an xs:dateTime).
fn form_change(form: &[(String, String)]) -> Result<Change, String> {
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let updates = form
        .iter()
        .filter(|(k, _)| k == "update")
        .map(|(_, v)| {
            Guid::parse(v.trim()).ok_or_else(|| format!("update {v:?} is not an update id"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if updates.is_empty() {
        return Err("no update was chosen".into());
    }
    if updates.len() > MAX_UPDATES {
        return Err(format!("at most {MAX_UPDATES} updates at once"));
    }
    let decide = |decision| -> Result<Change, String> {
        let group = field("group").ok_or("a target group is needed")?.to_owned();
        let deadline = match field("deadline") {
            None => None,
            Some(d) => {
                Some(deadline(d).ok_or_else(|| format!("deadline {d:?} is not a date and time"))?)
            }
        };
        Ok(Change::Decide {
            updates: Some(updates.clone()),
            group,
            decision,
            deadline,
        })
    };
    match field("decision") {
        Some("approve") => decide(Decision::Approve(Action::Install)),
        Some("optional") => decide(Decision::Approve(Action::OptionalInstall)),
        Some("unapprove") => decide(Decision::NotApproved),
        Some("decline") => Ok(Change::Decline {
            updates,
            undo: false,
        }),
        Some("undecline") => Ok(Change::Decline {
            updates,
            undo: true,
        }),
        other => Err(format!(
            "decision {:?}: approve, optional, unapprove, decline or undecline",
            other.unwrap_or("")
        )),
    }
}

/// A deadline as a browser's `datetime-local` sends it ("2026-12-10T18:00", seconds
/// optional), taken as UTC, or as an xs:dateTime.
fn deadline(text: &str) -> Option<i64> {
    crate::soap::xsd::parse_datetime(text)
        .or_else(|| crate::soap::xsd::parse_datetime(&format!("{text}:00Z")))
        .or_else(|| crate::soap::xsd::parse_datetime(&format!("{text}Z")))
}

/// `next` when it is a path of this listener, else "/": a form cannot send a browser to
/// another site.
fn local(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

/// To the sign-in form, then back to `next`.
pub(crate) fn to_sign_in(next: &str) -> Response<Body> {
    see_other(&format!("/signin?next={}", encode(local(Some(next)))))
}

fn see_other(location: &str) -> Response<Body> {
    let mut r = text(StatusCode::SEE_OTHER, "");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `s` percent-encoded for a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn sign_in_page(app: &dyn Node, status: StatusCode, message: &str, next: &str) -> Response<Body> {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"failed\">{}</p>", escape(message))
    };
    let body = format!(
        "{message}<form method=\"post\" action=\"/signin\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <p><label>Your name <input name=\"name\" id=\"name\" required maxlength=\"{MAX_NAME}\" \
         autocomplete=\"username\"></label></p>\
         <p><label>Admin token <input name=\"token\" id=\"token\" type=\"password\" required \
         autocomplete=\"current-password\"></label></p>\
         <p><button type=\"submit\" id=\"signin-submit\">Sign in</button></p></form>\
         <p>The token is one of the lines of this node's <code>admin.token_file</code>. The \
         session lasts {hours} hours; every change made in it is in the <a href=\"/audit\">audit \
         log</a> under your name.</p>",
        next = escape(next),
        hours = LIFETIME / 3600,
    );
    let html = HtmlPage {
        node: app.name(),
        title: "Sign in",
        body: &body,
        session: None,
    }
    .render();
    let mut r = with_type(html, "text/html; charset=utf-8");
    *r.status_mut() = status;
    r
}

/// A sign-out form (with the session's CSRF token), to show on every page of a session.
pub(crate) fn sign_out_form(session: &Session) -> String {
    format!(
        "<form method=\"post\" action=\"/signout\" class=\"session\">Signed in as \
         <span id=\"who\">{}</span> <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" id=\"signout\">Sign out</button></form>",
        escape(&session.name),
        escape(&session.csrf)
    )
}

fn signed_in_page(app: &dyn Node, session: &Session) -> Response<Body> {
    let body = "<p>Changes made in this browser are in the <a href=\"/audit\">audit log</a> \
                under your name.</p>";
    let html = HtmlPage {
        node: app.name(),
        title: "Signed in",
        body,
        session: Some(session),
    }
    .render();
    with_type(html, "text/html; charset=utf-8")
}

fn error_page(app: &dyn Node, status: StatusCode, message: &str, next: &str) -> Response<Body> {
    let body = format!(
        "<p class=\"failed\" id=\"error\">{}</p><p><a href=\"{}\">Back</a></p>",
        escape(message),
        escape(next)
    );
    let html = HtmlPage {
        node: app.name(),
        title: "Not changed",
        body: &body,
        session: None,
    }
    .render();
    let mut r = with_type(html, "text/html; charset=utf-8");
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_names_its_decision_updates_group_and_deadline() {
        let id = "0b9e1f2e-4a0a-4c8e-9f59-1c2b9d3e4f50";
        let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let approve = form_change(&form(&[
            ("decision", "approve"),
            ("update", id),
            ("update", id),
            ("group", "Ring 1"),
            ("deadline", "2026-12-10T18:00"),
        ]))
        .unwrap();
        match approve {
            Change::Decide {
                updates: Some(updates),
                group,
                decision: Decision::Approve(Action::Install),
                deadline: Some(deadline),
            } => {
                assert_eq!(updates.len(), 2);
                assert_eq!(group, "Ring 1");
                assert_eq!(
                    crate::soap::xsd::format_datetime(deadline),
                    "2026-12-10T18:00:00Z"
                );
            }
            other => panic!("{other:?}"),
        }
        for (pairs, says) in [
            (vec![("decision", "approve"), ("group", "g")], "no update"),
            (
                vec![("decision", "approve"), ("update", "x")],
                "not an update id",
            ),
            (
                vec![("decision", "approve"), ("update", id)],
                "target group",
            ),
            (vec![("decision", "launch"), ("update", id)], "decision"),
            (
                vec![
                    ("decision", "approve"),
                    ("update", id),
                    ("group", "g"),
                    ("deadline", "soon"),
                ],
                "deadline",
            ),
        ] {
            let message = form_change(&form(&pairs)).unwrap_err();
            assert!(message.contains(says), "{pairs:?}: {message}");
        }
        assert!(matches!(
            form_change(&form(&[("decision", "decline"), ("update", id)])),
            Ok(Change::Decline { undo: false, .. })
        ));
    }

    #[test]
    fn a_form_sends_the_browser_only_to_this_listener() {
        assert_eq!(local(Some("/updates?q=KB1")), "/updates?q=KB1");
        for elsewhere in [
            "//evil.example/",
            "https://evil.example/",
            "\\\\evil",
            "/\\evil",
            "",
        ] {
            assert_eq!(local(Some(elsewhere)), "/", "{elsewhere}");
        }
        assert_eq!(local(None), "/");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; wsus_edge_session=abc"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
