//! What an administrator finds to approve: the catalog's updates filtered, sorted and cut into
//! pages (the admin API's `/api/v1/updates` and the `/updates` page). Sans-IO: the catalog, the
//! declined updates and how many computers have each update in each state in; a page of
//! listed updates out.
//!
//! Listed are the updates an administrator approves: the latest revision of each software or
//! driver update that is explicitly deployable. Categories, detectoids and the members of
//! bundles (delivered with their bundle, never approved alone) are not. An update's
//! classification and products are the categories its category prerequisite clauses name;
//! a product family matches the updates of its products when the catalog links them (a
//! category's own category clause names its parent). Superseded: another update's latest
//! revision lists it among its SupersededUpdates.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;

use super::{ALL_COMPUTERS, Action, Catalog, Deployment, Guid, Revision, UpdateType};

/// The categories of this type are classifications; the others (company, product family,
/// product) are what `product` filters by.
const CLASSIFICATION: &str = "UpdateClassification";

/// The longest chain of parent categories followed (a loop in a catalog ends there).
const MAX_CATEGORY_DEPTH: usize = 16;

/// The most updates one page may hold, and how many when not said.
pub const MAX_LIMIT: usize = 500;
pub const DEFAULT_LIMIT: usize = 50;

/// How many computers have an update in each state (MS-WSUSSS SummarizationState), this
/// node's and every computer rolled up from below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    pub needed: u64,
    pub downloaded: u64,
    pub installed: u64,
    pub installed_pending_reboot: u64,
    pub failed: u64,
    pub not_applicable: u64,
}

impl StateCounts {
    /// Computers that still need the update: needed, downloaded, or installed and waiting for
    /// a restart (WSUS's "needing"; failed installs are counted apart, as its "with errors").
    pub fn needing(&self) -> u64 {
        self.needed + self.downloaded + self.installed_pending_reboot
    }

    /// Computers that reported the update in any state.
    pub fn reported(&self) -> u64 {
        self.needing() + self.failed + self.installed + self.not_applicable
    }
}

/// An update's approval state for the filter's target group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Offered to the group's computers (install, optional install or uninstall), by a
    /// deployment for the group or one of its ancestors, and blocked by none.
    Approved,
    Unapproved,
    Any,
}

/// The order of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// By title in natural order ("Update 4" before "Update 10").
    Title,
    /// Most computers needing it first, then by title.
    Needed,
}

/// What a list holds: every condition must hold (an absent one holds for all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Classification categories, any of which the update's classification must be.
    pub classification: Option<HashSet<Guid>>,
    /// Categories (products, families), any of which must be among the update's products or
    /// above them.
    pub product: Option<HashSet<Guid>>,
    /// The target group `approval` is about (All Computers unless said).
    pub group: Guid,
    pub approval: Approval,
    pub superseded: Option<bool>,
    pub declined: Option<bool>,
    /// Needed by at least one computer (`true`), by none (`false`).
    pub needed: Option<bool>,
    /// Lower-case words, each of which the title or the KB number must contain ("kb" before
    /// digits is the KB number's own prefix).
    pub words: Vec<String>,
    pub sort: Sort,
    pub offset: usize,
    /// 1..=[`MAX_LIMIT`].
    pub limit: usize,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            classification: None,
            product: None,
            group: ALL_COMPUTERS,
            approval: Approval::Any,
            superseded: None,
            declined: None,
            needed: None,
            words: Vec::new(),
            sort: Sort::Title,
            offset: 0,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// A parameter that cannot be used, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParameter {
    pub name: &'static str,
    pub message: String,
}

impl fmt::Display for BadParameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for BadParameter {}

fn bad(name: &'static str, message: impl Into<String>) -> BadParameter {
    BadParameter {
        name,
        message: message.into(),
    }
}

