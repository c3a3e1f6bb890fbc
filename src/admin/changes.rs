//! What administrators change, however they ask (the JSON API with a bearer token, a browser's
//! form in a signed-in session): one path that refuses what this node does not own (a
//! replica's groups, approvals and declines; an autonomous node's declines when it follows the
//! upstream's), makes the change off the async workers, starts the prefetch of what an approval
//! brings, and writes who did what to the audit log. Calls `served` (the catalog and changes to
//! it), `catalog`, `report` and `state` (the audit log).

use http::StatusCode;

use super::Node;
use crate::catalog::replica::{LocalChange, local_refusal};
use crate::catalog::rules::Rule;
use crate::catalog::{Action, CatalogError, Decision, Guid};
use crate::report::AuditEntry;

/// The titles an audit entry names before it says "and N more".
const TITLES_IN_AUDIT: usize = 20;

/// One change, as asked.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A new target group (under All Computers unless `parent` names another).
    AddGroup {
        name: String,
        parent: Option<String>,
    },
    /// Approve (the latest revision of) `updates`, or every explicitly deployable update when
    /// None, for `group`, or take their approvals for it back.
    Decide {
        updates: Option<Vec<Guid>>,
        group: String,
        decision: Decision,
        /// Seconds since the epoch.
        deadline: Option<i64>,
    },
    /// Decline `updates` (never offered, their approvals taken back), or undo that.
    Decline { updates: Vec<Guid>, undo: bool },
    /// A downstream node syncs now.
    Sync,
    /// Add an automatic approval rule, or replace the one of its name.
    PutRule(RuleRequest),
}

/// An automatic approval rule as asked for: categories and group by name (or id).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleRequest {
    pub name: String,
    /// Classifications by title or GUID; none: any.
    #[serde(default)]
    pub classifications: Vec<String>,
    /// Products or product families by title or GUID; none: any.
    #[serde(default)]
    pub products: Vec<String>,
    pub group: String,
    /// `install` (default) or `optional`.
    pub action: Option<String>,
    /// The deadline, days after each approval.
    pub deadline_days: Option<u32>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also approve what the catalog holds already.
    #[serde(default)]
    pub apply_to_existing: bool,
}

fn yes() -> bool {
    true
}

/// Who asks: what the audit log names, and how they came.
pub(crate) struct Actor {
    pub who: String,
    /// "api" or "browser".
    pub via: &'static str,
}

/// What a change did: the status and JSON the API answers with.
pub(crate) type Done = (StatusCode, serde_json::Value);

/// Why a change was not made: the status and the message that says so.
pub(crate) type Refused = (StatusCode, String);

impl Change {
    /// Which kind of this node's own state it changes (None: none).
    fn owned(&self) -> Option<LocalChange> {
        match self {
            Change::Sync => None,
            Change::Decline { .. } => Some(LocalChange::Declines),
            Change::AddGroup { .. } | Change::Decide { .. } | Change::PutRule(_) => {
                Some(LocalChange::Approvals)
            }
        }
    }
}

/// Make `change` for `actor`, and record it.
pub(crate) async fn apply(app: &dyn Node, actor: &Actor, change: Change) -> Result<Done, Refused> {
    if let Some(refusal) = change
        .owned()
        .zip(app.upstream_config())
        .and_then(|(kind, up)| local_refusal(up, kind))
    {
        return Err((StatusCode::CONFLICT, refusal.to_string()));
    }
    let detail = describe(app, &change);
    let served = app.served().clone();
    let (action, done) = match change {
        Change::Sync => {
            let Some(replica) = app.replica() else {
                return Err((
                    StatusCode::CONFLICT,
                    "a root has no upstream to sync from".into(),
                ));
            };
            replica.sync_now();
            (
                "sync",
                Ok((
                    StatusCode::ACCEPTED,
                    serde_json::json!({ "sync": "queued" }),
                )),
            )
        }
        Change::AddGroup { name, parent } => (
            "group",
            blocking(move || {
                served
                    .change(|store, _| store.add_group(&name, parent.as_deref()))
                    .map(|id| {
                        (
                            StatusCode::CREATED,
                            serde_json::json!({ "id": id.to_string(), "name": name.trim() }),
                        )
                    })
            })
            .await,
        ),
        Change::Decide {
            updates,
            group,
            decision,
            deadline,
        } => {
            let approving = matches!(decision, Decision::Approve(_));
            let done = blocking(move || {
                served
                    .change(|store, catalog| {
                        store.decide(catalog, updates.as_deref(), &group, decision, deadline)
                    })
                    .map(|n| {
                        let counted = if approving { "approved" } else { "taken_back" };
                        (
                            StatusCode::OK,
                            serde_json::json!({
                                counted: n,
                                "group": group,
                                "action": decision.as_str(),
                            }),
                        )
                    })
            })
            .await;
            if let (Ok(_), true, Some(replica)) = (&done, approving, app.replica()) {
                // An autonomous node's own approvals: their content is fetched ahead of the
                // clients, as a synced approval's is.
                replica.catalog_changed();
            }
            (if approving { "approve" } else { "unapprove" }, done)
        }
        Change::PutRule(rule) => (
            "rule",
            blocking(move || {
                served.change(|store, catalog| {
                    let spec = rule_spec(store, catalog, &rule)?;
                    let (id, runs) = store.put_rule(&spec, rule.apply_to_existing)?;
                    let approved: usize = runs
                        .iter()
                        .filter(|r| r.rule == spec.name)
                        .map(|r| r.approved)
                        .sum();
                    Ok((
                        StatusCode::OK,
                        serde_json::json!({ "id": id, "name": spec.name, "approved": approved }),
                    ))
                })
            })
            .await,
        ),
        Change::Decline { updates, undo } => (
            if undo { "undecline" } else { "decline" },
            blocking(move || {
                served
                    .change(|store, catalog| store.decline(catalog, &updates, !undo))
                    .map(|n| {
                        let key = if undo { "undeclined" } else { "declined" };
                        (StatusCode::OK, serde_json::json!({ key: n }))
                    })
            })
            .await,
        ),
    };
    let done = done?;
    record(
        app,
        AuditEntry {
            id: 0,
            at: crate::clock::unix_now(),
            who: actor.who.clone(),
            via: actor.via.to_owned(),
            action: action.to_owned(),
            detail,
        },
    )
    .await;
    Ok(done)
}

