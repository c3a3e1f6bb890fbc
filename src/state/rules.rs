//! The automatic approval rules' side of the store: the rules kept in the catalog's tables, and
//! their application whenever the catalog changes (an import; a sync of a node whose approvals
//! are its own), each run written to the audit log under the rule's name.

use super::catalog::Store;
use super::db;
use super::sql::{OptionalExtension, params};
use crate::catalog::rules::{DAY, Rule, new_revisions};
use crate::catalog::{Action, CatalogError, Guid};
use crate::report::AuditEntry;

/// The catalog version up to which new revisions of approved updates were looked at.
const REVISIONS_SEQ: &str = "rules.revisions_seq";
/// The titles an audit entry of a rule names before it says "and N more".
const TITLES_IN_AUDIT: usize = 20;

/// What one application of the rules approved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleRun {
    /// The rule's name, or "new revisions" for revisions of approved updates.
    pub rule: String,
    pub approved: usize,
}

impl Store {
    /// Every rule, by name.
    pub fn rules(&self) -> Result<Vec<Rule>, CatalogError> {
        let rows: Vec<RuleRow> = self
            .conn
            .prepare(
                "SELECT id, name, classifications, products, group_id, action, deadline_days,
                 enabled, applied_seq, approved FROM approval_rules ORDER BY name",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok(RuleRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        classifications: r.get(2)?,
                        products: r.get(3)?,
                        group: r.get(4)?,
                        action: r.get(5)?,
                        deadline_days: r.get(6)?,
                        enabled: r.get(7)?,
                        applied_seq: r.get(8)?,
                        approved: r.get(9)?,
                    })
                })?
                .collect()
            })
            .map_err(db)?;
        rows.into_iter().map(RuleRow::rule).collect()
    }

    /// Add `spec`, or replace the rule of its name (case-insensitive): its id, and what the
    /// rules approved at once (it is applied when enabled; to what the catalog holds already
    /// if `apply_to_existing`). Its `id`, `applied_seq` and `approved` are the store's to set.
    pub fn put_rule(
        &mut self,
        spec: &Rule,
        apply_to_existing: bool,
    ) -> Result<(i64, Vec<RuleRun>), CatalogError> {
        let name = spec.name.trim();
        if name.is_empty() || name.len() > 256 {
            return Err(CatalogError::Invalid(
                "a rule's name has 1 to 256 characters".into(),
            ));
        }
        if !matches!(spec.action, Action::Install | Action::OptionalInstall) {
            return Err(CatalogError::Invalid(
                "a rule approves for install or as optional".into(),
            ));
        }
        let ids = |list: &[Guid]| {
            serde_json::to_string(&list.iter().map(Guid::to_string).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".into())
        };
        let seen = if apply_to_existing {
            0
        } else {
            self.catalog_version()?
        };
        let existing: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM approval_rules WHERE lower(name) = lower(?1)",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let (classifications, products) = (ids(&spec.classifications), ids(&spec.products));
        let (group, action) = (spec.group.to_string(), spec.action.as_str());
        let deadline = spec.deadline_days.map(i64::from);
        let id = match existing {
            Some(id) => {
                self.conn
                    .execute(
                        "UPDATE approval_rules SET name = ?1, classifications = ?2, products = ?3,
                         group_id = ?4, action = ?5, deadline_days = ?6, enabled = ?7,
                         applied_seq = ?8 WHERE id = ?9",
                        params![
                            name,
                            classifications,
                            products,
                            group,
                            action,
                            deadline,
                            spec.enabled,
                            seen,
                            id
                        ],
                    )
                    .map_err(db)?;
                id
            }
            None => self
                .conn
                .query_row(
                    "INSERT INTO approval_rules (name, classifications, products, group_id,
                     action, deadline_days, enabled, applied_seq, approved)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0) RETURNING id",
                    params![
                        name,
                        classifications,
                        products,
                        group,
                        action,
                        deadline,
                        spec.enabled,
                        seen
                    ],
                    |r| r.get(0),
                )
                .map_err(db)?,
        };
        let runs = self.apply_rules(crate::clock::unix_now())?;
        Ok((id, runs))
    }

    /// Apply every enabled rule to what the catalog gained or changed since it last ran, and
    /// approve new revisions of approved updates; write each run to the audit log. What was
    /// approved, by rule.
    pub fn apply_rules(&mut self, now: i64) -> Result<Vec<RuleRun>, CatalogError> {
        let rules = self.rules()?;
        // New revisions follow approvals (as WSUS does by default): with none, and no rule,
        // there is nothing to do and the catalog is not read.
        let approvals: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM (SELECT 1 FROM deployments LIMIT 1) AS any_approval",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        let follow = approvals > 0;
        if rules.iter().all(|r| !r.enabled) && !follow {
            return Ok(Vec::new());
        }
        let catalog = self.load()?;
        let mut runs = Vec::new();
        let mut audit = Vec::new();
        for rule in &rules {
            let due = rule.due(&catalog);
            if !due.is_empty() {
                let deadline = rule.deadline_days.map(|d| now + i64::from(d) * DAY);
                self.approve_from(&due, rule.group, rule.action, deadline, now, now)?;
                audit.push(entry(
                    &catalog,
                    &format!("rule {:?}", rule.name),
                    rule.group,
                    rule.action,
                    deadline,
                    &due,
                    now,
                ));
                runs.push(RuleRun {
                    rule: rule.name.clone(),
                    approved: due.len(),
                });
            }
            self.conn
                .execute(
                    "UPDATE approval_rules SET applied_seq = ?2, approved = approved + ?3
                     WHERE id = ?1",
                    params![rule.id, catalog.version, due.len() as i64],
                )
                .map_err(db)?;
        }
        if follow {
            let since: i64 = self
                .meta(REVISIONS_SEQ)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let follows = new_revisions(&catalog, since);
            for f in &follows {
                self.approve_from(&[f.revision], f.group, f.action, f.deadline, now, now)?;
                audit.push(entry(
                    &catalog,
                    "new revisions of approved updates",
                    f.group,
                    f.action,
                    f.deadline,
                    &[f.revision],
                    now,
                ));
            }
            if !follows.is_empty() {
                runs.push(RuleRun {
                    rule: "new revisions".into(),
                    approved: follows.len(),
                });
            }
            self.set_meta(REVISIONS_SEQ, &catalog.version.to_string())?;
        }
        for e in &audit {
            self.conn
                .execute(
                    "INSERT INTO audit_log (at, who, via, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![e.at, e.who, e.via, e.action, e.detail],
                )
                .map_err(db)?;
        }
        Ok(runs)
    }
}