/// `yes`/`no` (also `true`/`false`); empty or `any`: no condition.
fn yes_no(name: &'static str, value: &str) -> Result<Option<bool>, BadParameter> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "any" => Ok(None),
        "yes" | "true" => Ok(Some(true)),
        "no" | "false" => Ok(Some(false)),
        other => Err(bad(name, format!("{other:?}: yes, no or any"))),
    }
}

impl Filter {
    /// The filter that query parameters (decoded (name, value) pairs) ask for, names resolved
    /// against `catalog`. An empty value is as good as absent (what an untouched form field
    /// sends); parameters of other names are left to the caller.
    pub fn parse<'p>(
        params: impl IntoIterator<Item = (&'p str, &'p str)>,
        catalog: &Catalog,
    ) -> Result<Filter, BadParameter> {
        let mut filter = Filter::default();
        let mut group = None;
        let mut approval = None;
        for (name, value) in params {
            let value = value.trim();
            match name {
                "classification" if !value.is_empty() => {
                    filter.classification =
                        Some(categories(catalog, value, true).ok_or_else(|| {
                            let known: Vec<&str> = catalog
                                .revisions()
                                .iter()
                                .filter(|r| is_classification(r) && is_latest(catalog, r))
                                .map(Revision::title)
                                .collect();
                            bad(
                                "classification",
                                format!(
                                    "no update classification {value:?} (the catalog has: {})",
                                    known.join(", ")
                                ),
                            )
                        })?);
                }
                "product" if !value.is_empty() => {
                    filter.product = Some(categories(catalog, value, false).ok_or_else(|| {
                        bad(
                            "product",
                            format!("no product or product family {value:?} in the catalog"),
                        )
                    })?);
                }
                "group" if !value.is_empty() => {
                    let found = Guid::parse(value)
                        .and_then(|id| catalog.group(id))
                        .or_else(|| catalog.group_by_name(value))
                        .ok_or_else(|| bad("group", format!("no target group {value:?}")))?;
                    group = Some(found.id);
                }
                "approval" if !value.is_empty() => {
                    approval = Some(match value.to_ascii_lowercase().as_str() {
                        "approved" => Approval::Approved,
                        "unapproved" => Approval::Unapproved,
                        "any" => Approval::Any,
                        other => {
                            return Err(bad(
                                "approval",
                                format!("{other:?}: approved, unapproved or any"),
                            ));
                        }
                    });
                }
                "superseded" => filter.superseded = yes_no("superseded", value)?,
                "declined" => filter.declined = yes_no("declined", value)?,
                "needed" => filter.needed = yes_no("needed", value)?,
                "q" => {
                    filter.words = value.split_whitespace().map(str::to_lowercase).collect();
                }
                "sort" if !value.is_empty() => {
                    filter.sort = match value.to_ascii_lowercase().as_str() {
                        "title" => Sort::Title,
                        "needed" => Sort::Needed,
                        other => return Err(bad("sort", format!("{other:?}: title or needed"))),
                    };
                }
                "offset" if !value.is_empty() => {
                    filter.offset = value.parse().map_err(|_| {
                        bad("offset", format!("{value:?} is not a whole number from 0"))
                    })?;
                }
                "limit" if !value.is_empty() => {
                    filter.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad(
                                "limit",
                                format!("{value:?} is not a whole number from 1 to {MAX_LIMIT}"),
                            )
                        })?;
                }
                _ => {}
            }
        }
        filter.group = group.unwrap_or(ALL_COMPUTERS);
        filter.approval = approval.unwrap_or(Approval::Any);
        Ok(filter)
    }
}

/// The categories `value` names: by GUID, else by a title (any language, any case);
/// `classification` picks classifications, else the other categories. None when none is.
pub fn categories(catalog: &Catalog, value: &str, classification: bool) -> Option<HashSet<Guid>> {
    let wanted = |r: &Revision| {
        r.update_type == UpdateType::Category
            && is_classification(r) == classification
            && is_latest(catalog, r)
    };
    let found: HashSet<Guid> = match Guid::parse(value) {
        Some(id) => catalog
            .latest(id)
            .filter(|r| wanted(r))
            .map(|r| r.update_id)
            .into_iter()
            .collect(),
        None => {
            let lower = value.to_lowercase();
            catalog
                .revisions()
                .iter()
                .filter(|r| wanted(r))
                .filter(|r| r.titles.iter().any(|(_, t)| t.to_lowercase() == lower))
                .map(|r| r.update_id)
                .collect()
        }
    };
    (!found.is_empty()).then_some(found)
}

