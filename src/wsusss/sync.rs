//! The server-server protocol, downstream side: a replica's sync from its upstream
//! (MS-WSUSSS §3.2.4), and the prefetch of approved content that follows it.
//!
//! One sync: authorization (GetAuthConfig, GetAuthorizationCookie, GetCookie), GetConfigData,
//! the revision list twice (categories, classifications and detectoids first, then software
//! and drivers, each pass from its own anchor), GetUpdateData in batches of the upstream's
//! maximum for the identities not held yet, GetUpdateDecryptionData for the encrypted files
//! whose keys are not held, GetDeployments; then everything is applied to state.db in one
//! transaction (the keys are kept before it). Fetched documents are staged in state.db as they arrive, so a
//! sync cut off keeps serving the previous catalog and the next one fetches only the rest.
//!
//! Faults are met as the spec says: InvalidCookie or InvalidAuthorizationCookie → authorize
//! again and repeat the call (twice at most per sync); ServerChanged → forget the anchors and
//! start over with full lists; anything else ends the sync with an error naming the
//! operation, and the scheduler tries again after a back-off (ServerBusy included).
//!
//! Owns: the requests a downstream sends and the reading of the answers. Calls `upstream`
//! (the link), `soap`, `catalog` (staging and applying), `content` (prefetch).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::{DSS_AUTH_NS, NO_DEADLINE, PROTOCOL_VERSION, SERVER_SYNC_NS, action_from_code};
use crate::catalog::keys::{FileKey, KeysWanted, decode_key};
use crate::catalog::replica::{Anchors, Applied, DeploymentSet, ServerDeployment};
use crate::catalog::{ALL_COMPUTERS, Action, Catalog, CatalogError, Group, Guid};
use crate::clock::unix_now;
use crate::config::{DriverSync, Replication};
use crate::content::{ContentPath, Digest};
use crate::error::{Error, Kind, Result};
use crate::soap::wsus::ErrorCode;
use crate::soap::xsd::{parse_bool, parse_datetime};
use crate::soap::{self, Element, Limits};
use crate::soap_client::{self, Answer, Failure};
use crate::state::Database;
use crate::state::{Journal, Store};
use crate::upstream::Upstream;

const SYNC_PATH: &str = "/ServerSyncWebService/ServerSyncWebService.asmx";
/// Where the DssAuth service is when GetAuthConfig does not say.
const DEFAULT_AUTH_PATH: &str = "DssAuthWebService/DssAuthWebService.asmx";
/// GetUpdateData calls in flight at once.
const PARALLEL_BATCHES: usize = 4;
/// A session cookie with less than this left (seconds) is renewed before the next call.
const COOKIE_MARGIN: i64 = 300;
/// Authorizations one sync may start over after InvalidCookie before it gives up.
const MAX_REAUTHORIZATIONS: u32 = 2;
/// The most one answer may be: the revision list is not paged, and a full Microsoft catalog
/// lists hundreds of thousands of revisions.
const ANSWER_LIMITS: Limits = Limits {
    max_bytes: 256 << 20,
    max_depth: 64,
    max_elements: 4_000_000,
    packed: &[],
};
/// Years at or beyond this are the protocol's "no deadline" (9999-12-31).
const NO_DEADLINE_AFTER: i64 = 253_370_764_800; // 9999-01-01T00:00:00Z

/// What one sync did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncReport {
    /// Identities the two passes of the revision list named.
    pub config_listed: usize,
    pub updates_listed: usize,
    /// Documents fetched with GetUpdateData (held or staged ones are not fetched again).
    pub fetched: usize,
    /// SOAP calls made (faulted ones too), and the bytes of their answers as they crossed
    /// the link (compressed when the upstream compresses).
    pub calls: usize,
    pub answer_bytes: u64,
    /// Drivers synced on demand: the device ids asked for with GetDriverIdList, and the
    /// driver revisions it listed.
    pub device_ids_asked: usize,
    pub drivers_listed: usize,
    /// Revisions whose file keys were asked for with GetUpdateDecryptionData, and the keys
    /// the upstream gave that this node did not hold.
    pub keys_asked: usize,
    pub keys_received: usize,
    /// Deployments and dead deployments GetDeployments gave.
    pub deployments_received: usize,
    pub dead_received: usize,
    /// The upstream said ServerChanged: anchors were reset and everything listed again.
    pub server_changed: bool,
    #[serde(flatten)]
    pub applied: Applied,
    pub elapsed_ms: u64,
}

/// A downstream server's sync from its upstream.
pub struct Syncer {
    upstream: Arc<Upstream>,
    database: Database,
    drivers: DriverSync,
    /// Whether groups, approvals and declines are asked for (GetDeployments) and kept.
    replication: Replication,
    /// accountName: this node's name, cut to the characters the protocol allows.
    account: String,
    /// Told (documents fetched, documents to fetch) after each batch of GetUpdateData.
    progress: Option<DocumentProgress>,
}

/// See [`Syncer::with_progress`].
pub type DocumentProgress = Arc<dyn Fn(usize, usize) + Send + Sync>;

impl Syncer {
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.upstream.metrics()
    }

    /// Sync the drivers `drivers` says (default: all the upstream lists).
    pub fn with_drivers(mut self, drivers: DriverSync) -> Syncer {
        self.drivers = drivers;
        self
    }

    /// Take groups, approvals and declines from the upstream as `replication` says (default:
    /// a replica, everything).
    pub fn with_replication(mut self, replication: Replication) -> Syncer {
        self.replication = replication;
        self
    }

    /// Tell `progress` (documents fetched so far, documents to fetch) as a sync goes.
    pub fn with_progress(mut self, progress: DocumentProgress) -> Syncer {
        self.progress = Some(progress);
        self
    }

    pub fn new(upstream: Arc<Upstream>, database: Database, node_name: &str) -> Syncer {
        let account: String = node_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .take(255)
            .collect();
        Syncer {
            progress: None,
            upstream,
            database,
            drivers: DriverSync::All,
            replication: Replication::Replica,
            account: if account.is_empty() {
                "wsus-edge".into()
            } else {
                account
            },
        }
    }

    /// Run one sync to its end. On error nothing is applied (what was fetched stays staged).
    pub async fn run(&self) -> Result<SyncReport> {
        let started = Instant::now();
        let (anchors, server_id) = self
            .blocking(|s| Ok((s.sync_anchors()?, s.server_id()?)))
            .await?;
        let mut report = SyncReport::default();
        let mut session = Session {
            syncer: self,
            server_id,
            authorization: None,
            cookie: None,
            reauthorizations: 0,
            report: &mut report,
        };
        match session.sync(&anchors).await {
            Err(Failure::Fault(ErrorCode::ServerChanged, _)) => {
                tracing::warn!(upstream = %self.upstream.url(),
                    "upstream says ServerChanged: anchors reset, syncing everything again");
                session.report.server_changed = true;
                session
                    .sync(&Anchors::default())
                    .await
                    .map_err(Failure::into_error)?;
            }
            other => other.map_err(Failure::into_error)?,
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> std::result::Result<T, CatalogError> + Send + 'static,
    ) -> Result<T> {
        let database = self.database.clone();
        off_the_workers(move || f(&mut Store::open(&database)?)).await
    }

    /// [`Syncer::blocking`] with the journal (what clients reported).
    async fn journal<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Journal) -> std::result::Result<T, CatalogError> + Send + 'static,
    ) -> Result<T> {
        let database = self.database.clone();
        off_the_workers(move || f(&mut Journal::open(&database)?)).await
    }
}

