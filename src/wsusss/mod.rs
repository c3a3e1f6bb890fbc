//! The server-server protocol (MS-WSUSSS), upstream side: what a node answers its downstream
//! servers at `/ServerSyncWebService/ServerSyncWebService.asmx` and
//! `/DssAuthWebService/DssAuthWebService.asmx`: authorization (GetAuthConfig,
//! GetAuthorizationCookie, GetCookie), GetConfigData, the revision list (GetRevisionIdList),
//! the update documents (GetUpdateData, GetUpdateDecryptionData), the approvals
//! (GetDeployments), DownloadFiles and Ping.
//!
//! Anchors have the shape WSUS gives them, `<seq>,<yyyy-MM-dd HH:mm:ss.fff>`: `seq` is the
//! catalog version (`meta.catalog_version`) the answer was cut at, and a revision is listed when
//! its `change_seq` is above the anchor's. Only `seq` is read back; the time is for people.
//!
//! Cookies are the sealed struct of [`crate::served::cookie`] with kinds of their own, so a
//! client cookie never opens as a server one. Faults are the WSUS ones ([`crate::soap::wsus`]:
//! ErrorCode, Message, ID, Method; HTTP 500). Owns: request parsing and response writing of the
//! two services. May call: `soap`, `served` (the catalog in service, the cookie key), `report`,
//! `catalog`. Knows no socket: the server hands it bytes.

pub mod blob;
pub mod replica;
pub mod rollup;
pub mod rollup_client;
pub mod sync;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::catalog::replica::DeploymentSet;
use crate::catalog::{
    ALL_COMPUTERS, Action, CatalogError, Guid, UpdateType, base64_decode, base64_encode,
};
use crate::lock::lock;
use crate::report::{Downstream, DownstreamSeen};
use crate::served::Served;
use crate::served::cookie::{Claims, Kind};
use crate::soap::wsus::{ErrorCode, Fault, Reply, fault_in};
use crate::soap::xsd::{format_datetime, parse_bool, parse_version};
use crate::soap::{self, Element};
use crate::state::Journal;

pub const SERVER_SYNC_NS: &str = "http://www.microsoft.com/SoftwareDistribution";
pub const DSS_AUTH_NS: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService";
/// Ping, answered at both paths.
pub const MONITORABLE_NS: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/IMonitorable";

/// The protocol version this node speaks as an upstream server (WSUS 10.0's).
pub const PROTOCOL_VERSION: &str = "1.20";
/// The only authorization plug-in of the protocol.
const PLUG_IN: &str = "DssTargeting";
/// How long an authorization cookie opens GetCookie (seconds).
const AUTHORIZATION_LIFETIME: i64 = 8 * 3600;
/// How long a server cookie is good for (seconds; WSUS: 240 minutes).
const COOKIE_LIFETIME: i64 = 4 * 3600;
/// Update ids per GetUpdateData (WSUS: 100).
pub const MAX_UPDATES_PER_REQUEST: u32 = 100;
/// Device hardware ids one GetDriverIdList may name (GetConfigData's
/// MaxNumberOfPnpHardwareIdsInRequest), and computer hardware ids.
pub const MAX_PNP_IDS_PER_REQUEST: u32 = 5_000;
pub const MAX_COMPUTER_IDS_PER_REQUEST: u32 = 1_000;

/// The two services and where downstream servers find them (paths compared
/// case-insensitively; WSUS downstreams have been seen doubling the first slash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ServerSync,
    DssAuth,
    /// The rollup operations posted to the client protocol's Reporting path
    /// ([`rollup::OPERATIONS`]); the server picks this by the operation's name.
    Reporting,
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let p = path.to_ascii_lowercase();
        match p.trim_start_matches('/').trim_end_matches('/') {
            "serversyncwebservice/serversyncwebservice.asmx" => Some(Endpoint::ServerSync),
            "dssauthwebservice/dssauthwebservice.asmx" => Some(Endpoint::DssAuth),
            _ => None,
        }
    }

    pub fn namespace(self) -> &'static str {
        match self {
            Endpoint::ServerSync | Endpoint::Reporting => SERVER_SYNC_NS,
            Endpoint::DssAuth => DSS_AUTH_NS,
        }
    }
}

type Result<T> = std::result::Result<T, Fault>;

/// The upstream side of one node, answering from the catalog the client protocol serves.
pub struct Service {
    served: Arc<Served>,
    /// The client protocol's parse limits, which the server-server calls share.
    limits: soap::Limits,
    /// Where downstream servers are recorded.
    journal: Arc<Mutex<Journal>>,
}

