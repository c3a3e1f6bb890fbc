//! Which revisions a computer may see, with which deployment, and the SyncUpdates walk over
//! them (MS-WUSP §3.1.5.7). Sans-IO.
//!
//! Scope: the deployments of the computer's target groups and of their ancestors (All Computers
//! is everyone's), the nearest group's deployment winning and Block overriding all; every other
//! software update that is not declined with action PreDeploymentCheck; then every
//! dependency of what is offered: prerequisites (each alternative, highest revision of the
//! update, recursively, up the category chain) with action Evaluate, bundled revisions
//! (recursively) with action Bundle, as real WSUS sends them.
//!
//! The walk: a revision is sent when every prerequisite clause has an alternative among the
//! updates the client says it has installed (`InstalledNonLeafUpdateIDs`) and the client does
//! not have it cached; non-leaf revisions first, so that the client can evaluate them and come
//! back for what they unlock. Pages are cut at `page_size` with `Truncated`.

use std::collections::{HashMap, HashSet};

use super::driver::{self, SystemSpec};
use super::{Action, Catalog, Guid, UpdateType};

/// The deployment a computer gets for one revision, explicit or implied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub revision: u32,
    pub action: Action,
    /// The deployment's id; implied deployments get [`IMPLIED_DEPLOYMENT_BASE`] + revision.
    pub deployment_id: u32,
    pub last_change: i64,
    pub deadline: Option<i64>,
    pub download_priority: u8,
    pub is_leaf: bool,
}

/// Deployment ids at or above this are implied (a dependency's Evaluate or Bundle); the ids of
/// administrators' deployments stay below it.
pub const IMPLIED_DEPLOYMENT_BASE: u32 = 1_000_000_000;

/// Everything a computer in some target groups may be sent: one offer per revision, in the
/// order the walk sends them (non-leaf first, then by revision id), with what every walk over
/// it needs to know of it as a whole.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    offers: Vec<Offer>,
    /// Beside `offers`, what the walk tests of each, laid out to be tested fast.
    steps: Vec<Step>,
    /// The prerequisite clauses of every offer, one after another: each is its number of
    /// alternatives, then those alternatives as update ordinals ([`Catalog::update_ordinal`];
    /// `u32::MAX` for an update the catalog lacks, never installed).
    clauses: Vec<u32>,
    /// Revision id → position in `offers`.
    index: Positions,
    /// The latest change of any offer (seconds since the epoch); 0 when empty.
    last_change: i64,
    has_driver: bool,
}

#[derive(Debug, Clone, Copy)]
struct Step {
    update_type: UpdateType,
    /// This offer's part of `Scope::clauses`.
    clauses: (u32, u32),
}

impl Scope {
    fn new(catalog: &Catalog, by_revision: HashMap<u32, Offer>) -> Scope {
        let mut offers: Vec<(Offer, &super::Revision)> = by_revision
            .into_values()
            .filter_map(|o| Some((o, catalog.revision(o.revision)?)))
            .collect();
        offers.sort_unstable_by_key(|(o, _)| (o.is_leaf, o.revision));
        let mut clauses = Vec::new();
        let steps = offers
            .iter()
            .map(|(_, r)| {
                let start = clauses.len() as u32;
                for c in &r.prerequisites {
                    clauses.push(c.ids.len() as u32);
                    clauses.extend(
                        c.ids
                            .iter()
                            .map(|id| catalog.update_ordinal(*id).unwrap_or(u32::MAX)),
                    );
                }
                Step {
                    update_type: r.update_type,
                    clauses: (start, clauses.len() as u32),
                }
            })
            .collect();
        Scope {
            index: Positions::new(catalog, offers.iter().map(|(o, _)| o.revision)),
            last_change: offers.iter().map(|(o, _)| o.last_change).max().unwrap_or(0),
            has_driver: offers
                .iter()
                .any(|(_, r)| r.update_type == UpdateType::Driver),
            offers: offers.into_iter().map(|(o, _)| o).collect(),
            steps,
            clauses,
        }
    }

    /// Whether every prerequisite clause of the offer at `i` has an alternative in
    /// `installed` (update ordinals).
    fn prerequisites_met(&self, i: usize, installed: &Bits) -> bool {
        let Some(&Step {
            clauses: (start, end),
            ..
        }) = self.steps.get(i)
        else {
            return false;
        };
        let mut rest = self
            .clauses
            .get(start as usize..end as usize)
            .unwrap_or(&[]);
        while let Some((&n, tail)) = rest.split_first() {
            let Some((alternatives, next)) = tail.split_at_checked(n as usize) else {
                return false;
            };
            if !alternatives.iter().any(|&u| installed.contains(u)) {
                return false;
            }
            rest = next;
        }
        true
    }