/// Run `f` on the blocking pool.
async fn off_the_workers<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, CatalogError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(Kind::Io, format!("sync task: {e}")))?
        .map_err(Error::from)
}

/// POST one SOAP 1.1 call to the upstream and read its answer (under [`ANSWER_LIMITS`]): the
/// operation's response element, or the fault.
pub(super) async fn post(
    upstream: &Upstream,
    path: &str,
    ns: &str,
    operation: &str,
    inner: &str,
) -> std::result::Result<Answer, Failure> {
    soap_client::call(upstream, path, ns, operation, inner, &ANSWER_LIMITS).await
}

/// An answer to `operation` from an upstream, as it came: the operation's response element,
/// or the fault. Sans-IO.
pub fn read_answer(
    operation: &str,
    status: StatusCode,
    coding: crate::http::coding::Coding,
    answer: Vec<u8>,
) -> std::result::Result<Element, Failure> {
    soap_client::read_answer(operation, status, coding, answer, &ANSWER_LIMITS)
}

type Step<T> = std::result::Result<T, Failure>;

/// A revision list's new anchor and the (UpdateID, RevisionNumber) it names.
type Listed = (Option<String>, Vec<(Guid, u32)>);

/// The session cookie: its clear-text expiry and the sealed part, as the upstream sent them.
struct Cookie {
    expiration: String,
    expires: i64,
    data: String,
}

impl Cookie {
    fn xml(&self, name: &str) -> String {
        let mut out = format!("<{name}>");
        soap::text_element(&mut out, "Expiration", &self.expiration);
        soap::text_element(&mut out, "EncryptedData", &self.data);
        let _ = write!(out, "</{name}>");
        out
    }
}

struct Session<'a> {
    syncer: &'a Syncer,
    server_id: Guid,
    /// The authorization cookie's CookieData.
    authorization: Option<String>,
    cookie: Option<Cookie>,
    reauthorizations: u32,
    report: &'a mut SyncReport,
}

