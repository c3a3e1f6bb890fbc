//! What a server tells its upstream of its updates when it rolls up (MS-WSUSSS §3.2.4.5, the
//! update half of DownstreamServerRollupServerSummary). Sans-IO: the catalog, the declined
//! updates and where each payload file stands in, counts out.
//!
//! "Updates" are software and driver updates: categories and detectoids are in the revision
//! table too, but nobody approves or declines them, and counting them as "not approved" would
//! tell an administrator of work that does not exist.

use std::collections::{HashMap, HashSet};

use super::{Action, Catalog, FileRef, Guid, UpdateType};

/// Microsoft's "Security Updates" and "Critical Updates" classifications (MS-WSUSSS <71>).
const CRITICAL_CLASSIFICATIONS: [Guid; 2] = [
    Guid(0x0fa1201d_4330_4fa8_8ae9_b877473b6441),
    Guid(0xe6cf1350_c01b_414d_a61f_263d14d133b4),
];
/// The titles of those classifications, for catalogs that name their own.
const CRITICAL_TITLES: [&str; 2] = ["Security Updates", "Critical Updates"];

/// Where a payload file of an approved update stands on this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    Present,
    /// Not (wholly) here yet.
    Missing,
    /// Not here, and the last attempt to fetch it failed.
    Failed,
}

/// The update counts of DownstreamServerRollupServerSummary, each as the spec defines it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateCounts {
    pub updates: i64,
    /// Declined (hidden) updates.
    pub declined: i64,
    /// Not declined, with a deployment to install or uninstall.
    pub approved: i64,
    /// Not declined, without one.
    pub not_approved: i64,
    /// Approved in a revision other than the update's latest.
    pub stale_approvals: i64,
    /// Not approved for install, classified Security or Critical.
    pub critical_not_approved: i64,
    /// Not approved for install, marked IsMandatory (what clients need to keep updating).
    pub infrastructure_not_approved: i64,
    /// Approved for install, a payload file failed to download.
    pub with_server_errors: i64,
    /// Approved for install, a payload file not here yet (and none failed).
    pub needing_files: i64,
    /// Target groups an administrator made (here or upstream), not the built-in ones.
    pub custom_groups: i64,
}

impl Catalog {
    /// The counts of this catalog, `hidden` being the declined update ids.
    pub fn update_counts(
        &self,
        hidden: &HashSet<Guid>,
        file: impl Fn(&FileRef) -> FileState,
    ) -> UpdateCounts {
        // Per update: the deployments' actions and whether one is on an older revision.
        let mut approvals: HashMap<Guid, (bool, bool, bool)> = HashMap::new();
        for d in &self.deployments {
            let Some(r) = self.revision(d.revision) else {
                continue;
            };
            let entry = approvals.entry(r.update_id).or_default();
            let install = d.action == Action::Install;
            let approved = install || d.action == Action::Uninstall;
            entry.0 |= approved;
            entry.1 |= install;
            entry.2 |= approved && self.latest(r.update_id).is_some_and(|l| l.id != r.id);
        }
        let critical: HashSet<Guid> = self
            .revisions
            .iter()
            .filter(|r| {
                r.category_type.as_deref() == Some("UpdateClassification")
                    && (CRITICAL_CLASSIFICATIONS.contains(&r.update_id)
                        || CRITICAL_TITLES.contains(&r.title()))
            })
            .map(|r| r.update_id)
            .collect();

        let mut counts = UpdateCounts {
            custom_groups: self.groups.iter().filter(|g| !g.builtin).count() as i64,
            ..UpdateCounts::default()
        };
        for (&update, &index) in &self.latest {
            let latest = &self.revisions[index];
            if !matches!(
                latest.update_type,
                UpdateType::Software | UpdateType::Driver
            ) {
                continue;
            }
            counts.updates += 1;
            if hidden.contains(&update) {
                counts.declined += 1;
                continue;
            }
            let (approved, install, stale) = approvals.get(&update).copied().unwrap_or_default();
            if approved {
                counts.approved += 1;
            } else {
                counts.not_approved += 1;
            }
            counts.stale_approvals += i64::from(stale);
            if !install {
                let classified_critical = latest
                    .prerequisites
                    .iter()
                    .filter(|c| c.is_category)
                    .flat_map(|c| &c.ids)
                    .any(|id| critical.contains(id));
                counts.critical_not_approved += i64::from(classified_critical);
                counts.infrastructure_not_approved += i64::from(is_mandatory(latest));
                continue;
            }
            let members = latest.bundled.iter().filter_map(|m| self.revision(*m));
            let worst = std::iter::once(latest)
                .chain(members)
                .flat_map(|r| &r.files)
                .map(&file)
                .fold(FileState::Present, |worst, f| match (worst, f) {
                    (FileState::Failed, _) | (_, FileState::Failed) => FileState::Failed,
                    (FileState::Missing, _) | (_, FileState::Missing) => FileState::Missing,
                    _ => FileState::Present,
                });
            match worst {
                FileState::Failed => counts.with_server_errors += 1,
                FileState::Missing => counts.needing_files += 1,
                FileState::Present => {}
            }
        }
        counts
    }
}