impl Service {
    /// Serve `served`'s catalog, parsing under `limits`; downstream servers are recorded in
    /// `data_dir`'s state.db. Blocking.
    pub fn open(
        served: Arc<Served>,
        database: &crate::state::Database,
        limits: soap::Limits,
    ) -> std::result::Result<Service, CatalogError> {
        Ok(Service {
            served,
            limits,
            journal: Arc::new(Mutex::new(Journal::open(database)?)),
        })
    }

    /// Every downstream server that authorized here. Blocking.
    pub fn downstreams(&self) -> std::result::Result<Vec<Downstream>, CatalogError> {
        lock(&self.journal).downstreams()
    }

    /// Record what a call told of the downstream server `id` (off the async workers). Not
    /// worth failing the call over: a failure is logged.
    async fn record(&self, id: String, peer: Option<SocketAddr>, seen: DownstreamSeen, now: i64) {
        let journal = self.journal.clone();
        let address = peer.map_or_else(String::new, |p| p.ip().to_string());
        let written = tokio::task::spawn_blocking(move || {
            lock(&journal).downstream_seen(&id, &address, &seen, now)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "recording a downstream server failed"),
            Err(e) => tracing::warn!(error = %e, "recording a downstream server failed"),
        }
    }

    /// The parse limits of a call of `operation` (as the body names it, before parsing; `None`:
    /// not known yet) posted to `endpoint`: the element count cut to what the operation can
    /// carry, so that a small compressed body of empty elements cannot make a large tree.
    pub fn limits_for(&self, endpoint: Endpoint, operation: Option<&str>) -> soap::Limits {
        let base = match endpoint {
            Endpoint::Reporting => rollup::LIMITS,
            _ => self.limits,
        };
        let elements = match (endpoint, operation) {
            (_, None) => base.max_elements,
            // 500 computers with the state of every update that applies to each: hundreds of
            // thousands of elements (`rollup::LIMITS`).
            (Endpoint::Reporting, Some("RollupComputerStatus")) => base.max_elements,
            // Up to 5,000 client summaries, 1,500 computers or 20,000 rollup numbers per
            // batch (the maxima this node announces), a dozen elements each at most.
            (
                Endpoint::Reporting,
                Some("RollupDownstreamServers" | "RollupComputers" | "GetOutOfSyncComputers"),
            ) => 100_000,
            // Update IDs, file digests or revision IDs asked for in one call.
            (
                Endpoint::ServerSync,
                Some(
                    "GetUpdateData"
                    | "DownloadFiles"
                    | "GetUpdateDecryptionData"
                    | "GetRevisionIdList"
                    | "GetDriverIdList"
                    | "GetDeployments",
                ),
            ) => 100_000,
            // Cookies, configuration, Ping: a few dozen elements.
            _ => 2_000,
        };
        soap::Limits {
            max_elements: base.max_elements.min(elements),
            ..base
        }
    }