impl Session<'_> {
    async fn post(&mut self, path: &str, ns: &str, operation: &str, inner: &str) -> Step<Element> {
        self.report.calls += 1;
        let answer = post(&self.syncer.upstream, path, ns, operation, inner).await?;
        self.report.answer_bytes += answer.received;
        Ok(answer.op)
    }

    /// After the upstream refused a cookie: forget it and the authorization, to start again
    /// from GetAuthConfig; false when this sync has done so often enough.
    fn start_over(&mut self, fault: &str) -> bool {
        if self.reauthorizations >= MAX_REAUTHORIZATIONS {
            return false;
        }
        tracing::info!(fault, "cookie refused; authorizing at the upstream again");
        self.reauthorizations += 1;
        self.authorization = None;
        self.cookie = None;
        true
    }

    /// A cookie good for a few more minutes: authorize first, or renew with GetCookie.
    async fn cookie(&mut self) -> Step<String> {
        let now = unix_now();
        if let Some(c) = &self.cookie
            && c.expires - now > COOKIE_MARGIN
        {
            return Ok(c.xml("cookie"));
        }
        if self.authorization.is_none() {
            let config = self
                .post(SYNC_PATH, SERVER_SYNC_NS, "GetAuthConfig", "")
                .await?;
            let service = read_auth_config(&config)?;
            let mut inner = String::new();
            soap::text_element(&mut inner, "accountName", &self.syncer.account);
            soap::text_element(&mut inner, "accountGuid", &self.server_id.to_string());
            let path = format!("/{}", service.trim_start_matches('/'));
            let auth = self
                .post(&path, DSS_AUTH_NS, "GetAuthorizationCookie", &inner)
                .await?;
            self.authorization = Some(read_authorization_cookie(&auth)?);
        }
        let mut inner = String::from("<authCookies><AuthorizationCookie>");
        soap::text_element(&mut inner, "PlugInId", "DssTargeting");
        soap::text_element(
            &mut inner,
            "CookieData",
            self.authorization.as_deref().unwrap_or(""),
        );
        inner.push_str("</AuthorizationCookie></authCookies>");
        if let Some(old) = &self.cookie {
            inner.push_str(&old.xml("oldCookie"));
        }
        soap::text_element(&mut inner, "protocolVersion", PROTOCOL_VERSION);
        let answer = match self
            .post(SYNC_PATH, SERVER_SYNC_NS, "GetCookie", &inner)
            .await
        {
            // The authorization expired: start from GetAuthConfig (once more at most).
            Err(Failure::Fault(ErrorCode::InvalidAuthorizationCookie, m))
                if self.start_over(&m) =>
            {
                return Box::pin(self.cookie()).await;
            }
            other => other?,
        };
        let cookie = read_cookie(&answer)?;
        let xml = cookie.xml("cookie");
        self.cookie = Some(cookie);
        Ok(xml)
    }

    /// A ServerSync call with the session cookie first; after InvalidCookie, authorize again
    /// and repeat it.
    async fn call(&mut self, operation: &str, rest: &str) -> Step<Element> {
        loop {
            let inner = format!("{}{rest}", self.cookie().await?);
            match self
                .post(SYNC_PATH, SERVER_SYNC_NS, operation, &inner)
                .await
            {
                Err(Failure::Fault(ErrorCode::InvalidCookie, m)) if self.start_over(&m) => {}
                other => return other,
            }
        }
    }

    async fn sync(&mut self, anchors: &Anchors) -> Step<()> {
        let syncer = self.syncer;
        let on_demand = syncer.drivers == DriverSync::OnDemand;
        let mode = syncer.drivers.as_str();
        // Anchors taken with another driver mode: software and drivers are listed anew (what
        // is held is not fetched again).
        let mut anchors = anchors.clone();
        if anchors
            .driver_mode
            .as_deref()
            .unwrap_or(DriverSync::All.as_str())
            != mode
        {
            anchors.update_sync = None;
            anchors.drivers = None;
        }
        let config = self
            .call("GetConfigData", &optional("configAnchor", &anchors.config))
            .await?;
        let limits = read_config_data(&config)?;
        let (held, staged) = syncer
            .blocking(|s| Ok((s.identities(false)?, s.identities(true)?)))
            .await?;
        // After a full listing (no anchor) what is held already is not fetched again; a
        // listing from an anchor names what changed, which is fetched even when held.
        let wanted = |ids: Vec<(Guid, u32)>, full: bool| {
            ids.into_iter()
                .filter(|id| !(staged.contains(id) || (full && held.contains(id))))
                .collect::<Vec<_>>()
        };
        let (config_sync, config_ids) = self.revision_list(true, &anchors.config_sync, "").await?;
        self.report.config_listed = config_ids.len();
        // Revisions held whose files lack keys are asked for again: the upstream may have
        // got them since.
        let mut keys_wanted = syncer.blocking(|s| s.lacking_keys()).await?;
        let config_wanted = wanted(config_ids, anchors.config_sync.is_none());
        let lists = if on_demand {
            // A sync that leaves drivers out lists software by product and classification:
            // the categories are fetched before the software is listed.
            self.fetch(
                &config_wanted,
                limits.per_request,
                config_wanted.len(),
                &mut keys_wanted,
            )
            .await?;
            let (products, classifications) = syncer
                .blocking(|s| s.products_and_classifications())
                .await?;
            software_filter(&products, &classifications)
        } else {
            String::new()
        };
        let (update_sync, update_ids) = self
            .revision_list(false, &anchors.update_sync, &lists)
            .await?;
        self.report.updates_listed = update_ids.len();
        let mut update_wanted = wanted(update_ids, anchors.update_sync.is_none());
        let mut driver_anchor = None;
        let mut asked_devices = Vec::new();
        // Drivers new to this node had their approvals passed over by earlier syncs (their
        // revisions were not held): the approvals are asked for whole again.
        let mut new_drivers = false;
        if on_demand {
            match limits.pnp_per_request {
                Some(per_request) => {
                    let (anchor, asked, listed) =
                        self.driver_ids(&anchors.drivers, per_request).await?;
                    driver_anchor = anchor;
                    asked_devices = asked;
                    self.report.drivers_listed = listed.len();
                    new_drivers = listed.iter().any(|id| !held.contains(id));
                    let known: HashSet<(Guid, u32)> = update_wanted.iter().copied().collect();
                    update_wanted.extend(
                        wanted(listed, true)
                            .into_iter()
                            .filter(|id| !known.contains(id)),
                    );
                }
                None => tracing::warn!(
                    upstream = %syncer.upstream.url(),
                    "the upstream lists no drivers by device id (GetConfigData: \
                     MaxNumberOfPnpHardwareIdsInRequest 0): no driver is synced"
                ),
            }
        }
        let total = config_wanted.len() + update_wanted.len();
        // Categories first: an update's document names its categories.
        let mut documents = if on_demand { Vec::new() } else { config_wanted };
        documents.extend(update_wanted);
        self.fetch(&documents, limits.per_request, total, &mut keys_wanted)
            .await?;
        // An upstream that does not say how many it answers at once predates the operation.
        if let Some(keys_per_request) = limits.keys_per_request {
            self.decryption_keys(&keys_wanted, keys_per_request).await?;
        }
        let replication = syncer.replication;
        // An autonomous node that makes its own declines has nothing to ask GetDeployments
        // (MS-WSUSSS §3.1.4.10: a replica's call); one that follows the upstream's declines asks
        // it for them alone, and what it says of groups and approvals is not kept.
        let (deployment_anchor, set, complete) = if replication.upstream_declines() {
            // Anchors taken in the other mode: everything is asked for again, so that a replica
            // after an autonomous spell replaces the approvals made here.
            let same_mode =
                anchors.replication.as_deref().unwrap_or("replica") == replication.as_str();
            let deployment_from = if new_drivers || !same_mode {
                None
            } else {
                anchors.deployment.clone()
            };
            let mut rest = optional("deploymentAnchor", &deployment_from);
            soap::text_element(
                &mut rest,
                "syncAnchor",
                update_sync.as_deref().unwrap_or(""),
            );
            let answer = self.call("GetDeployments", &rest).await?;
            let (anchor, set) = read_deployments(result(&answer, "GetDeploymentsResult")?)?;
            self.report.deployments_received = set.deployments.len();
            self.report.dead_received = set.dead.len();
            (anchor, set, deployment_from.is_none())
        } else {
            (None, DeploymentSet::default(), false)
        };
        let next = Anchors {
            config: limits.config_anchor,
            config_sync,
            update_sync,
            deployment: deployment_anchor,
            drivers: driver_anchor,
            driver_mode: Some(mode.to_owned()),
            replication: Some(replication.as_str().to_owned()),
        };
        self.report.applied = syncer
            .blocking(move |s| s.apply_sync(&set, replication, complete, &next, unix_now()))
            .await?;
        if !asked_devices.is_empty() {
            syncer
                .journal(move |j| j.mark_device_ids_synced(&asked_devices))
                .await?;
        }
        Ok(())
    }

    /// The documents of `ids`, fetched and staged; `total`: the documents this sync fetches
    /// in all, for the progress.
    async fn fetch(
        &mut self,
        ids: &[(Guid, u32)],
        per_request: usize,
        total: usize,
        keys_wanted: &mut Vec<KeysWanted>,
    ) -> Step<()> {
        let syncer = self.syncer;
        for group in ids.chunks(per_request * PARALLEL_BATCHES) {
            let documents = self.update_data(group, per_request).await?;
            self.report.fetched += documents.len();
            if let Some(progress) = &syncer.progress {
                progress(self.report.fetched, total);
            }
            keys_wanted.extend(syncer.blocking(move |s| s.stage(&documents)).await?);
        }
        Ok(())
    }

    /// The driver revisions for the device ids this node's clients listed (MS-WSUSSS
    /// GetDriverIdList), in calls of at most `per_request` ids, each from the anchor of the
    /// last sync (`Delta` false for ids not asked before: every driver of theirs): the new
    /// anchor, the ids asked and the identities listed.
    async fn driver_ids(
        &mut self,
        anchor: &Option<String>,
        per_request: usize,
    ) -> Step<(Option<String>, Vec<String>, Vec<(Guid, u32)>)> {
        let devices = self.syncer.journal(|j| j.device_ids()).await?;
        self.report.device_ids_asked = devices.len();
        let mut next = anchor.clone();
        let mut listed = Vec::new();
        for (i, batch) in devices.chunks(per_request).enumerate() {
            let mut filter = String::from("<filter>");
            if let Some(a) = anchor {
                soap::text_element(&mut filter, "Anchor", a);
            }
            filter.push_str("<Categories/><ComputerIds/><PnpHardwareIds>");
            for (id, synced) in batch {
                filter.push_str("<HardwareIdAndDelta>");
                soap::text_element(&mut filter, "Id", id);
                let _ = write!(filter, "<Delta>{synced}</Delta></HardwareIdAndDelta>");
            }
            filter.push_str("</PnpHardwareIds></filter>");
            let answer = self.call("GetDriverIdList", &filter).await?;
            let (got, ids) = read_revision_list(result(&answer, "GetDriverIdListResult")?)?;
            // Every batch goes from the old anchor; the first answer's is the next one.
            if i == 0 {
                next = got;
            }
            listed.extend(ids);
        }
        listed.sort_unstable();
        listed.dedup();
        Ok((
            next,
            devices.into_iter().map(|(id, _)| id).collect(),
            listed,
        ))
    }

    /// The keys of `wanted` files from GetUpdateDecryptionData (MS-WSUSSS §3.2.4.2), in calls
    /// of at most `per_request` identities, kept before the documents that name the files are
    /// applied: a client offered an encrypted update can get its keys at once.
    async fn decryption_keys(&mut self, wanted: &[KeysWanted], per_request: usize) -> Step<()> {
        self.report.keys_asked = wanted.len();
        let mut got = Vec::new();
        for batch in wanted.chunks(per_request) {
            let rest = update_ids(batch.iter().map(|(id, _)| id));
            let answer = self.call("GetUpdateDecryptionData", &rest).await?;
            got.extend(read_decryption_data(&answer, Some(batch))?);
        }
        if !got.is_empty() {
            self.report.keys_received = self.syncer.blocking(move |s| s.set_keys(&got)).await?;
        }
        Ok(())
    }

    /// One pass of GetRevisionIdList: its new anchor and the identities it lists.
    /// `lists`: the filter's Categories and Classifications, if any.
    async fn revision_list(
        &mut self,
        config: bool,
        anchor: &Option<String>,
        lists: &str,
    ) -> Step<Listed> {
        let mut filter = String::from("<filter>");
        if let Some(a) = anchor {
            soap::text_element(&mut filter, "Anchor", a);
        }
        let _ = write!(
            filter,
            "<GetConfig>{config}</GetConfig><Get63LanguageOnly>false</Get63LanguageOnly>\
             {lists}</filter>"
        );
        let answer = self.call("GetRevisionIdList", &filter).await?;
        read_revision_list(result(&answer, "GetRevisionIdListResult")?)
    }

    /// The documents of `ids`, in calls of at most `per_request` identities, several at once.
    async fn update_data(&mut self, ids: &[(Guid, u32)], per_request: usize) -> Step<Vec<String>> {
        let syncer = self.syncer;
        loop {
            let cookie = self.cookie().await?;
            let calls = ids.chunks(per_request).map(|batch| {
                let inner = format!("{cookie}{}", update_ids(batch.iter()));
                async move {
                    let answered = post(
                        &syncer.upstream,
                        SYNC_PATH,
                        SERVER_SYNC_NS,
                        "GetUpdateData",
                        &inner,
                    )
                    .await;
                    (batch, answered)
                }
            });
            let answers = futures_util::future::join_all(calls).await;
            let mut documents = Vec::with_capacity(ids.len());
            let mut refused = None;
            for (batch, answered) in answers {
                self.report.calls += 1;
                match answered {
                    Ok(answer) => {
                        self.report.answer_bytes += answer.received;
                        documents.extend(read_update_data(&answer.op, batch)?);
                    }
                    Err(Failure::Fault(ErrorCode::InvalidCookie, m)) => refused = Some(m),
                    Err(e) => return Err(e),
                }
            }
            match refused {
                None => return Ok(documents),
                Some(m) if self.start_over(&m) => {}
                Some(m) => return Err(Failure::Fault(ErrorCode::InvalidCookie, m)),
            }
        }
    }
}