    pub fn get(&self, revision: u32) -> Option<&Offer> {
        self.index.get(revision).and_then(|i| self.offers.get(i))
    }

    pub fn contains(&self, revision: u32) -> bool {
        self.index.get(revision).is_some()
    }

    /// In the walk's order.
    pub fn offers(&self) -> &[Offer] {
        &self.offers
    }
}

/// Everything a computer in `groups` may be sent at `now` (seconds since the epoch): a
/// deployment counts from its go-live time on.
pub fn scope(catalog: &Catalog, groups: &[Guid], now: i64) -> Scope {
    // Each group the computer is in, with its ancestors; depth 0 = the computer's own group.
    let mut depth: HashMap<Guid, usize> = HashMap::new();
    for &g in groups {
        let mut at = Some(g);
        let mut d = 0;
        while let Some(id) = at {
            let e = depth.entry(id).or_insert(d);
            *e = (*e).min(d);
            at = catalog.group(id).and_then(|g| g.parent);
            d += 1;
            if d > 64 {
                break;
            }
        }
    }
    let mut chosen: HashMap<u32, (usize, &super::Deployment)> = HashMap::new();
    let mut blocked: HashSet<u32> = HashSet::new();
    for d in catalog.deployments.iter().filter(|d| d.go_live <= now) {
        let Some(&dd) = depth.get(&d.group) else {
            continue;
        };
        if d.action == Action::Block {
            blocked.insert(d.revision);
            continue;
        }
        let better = match chosen.get(&d.revision) {
            None => true,
            Some((cd, c)) => dd < *cd || (dd == *cd && d.last_change > c.last_change),
        };
        if better {
            chosen.insert(d.revision, (dd, d));
        }
    }
    let mut out: HashMap<u32, Offer> = HashMap::new();
    let mut pending: Vec<(u32, Action, i64)> = Vec::new();
    for (rev, (_, d)) in chosen {
        if blocked.contains(&rev) {
            continue;
        }
        let Some(r) = catalog.revision(rev) else {
            continue;
        };
        // For a client's anchor, a deployment changes when it goes live.
        let changed = d.last_change.max(d.go_live);
        out.insert(
            rev,
            Offer {
                revision: rev,
                action: d.action,
                deployment_id: d.id,
                last_change: changed,
                deadline: d.deadline,
                download_priority: d.download_priority,
                is_leaf: r.is_leaf,
            },
        );
        pending.push((rev, d.action, changed));
    }
    // The latest revision of every software update that no group of the computer's deploys
    // or blocks, and no administrator declined, is sent for evaluation alone, as WSUS does
    // (MS-WUSP §2.2.2.2.4, SyncUpdates' Action PreDeploymentCheck: "do not offer the update,
    // just report back on the status"): an administrator sees how many computers need an
    // update before approving it. One revision per update: an update deployed in any revision
    // is left as it is.
    let deployed: HashSet<Guid> = out
        .keys()
        .chain(&blocked)
        .filter_map(|&rev| catalog.revision(rev).map(|r| r.update_id))
        .collect();
    for r in catalog.revisions() {
        let evaluated = r.explicitly_deployable
            && r.update_type == UpdateType::Software
            && !deployed.contains(&r.update_id)
            && !catalog.is_declined(r.update_id)
            && catalog.latest(r.update_id).is_some_and(|l| l.id == r.id);
        if !evaluated {
            continue;
        }
        // It changes for a client when an approval it held ends.
        let changed = catalog.unapproved_at(r.id);
        out.insert(
            r.id,
            Offer {
                revision: r.id,
                action: Action::PreDeploymentCheck,
                deployment_id: IMPLIED_DEPLOYMENT_BASE.saturating_add(r.id),
                last_change: changed,
                deadline: None,
                download_priority: 2,
                is_leaf: r.is_leaf,
            },
        );
        pending.push((r.id, Action::PreDeploymentCheck, changed));
    }
    // Dependencies of what is deployed, recursively. Bundle membership wins over Evaluate when
    // a revision is both; a revision deployed itself keeps its own deployment.
    while let Some((rev, from, changed)) = pending.pop() {
        let Some(r) = catalog.revision(rev) else {
            continue;
        };
        let prerequisites = r
            .prerequisites
            .iter()
            .flat_map(|c| c.ids.iter())
            .filter_map(|id| catalog.latest(*id))
            .map(|p| (p.id, Action::Evaluate));
        // What an update sent for evaluation bundles is evaluated with it: nothing of it is
        // installed unless the bundle is approved.
        let member = if from == Action::PreDeploymentCheck {
            Action::Evaluate
        } else {
            Action::Bundle
        };
        let bundled = r.bundled.iter().map(|&b| (b, member));
        for (dep, action) in prerequisites.chain(bundled).collect::<Vec<_>>() {
            let Some(dr) = catalog.revision(dep) else {
                continue;
            };
            match out.get_mut(&dep) {
                Some(o) if o.deployment_id < IMPLIED_DEPLOYMENT_BASE => continue,
                Some(o) => {
                    let upgrade = action == Action::Bundle && o.action == Action::Evaluate;
                    if upgrade {
                        o.action = Action::Bundle;
                    }
                    if changed > o.last_change {
                        o.last_change = changed;
                    } else if !upgrade {
                        continue;
                    }
                }
                None => {
                    out.insert(
                        dep,
                        Offer {
                            revision: dep,
                            action,
                            deployment_id: IMPLIED_DEPLOYMENT_BASE.saturating_add(dep),
                            last_change: changed,
                            deadline: None,
                            download_priority: 2,
                            is_leaf: dr.is_leaf,
                        },
                    );
                }
            }
            pending.push((dep, action, changed));
        }
    }
    Scope::new(catalog, out)
}

