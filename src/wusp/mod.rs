//! The client protocol (MS-WUSP): the SimpleAuth, Client and Reporting web services Windows
//! Update Agents call, answered from the local catalog, as a WSUS server answers them.
//!
//! A request is a SOAP body and the service it was posted to; the answer is a SOAP envelope and
//! an HTTP status (500 for faults, as ASP.NET web services send them). Every fault carries the
//! protocol's ErrorCode, Message, ID and Method. The server keeps no session per client: what it
//! must remember of one travels in the cookie ([`cookie`]), except whether the computer
//! registered (the `report` journal).
//!
//! Owns: request parsing and response writing of the three services, the handlers. May call:
//! `soap`, `catalog`, `report`, `error`. Knows no socket: the server hands it bytes.

pub mod cookie;
mod handlers;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::store::Store;
use crate::catalog::{Catalog, CatalogError, Guid};
use crate::lock::lock;
use crate::report::Journal;
use crate::soap::{self, Limits, Version};
use cookie::Sealer;

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

/// The protocol's fault codes (MS-WUSP §2.2.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidCookie,
    ConfigChanged,
    RegistrationRequired,
    ServerChanged,
    InternalServerError,
    CookieExpired,
    InvalidParameters,
    InvalidAuthorizationCookie,
    RegistrationNotRequired,
    ServerBusy,
    FileLocationChanged,
    /// MS-WSUSSS only.
    IncompatibleProtocolVersion,
    /// MS-WSUSSS DownloadFiles: digests the upstream does not know.
    FileDigestsMissing,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidCookie,
        ErrorCode::ConfigChanged,
        ErrorCode::RegistrationRequired,
        ErrorCode::ServerChanged,
        ErrorCode::InternalServerError,
        ErrorCode::CookieExpired,
        ErrorCode::InvalidParameters,
        ErrorCode::InvalidAuthorizationCookie,
        ErrorCode::RegistrationNotRequired,
        ErrorCode::ServerBusy,
        ErrorCode::FileLocationChanged,
        ErrorCode::IncompatibleProtocolVersion,
        ErrorCode::FileDigestsMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidCookie => "InvalidCookie",
            ErrorCode::ConfigChanged => "ConfigChanged",
            ErrorCode::RegistrationRequired => "RegistrationRequired",
            ErrorCode::ServerChanged => "ServerChanged",
            ErrorCode::InternalServerError => "InternalServerError",
            ErrorCode::CookieExpired => "CookieExpired",
            ErrorCode::InvalidParameters => "InvalidParameters",
            ErrorCode::InvalidAuthorizationCookie => "InvalidAuthorizationCookie",
            ErrorCode::RegistrationNotRequired => "RegistrationNotRequired",
            ErrorCode::ServerBusy => "ServerBusy",
            ErrorCode::FileLocationChanged => "FileLocationChanged",
            ErrorCode::IncompatibleProtocolVersion => "IncompatibleProtocolVersion",
            ErrorCode::FileDigestsMissing => "FileDigestsMissing",
        }
    }

    /// A fault's ErrorCode as an upstream sent it (case-sensitive, as the protocol says).
    pub fn parse(text: &str) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == text.trim())
    }
}

/// A protocol fault: its code and a message (for InvalidParameters, the parameter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: ErrorCode,
    pub message: String,
}

impl Fault {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Fault {
        Fault {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(parameter: impl Into<String>) -> Fault {
        Fault::new(ErrorCode::InvalidParameters, parameter)
    }

    pub fn internal(e: impl std::fmt::Display) -> Fault {
        Fault::new(ErrorCode::InternalServerError, e.to_string())
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

/// The HTTP answer to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// The operation answered (or faulted), for logs and metrics.
    pub operation: String,
    pub fault: Option<ErrorCode>,
}

/// What a computer's groups may see, by revision id.
type Scope = Arc<crate::catalog::scope::Scope>;

struct Loaded {
    catalog: Arc<Catalog>,
    /// [`Store::catalog_version`] of `catalog`.
    catalog_version: i64,
    /// The [`Store::data_version`] last seen with that catalog version; moved on (without a
    /// reload) when other writers, such as the report journal, commit.
    data_version: AtomicI64,
    /// Scopes by the set of groups they were computed for and [`Catalog::live_epoch`].
    scopes: Mutex<HashMap<(Vec<Guid>, usize), Scope>>,
}

/// The client protocol of one node.
pub struct Service {
    settings: Settings,
    sealer: Sealer,
    server_id: Guid,
    loaded: RwLock<Arc<Loaded>>,
    store: Mutex<Store>,
    journal: Mutex<Journal>,
    registered: RwLock<HashSet<String>>,
}

impl Service {
    /// Open the catalog, the journal and the cookie key of `data_dir` (blocking).
    pub fn open(data_dir: &Path, settings: Settings) -> Result<Service, CatalogError> {
        let store = Store::open(data_dir)?;
        let journal = Journal::open(data_dir)?;
        let sealer =
            Sealer::open(data_dir).map_err(|e| CatalogError::Store(format!("cookie key: {e}")))?;
        let server_id = store.server_id()?;
        let data_version = store.data_version()?;
        let catalog_version = store.catalog_version()?;
        let catalog = Arc::new(store.load()?);
        let registered = journal.registered()?;
        Ok(Service {
            settings,
            sealer,
            server_id,
            loaded: RwLock::new(Arc::new(Loaded {
                catalog,
                catalog_version,
                data_version: AtomicI64::new(data_version),
                scopes: Mutex::new(HashMap::new()),
            })),
            store: Mutex::new(store),
            journal: Mutex::new(journal),
            registered: RwLock::new(registered),
        })
    }

    /// Read from state.db what the catalog in memory does not keep (update documents,
    /// deployment history). Blocking.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        f(&lock(&self.store))
    }

    /// This server's identity (in every cookie it issues).
    pub fn server_id(&self) -> Guid {
        self.server_id
    }

    /// The key cookies are sealed with, shared with the server-server protocol.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn limits(&self) -> &Limits {
        &self.settings.limits
    }