/// The audit entry of a rule's approvals.
fn entry(
    catalog: &crate::catalog::Catalog,
    who: &str,
    group: Guid,
    action: Action,
    deadline: Option<i64>,
    revisions: &[u32],
    now: i64,
) -> AuditEntry {
    let mut titles: Vec<String> = revisions
        .iter()
        .take(TITLES_IN_AUDIT)
        .filter_map(|r| catalog.revision(*r))
        .map(|r| format!("{} ({})", r.title(), r.update_id))
        .collect();
    if revisions.len() > TITLES_IN_AUDIT {
        titles.push(format!("and {} more", revisions.len() - TITLES_IN_AUDIT));
    }
    AuditEntry {
        id: 0,
        at: now,
        who: who.to_owned(),
        via: "rule".into(),
        action: "approve".into(),
        detail: format!(
            "{} for {:?}{}: {}",
            action.as_str().to_ascii_lowercase(),
            catalog.group(group).map_or("?", |g| g.name.as_str()),
            deadline
                .map(|d| format!(", deadline {}", crate::soap::xsd::format_datetime(d)))
                .unwrap_or_default(),
            titles.join("; ")
        ),
    }
}

/// A rule's row as stored.
struct RuleRow {
    id: i64,
    name: String,
    classifications: String,
    products: String,
    group: String,
    action: String,
    deadline_days: Option<i64>,
    enabled: bool,
    applied_seq: i64,
    approved: i64,
}

impl RuleRow {
    fn rule(self) -> Result<Rule, CatalogError> {
        let corrupt = |what: &str| CatalogError::Store(format!("rule {:?}: {what}", self.name));
        let ids = |json: &str| -> Result<Vec<Guid>, CatalogError> {
            serde_json::from_str::<Vec<String>>(json)
                .map_err(|e| corrupt(&e.to_string()))?
                .iter()
                .map(|s| Guid::parse(s).ok_or_else(|| corrupt("bad GUID")))
                .collect()
        };
        Ok(Rule {
            id: self.id,
            classifications: ids(&self.classifications)?,
            products: ids(&self.products)?,
            group: Guid::parse(&self.group).ok_or_else(|| corrupt("bad group"))?,
            action: Action::parse_stored(&self.action).ok_or_else(|| corrupt("bad action"))?,
            deadline_days: self.deadline_days.and_then(|d| u32::try_from(d).ok()),
            enabled: self.enabled,
            applied_seq: self.applied_seq,
            approved: self.approved,
            name: self.name,
        })
    }
}
