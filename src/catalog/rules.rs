//! Automatic approval rules, as WSUS has them: updates of some classifications in some products
//! approved for a target group (with a deadline some days after), and new revisions of approved
//! updates approved as their predecessors were. Which revisions a rule approves, given the
//! catalog and what the rule has seen of it; sans-IO (the store keeps the rules and applies
//! what this finds).

use std::collections::{HashMap, HashSet};

use super::listing::{in_categories, is_listed};
use super::{Action, Catalog, Guid};

/// Seconds in a day: rules' deadlines are whole days after the approval.
pub const DAY: i64 = 86_400;

/// One automatic approval rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: i64,
    pub name: String,
    /// Classification category ids: an update in one of them (none: any classification).
    pub classifications: Vec<Guid>,
    /// Product (or product family) category ids: an update in one of them (none: any).
    pub products: Vec<Guid>,
    pub group: Guid,
    /// Install or OptionalInstall.
    pub action: Action,
    /// The deadline, in days after the approval; None: none.
    pub deadline_days: Option<u32>,
    pub enabled: bool,
    /// The catalog version up to which the rule was applied: revisions imported or changed
    /// after it are the rule's to look at.
    pub applied_seq: i64,
    /// Approvals it made, in all.
    pub approved: i64,
}

impl Rule {
    /// Whether `revision` (an update an administrator approves) is of the rule's
    /// classifications and products.
    fn covers(&self, catalog: &Catalog, revision: &super::Revision) -> bool {
        let wanted = |ids: &[Guid]| {
            let set: HashSet<Guid> = ids.iter().copied().collect();
            set.is_empty() || in_categories(catalog, revision, &set)
        };
        wanted(&self.classifications) && wanted(&self.products)
    }

    /// The revisions the rule approves now: the latest revision of each update it covers that
    /// was imported or changed since it last ran, is not declined, and has no deployment for
    /// its group yet (one an administrator made or blocked stays as it is).
    pub fn due(&self, catalog: &Catalog) -> Vec<u32> {
        if !self.enabled {
            return Vec::new();
        }
        let decided: HashSet<Guid> = catalog
            .deployments
            .iter()
            .filter(|d| d.group == self.group)
            .filter_map(|d| catalog.revision(d.revision).map(|r| r.update_id))
            .collect();
        catalog
            .revisions()
            .iter()
            .filter(|r| r.change_seq > self.applied_seq && is_listed(catalog, r))
            .filter(|r| !catalog.is_declined(r.update_id) && !decided.contains(&r.update_id))
            .filter(|r| self.covers(catalog, r))
            .map(|r| r.id)
            .collect()
    }
}

/// A new revision approved as an earlier revision of its update was: for the same group, with
/// the same action and deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follow {
    pub revision: u32,
    pub group: Guid,
    pub action: Action,
    pub deadline: Option<i64>,
}