/// The `updateIds` parameter (ArrayOfUpdateIdentity) of identities.
fn update_ids<'a>(identities: impl Iterator<Item = &'a (Guid, u32)>) -> String {
    let mut out = String::from("<updateIds>");
    for (id, number) in identities {
        super::identity_element(&mut out, "UpdateIdentity", *id, *number);
    }
    out.push_str("</updateIds>");
    out
}

/// `<name>text</name>` when there is a text.
fn optional(name: &str, value: &Option<String>) -> String {
    let mut out = String::new();
    if let Some(v) = value {
        soap::text_element(&mut out, name, v);
    }
    out
}

fn malformed(operation: &str, what: &str) -> Failure {
    Error::upstream(
        Kind::BadUpstream,
        format!("{operation}: the answer lacks a valid {what}"),
    )
    .into()
}

/// The `name` result inside a response element.
fn result<'a>(op: &'a Element, name: &str) -> Step<&'a Element> {
    op.child(name)
        .ok_or_else(|| malformed(op.name.trim_end_matches("Response"), name))
}

/// GetAuthConfigResult: the path of the DssAuth service.
fn read_auth_config(op: &Element) -> Step<String> {
    Ok(result(op, "GetAuthConfigResult")?
        .child("AuthInfo")
        .and_then(|a| a.child("AuthPlugInInfo"))
        .and_then(|p| p.child_text("ServiceUrl"))
        .filter(|u| !u.is_empty() && !u.contains("://"))
        .unwrap_or(DEFAULT_AUTH_PATH)
        .to_owned())
}

/// GetAuthorizationCookieResult: the CookieData to show GetCookie.
fn read_authorization_cookie(op: &Element) -> Step<String> {
    result(op, "GetAuthorizationCookieResult")?
        .child_text("CookieData")
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| malformed("GetAuthorizationCookie", "CookieData"))
}

/// GetCookieResult: the session cookie.
fn read_cookie(op: &Element) -> Step<Cookie> {
    let got = result(op, "GetCookieResult")?;
    let expiration = got
        .child_text("Expiration")
        .ok_or_else(|| malformed("GetCookie", "Expiration"))?;
    Ok(Cookie {
        expires: parse_datetime(expiration).ok_or_else(|| malformed("GetCookie", "Expiration"))?,
        expiration: expiration.to_owned(),
        data: got
            .child_text("EncryptedData")
            .ok_or_else(|| malformed("GetCookie", "EncryptedData"))?
            .to_owned(),
    })
}