fn is_classification(r: &Revision) -> bool {
    r.update_type == UpdateType::Category && r.category_type.as_deref() == Some(CLASSIFICATION)
}

fn is_latest(catalog: &Catalog, r: &Revision) -> bool {
    catalog.latest(r.update_id).is_some_and(|l| l.id == r.id)
}

/// One listed update, with what the list tells of it.
#[derive(Debug, Clone)]
pub struct Listed<'c> {
    /// Its latest revision.
    pub revision: &'c Revision,
    /// The classification category it is in, if the catalog has it.
    pub classification: Option<&'c Revision>,
    /// The other categories its category clauses name (its products), as the catalog has
    /// them.
    pub products: Vec<&'c Revision>,
    /// The updates whose latest revision supersedes it, by id.
    pub superseded_by: Vec<Guid>,
    pub declined: bool,
    /// Every deployment of any of its revisions, by group name (declined updates have none:
    /// what is declined is never offered).
    pub approvals: Vec<&'c Deployment>,
    /// Its approval state for the filter's group: approved (`true`) or not.
    pub approved: bool,
    pub counts: StateCounts,
}

/// A page of the list.
#[derive(Debug, Clone)]
pub struct Page<'c> {
    /// Updates the filter holds, on every page.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub updates: Vec<Listed<'c>>,
}

/// What the list reads of the catalog as a whole, made once per list.
struct Index<'c> {
    catalog: &'c Catalog,
    superseded_by: HashMap<Guid, Vec<Guid>>,
    deployments: HashMap<Guid, Vec<&'c Deployment>>,
}

impl<'c> Index<'c> {
    fn new(catalog: &'c Catalog) -> Index<'c> {
        let mut superseded_by: HashMap<Guid, Vec<Guid>> = HashMap::new();
        for r in catalog.revisions() {
            if !r.superseded.is_empty() && is_latest(catalog, r) {
                for old in &r.superseded {
                    superseded_by.entry(*old).or_default().push(r.update_id);
                }
            }
        }
        for by in superseded_by.values_mut() {
            by.sort_unstable();
            by.dedup();
        }
        let mut deployments: HashMap<Guid, Vec<&Deployment>> = HashMap::new();
        for d in &catalog.deployments {
            if let Some(r) = catalog.revision(d.revision) {
                deployments.entry(r.update_id).or_default().push(d);
            }
        }
        let group_name = |d: &Deployment| catalog.group(d.group).map(|g| g.name.to_lowercase());
        for list in deployments.values_mut() {
            list.sort_by_key(|d| (group_name(d), d.revision, d.id));
        }
        Index {
            catalog,
            superseded_by,
            deployments,
        }
    }

    /// Category ids the update's category clauses name.
    fn category_ids(r: &'c Revision) -> impl Iterator<Item = &'c Guid> {
        r.prerequisites
            .iter()
            .filter(|c| c.is_category)
            .flat_map(|c| c.ids.iter())
    }

    fn classification(&self, r: &Revision) -> Option<&'c Revision> {
        Index::category_ids(r)
            .filter_map(|id| self.catalog.latest(*id))
            .find(|c| is_classification(c))
    }

    fn products(&self, r: &Revision) -> Vec<&'c Revision> {
        let mut products: Vec<&Revision> = Index::category_ids(r)
            .filter_map(|id| self.catalog.latest(*id))
            .filter(|c| c.update_type == UpdateType::Category && !is_classification(c))
            .collect();
        products.sort_by(|a, b| natural_cmp(a.title(), b.title()));
        products.dedup_by_key(|c| c.update_id);
        products
    }