/// The latest revisions imported or changed after catalog version `since` whose update has an
/// earlier revision approved (install, optional, uninstall) for a group that the new one is
/// not: WSUS's "approve new revisions of updates that are already approved". Declined updates
/// are left alone.
pub fn new_revisions(catalog: &Catalog, since: i64) -> Vec<Follow> {
    // Deployments by update, once: a sync may change thousands of revisions.
    let mut by_update: HashMap<Guid, Vec<(&super::Deployment, u32)>> = HashMap::new();
    for d in &catalog.deployments {
        if let Some(r) = catalog.revision(d.revision) {
            by_update
                .entry(r.update_id)
                .or_default()
                .push((d, r.revision_number));
        }
    }
    let mut out = Vec::new();
    for r in catalog.revisions() {
        if r.change_seq <= since || !is_listed(catalog, r) || catalog.is_declined(r.update_id) {
            continue;
        }
        let Some(deployed) = by_update.get(&r.update_id) else {
            continue;
        };
        let here: HashSet<Guid> = deployed
            .iter()
            .filter(|(d, _)| d.revision == r.id)
            .map(|(d, _)| d.group)
            .collect();
        for (d, number) in deployed {
            if *number < r.revision_number && d.action.is_offered() && !here.contains(&d.group) {
                out.push(Follow {
                    revision: r.id,
                    group: d.group,
                    action: d.action,
                    deadline: d.deadline,
                });
            }
        }
    }
    out.sort_by_key(|f| (f.revision, f.group));
    out.dedup_by_key(|f| (f.revision, f.group));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::listing::categories;
    use crate::catalog::{ALL_COMPUTERS, UNASSIGNED_COMPUTERS};

    fn rule(catalog: &Catalog, classification: Option<&str>, applied_seq: i64) -> Rule {
        Rule {
            id: 1,
            name: "r".into(),
            classifications: classification
                .map(|c| categories(catalog, c, true).unwrap().into_iter().collect())
                .unwrap_or_default(),
            products: Vec::new(),
            group: UNASSIGNED_COMPUTERS,
            action: Action::Install,
            deadline_days: None,
            enabled: true,
            applied_seq,
            approved: 0,
        }
    }

    #[test]
    fn a_rule_takes_what_is_new_to_it_in_its_classifications_and_not_yet_decided() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = crate::state::generated_store(dir.path(), 30, 4, 1 << 20);
        let catalog = store.load().unwrap();
        let update_of = |r: &u32| catalog.revision(*r).unwrap().update_id;

        // Everything listed, when it never ran; only Security updates, with that filter.
        let any = rule(&catalog, None, 0).due(&catalog);
        let listed = catalog
            .revisions()
            .iter()
            .filter(|r| is_listed(&catalog, r))
            .count();
        assert_eq!(any.len(), listed);
        let security = rule(&catalog, Some("Security Updates"), 0);
        let due = security.due(&catalog);
        assert!(!due.is_empty() && due.len() < any.len());
        let wanted = categories(&catalog, "Security Updates", true).unwrap();
        for r in &due {
            assert!(in_categories(
                &catalog,
                catalog.revision(*r).unwrap(),
                &wanted
            ));
        }
        // Nothing new since it last ran; nothing when disabled.
        assert!(
            rule(&catalog, None, catalog.version)
                .due(&catalog)
                .is_empty()
        );
        let off = Rule {
            enabled: false,
            ..rule(&catalog, None, 0)
        };
        assert!(off.due(&catalog).is_empty());

        // Decided for its group (approved or blocked), or declined: left as it is.
        store
            .approve(&due[..1], UNASSIGNED_COMPUTERS, Action::Block, None, 10)
            .unwrap();
        store
            .decline(&catalog, &[update_of(&due[1])], true)
            .unwrap();
        let catalog = store.load().unwrap();
        let again = security.due(&catalog);
        assert_eq!(again.len(), due.len() - 2);
        assert!(!again.contains(&due[0]) && !again.contains(&due[1]));
    }

    #[test]
    fn a_new_revision_follows_the_approvals_of_its_predecessor() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, generated) = crate::state::generated_store(dir.path(), 10, 6, 1 << 20);
        let id = generated.deployable[0];
        let first = *store.revisions_of(id).unwrap().last().unwrap();
        store
            .approve(
                &[first],
                ALL_COMPUTERS,
                Action::OptionalInstall,
                Some(5_000),
                10,
            )
            .unwrap();
        let seen = store.load().unwrap().version;
        assert!(new_revisions(&store.load().unwrap(), 0).is_empty());

        // The next revision of its document.
        let doc = generated
            .documents
            .iter()
            .find(|d| d.contains(&format!("UpdateID=\"{id}\" RevisionNumber")))
            .unwrap();
        let own = format!("UpdateID=\"{id}\" RevisionNumber=\"");
        let at = doc.find(&own).unwrap() + own.len();
        let end = at + doc[at..].find('"').unwrap();
        let n: u32 = doc[at..end].parse().unwrap();
        let next = format!("{}{}{}", &doc[..at], n + 1, &doc[end..]);
        // The store follows at once (its import applies the rules), as this finds it should.
        store.import(&[next]).unwrap();
        let catalog = store.load().unwrap();
        let latest = catalog.latest(id).unwrap().id;
        let followed: Vec<Follow> = catalog
            .deployments
            .iter()
            .filter(|d| d.revision == latest)
            .map(|d| Follow {
                revision: d.revision,
                group: d.group,
                action: d.action,
                deadline: d.deadline,
            })
            .collect();
        assert_eq!(
            followed,
            [Follow {
                revision: latest,
                group: ALL_COMPUTERS,
                action: Action::OptionalInstall,
                deadline: Some(5_000),
            }]
        );
        // Followed once: nothing is left to follow, from any version.
        assert!(new_revisions(&catalog, seen).is_empty());
        assert!(new_revisions(&catalog, catalog.version).is_empty());
    }
}