    /// Answer one call posted to `endpoint` from `peer` at `now` (seconds since the epoch).
    pub async fn call(
        &self,
        endpoint: Endpoint,
        envelope: soap::Envelope,
        peer: Option<SocketAddr>,
        now: i64,
    ) -> Reply {
        let (version, op) = (envelope.version, envelope.operation);
        let ns = op.ns.as_deref().unwrap_or("");
        let result = match (endpoint, ns, op.name.as_str()) {
            (_, MONITORABLE_NS, "Ping") => {
                Ok(format!("<PingResponse xmlns=\"{MONITORABLE_NS}\"/>"))
            }
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetAuthConfig") => Ok(self.get_auth_config()),
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetCookie") => {
                self.get_cookie(&op, peer, now).await
            }
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetConfigData") => {
                self.get_config_data(&op, now)
            }
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetRevisionIdList") => {
                self.get_revision_id_list(&op, peer, now).await
            }
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetUpdateData") => {
                self.get_update_data(&op, now).await
            }
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetDriverIdList") => {
                self.get_driver_id_list(&op, now)
            }
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetDeployments") => {
                self.get_deployments(&op, now).await
            }
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetUpdateDecryptionData") => {
                self.get_update_decryption_data(&op, now)
            }
            (Endpoint::ServerSync, SERVER_SYNC_NS, "DownloadFiles") => {
                self.download_files(&op, now)
            }
            // Never called by a downstream server (MS-WSUSSS §3.1.4.9): answered empty.
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetRelatedRevisionsForUpdates") => {
                self.downstream_cookie(&op, now).map(|_| {
                    format!("<GetRelatedRevisionsForUpdatesResponse xmlns=\"{SERVER_SYNC_NS}\"/>")
                })
            }
            (Endpoint::Reporting, SERVER_SYNC_NS, name) if rollup::OPERATIONS.contains(&name) => {
                let (journal, server_id) = (self.journal.clone(), self.served.server_id());
                let op = op.clone();
                tokio::task::spawn_blocking(move || rollup::answer(&journal, server_id, &op, now))
                    .await
                    .map_err(Fault::internal)
                    .and_then(|answer| answer)
            }
            (Endpoint::DssAuth, DSS_AUTH_NS, "GetAuthorizationCookie") => {
                self.get_authorization_cookie(&op, peer, now).await
            }
            _ => Err(Fault::invalid(format!(
                "{} is not an operation of this service",
                op.name
            ))),
        };
        let action_ns = if ns == MONITORABLE_NS {
            MONITORABLE_NS
        } else {
            endpoint.namespace()
        };
        match result {
            Ok(body) => Reply {
                status: 200,
                content_type: version.content_type(),
                body: soap::envelope(version, &body),
                operation: op.name,
                fault: None,
            },
            Err(fault) => fault_in(version, action_ns, &op.name, &fault),
        }
    }

    fn get_auth_config(&self) -> String {
        let catalog = self.served.catalog();
        format!(
            "<GetAuthConfigResponse xmlns=\"{SERVER_SYNC_NS}\"><GetAuthConfigResult>\
             <LastChange>{}</LastChange><AuthInfo><AuthPlugInInfo><PlugInID>{PLUG_IN}</PlugInID>\
             <ServiceUrl>DssAuthWebService/DssAuthWebService.asmx</ServiceUrl><Parameter/>\
             </AuthPlugInInfo></AuthInfo></GetAuthConfigResult></GetAuthConfigResponse>",
            format_datetime(catalog.config_last_change)
        )
    }

    /// DssAuth: who the downstream server says it is (its name and id), sealed.
    async fn get_authorization_cookie(
        &self,
        op: &Element,
        peer: Option<SocketAddr>,
        now: i64,
    ) -> Result<String> {
        let name = op.child_text("accountName").unwrap_or("").trim();
        let valid_name = !name.is_empty()
            && name.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid_name {
            return Err(Fault::invalid("accountName"));
        }
        let id = op
            .child_text("accountGuid")
            .and_then(Guid::parse)
            .ok_or_else(|| Fault::invalid("accountGuid"))?;
        let claims = Claims {
            kind: Kind::DownstreamAuthorization,
            server_id: self.served.server_id(),
            issued: now,
            expires: now + AUTHORIZATION_LIFETIME,
            config_change: 0,
            anchor: 0,
            groups: Vec::new(),
            client_id: id.to_string(),
            protocol: String::new(),
        };
        let name = name.to_ascii_lowercase();
        self.record(
            id.to_string(),
            peer,
            DownstreamSeen::Authorized { name },
            now,
        )
        .await;
        Ok(format!(
            "<GetAuthorizationCookieResponse xmlns=\"{DSS_AUTH_NS}\"><GetAuthorizationCookieResult>\
             <PlugInId>{PLUG_IN}</PlugInId><CookieData>{}</CookieData>\
             </GetAuthorizationCookieResult></GetAuthorizationCookieResponse>",
            base64_encode(&self.served.sealer().seal(&claims))
        ))
    }

    /// The session cookie, from exactly one authorization cookie of this server.
    async fn get_cookie(&self, op: &Element, peer: Option<SocketAddr>, now: i64) -> Result<String> {
        let auth: Vec<&Element> = op
            .child("authCookies")
            .filter(|a| !a.is_nil())
            .map(|a| a.children_named("AuthorizationCookie").collect())
            .unwrap_or_default();
        let [auth] = auth[..] else {
            return Err(Fault::invalid("authCookies"));
        };
        let version = op.child_text("protocolVersion").unwrap_or("").trim();
        let (major, _) = parse_version(version).ok_or_else(|| Fault::invalid("protocolVersion"))?;
        let refused = || Fault::new(ErrorCode::InvalidAuthorizationCookie, "");
        let sealed = auth
            .child_text("CookieData")
            .and_then(base64_decode)
            .ok_or_else(refused)?;
        let authorized = self
            .served
            .sealer()
            .open_cookie(&sealed, Kind::DownstreamAuthorization)
            .map_err(|_| refused())?;
        if authorized.server_id != self.served.server_id() || authorized.expires <= now {
            return Err(refused());
        }
        if major != 1 {
            return Err(Fault::new(
                ErrorCode::IncompatibleProtocolVersion,
                format!("this server speaks {PROTOCOL_VERSION}"),
            ));
        }
        let claims = Claims {
            kind: Kind::Downstream,
            issued: now,
            expires: (now + COOKIE_LIFETIME).min(authorized.expires),
            protocol: version.to_owned(),
            ..authorized
        };
        let protocol = version.to_owned();
        self.record(
            claims.client_id.clone(),
            peer,
            DownstreamSeen::Cookie { protocol },
            now,
        )
        .await;
        Ok(format!(
            "<GetCookieResponse xmlns=\"{SERVER_SYNC_NS}\"><GetCookieResult>\
             <Expiration>{}</Expiration><EncryptedData>{}</EncryptedData>\
             </GetCookieResult></GetCookieResponse>",
            format_datetime(claims.expires),
            base64_encode(&self.served.sealer().seal(&claims))
        ))
    }

    /// The `cookie` of an operation: sealed by this server for a downstream server, not
    /// expired, of protocol major version 1. MS-WSUSSS has no CookieExpired: an expired
    /// cookie is InvalidCookie, and the downstream renews it before Expiration.
    fn downstream_cookie(&self, op: &Element, now: i64) -> Result<Claims> {
        let invalid = |why: &str| Fault::new(ErrorCode::InvalidCookie, why);
        let sealed = op
            .child("cookie")
            .filter(|c| !c.is_nil())
            .and_then(|c| c.child_text("EncryptedData"))
            .ok_or_else(|| invalid("no cookie"))?;
        let bytes = base64_decode(sealed).ok_or_else(|| invalid("cookie is not base64"))?;
        let claims = self
            .served
            .sealer()
            .open_cookie(&bytes, Kind::Downstream)
            .map_err(|_| invalid("not a cookie of this server"))?;
        if claims.server_id != self.served.server_id() {
            return Err(invalid("cookie of another server"));
        }
        if claims.expires <= now {
            return Err(invalid("cookie expired"));
        }
        if parse_version(&claims.protocol).is_none_or(|(major, _)| major != 1) {
            return Err(Fault::new(ErrorCode::IncompatibleProtocolVersion, ""));
        }
        Ok(claims)
    }

    /// The limits of this server and its configuration anchor (the catalog's configuration
    /// change time): a downstream holding the current anchor gets an empty language list.
    fn get_config_data(&self, op: &Element, now: i64) -> Result<String> {
        self.downstream_cookie(op, now)?;
        let anchor = self.served.catalog().config_last_change.to_string();
        let current = op.child_text("configAnchor").map(str::trim) == Some(anchor.as_str());
        let mut out = String::with_capacity(1024);
        let _ = write!(
            out,
            "<GetConfigDataResponse xmlns=\"{SERVER_SYNC_NS}\"><GetConfigDataResult>\
             <CatalogOnlySync>false</CatalogOnlySync><LazySync>true</LazySync>\
             <ServerHostsPsfFiles>false</ServerHostsPsfFiles>\
             <MaxNumberOfComputerIdsInRequest>{MAX_COMPUTER_IDS_PER_REQUEST}\
             </MaxNumberOfComputerIdsInRequest>\
             <MaxNumberOfDriverSetsPerRequest>0</MaxNumberOfDriverSetsPerRequest>\
             <MaxNumberOfPnpHardwareIdsInRequest>{MAX_PNP_IDS_PER_REQUEST}\
             </MaxNumberOfPnpHardwareIdsInRequest>\
             <MaxNumberOfUpdatesPerRequest>{MAX_UPDATES_PER_REQUEST}</MaxNumberOfUpdatesPerRequest>\
             <NewConfigAnchor>{anchor}</NewConfigAnchor>\
             <ProtocolVersion>{PROTOCOL_VERSION}</ProtocolVersion>"
        );
        // Every language is served: the one entry "all" (MS-WSUSSS §3.1.4.4).
        if current {
            out.push_str("<LanguageUpdateList/>");
        } else {
            out.push_str(
                "<LanguageUpdateList><ServerSyncLanguageData><LanguageID>0</LanguageID>\
                 <ShortLanguage>all</ShortLanguage><LongLanguage>all</LongLanguage>\
                 <Enabled>true</Enabled></ServerSyncLanguageData></LanguageUpdateList>",
            );
        }
        let _ = write!(
            out,
            "<MaxUpdatesPerRequestInGetUpdateDecryptionData>{MAX_UPDATES_PER_REQUEST}\
             </MaxUpdatesPerRequestInGetUpdateDecryptionData></GetConfigDataResult>\
             </GetConfigDataResponse>"
        );
        Ok(out)
    }

    /// The identities changed since the filter's anchor: categories, classifications and
    /// detectoids when `GetConfig`, software and drivers otherwise, narrowed to updates in a
    /// listed category and a listed classification when the filter lists any (MS-WSUSSS
    /// §3.1.4.5). An id listed with `Delta` false is listed whatever the anchor.
    async fn get_revision_id_list(
        &self,
        op: &Element,
        peer: Option<SocketAddr>,
        now: i64,
    ) -> Result<String> {
        let claims = self.downstream_cookie(op, now)?;
        let filter = op
            .child("filter")
            .filter(|f| !f.is_nil())
            .ok_or_else(|| Fault::invalid("filter"))?;
        let since = match filter.child_text("Anchor").map(str::trim) {
            None | Some("") => 0,
            Some(anchor) => parse_anchor(anchor).ok_or_else(|| Fault::invalid("filter"))?,
        };
        let config = filter
            .child_text("GetConfig")
            .and_then(parse_bool)
            .ok_or_else(|| Fault::invalid("filter"))?;
        let categories = ids_and_deltas(filter, "Categories")?;
        let classifications = ids_and_deltas(filter, "Classifications")?;
        let catalog = self.served.catalog();
        // An anchor from the future: this catalog was rebuilt since; everything is new.
        let since = if since > catalog.version { 0 } else { since };
        let mut out = String::with_capacity(4096);
        let _ = write!(
            out,
            "<GetRevisionIdListResponse xmlns=\"{SERVER_SYNC_NS}\"><GetRevisionIdListResult>\
             <Anchor>{}</Anchor><NewRevisions>",
            format_anchor(catalog.version, now)
        );
        for r in catalog.revisions() {
            let is_config = matches!(r.update_type, UpdateType::Category | UpdateType::Detectoid);
            if is_config != config {
                continue;
            }
            let mut delta = true;
            if !config && (categories.is_some() || classifications.is_some()) {
                let in_category = |listed: &Option<Vec<(Guid, bool)>>| {
                    let listed = listed.as_deref().unwrap_or(&[]);
                    let hits: Vec<bool> = r
                        .prerequisites
                        .iter()
                        .filter(|c| c.is_category)
                        .flat_map(|c| c.ids.iter())
                        .filter_map(|id| listed.iter().find(|(l, _)| l == id).map(|(_, d)| *d))
                        .collect();
                    (!hits.is_empty()).then(|| hits.iter().all(|d| *d))
                };
                match (in_category(&categories), in_category(&classifications)) {
                    (Some(a), Some(b)) => delta = a && b,
                    _ => continue,
                }
            }
            if delta && r.change_seq <= since {
                continue;
            }
            identity_element(&mut out, "UpdateIdentity", r.update_id, r.revision_number);
        }
        out.push_str("</NewRevisions></GetRevisionIdListResult></GetRevisionIdListResponse>");
        if !config {
            self.record(claims.client_id, peer, DownstreamSeen::Synced, now)
                .await;
        }
        Ok(out)
    }

    /// The driver revisions for device hardware ids (MS-WSUSSS §3.1.4.7), what a downstream
    /// that syncs only the drivers its clients need asks: every revision with metadata for a
    /// listed id, those changed since the filter's anchor only where the id is listed with
    /// `Delta` true. This node keeps no driver sets, so computer ids select nothing (the spec:
    /// unknown ones are ignored) and no set is listed.
    fn get_driver_id_list(&self, op: &Element, now: i64) -> Result<String> {
        self.downstream_cookie(op, now)?;
        let filter = op
            .child("filter")
            .filter(|f| !f.is_nil())
            .ok_or_else(|| Fault::invalid("filter"))?;
        let since = match filter.child_text("Anchor").map(str::trim) {
            None | Some("") => 0,
            Some(anchor) => parse_anchor(anchor).ok_or_else(|| Fault::invalid("filter.Anchor"))?,
        };
        let computers = ids_and_deltas(filter, "ComputerIds")?.unwrap_or_default();
        if computers.len() > MAX_COMPUTER_IDS_PER_REQUEST as usize {
            return Err(Fault::invalid("filter.ComputerIds"));
        }
        let devices: Vec<(String, bool)> = filter
            .child("PnpHardwareIds")
            .filter(|l| !l.is_nil())
            .map(|l| {
                l.children_named("HardwareIdAndDelta")
                    .map(|h| {
                        let id = h.child_text("Id").map(str::trim).filter(|i| !i.is_empty());
                        let delta = h.child_text("Delta").and_then(parse_bool);
                        id.map(str::to_ascii_lowercase)
                            .zip(delta)
                            .ok_or_else(|| Fault::invalid("filter.PnpHardwareIds"))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        if devices.len() > MAX_PNP_IDS_PER_REQUEST as usize {
            return Err(Fault::invalid("filter.PnpHardwareIds"));
        }
        let catalog = self.served.catalog();
        let since = if since > catalog.version { 0 } else { since };
        let mut revisions: Vec<u32> = devices
            .iter()
            .flat_map(|(id, delta)| {
                catalog
                    .driver_index()
                    .get(id)
                    .iter()
                    .map(|(revision, _)| *revision)
                    .filter(|r| {
                        !delta || catalog.revision(*r).is_some_and(|r| r.change_seq > since)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        revisions.sort_unstable();
        revisions.dedup();
        let mut out = format!(
            "<GetDriverIdListResponse xmlns=\"{SERVER_SYNC_NS}\"><GetDriverIdListResult>\
             <Anchor>{}</Anchor><NewRevisions>",
            format_anchor(catalog.version, now)
        );
        for r in revisions.iter().filter_map(|r| catalog.revision(*r)) {
            identity_element(&mut out, "UpdateIdentity", r.update_id, r.revision_number);
        }
        out.push_str("</NewRevisions></GetDriverIdListResult></GetDriverIdListResponse>");
        Ok(out)
    }

    /// The documents of at most [`MAX_UPDATES_PER_REQUEST`] identities, as imported (escaped
    /// text, never the compressed form), with the SHA-1 of each file; identities this server
    /// does not hold are left out (MS-WSUSSS §3.1.4.6). Files are fetched from this server's
    /// `/Content`, so no URL is given.
    async fn get_update_data(&self, op: &Element, now: i64) -> Result<String> {
        self.downstream_cookie(op, now)?;
        let catalog = self.served.catalog();
        let revisions: Vec<_> = identities(op, "updateIds")?
            .into_iter()
            .filter_map(|(update, number)| catalog.by_identity(update, number))
            .collect();
        let wanted: Vec<u32> = revisions.iter().map(|r| r.id).collect();
        let served = self.served.clone();
        let documents = tokio::task::spawn_blocking(move || served.read(|s| s.documents(&wanted)))
            .await
            .map_err(Fault::internal)?
            .map_err(Fault::internal)?;
        let mut out = String::with_capacity(documents.iter().map(|(_, d)| d.len() + 600).sum());
        let _ = write!(
            out,
            "<GetUpdateDataResponse xmlns=\"{SERVER_SYNC_NS}\"><GetUpdateDataResult><updates>"
        );
        let mut files = Vec::new();
        let documents: std::collections::HashMap<u32, String> = documents.into_iter().collect();
        for r in &revisions {
            let Some(document) = documents.get(&r.id) else {
                continue;
            };
            let _ = write!(
                out,
                "<ServerSyncUpdateData><Id><UpdateID>{}</UpdateID><RevisionNumber>{}\
                 </RevisionNumber></Id>",
                r.update_id, r.revision_number
            );
            soap::text_element(&mut out, "XmlUpdateBlob", document);
            if !r.files.is_empty() {
                out.push_str("<FileDigestList>");
                for f in &r.files {
                    let _ = write!(
                        out,
                        "<base64Binary>{}</base64Binary>",
                        base64_encode(&f.sha1)
                    );
                    if !files.contains(&f.sha1) {
                        files.push(f.sha1);
                    }
                }
                out.push_str("</FileDigestList>");
            }
            out.push_str("</ServerSyncUpdateData>");
        }
        out.push_str("</updates><fileUrls>");
        for sha1 in files {
            let _ = write!(
                out,
                "<ServerSyncUrlData><FileDigest>{}</FileDigest></ServerSyncUrlData>",
                base64_encode(&sha1)
            );
        }
        out.push_str("</fileUrls></GetUpdateDataResult></GetUpdateDataResponse>");
        Ok(out)
    }

    /// Approvals for the anchor window (`deploymentAnchor`, `syncAnchor`]: the downstream
    /// never hears of a deployment before the revision list that named its revision. Without
    /// a deploymentAnchor, every live deployment (the downstream replaces what it has). An
    /// anchor beyond this catalog's version was made before this catalog was rebuilt:
    /// ServerChanged, and the downstream starts over.
    async fn get_deployments(&self, op: &Element, now: i64) -> Result<String> {
        self.downstream_cookie(op, now)?;
        let version = self.served.catalog().version;
        let anchor = |name: &str| -> Result<Option<(i64, String)>> {
            match op.child_text(name).map(str::trim) {
                None | Some("") => Ok(None),
                Some(text) => {
                    let seq = parse_anchor(text).ok_or_else(|| Fault::invalid(name))?;
                    if seq > version {
                        return Err(Fault::new(
                            ErrorCode::ServerChanged,
                            "the anchor is from before this server's catalog was rebuilt",
                        ));
                    }
                    Ok(Some((seq, text.to_owned())))
                }
            }
        };
        let (until, sync_anchor) =
            anchor("syncAnchor")?.ok_or_else(|| Fault::invalid("syncAnchor"))?;
        let since = anchor("deploymentAnchor")?.map(|(seq, _)| seq);
        let served = self.served.clone();
        let set =
            tokio::task::spawn_blocking(move || served.read(|s| s.deployment_set(since, until)))
                .await
                .map_err(Fault::internal)?
                .map_err(Fault::internal)?;
        Ok(deployments_response(&sync_anchor, &set))
    }

    /// Decryption keys of the files of encrypted updates (MS-WSUSSS §3.1.4.18): per known
    /// identity asked, each of its files' digests with the key when this node holds one
    /// (imported at a root, or synced from its own upstream). Unknown identities are left out.
    fn get_update_decryption_data(&self, op: &Element, now: i64) -> Result<String> {
        self.downstream_cookie(op, now)?;
        let catalog = self.served.catalog();
        let mut out = format!(
            "<GetUpdateDecryptionDataResponse xmlns=\"{SERVER_SYNC_NS}\">\
             <GetUpdateDecryptionDataResult><UpdateFileDecryptionData>"
        );
        for (update, number) in identities(op, "updateIds")? {
            let Some(r) = catalog.by_identity(update, number) else {
                continue;
            };
            out.push_str("<ServerSyncUpdateFileDecryption>");
            identity_element(&mut out, "UpdateId", update, number);
            out.push_str("<FileDecryptionData>");
            for f in &r.files {
                let _ = write!(
                    out,
                    "<ServerSyncFileDecryption><FileDigest>{}</FileDigest>",
                    base64_encode(&f.sha1)
                );
                if let Some(key) = catalog.key(&f.sha1) {
                    let _ = write!(out, "<DecryptionKey>{}</DecryptionKey>", base64_encode(key));
                }
                out.push_str("</ServerSyncFileDecryption>");
            }
            out.push_str("</FileDecryptionData></ServerSyncUpdateFileDecryption>");
        }
        out.push_str(
            "</UpdateFileDecryptionData></GetUpdateDecryptionDataResult>\
             </GetUpdateDecryptionDataResponse>",
        );
        Ok(out)
    }

    /// A downstream server asks this one to get files it lacks (MS-WSUSSS §3.1.4.11). Every
    /// file of the catalog is fetched on demand when a downstream asks for it by URL, so
    /// there is nothing to start here; digests this catalog does not name are
    /// FileDigestsMissing, joined by `|`.
    fn download_files(&self, op: &Element, now: i64) -> Result<String> {
        self.downstream_cookie(op, now)?;
        let digests: Vec<&str> = op
            .child("fileDigestList")
            .filter(|l| !l.is_nil())
            .map(|l| {
                l.children_named("base64Binary")
                    .map(|d| d.text.as_str())
                    .collect()
            })
            .unwrap_or_default();
        if digests.is_empty() || digests.len() > MAX_UPDATES_PER_REQUEST as usize {
            return Err(Fault::invalid("fileDigestList"));
        }
        let catalog = self.served.catalog();
        let mut missing = Vec::new();
        for text in digests {
            let sha1: Option<[u8; 20]> = base64_decode(text).and_then(|d| d.try_into().ok());
            if sha1.is_none_or(|d| catalog.file(&d).is_none()) {
                missing.push(text.trim());
            }
        }
        if !missing.is_empty() {
            return Err(Fault::new(ErrorCode::FileDigestsMissing, missing.join("|")));
        }
        Ok(format!(
            "<DownloadFilesResponse xmlns=\"{SERVER_SYNC_NS}\"/>"
        ))
    }
}

/// `seq,yyyy-MM-dd HH:mm:ss.fff` (UTC), the shape WSUS anchors have.
fn format_anchor(seq: i64, now: i64) -> String {
    let stamp = format_datetime(now);
    format!(
        "{seq},{}.000",
        stamp.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

/// The catalog version of an anchor this server made.
fn parse_anchor(anchor: &str) -> Option<i64> {
    let (seq, _) = anchor.split_once(',')?;
    seq.trim().parse().ok().filter(|s: &i64| *s >= 0)
}

/// A filter's ArrayOfIdAndDelta: `None` when absent.
fn ids_and_deltas(filter: &Element, name: &str) -> Result<Option<Vec<(Guid, bool)>>> {
    let Some(list) = filter.child(name).filter(|l| !l.is_nil()) else {
        return Ok(None);
    };
    list.children_named("IdAndDelta")
        .map(|e| {
            let id = e.child_text("Id").and_then(Guid::parse);
            let delta = e.child_text("Delta").and_then(parse_bool);
            id.zip(delta).ok_or_else(|| Fault::invalid("filter"))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// An UpdateIdentity named `name`.
fn identity_element(out: &mut String, name: &str, update: Guid, number: u32) {
    let _ = write!(
        out,
        "<{name}><UpdateID>{update}</UpdateID><RevisionNumber>{number}</RevisionNumber></{name}>"
    );
}

/// `name`'s ArrayOfUpdateIdentity: 1..=[`MAX_UPDATES_PER_REQUEST`] well-formed identities, or
/// InvalidParameters naming it.
fn identities(op: &Element, name: &str) -> Result<Vec<(Guid, u32)>> {
    let items: Vec<&Element> = op
        .child(name)
        .filter(|u| !u.is_nil())
        .map(|u| u.children_named("UpdateIdentity").collect())
        .unwrap_or_default();
    if items.is_empty() || items.len() > MAX_UPDATES_PER_REQUEST as usize {
        return Err(Fault::invalid(name));
    }
    items
        .into_iter()
        .map(|id| {
            id.child_text("UpdateID")
                .and_then(Guid::parse)
                .zip(
                    id.child_text("RevisionNumber")
                        .and_then(|r| r.trim().parse::<u32>().ok()),
                )
                .ok_or_else(|| Fault::invalid(name))
        })
        .collect()
}

/// MS-WSUSSS deployment actions: 0 Install, 1 Uninstall, 2 scan for presence (the client's
/// PreDeploymentCheck), 3 Block. The protocol has no optional install: it travels as Install
/// with IsAssigned false, which is what tells a client the update is optional.
pub fn action_code(action: Action) -> (u8, bool) {
    match action {
        Action::OptionalInstall => (0, false),
        Action::Uninstall => (1, true),
        Action::PreDeploymentCheck => (2, true),
        Action::Block => (3, true),
        Action::Install | Action::Evaluate | Action::Bundle => (0, true),
    }
}

/// The action of a received deployment.
pub fn action_from_code(code: u8, assigned: bool) -> Option<Action> {
    Some(match (code, assigned) {
        (0, true) => Action::Install,
        (0, false) => Action::OptionalInstall,
        (1, _) => Action::Uninstall,
        (2, _) => Action::PreDeploymentCheck,
        (3, _) => Action::Block,
        _ => return None,
    })
}

/// "No deadline" on the wire (MS-WSUSSS §3.1.4.10.3.5).
pub const NO_DEADLINE: &str = "9999-12-31T23:59:59.9999999";

fn deployments_response(anchor: &str, set: &DeploymentSet) -> String {
    let mut out = String::with_capacity(1024 + 600 * set.deployments.len());
    let _ = write!(
        out,
        "<GetDeploymentsResponse xmlns=\"{SERVER_SYNC_NS}\"><GetDeploymentsResult>"
    );
    soap::text_element(&mut out, "Anchor", anchor);
    out.push_str("<Groups>");
    for g in &set.groups {
        // The root's parent is the zero GUID; a group without one hangs under All Computers.
        let parent = match g.parent {
            Some(p) => p,
            None if g.id == ALL_COMPUTERS => Guid::NIL,
            None => ALL_COMPUTERS,
        };
        let _ = write!(
            out,
            "<ServerSyncTargetGroup><TargetGroupID>{}</TargetGroupID>\
             <ParentGroupId>{parent}</ParentGroupId>",
            g.id
        );
        soap::text_element(&mut out, "Name", &g.name);
        let _ = write!(
            out,
            "<IsBuiltin>{}</IsBuiltin></ServerSyncTargetGroup>",
            g.builtin
        );
    }
    out.push_str("</Groups><Deployments>");
    for d in &set.deployments {
        let (code, assigned) = action_code(d.action);
        let _ = write!(
            out,
            "<ServerSyncDeployment><UpdateId>{}</UpdateId><RevisionNumber>{}</RevisionNumber>\
             <Action>{code}</Action>",
            d.update_id, d.revision_number
        );
        soap::text_element(&mut out, "AdminName", &d.admin_name);
        let deadline = d
            .deadline
            .map_or_else(|| NO_DEADLINE.to_owned(), format_datetime);
        let _ = write!(
            out,
            "<Deadline>{deadline}</Deadline><IsAssigned>{assigned}</IsAssigned>\
             <GoLiveTime>{}</GoLiveTime><DeploymentGuid>{}</DeploymentGuid>\
             <TargetGroupId>{}</TargetGroupId><DownloadPriority>{}</DownloadPriority>\
             </ServerSyncDeployment>",
            format_datetime(d.go_live),
            d.guid,
            d.group,
            d.download_priority.clamp(1, 3)
        );
    }
    out.push_str("</Deployments>");
    for (name, list) in [
        ("DeadDeployments", &set.dead),
        ("HiddenUpdates", &set.hidden),
        ("AcceptedEulas", &set.accepted_eulas),
    ] {
        let _ = write!(out, "<{name}>");
        for g in list {
            let _ = write!(out, "<guid>{g}</guid>");
        }
        let _ = write!(out, "</{name}>");
    }
    out.push_str("</GetDeploymentsResult></GetDeploymentsResponse>");
    out
}