    /// Whether one of `wanted` is among the update's categories or above one of them.
    fn in_categories(&self, r: &Revision, wanted: &HashSet<Guid>) -> bool {
        in_categories(self.catalog, r, wanted)
    }

    /// Approved for `group`: an offered deployment for it or an ancestor, no Block for them.
    fn approved(&self, update: Guid, chain: &HashSet<Guid>) -> bool {
        let Some(list) = self.deployments.get(&update) else {
            return false;
        };
        let ours = list.iter().filter(|d| chain.contains(&d.group));
        let mut offered = false;
        for d in ours {
            if d.action == Action::Block {
                return false;
            }
            offered |= d.action.is_offered();
        }
        offered
    }

    fn listed(
        &self,
        r: &'c Revision,
        declined: bool,
        approved: bool,
        counts: StateCounts,
    ) -> Listed<'c> {
        Listed {
            revision: r,
            classification: self.classification(r),
            products: self.products(r),
            superseded_by: self
                .superseded_by
                .get(&r.update_id)
                .cloned()
                .unwrap_or_default(),
            declined,
            approvals: self
                .deployments
                .get(&r.update_id)
                .cloned()
                .unwrap_or_default(),
            approved,
            counts,
        }
    }
}

/// Whether one of `wanted` is among `r`'s categories (its category clauses) or above one of
/// them (a product's family, a family's company).
pub fn in_categories(catalog: &Catalog, r: &Revision, wanted: &HashSet<Guid>) -> bool {
    let mut seen: HashSet<Guid> = HashSet::new();
    let mut at: Vec<(Guid, usize)> = Index::category_ids(r).map(|id| (*id, 0)).collect();
    while let Some((id, depth)) = at.pop() {
        if wanted.contains(&id) {
            return true;
        }
        if depth >= MAX_CATEGORY_DEPTH || !seen.insert(id) {
            continue;
        }
        if let Some(category) = catalog.latest(id) {
            at.extend(Index::category_ids(category).map(|p| (*p, depth + 1)));
        }
    }
    false
}

/// Whether an administrator approves this revision's update: software or driver, explicitly
/// deployable, and the latest revision of it.
pub fn is_listed(catalog: &Catalog, r: &Revision) -> bool {
    matches!(r.update_type, UpdateType::Software | UpdateType::Driver)
        && r.explicitly_deployable
        && is_latest(catalog, r)
}

/// `group` and its ancestors (All Computers is everyone's).
fn group_chain(catalog: &Catalog, group: Guid) -> HashSet<Guid> {
    let mut chain = HashSet::new();
    let mut at = Some(group);
    while let Some(id) = at {
        if !chain.insert(id) {
            break;
        }
        at = catalog.group(id).and_then(|g| g.parent);
    }
    chain.insert(ALL_COMPUTERS);
    chain
}

/// Whether every word is in the title or the KB number.
fn matches_words(r: &Revision, words: &[String]) -> bool {
    if words.is_empty() {
        return true;
    }
    let title = r.title().to_lowercase();
    words.iter().all(|w| {
        let digits = w.strip_prefix("kb").unwrap_or(w);
        title.contains(w.as_str())
            || (!digits.is_empty()
                && r.kb
                    .as_deref()
                    .is_some_and(|kb| kb.to_lowercase().contains(digits)))
    })
}