/// One SyncUpdates call, as the client asked it.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub installed_non_leaf: Vec<u32>,
    pub other_cached: Vec<u32>,
    /// The driver pass.
    pub skip_software: bool,
    /// Category scan (StartCategoryScan's preferred ids); empty = everything.
    pub filter_categories: Vec<Guid>,
    /// The highest deployment change time the client has seen (from its cookie).
    pub anchor: i64,
    pub page_size: usize,
    /// The driver pass's devices: the drivers sent are the best for them.
    pub system_spec: Option<SystemSpec>,
    /// SyncPrinterCatalog: the driver pass of every printer driver in scope.
    pub printers: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncResult {
    pub new_updates: Vec<Offer>,
    pub changed_updates: Vec<Offer>,
    pub out_of_scope: Vec<u32>,
    pub truncated: bool,
    /// What the client will have seen once it has every page: for its next cookie.
    pub new_anchor: i64,
    /// No driver is in scope: the driver pass can be skipped.
    pub driver_sync_not_needed: bool,
    /// Of each driver revision sent, the hardware ids it was the best driver for.
    pub hardware_ids: HashMap<u32, Vec<String>>,
}

/// The SyncUpdates walk over a computer's `scope`.
///
/// Cost: at most one pass over the scope with a bit test per offer until the page is full, and
/// one lookup per id the client sends (its lists are sorted and deduplicated first, so no list
/// it sends can make it slow). A first scan's pages stop early; a rescan that finds nothing new
/// tests each offer's bit once.
pub fn sync(catalog: &Catalog, scope: &Scope, req: &SyncRequest) -> SyncResult {
    let in_pass = |t: UpdateType| match req.skip_software {
        false => t != UpdateType::Driver,
        true => t == UpdateType::Driver,
    };
    let mut installed = Bits::new(catalog.len());
    for r in req
        .installed_non_leaf
        .iter()
        .filter_map(|id| catalog.revision(*id))
    {
        if let Some(u) = catalog.update_ordinal(r.update_id) {
            installed.insert(u);
        }
    }
    let allowed = (!req.filter_categories.is_empty())
        .then(|| category_filter(catalog, scope, &req.filter_categories));
    // What the walk may send now: in this pass, in the category scan, prerequisites installed.
    let possible = |i: usize| {
        scope.steps.get(i).is_some_and(|s| in_pass(s.update_type))
            && allowed
                .as_ref()
                .is_none_or(|a| scope.offers.get(i).is_some_and(|o| a.contains(&o.revision)))
            && scope.prerequisites_met(i, &installed)
    };
    // Of the drivers, only those chosen for this computer: the best for each of its devices,
    // or for SyncPrinterCatalog every printer driver (it names no device).
    let hardware_ids = if req.skip_software {
        one_per_update(catalog, chosen_drivers(catalog, scope, req, &possible))
    } else {
        HashMap::new()
    };
    let wanted = |i: usize| {
        possible(i)
            && (scope
                .steps
                .get(i)
                .is_some_and(|s| s.update_type != UpdateType::Driver)
                || scope
                    .offers
                    .get(i)
                    .is_some_and(|o| hardware_ids.contains_key(&o.revision)))
    };
    let mut cached = IdSet::new(catalog);
    // Ids too high for the bitset: no revision has them, and they are out of scope.
    let mut beyond = Vec::new();
    for &id in req.installed_non_leaf.iter().chain(&req.other_cached) {
        if !cached.insert(id) {
            beyond.push(id);
        }
    }
    // What the client holds, in ascending order and once each.
    let mut held = cached.ascending();
    beyond.sort_unstable();
    beyond.dedup();
    held.extend(beyond);
    let mut new_updates = Vec::new();
    let mut truncated = false;
    for (i, o) in scope.offers.iter().enumerate() {
        if cached.contains(o.revision) || !wanted(i) {
            continue;
        }
        if new_updates.len() == req.page_size {
            truncated = true;
            break;
        }
        new_updates.push(*o);
    }
    let mut changed_updates = Vec::new();
    let mut out_of_scope = Vec::new();
    for id in held {
        let at = scope.index.get(id);
        match at.and_then(|i| Some((i, scope.offers.get(i)?))) {
            Some((i, o)) if wanted(i) => {
                if o.last_change > req.anchor {
                    changed_updates.push(*o);
                }
            }
            _ => {
                if catalog.revision(id).is_none_or(|r| in_pass(r.update_type)) {
                    out_of_scope.push(id);
                }
            }
        }
    }
    changed_updates.sort_unstable_by_key(|o| (o.is_leaf, o.revision));
    SyncResult {
        new_updates,
        changed_updates,
        out_of_scope,
        truncated,
        new_anchor: req.anchor.max(scope.last_change),
        driver_sync_not_needed: !scope.has_driver,
        hardware_ids,
    }
}