/// What GetConfigData tells a sync.
struct ConfigData {
    /// Updates one GetUpdateData may ask for (1 to 1,000).
    per_request: usize,
    /// Updates one GetUpdateDecryptionData may ask for (`None`: the upstream does not say,
    /// and is not asked).
    keys_per_request: Option<usize>,
    /// Device ids one GetDriverIdList may name (`None`: none).
    pnp_per_request: Option<usize>,
    config_anchor: Option<String>,
}

/// The Classifications every update class but the drivers' are, and the Categories every
/// product is: the filter of a revision list that leaves drivers out.
fn software_filter(products: &[Guid], classifications: &[Guid]) -> String {
    let list = |name: &str, ids: &mut dyn Iterator<Item = &Guid>| {
        let mut out = format!("<{name}>");
        for id in ids {
            let _ = write!(
                out,
                "<IdAndDelta><Id>{id}</Id><Delta>true</Delta></IdAndDelta>"
            );
        }
        let _ = write!(out, "</{name}>");
        out
    };
    let drivers = [DRIVERS_CLASSIFICATION, DRIVER_SETS_CLASSIFICATION];
    list("Categories", &mut products.iter())
        + &list(
            "Classifications",
            &mut classifications.iter().filter(|c| !drivers.contains(c)),
        )
}

/// Microsoft Update's Drivers and Driver Sets classifications.
const DRIVERS_CLASSIFICATION: Guid = Guid(0xebfc1fc5_71a4_4f7b_9aca_3b9a503104a0);
const DRIVER_SETS_CLASSIFICATION: Guid = Guid(0x77835c8d_62a7_41f5_82ad_f28d1af1e3b1);

/// GetConfigDataResult read.
fn read_config_data(op: &Element) -> Step<ConfigData> {
    let config = result(op, "GetConfigDataResult")?;
    let count = |name: &str| {
        config
            .child_text(name)
            .and_then(|n| n.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .map(|n| n.min(1000))
    };
    Ok(ConfigData {
        per_request: count("MaxNumberOfUpdatesPerRequest")
            .unwrap_or((super::MAX_UPDATES_PER_REQUEST as usize).min(1000)),
        keys_per_request: count("MaxUpdatesPerRequestInGetUpdateDecryptionData"),
        pnp_per_request: count("MaxNumberOfPnpHardwareIdsInRequest"),
        config_anchor: config.child_text("NewConfigAnchor").map(str::to_owned),
    })
}

/// The keys a GetUpdateDecryptionData answer gives: (file SHA-1, key) for files without a key
/// left out. With `asked`, only the files named there of the identities named there are
/// taken; a key that is not base64 of a sane length makes the answer malformed.
fn read_decryption_data(op: &Element, asked: Option<&[KeysWanted]>) -> Step<Vec<FileKey>> {
    const OP: &str = "GetUpdateDecryptionData";
    let Some(list) = result(op, "GetUpdateDecryptionDataResult")?
        .child("UpdateFileDecryptionData")
        .filter(|l| !l.is_nil())
    else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for update in list.children_named("ServerSyncUpdateFileDecryption") {
        let id = update
            .child("UpdateId")
            .and_then(identity)
            .ok_or_else(|| malformed(OP, "UpdateId"))?;
        let wanted = asked.map(|a| a.iter().find(|(i, _)| *i == id).map(|(_, f)| f));
        let Some(files) = update.child("FileDecryptionData").filter(|l| !l.is_nil()) else {
            continue;
        };
        for file in files.children_named("ServerSyncFileDecryption") {
            let digest = file
                .child_text("FileDigest")
                .and_then(crate::catalog::base64_decode)
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or_else(|| malformed(OP, "FileDigest"))?;
            let Some(key) = file
                .child_text("DecryptionKey")
                .filter(|k| !k.trim().is_empty())
            else {
                continue;
            };
            let key = decode_key(key).ok_or_else(|| malformed(OP, "DecryptionKey"))?;
            if wanted.is_none_or(|f| f.is_some_and(|f| f.contains(&digest))) {
                keys.push((digest, key));
            }
        }
    }
    Ok(keys)
}

/// Everything a sync takes from an answer to `operation` (the operation's response element),
/// read as the sync reads it, documents parsed as staging parses them: how many items it
/// held. For the fuzz targets and their tests.
pub fn read_result(operation: &str, op: &Element) -> std::result::Result<usize, Failure> {
    match operation {
        "GetAuthConfig" => read_auth_config(op).map(|_| 1),
        "GetAuthorizationCookie" => read_authorization_cookie(op).map(|_| 1),
        "GetCookie" => read_cookie(op).map(|_| 1),
        "GetConfigData" => read_config_data(op).map(|_| 1),
        "GetUpdateDecryptionData" => read_decryption_data(op, None).map(|k| k.len()),
        "GetRevisionIdList" => {
            read_revision_list(result(op, "GetRevisionIdListResult")?).map(|(_, ids)| ids.len())
        }
        "GetUpdateData" => {
            let documents = read_update_data(op, &[])?;
            for document in &documents {
                crate::catalog::update::parse(document)
                    .map_err(|e| Error::upstream(Kind::BadUpstream, e.to_string()))?;
            }
            Ok(documents.len())
        }
        "GetDeployments" => read_deployments(result(op, "GetDeploymentsResult")?)
            .map(|(_, set)| set.deployments.len() + set.dead.len()),
        other => Err(malformed(other, "operation")),
    }
}

fn identity(e: &Element) -> Option<(Guid, u32)> {
    let id = e.child_text("UpdateID").and_then(Guid::parse)?;
    let number = e.child_text("RevisionNumber")?.parse().ok()?;
    Some((id, number))
}

/// GetRevisionIdListResult: the new anchor and the identities listed (WSUS may list several
/// revisions of one update: each is kept).
fn read_revision_list(list: &Element) -> Step<Listed> {
    let ids = list
        .child("NewRevisions")
        .map(|n| {
            n.children_named("UpdateIdentity")
                .map(|i| {
                    identity(i).ok_or_else(|| malformed("GetRevisionIdList", "UpdateIdentity"))
                })
                .collect::<Step<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok((list.child_text("Anchor").map(str::to_owned), ids))
}

/// The documents of a GetUpdateData answer, each of an identity asked for in `batch`; every
/// one asked for must be there.
fn read_update_data(op: &Element, batch: &[(Guid, u32)]) -> Step<Vec<String>> {
    let updates = result(op, "GetUpdateDataResult")?
        .child("updates")
        .ok_or_else(|| malformed("GetUpdateData", "updates"))?;
    let mut documents = Vec::with_capacity(batch.len());
    let mut answered = HashSet::new();
    for u in updates.children_named("ServerSyncUpdateData") {
        let (id, number) = u
            .child("Id")
            .and_then(identity)
            .ok_or_else(|| malformed("GetUpdateData", "Id"))?;
        let plain = u.child_text("XmlUpdateBlob").filter(|b| !b.is_empty());
        match (plain, u.child_text("XmlUpdateBlobCompressed")) {
            (Some(xml), _) => documents.push(xml.to_owned()),
            // How Microsoft WSUS sends documents over 5,120 bytes.
            (None, Some(compressed)) => {
                let xml = super::blob::decompress(compressed).map_err(|why| {
                    Error::upstream(
                        Kind::BadUpstream,
                        format!(
                            "GetUpdateData: the XmlUpdateBlobCompressed of update {id} \
                             revision {number}: {why}"
                        ),
                    )
                })?;
                documents.push(xml);
            }
            (None, None) => return Err(malformed("GetUpdateData", "XmlUpdateBlob")),
        }
        answered.insert((id, number));
    }
    if let Some((id, number)) = batch.iter().find(|i| !answered.contains(i)) {
        return Err(Error::upstream(
            Kind::BadUpstream,
            format!(
                "GetUpdateData: the upstream listed update {id} revision {number} but did not \
                 give its document"
            ),
        )
        .into());
    }
    Ok(documents)
}

/// GetDeploymentsResult: the new deployment anchor and what it holds.
fn read_deployments(r: &Element) -> Step<(Option<String>, DeploymentSet)> {
    let bad = |what: &str| malformed("GetDeployments", what);
    let guid = |e: &Element, name: &str| {
        e.child_text(name)
            .and_then(Guid::parse)
            .ok_or_else(|| bad(name))
    };
    let items = |list: &str, item: &str| -> Vec<Element> {
        r.child(list)
            .map(|l| l.children_named(item).cloned().collect())
            .unwrap_or_default()
    };
    let mut set = DeploymentSet::default();
    for g in items("Groups", "ServerSyncTargetGroup") {
        let id = guid(&g, "TargetGroupID")?;
        // A group without a parent (seen in WSUS's examples) hangs under All Computers.
        let parent = match g.child_text("ParentGroupId").and_then(Guid::parse) {
            Some(Guid::NIL) => None,
            Some(p) => Some(p),
            None if id == ALL_COMPUTERS => None,
            None => Some(ALL_COMPUTERS),
        };
        set.groups.push(Group {
            id,
            name: g
                .child_text("Name")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad("Name"))?
                .to_owned(),
            parent,
            builtin: g
                .child_text("IsBuiltin")
                .and_then(parse_bool)
                .unwrap_or(false),
        });
    }
    for d in items("Deployments", "ServerSyncDeployment") {
        let code: u8 = d
            .child_text("Action")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| bad("Action"))?;
        let assigned = d
            .child_text("IsAssigned")
            .and_then(parse_bool)
            .unwrap_or(true);
        let action: Action = action_from_code(code, assigned).ok_or_else(|| bad("Action"))?;
        let deadline = match d.child_text("Deadline") {
            None => None,
            Some(t) if t.starts_with(&NO_DEADLINE[..4]) => None,
            Some(t) => Some(parse_datetime(t).ok_or_else(|| bad("Deadline"))?),
        }
        .filter(|t| *t < NO_DEADLINE_AFTER);
        set.deployments.push(ServerDeployment {
            guid: guid(&d, "DeploymentGuid")?,
            update_id: guid(&d, "UpdateId")?,
            revision_number: d
                .child_text("RevisionNumber")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| bad("RevisionNumber"))?,
            action,
            admin_name: d.child_text("AdminName").unwrap_or("").to_owned(),
            deadline,
            go_live: d
                .child_text("GoLiveTime")
                .and_then(parse_datetime)
                .unwrap_or(0),
            group: guid(&d, "TargetGroupId")?,
            download_priority: d
                .child_text("DownloadPriority")
                .and_then(|p| p.parse::<u8>().ok())
                .unwrap_or(2)
                .clamp(1, 3),
        });
    }
    let guids = |list: &str| -> Step<Vec<Guid>> {
        items(list, "guid")
            .iter()
            .map(|g| Guid::parse(g.text()).ok_or_else(|| bad(list)))
            .collect()
    };
    set.dead = guids("DeadDeployments")?;
    set.hidden = guids("HiddenUpdates")?;
    set.accepted_eulas = guids("AcceptedEulas")?;
    Ok((r.child_text("Anchor").map(str::to_owned), set))
}