/// The page of updates `filter` asks for. `counts`: the computers per state of each update
/// reported (an update absent has none).
pub fn list<'c>(
    catalog: &'c Catalog,
    counts: &HashMap<Guid, StateCounts>,
    filter: &Filter,
) -> Page<'c> {
    let index = Index::new(catalog);
    let chain = group_chain(catalog, filter.group);
    let mut found: Vec<(&Revision, bool, StateCounts)> = catalog
        .revisions()
        .iter()
        .filter(|r| is_listed(catalog, r))
        .filter(|r| {
            let wanted = |want: Option<bool>, is: bool| want.is_none_or(|w| w == is);
            wanted(filter.declined, catalog.is_declined(r.update_id))
                && wanted(
                    filter.superseded,
                    index.superseded_by.contains_key(&r.update_id),
                )
                && filter.classification.as_ref().is_none_or(|c| {
                    index
                        .classification(r)
                        .is_some_and(|k| c.contains(&k.update_id))
                })
                && filter
                    .product
                    .as_ref()
                    .is_none_or(|p| index.in_categories(r, p))
                && matches_words(r, &filter.words)
        })
        .map(|r| {
            let approved = index.approved(r.update_id, &chain);
            let n = counts.get(&r.update_id).copied().unwrap_or_default();
            (r, approved, n)
        })
        .filter(|(_, approved, n)| {
            let approval = match filter.approval {
                Approval::Any => true,
                Approval::Approved => *approved,
                Approval::Unapproved => !*approved,
            };
            approval && filter.needed.is_none_or(|w| w == (n.needing() > 0))
        })
        .collect();
    // Each title folded once: the sort compares keys, not titles.
    let title_key = |r: &Revision| (NaturalKey::of(r.title()), r.title().to_owned(), r.update_id);
    match filter.sort {
        Sort::Title => found.sort_by_cached_key(|(r, _, _)| title_key(r)),
        Sort::Needed => {
            found.sort_by_cached_key(|(r, _, n)| (std::cmp::Reverse(n.needing()), title_key(r)));
        }
    }
    let total = found.len();
    let updates = found
        .into_iter()
        .skip(filter.offset)
        .take(filter.limit)
        .map(|(r, approved, n)| index.listed(r, catalog.is_declined(r.update_id), approved, n))
        .collect();
    Page {
        total,
        offset: filter.offset,
        limit: filter.limit,
        updates,
    }
}

/// One update as the list shows it (any update of the catalog, listed or not), its approval
/// state for All Computers; None when the catalog lacks it.
pub fn describe<'c>(catalog: &'c Catalog, counts: StateCounts, update: Guid) -> Option<Listed<'c>> {
    let r = catalog.latest(update)?;
    let index = Index::new(catalog);
    let approved = index.approved(update, &group_chain(catalog, ALL_COMPUTERS));
    Some(index.listed(r, catalog.is_declined(update), approved, counts))
}

/// Natural order: runs of digits compare by their value ("Update 4" before "Update 10"),
/// the rest by character, case aside.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    folded_cmp(a.to_lowercase().as_bytes(), b.to_lowercase().as_bytes())
}

/// A title as the list sorts it: [`natural_cmp`]'s order, its case folded once rather than at
/// every comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NaturalKey(String);

impl NaturalKey {
    fn of(title: &str) -> NaturalKey {
        NaturalKey(title.to_lowercase())
    }
}