/// The drivers of `scope` chosen for the computer of `req`, each with the hardware id it was
/// chosen for, among those `possible` at this point of the walk and deployed to be installed:
/// the best for each device of its SystemSpec that beats what is installed there (see
/// [`driver`]); for SyncPrinterCatalog (`printers`), every printer driver.
fn chosen_drivers(
    catalog: &Catalog,
    scope: &Scope,
    req: &SyncRequest,
    possible: &dyn Fn(usize) -> bool,
) -> Vec<driver::Best> {
    let eligible = |revision: u32| {
        scope.index.get(revision).is_some_and(|i| {
            scope
                .offers
                .get(i)
                .is_some_and(|o| matches!(o.action, Action::Install | Action::OptionalInstall))
                && possible(i)
        })
    };
    if req.printers {
        return scope
            .offers
            .iter()
            .filter(|o| eligible(o.revision))
            .filter_map(|o| catalog.revision(o.revision))
            .flat_map(|r| {
                r.drivers
                    .iter()
                    .filter(|m| m.is_printer())
                    .map(|m| driver::Best {
                        revision: r.id,
                        hardware_id: m.hardware_id.clone(),
                    })
            })
            .collect();
    }
    let Some(spec) = &req.system_spec else {
        return Vec::new();
    };
    let meta = |revision: u32| {
        catalog
            .revision(revision)
            .map(|r| (&r.drivers[..], r.revision_number))
    };
    driver::best_drivers(catalog.driver_index(), spec, meta, eligible)
}

/// One revision per update of `chosen` (the highest: MS-WUSP 3.1.5.7), with the hardware ids
/// that revision was chosen for.
fn one_per_update(catalog: &Catalog, chosen: Vec<driver::Best>) -> HashMap<u32, Vec<String>> {
    let mut by_update: HashMap<Guid, (u32, u32, Vec<String>)> = HashMap::new();
    for best in chosen {
        let Some(r) = catalog.revision(best.revision) else {
            continue;
        };
        let entry = by_update
            .entry(r.update_id)
            .or_insert((r.revision_number, r.id, Vec::new()));
        if r.revision_number > entry.0 {
            *entry = (r.revision_number, r.id, Vec::new());
        }
        if entry.1 == r.id && !entry.2.contains(&best.hardware_id) {
            entry.2.push(best.hardware_id);
        }
    }
    by_update
        .into_values()
        .map(|(_, revision, ids)| (revision, ids))
        .collect()
}