/// `IsMandatory="true"` on the update's properties (MS-WSUSSS <72>): the attribute sits on
/// the first element of the extended fragment, where the server keeps the properties.
fn is_mandatory(r: &super::Revision) -> bool {
    let extended = r.fragments.extended.as_str();
    let first_tag = extended.split_once('>').map_or(extended, |(tag, _)| tag);
    first_tag.contains(" IsMandatory=\"true\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ALL_COMPUTERS;
    use crate::state::Store;

    /// The generator's update `i`, by the number in its English title.
    fn index_of(r: &crate::catalog::Revision) -> Option<usize> {
        r.title()
            .strip_prefix("Contoso Update ")?
            .split(' ')
            .next()?
            .parse()
            .ok()
    }

    #[test]
    fn counts_follow_the_spec_definitions() {
        let dir = tempfile::tempdir().unwrap();
        let payloads = dir.path().join("payloads");
        std::fs::create_dir_all(&payloads).unwrap();
        let n = 20;
        let generated = crate::testkit::generate::generate(n, 9, 1 << 20, &payloads).unwrap();
        // Update 10 is one clients need to keep updating.
        let documents: Vec<String> = generated
            .documents
            .iter()
            .map(|d| {
                if d.contains("Contoso Update 10 (") {
                    d.replacen(
                        "AutoSelectOnWebSites=\"true\"",
                        "AutoSelectOnWebSites=\"true\" IsMandatory=\"true\"",
                        1,
                    )
                } else {
                    d.clone()
                }
            })
            .collect();
        let mut store = Store::open(&crate::state::Database::sqlite(dir.path())).unwrap();
        store.import(&documents).unwrap();
        let catalog = store.load().unwrap();
        let update = |i: usize| {
            catalog
                .revisions()
                .iter()
                .find(|r| index_of(r) == Some(i))
                .map(|r| r.update_id)
                .unwrap()
        };
        let latest = |i: usize| catalog.latest(update(i)).unwrap().id;
        // Update 3 has revisions 100 and 101 (i % 7 == 3): approve the older one.
        let older = catalog.by_identity(update(3), 100).unwrap().id;
        assert_ne!(older, latest(3));
        store
            .approve(
                &[latest(0), latest(1), older],
                ALL_COMPUTERS,
                Action::Install,
                None,
                1,
            )
            .unwrap();
        store
            .approve(&[latest(2)], ALL_COMPUTERS, Action::Uninstall, None, 1)
            .unwrap();
        store
            .approve(
                &[latest(5)],
                ALL_COMPUTERS,
                Action::OptionalInstall,
                None,
                1,
            )
            .unwrap();
        store.add_group("Branch Servers", None).unwrap();
        let hidden = HashSet::from([update(6), update(7)]);
        store
            .decline(&catalog, &[update(6), update(7)], true)
            .unwrap();
        let catalog = store.load().unwrap();

        // Update 0's file failed, update 1's is missing, update 3's (older revision) is here.
        let file_of = |i: usize| catalog.revision(latest(i)).unwrap().files[0].sha1;
        let (failed, missing) = (file_of(0), file_of(1));
        let counts = catalog.update_counts(&hidden, |f| {
            if f.sha1 == failed {
                FileState::Failed
            } else if f.sha1 == missing {
                FileState::Missing
            } else {
                FileState::Present
            }
        });

        // The generator classifies update i as (i / 3) % 5: 0 Security, 1 Critical.
        let not_approved: Vec<usize> = (0..n).filter(|i| ![0, 1, 2, 3, 6, 7].contains(i)).collect();
        let critical = not_approved.iter().filter(|&&i| (i / 3) % 5 < 2).count() as i64;
        assert_eq!(
            counts,
            UpdateCounts {
                updates: n as i64,
                declined: 2,
                approved: 4,
                not_approved: n as i64 - 6,
                stale_approvals: 1,
                // And update 2, a security update approved to uninstall only: not for install.
                critical_not_approved: critical + 1,
                infrastructure_not_approved: 1,
                with_server_errors: 1,
                needing_files: 1,
                custom_groups: 1,
            }
        );
    }
}