impl Ord for NaturalKey {
    fn cmp(&self, other: &NaturalKey) -> Ordering {
        folded_cmp(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl PartialOrd for NaturalKey {
    fn partial_cmp(&self, other: &NaturalKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The digits `s[from..end]` without leading zeros.
fn number(s: &[u8], from: usize, end: usize) -> &[u8] {
    let run = s.get(from..end).unwrap_or_default();
    let zeros = run.iter().take_while(|c| **c == b'0').count();
    run.get(zeros..).unwrap_or_default()
}

/// Natural order of two case-folded UTF-8 strings, byte by byte: UTF-8's byte order is its
/// characters' order, and an ASCII digit is never part of a longer character.
fn folded_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let digits = |s: &[u8], from: usize| {
        from + s.get(from..).map_or(0, |rest| {
            rest.iter().take_while(|c| c.is_ascii_digit()).count()
        })
    };
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        if x.is_ascii_digit() && y.is_ascii_digit() {
            let (end_a, end_b) = (digits(a, i), digits(b, j));
            let (value_a, value_b) = (number(a, i, end_a), number(b, j, end_b));
            // Without leading zeros, the longer run is the larger number.
            let by_value = value_a
                .len()
                .cmp(&value_b.len())
                .then_with(|| value_a.cmp(value_b));
            if by_value != Ordering::Equal {
                return by_value;
            }
            (i, j) = (end_a, end_b);
            continue;
        }
        if x != y {
            return x.cmp(&y);
        }
        (i, j) = (i + 1, j + 1);
    }
    // The one that ended first is the smaller.
    (i < a.len()).cmp(&(j < b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;

    /// The generator's update `i`, by the number in its English title.
    fn index_of(r: &Revision) -> usize {
        r.title()
            .strip_prefix("Contoso Update ")
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap()
    }

    /// A generated catalog of `n` updates in a store (kept in `dir`), and its deployable ids.
    fn catalog(dir: &std::path::Path, n: usize) -> (Store, Catalog, Vec<Guid>) {
        let payloads = dir.join("payloads");
        std::fs::create_dir_all(&payloads).unwrap();
        let generated = crate::testkit::generate::generate(n, 9, 1 << 20, &payloads).unwrap();
        let mut store = Store::open(&crate::state::Database::sqlite(dir)).unwrap();
        store.import(&generated.documents).unwrap();
        let catalog = store.load().unwrap();
        (store, catalog, generated.deployable)
    }

    fn parse(catalog: &Catalog, query: &[(&str, &str)]) -> Result<Filter, BadParameter> {
        Filter::parse(query.iter().copied(), catalog)
    }

    /// The generator's numbers of the updates a filter lists (every page).
    fn listed(
        catalog: &Catalog,
        counts: &HashMap<Guid, StateCounts>,
        query: &[(&str, &str)],
    ) -> Vec<usize> {
        let mut filter = parse(catalog, query).unwrap();
        filter.limit = MAX_LIMIT;
        let page = list(catalog, counts, &filter);
        assert_eq!(page.total, page.updates.len());
        page.updates.iter().map(|l| index_of(l.revision)).collect()
    }

    #[test]
    fn natural_order_compares_numbers_by_value() {
        assert_eq!(natural_cmp("Update 4", "Update 10"), Ordering::Less);
        assert_eq!(natural_cmp("Update 10", "Update 9"), Ordering::Greater);
        assert_eq!(natural_cmp("update 2", "Update 10"), Ordering::Less);
        assert_eq!(natural_cmp("x", "x1"), Ordering::Less);
        assert_eq!(natural_cmp("x007", "x7"), Ordering::Equal);
        assert_eq!(natural_cmp("KB99 b", "KB100 a"), Ordering::Less);
        assert_eq!(natural_cmp("é2", "é10"), Ordering::Less);
        assert_eq!(natural_cmp("", ""), Ordering::Equal);
    }

    #[test]
    fn lists_what_is_approved_filtered_and_paged() {
        let dir = tempfile::tempdir().unwrap();
        let n = 60;
        let (mut store, catalog, deployable) = catalog(dir.path(), n);
        let id_of = |i: usize| {
            catalog
                .revisions()
                .iter()
                .find(|r| r.update_type == UpdateType::Software && index_of(r) == i)
                .unwrap()
                .update_id
        };
        let number: HashMap<Guid, usize> = deployable
            .iter()
            .map(|id| (*id, index_of(catalog.latest(*id).unwrap())))
            .collect();
        let mut all: Vec<usize> = number.values().copied().collect();
        all.sort_unstable();
        let no_counts = HashMap::new();

        // Every deployable update once, by its latest revision, in natural title order
        // (Update 4 before Update 10); no category, detectoid or bundle member.
        assert_eq!(listed(&catalog, &no_counts, &[]), all);
        let page = list(&catalog, &no_counts, &Filter::default());
        assert_eq!(
            (page.total, page.updates.len()),
            (all.len(), all.len().min(DEFAULT_LIMIT))
        );
        let ten = page
            .updates
            .iter()
            .find(|l| index_of(l.revision) == 10)
            .unwrap();
        assert_eq!(ten.revision.revision_number, 101, "the latest revision");
        assert_eq!(ten.revision.kb.as_deref(), Some("5000010"));
        assert_eq!(
            ten.classification.map(Revision::title),
            Some("Definition Updates")
        );
        assert_eq!(
            ten.products.iter().map(|p| p.title()).collect::<Vec<_>>(),
            ["Contoso Product 0"]
        );

        // Classification by title (any case) or GUID: update i is classified (i / 3) % 5.
        let security: Vec<usize> = all.iter().copied().filter(|i| (i / 3) % 5 == 0).collect();
        assert_eq!(
            listed(
                &catalog,
                &no_counts,
                &[("classification", "security UPDATES")]
            ),
            security
        );
        let guid = catalog
            .revisions()
            .iter()
            .find(|r| r.title() == "Security Updates")
            .unwrap()
            .update_id
            .to_string();
        assert_eq!(
            listed(&catalog, &no_counts, &[("classification", &guid)]),
            security
        );
        // Product i % 2; product 1 is in the family "Contoso Office", product 0 in "Contoso
        // Windows": a family lists its products' updates.
        let odd: Vec<usize> = all.iter().copied().filter(|i| i % 2 == 1).collect();
        let even: Vec<usize> = all.iter().copied().filter(|i| i % 2 == 0).collect();
        assert_eq!(
            listed(&catalog, &no_counts, &[("product", "Contoso Product 1")]),
            odd
        );
        assert_eq!(
            listed(&catalog, &no_counts, &[("product", "contoso office")]),
            odd
        );
        assert_eq!(
            listed(&catalog, &no_counts, &[("product", "Contoso Windows")]),
            even
        );
        let both: Vec<usize> = odd.iter().copied().filter(|i| (i / 3) % 5 == 0).collect();
        assert_eq!(
            listed(
                &catalog,
                &no_counts,
                &[
                    ("product", "Contoso Product 1"),
                    ("classification", "Security Updates")
                ]
            ),
            both
        );

        // Text: the KB number with or without "KB", or words of the title.
        for q in ["KB5000010", "kb5000010", "5000010", "update 10 (kb"] {
            assert_eq!(listed(&catalog, &no_counts, &[("q", q)]), [10], "{q}");
        }
        assert!(listed(&catalog, &no_counts, &[("q", "KB4999999")]).is_empty());

        // Superseded: update i (i % 11 == 6) supersedes update i - 6.
        let superseded: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| (i + 6) % 11 == 6 && i + 6 < n)
            .collect();
        assert_eq!(
            listed(&catalog, &no_counts, &[("superseded", "yes")]),
            superseded
        );
        let rest: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| !superseded.contains(i))
            .collect();
        assert_eq!(listed(&catalog, &no_counts, &[("superseded", "no")]), rest);
        let zero = describe(&catalog, StateCounts::default(), id_of(0)).unwrap();
        assert_eq!(zero.superseded_by, [id_of(6)]);

        // Pages: disjoint, together the whole list, the same total on each.
        let mut seen = Vec::new();
        for offset in (0..all.len() + 7).step_by(7) {
            let filter =
                parse(&catalog, &[("limit", "7"), ("offset", &offset.to_string())]).unwrap();
            let page = list(&catalog, &no_counts, &filter);
            assert_eq!(
                (page.total, page.offset, page.limit),
                (all.len(), offset, 7)
            );
            assert!(page.updates.len() <= 7);
            seen.extend(page.updates.iter().map(|l| index_of(l.revision)));
        }
        assert_eq!(seen, all);

        // Declined.
        store.decline(&catalog, &[id_of(0)], true).unwrap();
        let declined = store.load().unwrap();
        assert_eq!(listed(&declined, &no_counts, &[("declined", "yes")]), [0]);
        assert!(!listed(&declined, &no_counts, &[("declined", "no")]).contains(&0));
        assert_eq!(listed(&declined, &no_counts, &[]), all, "shown by default");
        store.decline(&catalog, &[id_of(0)], false).unwrap();

        // Needed by a computer somewhere, and the most needed first.
        let counts = HashMap::from([
            (
                id_of(5),
                StateCounts {
                    needed: 2,
                    downloaded: 1,
                    ..StateCounts::default()
                },
            ),
            (
                id_of(1),
                StateCounts {
                    installed_pending_reboot: 1,
                    ..StateCounts::default()
                },
            ),
            (
                id_of(0),
                StateCounts {
                    installed: 4,
                    failed: 1,
                    ..StateCounts::default()
                },
            ),
        ]);
        assert_eq!(listed(&catalog, &counts, &[("needed", "yes")]), [1, 5]);
        assert!(!listed(&catalog, &counts, &[("needed", "no")]).contains(&5));
        let by_need = listed(&catalog, &counts, &[("sort", "needed")]);
        assert_eq!(by_need[..3], [5, 1, 0]);
        assert_eq!(by_need.len(), all.len());

        // Approvals, for a group and what it inherits; Block takes one back.
        let ring = store.add_group("Ring 1", None).unwrap();
        let latest = |i: usize| catalog.latest(id_of(i)).unwrap().id;
        store
            .approve(
                &[latest(0)],
                crate::catalog::ALL_COMPUTERS,
                Action::Install,
                None,
                1,
            )
            .unwrap();
        store
            .approve(&[latest(1)], ring, Action::Install, Some(86_400), 1)
            .unwrap();
        let catalog = store.load().unwrap();
        let approved = |query: &[(&str, &str)]| listed(&catalog, &no_counts, query);
        assert_eq!(approved(&[("approval", "approved")]), [0]);
        assert_eq!(
            approved(&[("approval", "approved"), ("group", "ring 1")]),
            [0, 1]
        );
        assert_eq!(approved(&[("approval", "unapproved")]).len(), all.len() - 1);
        store
            .approve(&[latest(0)], ring, Action::Block, None, 2)
            .unwrap();
        let catalog = store.load().unwrap();
        let approved = |query: &[(&str, &str)]| listed(&catalog, &no_counts, query);
        assert_eq!(
            approved(&[("approval", "approved"), ("group", "Ring 1")]),
            [1]
        );
        let one = describe(&catalog, StateCounts::default(), id_of(1)).unwrap();
        assert_eq!(one.approvals.len(), 1);
        assert_eq!(one.approvals[0].deadline, Some(86_400));
        assert!(!one.approved, "approved for Ring 1, not for All Computers");
    }

    #[test]
    fn bad_parameters_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (_, catalog, _) = catalog(dir.path(), 10);
        for (name, value) in [
            ("classification", "Nonsense Updates"),
            ("product", "Security Updates"),
            ("group", "nobody"),
            ("approval", "maybe"),
            ("superseded", "perhaps"),
            ("declined", "2"),
            ("needed", "lots"),
            ("sort", "size"),
            ("offset", "-1"),
            ("limit", "0"),
            ("limit", "501"),
            ("limit", "many"),
        ] {
            let e = parse(&catalog, &[(name, value)]).unwrap_err();
            assert_eq!(e.name, name, "{value}");
            assert!(e.to_string().starts_with(&format!("{name}: ")), "{e}");
        }
        let e = parse(&catalog, &[("classification", "x")]).unwrap_err();
        assert!(
            e.message.contains("Security Updates"),
            "lists the known ones: {e}"
        );
        // Empty values (an untouched form) and other names ask for nothing.
        let f = parse(
            &catalog,
            &[
                ("classification", ""),
                ("limit", ""),
                ("sort", ""),
                ("page", "2"),
            ],
        )
        .unwrap();
        assert_eq!(f, Filter::default());
        assert_eq!(parse(&catalog, &[("limit", "500")]).unwrap().limit, 500);
    }
}