    /// The most a request body may be.
    pub fn max_body(&self) -> usize {
        self.settings.limits.max_bytes
    }

    fn loaded(&self) -> Arc<Loaded> {
        crate::lock::read(&self.loaded).clone()
    }

    /// The catalog requests are answered from now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.loaded().catalog.clone()
    }

    /// Load the catalog again if another process (an import, an approval) changed state.db.
    /// Blocking. True when a new catalog is in service.
    pub fn reload_if_changed(&self) -> Result<bool, CatalogError> {
        let store = lock(&self.store);
        let loaded = self.loaded();
        let data_version = store.data_version()?;
        if data_version == loaded.data_version.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if store.catalog_version()? == loaded.catalog_version {
            loaded.data_version.store(data_version, Ordering::Relaxed);
            return Ok(false);
        }
        self.serve_from(&store)?;
        Ok(true)
    }

    /// Change state.db through this node's own connection (the admin API) and serve the result
    /// at once: a connection's own commits do not move its `data_version`, so the periodic
    /// reload would not see them. Blocking.
    pub fn change<T>(
        &self,
        f: impl FnOnce(&mut Store, &Catalog) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let mut store = lock(&self.store);
        let out = f(&mut store, &self.catalog())?;
        self.serve_from(&store)?;
        Ok(out)
    }

    /// Load the catalog from `store` and put it into service (its scopes computed afresh).
    fn serve_from(&self, store: &Store) -> Result<(), CatalogError> {
        let data_version = store.data_version()?;
        let catalog_version = store.catalog_version()?;
        let fresh = Arc::new(Loaded {
            catalog: Arc::new(store.load()?),
            catalog_version,
            data_version: AtomicI64::new(data_version),
            scopes: Mutex::new(HashMap::new()),
        });
        *crate::lock::write(&self.loaded) = fresh;
        Ok(())
    }

    /// What a computer in `groups` may see at `now` (cached per group set, catalog and the
    /// go-live times passed).
    fn scope(&self, loaded: &Loaded, groups: &[Guid], now: i64) -> Scope {
        let mut groups = groups.to_vec();
        groups.sort_unstable();
        let key = (groups, loaded.catalog.live_epoch(now));
        let mut scopes = lock(&loaded.scopes);
        if let Some(s) = scopes.get(&key) {
            return s.clone();
        }
        let s = Arc::new(crate::catalog::scope::scope(&loaded.catalog, &key.0, now));
        if scopes.len() > 1024 {
            scopes.clear();
        }
        scopes.insert(key, s.clone());
        s
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
        let result = handlers::dispatch(self, call.endpoint, &op, &call).await;
        match result {
            Ok(body) => Reply {
                status: 200,
                content_type: version.content_type(),
                body: soap::envelope(version, &body),
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
            "GetExtendedUpdateInfo" | "GetFileLocations" | "RefreshCache" | "ReportEventBatch",
        ) => 50_000,
        // Cookies, configuration, registration: a few dozen elements.
        _ => 2_000,
    };
    Limits {
        max_elements: base.max_elements.min(elements),
        ..*base
    }
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

/// A fault answer as the WSUS web services send it: HTTP 500, ErrorCode, Message, ID and
/// Method (the SOAPAction of `operation` in `ns`) in the detail.
pub fn fault_in(version: Version, ns: &str, operation: &str, fault: &Fault) -> Reply {
    let mut detail = String::new();
    soap::text_element(&mut detail, "ErrorCode", fault.code.as_str());
    soap::text_element(&mut detail, "Message", &fault.message);
    soap::text_element(&mut detail, "ID", &Guid::random().to_string());
    soap::text_element(&mut detail, "Method", &format!("\"{ns}/{operation}\""));
    let code = match fault.code {
        ErrorCode::InternalServerError | ErrorCode::ServerBusy => soap::FaultCode::Server,
        _ => soap::FaultCode::Client,
    };
    Reply {
        status: 500,
        content_type: version.content_type(),
        body: soap::fault(version, code, "Fault occurred", Some(&detail)),
        operation: operation.to_owned(),
        fault: Some(fault.code),
    }
}