/// Revision id → position in a scope's offers: a slot per id where the catalog's ids are
/// dense (every page of a scan looks up each id the client holds: thousands), hashed otherwise.
#[derive(Debug, Clone)]
enum Positions {
    /// `u32::MAX`: not in the scope.
    Dense(Vec<u32>),
    Hashed(HashMap<u32, usize>),
}

impl Default for Positions {
    fn default() -> Positions {
        Positions::Dense(Vec::new())
    }
}

impl Positions {
    fn new(catalog: &Catalog, revisions: impl Iterator<Item = u32>) -> Positions {
        match catalog.dense_id_limit() {
            Some(limit) => {
                let mut slots = vec![u32::MAX; limit];
                for (i, id) in revisions.enumerate() {
                    // Every offer is a revision of the catalog, so below its limit.
                    if let Some(slot) = slots.get_mut(id as usize) {
                        *slot = i as u32;
                    }
                }
                Positions::Dense(slots)
            }
            None => Positions::Hashed(revisions.enumerate().map(|(i, id)| (id, i)).collect()),
        }
    }

    fn get(&self, revision: u32) -> Option<usize> {
        match self {
            Positions::Dense(slots) => slots
                .get(revision as usize)
                .filter(|&&i| i != u32::MAX)
                .map(|&i| i as usize),
            Positions::Hashed(map) => map.get(&revision).copied(),
        }
    }
}

/// A set of numbers below a limit, one bit each; numbers at or above it are never members.
struct Bits(Vec<u64>);

impl Bits {
    fn new(limit: usize) -> Bits {
        Bits(vec![0; limit.div_ceil(64)])
    }

    /// False when `n` is past the last word (the limit rounded up to 64), and so not
    /// inserted.
    fn insert(&mut self, n: u32) -> bool {
        match self.0.get_mut(n as usize / 64) {
            Some(word) => {
                *word |= 1 << (n % 64);
                true
            }
            None => false,
        }
    }

    fn contains(&self, n: u32) -> bool {
        self.0
            .get(n as usize / 64)
            .is_some_and(|word| word & (1 << (n % 64)) != 0)
    }
}

/// A set of revision ids of one catalog: bits when its ids are dense (ids at or above the
/// limit are never members: no revision has them), hashed otherwise.
enum IdSet {
    Bits(Bits),
    Hashed(HashSet<u32>),
}

impl IdSet {
    fn new(catalog: &Catalog) -> IdSet {
        match catalog.dense_id_limit() {
            Some(limit) => IdSet::Bits(Bits::new(limit)),
            None => IdSet::Hashed(HashSet::new()),
        }
    }

    /// False when the set cannot hold `id` (a bitset's limit): no revision has it.
    fn insert(&mut self, id: u32) -> bool {
        match self {
            IdSet::Bits(bits) => bits.insert(id),
            IdSet::Hashed(set) => {
                set.insert(id);
                true
            }
        }
    }

    fn contains(&self, id: u32) -> bool {
        match self {
            IdSet::Bits(bits) => bits.contains(id),
            IdSet::Hashed(set) => set.contains(&id),
        }
    }

    /// The members, in ascending order.
    fn ascending(&self) -> Vec<u32> {
        match self {
            IdSet::Bits(Bits(words)) => {
                let mut out = Vec::new();
                for (w, &word) in words.iter().enumerate() {
                    let mut rest = word;
                    while rest != 0 {
                        out.push(w as u32 * 64 + rest.trailing_zeros());
                        rest &= rest - 1;
                    }
                }
                out
            }
            IdSet::Hashed(set) => {
                let mut out: Vec<u32> = set.iter().copied().collect();
                out.sort_unstable();
                out
            }
        }
    }
}