/// Append `entry` to the audit log. A log that cannot be written is logged, not fatal: the
/// change is made and in the catalog's own history.
pub(crate) async fn record(app: &dyn Node, entry: AuditEntry) {
    tracing::info!(who = %entry.who, via = %entry.via, action = %entry.action,
        detail = %entry.detail, "administrator's change");
    let journal = app.reports().clone();
    let written = tokio::task::spawn_blocking(move || crate::lock::lock(&journal).audit(&entry));
    match written.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "writing the audit log"),
        Err(e) => tracing::error!(error = %e, "writing the audit log"),
    }
}

/// Run a change of the catalog off the async workers, its errors as the API states them.
async fn blocking(
    f: impl FnOnce() -> Result<Done, CatalogError> + Send + 'static,
) -> Result<Done, Refused> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => {
            let status = match e {
                CatalogError::Unknown(_) => StatusCode::NOT_FOUND,
                CatalogError::Exists(_) => StatusCode::CONFLICT,
                CatalogError::Invalid(_) | CatalogError::Document(_) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                CatalogError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err((status, e.to_string()))
        }
        Err(e) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("admin task: {e}"),
        )),
    }
}

/// `change` in words, for the audit log: the updates by title, the group, the action and
/// deadline.
fn describe(app: &dyn Node, change: &Change) -> String {
    let catalog = app.served().catalog();
    let titled = |updates: &[Guid]| {
        let mut names: Vec<String> = updates
            .iter()
            .take(TITLES_IN_AUDIT)
            .map(|id| match catalog.latest(*id) {
                Some(r) => format!("{} ({id})", r.title()),
                None => id.to_string(),
            })
            .collect();
        if updates.len() > TITLES_IN_AUDIT {
            names.push(format!("and {} more", updates.len() - TITLES_IN_AUDIT));
        }
        names.join("; ")
    };
    match change {
        Change::AddGroup { name, parent } => format!(
            "target group {:?} under {:?}",
            name.trim(),
            parent.as_deref().unwrap_or("All Computers")
        ),
        Change::Decide {
            updates,
            group,
            decision,
            deadline,
        } => {
            let what = match decision {
                Decision::Approve(Action::Install) => "install".to_owned(),
                Decision::Approve(a) => a.as_str().to_ascii_lowercase(),
                Decision::NotApproved => "not approved".to_owned(),
            };
            let deadline = deadline
                .map(|d| format!(", deadline {}", crate::soap::xsd::format_datetime(d)))
                .unwrap_or_default();
            let updates = match updates {
                Some(ids) => titled(ids),
                None => "every deployable update".to_owned(),
            };
            format!("{what} for {group:?}{deadline}: {updates}")
        }
        Change::Decline { updates, .. } => titled(updates),
        Change::Sync => "from the upstream".to_owned(),
        Change::PutRule(r) => format!(
            "{:?}{}: classifications {:?}, products {:?}, {} for {:?}{}",
            r.name.trim(),
            if r.enabled { "" } else { " (disabled)" },
            r.classifications,
            r.products,
            r.action.as_deref().unwrap_or("install"),
            r.group,
            r.deadline_days
                .map(|d| format!(", deadline {d} days after"))
                .unwrap_or_default()
        ),
    }
}

/// The rule `r` asks for, its names resolved in `catalog` and `store`; what cannot be resolved
/// is named.
fn rule_spec(
    store: &crate::state::Store,
    catalog: &crate::catalog::Catalog,
    r: &RuleRequest,
) -> Result<Rule, CatalogError> {
    let resolve = |values: &[String], classification: bool, what: &str| {
        let mut ids = Vec::new();
        for v in values {
            let found = crate::catalog::listing::categories(catalog, v.trim(), classification)
                .ok_or_else(|| CatalogError::Unknown(format!("{what} {v:?}")))?;
            ids.extend(found);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok::<_, CatalogError>(ids)
    };
    let action = match r.action.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("install") => Action::Install,
        Some("optional") => Action::OptionalInstall,
        Some(other) => {
            return Err(CatalogError::Invalid(format!(
                "action: {other:?}: install or optional"
            )));
        }
    };
    Ok(Rule {
        id: 0,
        applied_seq: 0,
        approved: 0,
        name: r.name.trim().to_owned(),
        classifications: resolve(&r.classifications, true, "classification")?,
        products: resolve(&r.products, false, "product")?,
        group: store.group_id(&r.group)?,
        action,
        deadline_days: r.deadline_days,
        enabled: r.enabled,
    })
}