/// What a prefetch did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PrefetchReport {
    /// Files of updates approved for install, and how many of them were already here.
    pub files: usize,
    pub present: usize,
    pub fetched: usize,
    pub failed: usize,
    pub bytes: u64,
    pub elapsed_ms: u64,
    /// The SHA-1 of each file that failed (what the rollup counts as server errors).
    #[serde(skip)]
    pub failed_files: HashSet<[u8; 20]>,
}

/// How far a prefetch under way has got.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PrefetchProgress {
    /// Seconds since the epoch.
    pub started_at: i64,
    pub files: usize,
    /// Files done (present already, fetched, or failed).
    pub done: usize,
    /// The catalog's sizes of all files and of those not done yet.
    pub bytes: u64,
    pub pending_bytes: u64,
}

/// Objects prefetched at the same time: the WAN is shared with clients' misses.
const PREFETCH_PARALLEL: usize = 2;

/// The payload files of every update approved for install (with those of the updates it
/// bundles), highest download priority first, each once.
pub fn approved_files(catalog: &Catalog) -> Vec<(ContentPath, u64)> {
    let mut deployments: Vec<_> = catalog
        .deployments
        .iter()
        .filter(|d| d.action == Action::Install)
        .collect();
    deployments.sort_by_key(|d| std::cmp::Reverse(d.download_priority));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for d in deployments {
        let Some(r) = catalog.revision(d.revision) else {
            continue;
        };
        let members = r.bundled.iter().filter_map(|m| catalog.revision(*m));
        for f in std::iter::once(r).chain(members).flat_map(|r| &r.files) {
            if seen.insert(f.sha1) {
                out.push((
                    ContentPath {
                        digest: Digest(f.sha1),
                        ext: f.extension(),
                    },
                    f.size,
                ));
            }
        }
    }
    out
}