/// The revisions a category scan may return: software in scope with a category clause naming
/// one of `categories`, their dependencies in scope, and the categories' own chain.
fn category_filter(catalog: &Catalog, scope: &Scope, categories: &[Guid]) -> HashSet<u32> {
    let wanted: HashSet<Guid> = categories.iter().copied().collect();
    let mut keep: HashSet<u32> = HashSet::new();
    let mut pending: Vec<u32> = Vec::new();
    for o in scope.offers() {
        let Some(r) = catalog.revision(o.revision) else {
            continue;
        };
        let named = r
            .prerequisites
            .iter()
            .any(|c| c.is_category && c.ids.iter().any(|id| wanted.contains(id)));
        if named || wanted.contains(&r.update_id) {
            pending.push(r.id);
        }
    }
    while let Some(id) = pending.pop() {
        if !keep.insert(id) {
            continue;
        }
        let Some(r) = catalog.revision(id) else {
            continue;
        };
        for dep in r
            .prerequisites
            .iter()
            .flat_map(|c| c.ids.iter())
            .filter_map(|u| catalog.latest(*u))
            .map(|p| p.id)
            .chain(r.bundled.iter().copied())
        {
            if scope.contains(dep) {
                pending.push(dep);
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ALL_COMPUTERS, Deployment, Revision, UNASSIGNED_COMPUTERS};
    use crate::state::Store;

    /// A client that treats every non-leaf revision it is sent as installed, as a machine to
    /// which every category and detectoid applies; returns every offer received, in order.
    fn walk(catalog: &Catalog, groups: &[Guid], page_size: usize) -> Vec<Offer> {
        let scope = scope(catalog, groups, i64::MAX);
        let mut installed = Vec::new();
        let mut other = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..200 {
            let result = sync(
                catalog,
                &scope,
                &SyncRequest {
                    installed_non_leaf: installed.clone(),
                    other_cached: other.clone(),
                    page_size,
                    ..SyncRequest::default()
                },
            );
            assert!(result.out_of_scope.is_empty());
            if result.new_updates.is_empty() {
                assert!(!result.truncated, "never truncated with an empty page");
                return seen;
            }
            for o in result.new_updates {
                // Every prerequisite was delivered (and installed) before.
                let r = catalog.revision(o.revision).unwrap();
                for clause in &r.prerequisites {
                    assert!(clause.ids.iter().any(|id| {
                        installed
                            .iter()
                            .any(|i| catalog.revision(*i).unwrap().update_id == *id)
                    }));
                }
                if o.is_leaf {
                    other.push(o.revision);
                } else {
                    installed.push(o.revision);
                }
                seen.push(o);
            }
        }
        panic!("the walk did not end");
    }

    #[test]
    fn each_group_is_offered_exactly_its_approvals_with_their_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, generated) = crate::state::generated_store(dir.path(), 60, 7, 4 << 20);
        let ring = store.add_group("Ring 1", None).unwrap();
        let latest_of = |store: &Store, id: Guid| *store.revisions_of(id).unwrap().last().unwrap();
        let for_all: Vec<u32> = generated.deployable[..4]
            .iter()
            .map(|id| latest_of(&store, *id))
            .collect();
        let for_ring: Vec<u32> = generated.deployable[4..10]
            .iter()
            .map(|id| latest_of(&store, *id))
            .collect();
        store
            .approve(&for_all, ALL_COMPUTERS, Action::Install, None, 1000)
            .unwrap();
        store
            .approve(&for_ring, ring, Action::Install, None, 2000)
            .unwrap();
        let catalog = store.load().unwrap();

        let offered = |offers: &[Offer]| {
            let mut ids: Vec<u32> = offers
                .iter()
                .filter(|o| o.action.is_offered())
                .map(|o| o.revision)
                .collect();
            ids.sort_unstable();
            ids
        };
        let mut want_unassigned = for_all.clone();
        want_unassigned.sort_unstable();
        let unassigned = walk(&catalog, &[UNASSIGNED_COMPUTERS], 7);
        assert_eq!(offered(&unassigned), want_unassigned);
        let mut want_ring = [for_all.clone(), for_ring.clone()].concat();
        want_ring.sort_unstable();
        let ringed = walk(&catalog, &[ring], 7);
        assert_eq!(offered(&ringed), want_ring);
        // Dependencies came along: categories, classifications, detectoids, bundle members.
        let delivered: HashSet<u32> = ringed.iter().map(|o| o.revision).collect();
        for rev in &want_ring {
            let r = catalog.revision(*rev).unwrap();
            for clause in &r.prerequisites {
                assert!(
                    clause
                        .ids
                        .iter()
                        .any(|id| delivered.contains(&catalog.latest(*id).unwrap().id))
                );
            }
            for m in &r.bundled {
                let o = ringed
                    .iter()
                    .find(|o| o.revision == *m)
                    .expect("member sent");
                assert_eq!(o.action, Action::Bundle);
            }
        }
        assert!(ringed.iter().all(|o| o.action != Action::Block));
        // One revision per update.
        let mut updates: Vec<Guid> = ringed
            .iter()
            .map(|o| catalog.revision(o.revision).unwrap().update_id)
            .collect();
        let n = updates.len();
        updates.sort();
        updates.dedup();
        assert_eq!(updates.len(), n);
    }

    /// Revision ids far apart (a catalog not numbered by state.db) take the hashed paths of
    /// the lookup and of the walk's id sets, and give the same answers as dense ids.
    #[test]
    fn sparse_revision_ids_walk_as_dense_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = crate::state::generated_store(dir.path(), 40, 3, 1 << 20);
        let dense = store.load().unwrap();
        store
            .decide(
                &dense,
                None,
                "All Computers",
                crate::catalog::Decision::Approve(Action::Install),
                None,
            )
            .unwrap();
        let dense = store.load().unwrap();
        assert!(dense.dense_id_limit().is_some());
        const SPREAD: u32 = 100_003;
        let revisions: Vec<Revision> = dense
            .revisions()
            .iter()
            .map(|r| Revision {
                id: r.id * SPREAD,
                bundled: r.bundled.iter().map(|b| b * SPREAD).collect(),
                ..r.clone()
            })
            .collect();
        let deployments = dense
            .deployments
            .iter()
            .map(|d| Deployment {
                revision: d.revision * SPREAD,
                ..d.clone()
            })
            .collect();
        let sparse = Catalog::new(
            revisions,
            dense.groups.clone(),
            deployments,
            dense.config_last_change,
        );
        assert_eq!(sparse.dense_id_limit(), None);
        let a = walk(&dense, &[UNASSIGNED_COMPUTERS], 5);
        let b = walk(&sparse, &[UNASSIGNED_COMPUTERS], 5);
        assert!(a.len() > 10);
        let spread: Vec<(u32, Action, bool)> = a
            .iter()
            .map(|o| (o.revision * SPREAD, o.action, o.is_leaf))
            .collect();
        let got: Vec<(u32, Action, bool)> = b
            .iter()
            .map(|o| (o.revision, o.action, o.is_leaf))
            .collect();
        assert_eq!(got, spread);
        // Ids the catalog never had are out of scope, whichever set holds them.
        for catalog in [&dense, &sparse] {
            let s = scope(catalog, &[UNASSIGNED_COMPUTERS], i64::MAX);
            let unknown = (1..u32::MAX)
                .find(|id| catalog.revision(*id).is_none())
                .unwrap();
            let r = sync(
                catalog,
                &s,
                &SyncRequest {
                    other_cached: vec![unknown, u32::MAX, unknown],
                    page_size: 5,
                    ..SyncRequest::default()
                },
            );
            assert_eq!(r.out_of_scope, vec![unknown, u32::MAX]);
        }
    }

    /// A deployment is offered from its go-live time on (MS-WSUSSS GoLiveTime), and the
    /// epochs of go-live times tell apart the moments whose offers differ.
    #[test]
    fn deployments_count_from_their_go_live_time() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, generated) = crate::state::generated_store(dir.path(), 10, 5, 1 << 20);
        let latest = |store: &Store, i: usize| {
            *store
                .revisions_of(generated.deployable[i])
                .unwrap()
                .last()
                .unwrap()
        };
        let (a, b) = (latest(&store, 0), latest(&store, 1));
        // Approvals go live when they are made (`now` of approve): 1,000 and 2,000.
        store
            .approve(&[a], ALL_COMPUTERS, Action::Install, None, 1_000)
            .unwrap();
        store
            .approve(&[b], ALL_COMPUTERS, Action::Install, None, 2_000)
            .unwrap();
        let catalog = store.load().unwrap();
        // Before its go-live time an approved update is sent for evaluation alone.
        let offered = |now| {
            let s = scope(&catalog, &[UNASSIGNED_COMPUTERS], now);
            let action = |r| s.get(r).map(|o| o.action);
            let pending = Some(Action::PreDeploymentCheck);
            (action(a) != pending, action(b) != pending)
        };
        assert_eq!(offered(999), (false, false));
        assert_eq!(offered(1_000), (true, false));
        assert_eq!(offered(1_999), (true, false));
        assert_eq!(offered(2_000), (true, true));
        let epochs: Vec<usize> = [999, 1_000, 1_999, 2_000, 3_000]
            .map(|t| catalog.live_epoch(t))
            .to_vec();
        assert_eq!(epochs, vec![0, 1, 1, 2, 2]);
    }

    #[test]
    fn block_wins_nearest_group_wins_and_changes_show() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, generated) = crate::state::generated_store(dir.path(), 20, 9, 1 << 20);
        let ring = store.add_group("Ring", None).unwrap();
        let a = *store
            .revisions_of(generated.deployable[0])
            .unwrap()
            .last()
            .unwrap();
        let b = *store
            .revisions_of(generated.deployable[1])
            .unwrap()
            .last()
            .unwrap();
        store
            .approve(&[a, b], ALL_COMPUTERS, Action::Install, None, 10)
            .unwrap();
        store
            .approve(&[a], ring, Action::OptionalInstall, None, 20)
            .unwrap();
        store.approve(&[b], ring, Action::Block, None, 20).unwrap();
        let catalog = store.load().unwrap();
        let s = scope(&catalog, &[ring], i64::MAX);
        assert_eq!(
            s.get(a).unwrap().action,
            Action::OptionalInstall,
            "the ring's own deployment"
        );
        assert!(!s.contains(b), "blocked");
        let all = scope(&catalog, &[UNASSIGNED_COMPUTERS], i64::MAX);
        assert_eq!(all.get(b).unwrap().action, Action::Install);

        // A client that has everything cached hears of deployments changed since its anchor.
        let everything: Vec<u32> = all.offers().iter().map(|o| o.revision).collect();
        let req = |anchor| SyncRequest {
            installed_non_leaf: everything.clone(),
            anchor,
            page_size: 100,
            ..SyncRequest::default()
        };
        let later = sync(&catalog, &all, &req(5));
        assert!(later.new_updates.is_empty());
        assert!(later.changed_updates.iter().any(|o| o.revision == a));
        assert_eq!(later.new_anchor, 10);
        assert!(sync(&catalog, &all, &req(10)).changed_updates.is_empty());
        // Ids the client holds that are no longer in scope are named.
        let narrowed = sync(&catalog, &s, &req(10));
        assert!(narrowed.out_of_scope.contains(&b));
        assert!(narrowed.driver_sync_not_needed);
    }

    #[test]
    fn what_nobody_approved_or_declined_is_sent_for_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, generated) = crate::state::generated_store(dir.path(), 20, 3, 1 << 20);
        let latest = |store: &Store, i: usize| {
            *store
                .revisions_of(generated.deployable[i])
                .unwrap()
                .last()
                .unwrap()
        };
        let (approved, declined, taken_back) = (latest(&store, 0), 1, latest(&store, 2));
        store
            .approve(
                &[approved, taken_back],
                ALL_COMPUTERS,
                Action::Install,
                None,
                10,
            )
            .unwrap();
        let catalog = store.load().unwrap();
        store
            .decline(&catalog, &[generated.deployable[declined]], true)
            .unwrap();
        let catalog = store.load().unwrap();
        store
            .decide(
                &catalog,
                Some(&[generated.deployable[2]]),
                "All Computers",
                crate::catalog::Decision::NotApproved,
                None,
            )
            .unwrap();
        let catalog = store.load().unwrap();
        let all = scope(&catalog, &[UNASSIGNED_COMPUTERS], i64::MAX);

        // Every deployable update but the approved and the declined one, in its latest
        // revision, for evaluation; nothing else of theirs.
        let evaluated: std::collections::BTreeSet<Guid> = all
            .offers()
            .iter()
            .filter(|o| o.action == Action::PreDeploymentCheck)
            .map(|o| catalog.revision(o.revision).unwrap().update_id)
            .collect();
        let want: std::collections::BTreeSet<Guid> = generated
            .deployable
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 0 && *i != declined)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(evaluated, want);
        for o in all.offers() {
            let r = catalog.revision(o.revision).unwrap();
            if o.action == Action::PreDeploymentCheck {
                assert_eq!(catalog.latest(r.update_id).unwrap().id, r.id);
                assert!(!o.action.is_offered());
            }
        }
        assert_eq!(all.get(approved).unwrap().action, Action::Install);
        // The approval taken back makes its revision a change for a client that saw it: after
        // the approval's own time.
        let back = all.get(taken_back).unwrap();
        assert_eq!(back.action, Action::PreDeploymentCheck);
        assert!(back.last_change > 10, "{back:?}");
        // Their categories and detectoids come along, for the client to evaluate them.
        assert!(all.offers().iter().any(|o| o.action == Action::Evaluate));
    }
}
