//! Approvals as they travel between servers (MS-WSUSSS GetDeployments): what an upstream
//! sends from its store and what a downstream server applies to its own, in the form both
//! sides share, plus the anchors a downstream keeps of its upstream. Sans-IO.
//!
//! A deployment is known across servers by its `DeploymentGuid`; a revoked one travels as a
//! dead GUID. A replica keeps the GUIDs, group ids, approver names and times it received, so
//! that its own downstream servers see the same approvals as the root made them.

use super::{Action, Group, Guid};

/// One approval as the server-server protocol carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDeployment {
    pub guid: Guid,
    pub update_id: Guid,
    pub revision_number: u32,
    /// Install, OptionalInstall, Uninstall, PreDeploymentCheck or Block.
    pub action: Action,
    /// Who approved (WSUS: `WUS Server` for automatic approvals).
    pub admin_name: String,
    /// Install by (seconds since the epoch).
    pub deadline: Option<i64>,
    /// Not to be offered before (seconds since the epoch).
    pub go_live: i64,
    pub group: Guid,
    /// 1 (lowest) ..= 3 (highest).
    pub download_priority: u8,
}

/// What GetDeployments answers: groups, hidden updates and accepted EULAs are always whole
/// lists; deployments and dead deployments are the changes within an anchor window, or every
/// live deployment when the downstream has no deployment anchor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentSet {
    pub groups: Vec<Group>,
    pub deployments: Vec<ServerDeployment>,
    pub dead: Vec<Guid>,
    /// Update ids declined upstream: never offered.
    pub hidden: Vec<Guid>,
    pub accepted_eulas: Vec<Guid>,
}

/// What a downstream server keeps of its upstream between syncs: the anchors exactly as the
/// upstream made them (never parsed here), one per kind of answer. The configuration and the
/// update passes of the revision list have anchors of their own: one shared anchor would make
/// the second pass miss every update changed between the previous sync and the first pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchors {
    /// GetConfigData's NewConfigAnchor.
    pub config: Option<String>,
    /// GetRevisionIdList with GetConfig (categories, classifications, detectoids).
    pub config_sync: Option<String>,
    /// GetRevisionIdList for software and drivers; also GetDeployments' syncAnchor.
    pub update_sync: Option<String>,
    /// GetDeployments' Anchor.
    pub deployment: Option<String>,
    /// GetDriverIdList's Anchor (drivers synced on demand).
    pub drivers: Option<String>,
    /// Which drivers the anchors were taken with ("all", "on-demand"): another mode lists
    /// everything again.
    pub driver_mode: Option<String>,
    /// `upstream.mode` the deployment anchor was taken in: in another, approvals are asked for
    /// whole. None: before modes were kept (a replica).
    pub replication: Option<String>,
}

/// What applying one sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Revisions imported as new, and imported again with a changed document.
    pub new_revisions: usize,
    pub changed_revisions: usize,
    /// Deployments added or changed, and removed (dead, replaced, of a removed group).
    pub deployments: usize,
    pub removed_deployments: usize,
    /// Deployments naming a revision this server does not hold: left out.
    pub skipped_deployments: usize,
    pub hidden: usize,
}

/// A change an administrator makes to a node's own catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalChange {
    /// Target groups, approvals (and the EULAs approving accepts).
    Approvals,
    /// Declining an update, or taking a decline back.
    Declines,
}

/// Why a downstream node refuses `change`: what it takes from `upstream` is not changed here
/// (a replica takes everything, an autonomous node its declines when so configured). None: the
/// change is this node's to make.
pub fn local_refusal(
    upstream: &crate::config::Upstream,
    change: LocalChange,
) -> Option<super::CatalogError> {
    let url = &upstream.url;
    let replication = upstream.replication;
    if replication.is_replica() {
        return Some(super::CatalogError::Invalid(format!(
            "this node is a replica of {url}: its target groups, approvals and declines come \
             from there (upstream.mode = \"autonomous\" manages them here)"
        )));
    }
    (change == LocalChange::Declines && replication.upstream_declines()).then(|| {
        super::CatalogError::Invalid(format!(
            "this node's declines come from its upstream {url} (upstream.declines = \"upstream\"; \
             \"local\" makes them here)"
        ))
    })
}