/// Fetch `files` through the content path: the same fill clients use, so a client asking for
/// one of them meanwhile shares its fetch, and the WAN limit applies. A file that fails is
/// counted and logged; the others go on.
/// `progress` is told after each file; the node's metrics count what was fetched.
pub async fn prefetch(
    content: &crate::content::Store,
    files: Vec<(ContentPath, u64)>,
    mut progress: impl FnMut(&PrefetchProgress),
) -> PrefetchReport {
    use futures_util::StreamExt as _;
    let started = Instant::now();
    let mut report = PrefetchReport {
        files: files.len(),
        ..PrefetchReport::default()
    };
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    let mut state = PrefetchProgress {
        started_at: unix_now(),
        files: files.len(),
        done: 0,
        bytes: total,
        pending_bytes: total,
    };
    progress(&state);
    let metrics = content.metrics().clone();
    let mut outcomes =
        futures_util::stream::iter(files.into_iter().map(|(path, size)| async move {
            let outcome = fetch_whole(content, &path).await;
            (path, size, outcome)
        }))
        .buffer_unordered(PREFETCH_PARALLEL);
    while let Some((path, size, outcome)) = outcomes.next().await {
        state.done += 1;
        state.pending_bytes = state.pending_bytes.saturating_sub(size);
        progress(&state);
        match outcome {
            Ok(None) => report.present += 1,
            Ok(Some(bytes)) => {
                report.fetched += 1;
                report.bytes += bytes;
                metrics.prefetch_files.inc();
                metrics.prefetch_bytes.inc_by(bytes);
            }
            Err(e) => {
                report.failed += 1;
                report.failed_files.insert(path.digest.0);
                tracing::warn!(file = %path.url_path(), error = %e, "prefetch failed");
            }
        }
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

/// Every slice of one object, then its verification; None when it was complete already.
async fn fetch_whole(content: &crate::content::Store, path: &ContentPath) -> Result<Option<u64>> {
    if content
        .describe(&path.digest)
        .is_some_and(|i| i.state == "committed")
    {
        return Ok(None);
    }
    let handle = content.lookup(path, Some(0)).await?;
    let slices = handle.slicing().count(handle.size());
    for index in 0..slices {
        handle.slice(index).await?;
    }
    handle.await_verdict(true).await?;
    Ok(Some(handle.size()))
}

/// When the next sync is due after `failures` failed ones in a row: the interval after a
/// success; after a failure 30 s, doubling, at most 15 minutes and never later than the
/// interval.
pub fn next_attempt(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let backoff = Duration::from_secs(30).saturating_mul(1 << (failures - 1).min(5));
    backoff.min(Duration::from_secs(15 * 60)).min(interval)
}

/// When a periodic job of a downstream server (the sync, the rollup) runs: at start and then
/// every `interval` (zero: only when asked), and after failures sooner, by [`next_attempt`]
/// (an interval of zero backs off as 15 minutes would).
pub(super) struct Schedule {
    interval: Duration,
    failures: u32,
    wait: Option<Duration>,
}

impl Schedule {
    pub(super) fn new(interval: Duration) -> Schedule {
        Schedule {
            interval,
            failures: 0,
            wait: (!interval.is_zero()).then_some(Duration::ZERO),
        }
    }

    /// Wait until the next run is due or `asked` is notified; false on shutdown.
    pub(super) async fn next(
        &self,
        asked: &tokio::sync::Notify,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let timer = async {
            match self.wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = timer => true,
            _ = asked.notified() => true,
            _ = shutdown.changed() => false,
        }
    }

    /// Note how a run ended; the failures in a row and when the next run is due.
    pub(super) fn done(&mut self, ok: bool) -> (u32, Duration) {
        self.failures = if ok { 0 } else { self.failures + 1 };
        let base = if self.interval.is_zero() {
            Duration::from_secs(15 * 60)
        } else {
            self.interval
        };
        let next = next_attempt(base, self.failures);
        self.wait = (self.failures > 0 || !self.interval.is_zero()).then_some(next);
        (self.failures, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> String {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/protocol/samples/spec-examples/"
        );
        std::fs::read_to_string(format!("{dir}{name}")).expect("the example messages")
    }

    fn ok<T>(step: Step<T>) -> T {
        match step {
            Ok(v) => v,
            Err(Failure::Other(e)) => panic!("{e}"),
            Err(Failure::Fault(c, m)) => panic!("{} {m}", c.as_str()),
        }
    }

    /// Microsoft's example answers read as a downstream server reads them. Example 14 has
    /// prose after its body (cut off here) and omits ParentGroupId for Unassigned Computers.
    #[test]
    fn microsofts_examples_read() {
        let tree = |xml: &str| soap::parse_tree(xml.as_bytes(), &ANSWER_LIMITS).unwrap();
        let list = tree(&example(
            "wsusss-10-META-DATA-SYNC-PHASE-GetRevisionIdList-Response.xml",
        ));
        let (anchor, ids) = ok(read_revision_list(
            list.child("GetRevisionIdListResult").unwrap(),
        ));
        assert_eq!(anchor.as_deref(), Some("4742,2006-05-26 18:59:26.192"));
        assert!(ids.len() >= 2, "{ids:?}");
        let config = tree(&example(
            "wsusss-08-META-DATA-SYNC-PHASE-GetConfigData-Response.xml",
        ));
        let config = config.child("GetConfigDataResult").unwrap();
        assert_eq!(
            config.child_text("MaxNumberOfUpdatesPerRequest"),
            Some("100")
        );
        assert!(config.child_text("NewConfigAnchor").is_some());

        let text = example("wsusss-14-DEPLOYMENTS-SYNC-PHASE-GetDeployments-Response.xml");
        let end = text.find("</GetDeploymentsResponse>").unwrap() + 25;
        let answer = tree(&text[..end]);
        let (anchor, set) = ok(read_deployments(
            answer.child("GetDeploymentsResult").unwrap(),
        ));
        assert_eq!(anchor.as_deref(), Some("4742,2006-05-26 18:59:26.192"));
        let unassigned = set
            .groups
            .iter()
            .find(|g| g.id == crate::catalog::UNASSIGNED_COMPUTERS)
            .unwrap();
        assert_eq!(unassigned.parent, Some(ALL_COMPUTERS));
        assert_eq!(set.groups[0].parent, None);
        assert_eq!(set.deployments.len(), 2);
        let d = &set.deployments[0];
        assert_eq!(
            (d.action, d.deadline, d.download_priority),
            (Action::Install, None, 1)
        );
        assert_eq!(d.admin_name, "WUS Server");
        assert_eq!(d.go_live, parse_datetime("2006-05-24T15:37:08Z").unwrap());
        assert!(!set.hidden.is_empty());
        assert!(set.dead.is_empty() && set.accepted_eulas.is_empty());

        // Every well-formed example of the sync reads with the SOAP codec.
        for name in [
            "wsusss-01-AUTHORIZATION-PHASE-GetAuthConfig-Request.xml",
            "wsusss-02-AUTHORIZATION-PHASE-GetAuthConfig-Response-Success.xml",
            "wsusss-09-META-DATA-SYNC-PHASE-GetRevisionIdList-Request.xml",
            "wsusss-11-META-DATA-SYNC-PHASE-GetUpdateData-Request.xml",
            "wsusss-13-DEPLOYMENTS-SYNC-PHASE-GetDeployments-Request.xml",
        ] {
            let xml = example(name);
            let parsed = soap::parse(xml.as_bytes(), &ANSWER_LIMITS)
                .map(|e| e.operation)
                .or_else(|_| soap::parse_tree(xml.as_bytes(), &ANSWER_LIMITS));
            assert!(parsed.is_ok(), "{name}: {:?}", parsed.err());
        }
    }

    #[test]
    fn retries_back_off_from_30_s_to_15_min_within_the_interval() {
        let hour = Duration::from_secs(3600);
        assert_eq!(next_attempt(hour, 0), hour);
        let waits: Vec<u64> = (1..=7).map(|n| next_attempt(hour, n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 900, 900]);
        assert_eq!(
            next_attempt(Duration::from_secs(45), 3),
            Duration::from_secs(45)
        );
    }

    /// An answer that lacks a document asked for, or brings it compressed, names the update.
    /// Keys are taken only for the files asked of the identities asked; a file without a key
    /// is skipped, a key that is not base64 makes the answer malformed.
    #[test]
    fn decryption_answers_give_only_the_keys_asked_for() {
        let (a, b) = (
            Guid::parse("4b62aa32-52f6-4c15-b739-1c8e696eb33e").unwrap(),
            Guid::parse("52bdd083-4169-4094-8eea-6230c7c1520d").unwrap(),
        );
        let b64 = crate::catalog::base64_encode;
        let file = |digest: [u8; 20], key: Option<&str>| {
            format!(
                "<ServerSyncFileDecryption><FileDigest>{}</FileDigest>{}</ServerSyncFileDecryption>",
                b64(&digest),
                key.map(|k| format!("<DecryptionKey>{k}</DecryptionKey>"))
                    .unwrap_or_default()
            )
        };
        let update = |id: Guid, files: &str| {
            format!(
                "<ServerSyncUpdateFileDecryption><UpdateId><UpdateID>{id}</UpdateID>\
                 <RevisionNumber>100</RevisionNumber></UpdateId><FileDecryptionData>{files}\
                 </FileDecryptionData></ServerSyncUpdateFileDecryption>"
            )
        };
        let answer = |updates: &str| {
            let xml = format!(
                "<GetUpdateDecryptionDataResponse xmlns=\"{SERVER_SYNC_NS}\">\
                 <GetUpdateDecryptionDataResult><UpdateFileDecryptionData>{updates}\
                 </UpdateFileDecryptionData></GetUpdateDecryptionDataResult>\
                 </GetUpdateDecryptionDataResponse>"
            );
            soap::parse_tree(xml.as_bytes(), &ANSWER_LIMITS).unwrap()
        };
        let key = b64(&[5u8; 32]);
        let body = [
            update(
                a,
                &(file([1; 20], Some(&key)) + &file([2; 20], None) + &file([3; 20], Some(&key))),
            ),
            update(b, &file([4; 20], Some(&key))),
        ]
        .concat();
        let asked: Vec<KeysWanted> = vec![((a, 100), vec![[1; 20], [2; 20]])];
        let got = ok(read_decryption_data(&answer(&body), Some(&asked)));
        assert_eq!(
            got,
            vec![([1u8; 20], vec![5u8; 32])],
            "not asked: file 3, update b"
        );
        assert_eq!(ok(read_decryption_data(&answer(&body), None)).len(), 3);
        let bad = update(a, &file([1; 20], Some("!!")));
        assert!(read_decryption_data(&answer(&bad), Some(&asked)).is_err());
        let empty = answer("");
        assert!(ok(read_decryption_data(&empty, Some(&asked))).is_empty());
    }

    #[test]
    fn update_data_answers_are_checked() {
        let a = Guid::parse("4b62aa32-52f6-4c15-b739-1c8e696eb33e").unwrap();
        let b = Guid::parse("52bdd083-4169-4094-8eea-6230c7c1520d").unwrap();
        let answer = |items: &str| {
            let xml = format!(
                "<GetUpdateDataResponse xmlns=\"{SERVER_SYNC_NS}\"><GetUpdateDataResult>\
                 <updates>{items}</updates><fileUrls/></GetUpdateDataResult>\
                 </GetUpdateDataResponse>"
            );
            soap::parse_tree(xml.as_bytes(), &ANSWER_LIMITS).unwrap()
        };
        let item = |id: Guid, blob: &str| {
            format!(
                "<ServerSyncUpdateData><Id><UpdateID>{id}</UpdateID><RevisionNumber>100\
                 </RevisionNumber></Id>{blob}</ServerSyncUpdateData>"
            )
        };
        let message = |step: Step<Vec<String>>| match step {
            Err(Failure::Other(e)) => e.to_string(),
            _ => panic!("not refused"),
        };
        let plain = item(a, "<XmlUpdateBlob>&lt;upd:Update/&gt;</XmlUpdateBlob>");
        let docs = ok(read_update_data(&answer(&plain), &[(a, 100)]));
        assert_eq!(docs, vec!["<upd:Update/>".to_owned()]);
        let missing = message(read_update_data(&answer(&plain), &[(a, 100), (b, 100)]));
        assert!(missing.contains(&b.to_string()), "{missing}");
        let broken = item(
            b,
            "<XmlUpdateBlobCompressed>TVNDRg==</XmlUpdateBlobCompressed>",
        );
        let refused = message(read_update_data(&answer(&broken), &[(b, 100)]));
        assert!(
            refused.contains(&b.to_string()) && refused.contains("not a cabinet"),
            "{refused}"
        );
        let cabinet = crate::testkit::cabinet::lzx_cabinet("blob", b"<upd:Update/>");
        let compressed = item(
            b,
            &format!(
                "<XmlUpdateBlobCompressed>{}</XmlUpdateBlobCompressed>",
                crate::catalog::base64_encode(&cabinet)
            ),
        );
        let docs = ok(read_update_data(&answer(&compressed), &[(b, 100)]));
        assert_eq!(docs, vec!["<upd:Update/>".to_owned()]);
    }
}
