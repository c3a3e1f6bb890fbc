//! The client protocol (MS-WUSP): the SimpleAuth, Client and Reporting web services Windows
//! Update Agents call, answered from the local catalog, as a WSUS server answers them.
//!
//! A request is a SOAP body and the service it was posted to; the answer is a SOAP envelope and
//! an HTTP status (500 for faults, as ASP.NET web services send them). Every fault carries the
//! protocol's ErrorCode, Message, ID and Method. The server keeps no session per client: what it
//! must remember of one travels in the cookie ([`crate::served::cookie`]), except whether the
//! computer registered (the `report` journal).
//!
//! Owns: request parsing and response writing of the three services, the handlers. May call:
//! `soap` (envelopes, the WSUS fault shape), `catalog`, `served` (the catalog in service, the
//! cookie key), `report`, `error`. Knows no socket: the server hands it bytes.

mod handlers;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::CatalogError;
use crate::served::Served;
use crate::soap::wsus::{Fault, Reply, fault_in};
use crate::soap::{self, Limits, Version};
use crate::state::Journal;

pub const CLIENT_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";
pub const SIMPLE_AUTH_NS: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService";
pub const REPORTING_NS: &str = "http://www.microsoft.com/SoftwareDistribution";

/// The three services and where clients find them (paths compared case-insensitively; the
/// Reporting service answers under both spellings in circulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    SimpleAuth,
    Client,
    Reporting,
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let p = path.to_ascii_lowercase();
        match p.trim_end_matches('/') {
            "/clientwebservice/client.asmx" => Some(Endpoint::Client),
            "/simpleauthwebservice/simpleauth.asmx" => Some(Endpoint::SimpleAuth),
            "/reportingwebservice/reportingwebservice.asmx"
            | "/reportingwebservice/webservice.asmx" => Some(Endpoint::Reporting),
            _ => None,
        }
    }

    pub fn namespace(self) -> &'static str {
        match self {
            Endpoint::Client => CLIENT_NS,
            Endpoint::SimpleAuth => SIMPLE_AUTH_NS,
            Endpoint::Reporting => REPORTING_NS,
        }
    }
}

/// What a node's client protocol is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a client cookie is good for (WSUS: one hour).
    pub cookie_lifetime: i64,
    /// NewUpdates per SyncUpdates page.
    pub page_size: usize,
    /// GetConfig's MaxExtendedUpdatesPerRequest.
    pub max_extended: usize,
    /// Largest InstalledNonLeafUpdateIDs list accepted (WSUS: 400).
    pub max_installed: usize,
    pub limits: Limits,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            cookie_lifetime: 3600,
            page_size: 200,
            max_extended: 50,
            max_installed: 400,
            limits: Limits::default(),
        }
    }
}

/// One call as the server received it.
pub struct Call<'a> {
    pub endpoint: Endpoint,
    /// The SOAPAction header (or the SOAP 1.2 action parameter), quotes included or not.
    pub action: Option<&'a str>,
    /// `http://host:port` content URLs are made from (the content listener as the client
    /// reached this node).
    pub content_base: &'a str,
    /// Seconds since the epoch.
    pub now: i64,
}

/// The client protocol of one node.
pub struct Service {
    settings: Settings,
    served: Arc<Served>,
    journal: Mutex<Journal>,
    registered: RwLock<HashSet<String>>,
    /// The device ids clients listed in driver passes (see [`MAX_DEVICE_IDS`]).
    device_ids: RwLock<HashSet<String>>,
}

/// The most distinct device ids a node keeps of its clients' driver passes: a fleet of a
/// thousand PCs lists some tens of thousands; past this, new ones are not kept.
pub const MAX_DEVICE_IDS: usize = 500_000;

impl Service {
    /// Answer from `served`; registrations are kept in `data_dir`'s journal (blocking).
    pub fn open(
        served: Arc<Served>,
        database: &crate::state::Database,
        settings: Settings,
    ) -> Result<Service, CatalogError> {
        let journal = Journal::open(database)?;
        let registered = journal.registered()?;
        let device_ids = journal
            .device_ids()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok(Service {
            settings,
            served,
            journal: Mutex::new(journal),
            registered: RwLock::new(registered),
            device_ids: RwLock::new(device_ids),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.settings.limits
    }

    /// The most a request body may be.
    pub fn max_body(&self) -> usize {
        self.settings.limits.max_bytes
    }

    /// Answer one call, its body parsed under [`limits_for`] its operation.
    pub async fn call(self: &Arc<Self>, call: Call<'_>, envelope: soap::Envelope) -> Reply {
        let version = envelope.version;
        let op = envelope.operation;
        let name = op.name.clone();
        if op.ns.as_deref() != Some(call.endpoint.namespace()) {
            return fault_reply(
                version,
                call.endpoint,
                &name,
                &Fault::invalid(format!("{name} is not an operation of this service")),
            );
        }
        let out = soap::open_envelope(version, 0);
        let result = handlers::dispatch(self, call.endpoint, &op, &call, out).await;
        match result {
            Ok(body) => Reply {
                status: 200,
                content_type: version.content_type(),
                body: soap::close_envelope(body),
                operation: name,
                fault: None,
            },
            Err(fault) => fault_reply(version, call.endpoint, &name, &fault),
        }
    }
}

/// The parse limits of a client call of `operation` (as the body names it, before parsing):
/// the service's `base`, with the element count cut to what the operation can carry, so that a
/// small compressed body of empty elements cannot make a large tree.
pub fn limits_for(base: &Limits, operation: Option<&str>) -> Limits {
    let elements = match operation {
        // The revision IDs a client has installed and cached: thousands of <int>, tens of
        // thousands on a machine with years of history.
        Some("SyncUpdates") => 100_000,
        // Revision IDs, file digests or events asked about or reported in one call; the agent
        // sends them in batches of hundreds.
        Some(
            "GetExtendedUpdateInfo"
            | "GetExtendedUpdateInfo2"
            | "GetFileLocations"
            | "RefreshCache"
            | "ReportEventBatch",
        ) => 50_000,
        // Cookies, configuration, registration: a few dozen elements.
        _ => 2_000,
    };
    Limits {
        max_elements: base.max_elements.min(elements),
        packed: packed_arrays(operation),
        ..*base
    }
}

/// The id lists of an operation, read as text rather than an element per id
/// (`handlers::int_items`): nearly all of a large SyncUpdates or GetExtendedUpdateInfo.
fn packed_arrays(operation: Option<&str>) -> &'static [&'static str] {
    match operation {
        Some("SyncUpdates") => &[
            "InstalledNonLeafUpdateIDs",
            "OtherCachedUpdateIDs",
            "CachedDriverIDs",
        ],
        Some("GetExtendedUpdateInfo") => &["revisionIDs"],
        _ => &[],
    }
}

/// Whether a call of `operation` has its id lists packed: its parse costs little per byte.
pub fn packs_ids(operation: Option<&str>) -> bool {
    !packed_arrays(operation).is_empty()
}

/// The fault for a request body over the limit, sent without reading the body.
pub fn oversized(endpoint: Endpoint, limit: usize) -> Reply {
    fault_reply(
        Version::Soap11,
        endpoint,
        "(unparsed)",
        &Fault::invalid(format!("request body over {limit} bytes")),
    )
}

fn fault_reply(version: Version, endpoint: Endpoint, operation: &str, fault: &Fault) -> Reply {
    fault_in(version, endpoint.namespace(), operation, fault)
}
