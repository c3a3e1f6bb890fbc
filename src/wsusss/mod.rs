//! The server-server protocol (MS-WSUSSS), upstream side: what a node answers its downstream
//! servers at `/ServerSyncWebService/ServerSyncWebService.asmx` and
//! `/DssAuthWebService/DssAuthWebService.asmx`. Today: authorization (GetAuthConfig,
//! GetAuthorizationCookie, GetCookie), GetConfigData and Ping; the revision list, update data
//! and deployments come next.
//!
//! Cookies are the client protocol's sealed struct ([`crate::wusp::cookie`]) with kinds of
//! their own, so a client cookie never opens as a server one. Faults are the WSUS ones
//! (ErrorCode, Message, ID, Method; HTTP 500). Owns: request parsing and response writing of
//! the two services. May call: `soap`, `wusp` (the catalog in service, the cookie key, faults),
//! `catalog`. Knows no socket: the server hands it bytes.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::catalog::{Guid, base64_decode, base64_encode};
use crate::soap::xsd::{format_datetime, parse_version};
use crate::soap::{self, Element, Version};
use crate::wusp::cookie::{Claims, Kind};
use crate::wusp::{ErrorCode, Fault, Reply, fault_in};

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

/// The two services and where downstream servers find them (paths compared
/// case-insensitively; WSUS downstreams have been seen doubling the first slash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ServerSync,
    DssAuth,
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
            Endpoint::ServerSync => SERVER_SYNC_NS,
            Endpoint::DssAuth => DSS_AUTH_NS,
        }
    }
}

type Result<T> = std::result::Result<T, Fault>;

/// The upstream side of one node, answering from the catalog the client protocol serves.
pub struct Service {
    wusp: Arc<crate::wusp::Service>,
}

impl Service {
    pub fn new(wusp: Arc<crate::wusp::Service>) -> Service {
        Service { wusp }
    }

    /// Answer one call posted to `endpoint` at `now` (seconds since the epoch).
    pub fn call(&self, endpoint: Endpoint, body: &[u8], now: i64) -> Reply {
        let envelope = match soap::parse(body, self.wusp.limits()) {
            Ok(e) => e,
            Err(e) => {
                return fault_in(
                    Version::Soap11,
                    endpoint.namespace(),
                    "(unparsed)",
                    &Fault::invalid(e.to_string()),
                );
            }
        };
        let (version, op) = (envelope.version, envelope.operation);
        let ns = op.ns.as_deref().unwrap_or("");
        let result = match (endpoint, ns, op.name.as_str()) {
            (_, MONITORABLE_NS, "Ping") => {
                Ok(format!("<PingResponse xmlns=\"{MONITORABLE_NS}\"/>"))
            }
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetAuthConfig") => Ok(self.get_auth_config()),
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetCookie") => self.get_cookie(&op, now),
            (Endpoint::ServerSync, SERVER_SYNC_NS, "GetConfigData") => {
                self.get_config_data(&op, now)
            }
            (Endpoint::DssAuth, DSS_AUTH_NS, "GetAuthorizationCookie") => {
                self.get_authorization_cookie(&op, now)
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
        let catalog = self.wusp.catalog();
        format!(
            "<GetAuthConfigResponse xmlns=\"{SERVER_SYNC_NS}\"><GetAuthConfigResult>\
             <LastChange>{}</LastChange><AuthInfo><AuthPlugInInfo><PlugInID>{PLUG_IN}</PlugInID>\
             <ServiceUrl>DssAuthWebService/DssAuthWebService.asmx</ServiceUrl><Parameter/>\
             </AuthPlugInInfo></AuthInfo></GetAuthConfigResult></GetAuthConfigResponse>",
            format_datetime(catalog.config_last_change)
        )
    }

    /// DssAuth: who the downstream server says it is (its name and id), sealed.
    fn get_authorization_cookie(&self, op: &Element, now: i64) -> Result<String> {
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
            server_id: self.wusp.server_id(),
            issued: now,
            expires: now + AUTHORIZATION_LIFETIME,
            config_change: 0,
            anchor: 0,
            groups: Vec::new(),
            client_id: id.to_string(),
            protocol: String::new(),
        };
        Ok(format!(
            "<GetAuthorizationCookieResponse xmlns=\"{DSS_AUTH_NS}\"><GetAuthorizationCookieResult>\
             <PlugInId>{PLUG_IN}</PlugInId><CookieData>{}</CookieData>\
             </GetAuthorizationCookieResult></GetAuthorizationCookieResponse>",
            base64_encode(&self.wusp.sealer().seal(&claims))
        ))
    }

    /// The session cookie, from exactly one authorization cookie of this server.
    fn get_cookie(&self, op: &Element, now: i64) -> Result<String> {
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
            .wusp
            .sealer()
            .open_cookie(&sealed, Kind::DownstreamAuthorization)
            .map_err(|_| refused())?;
        if authorized.server_id != self.wusp.server_id() || authorized.expires <= now {
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
        Ok(format!(
            "<GetCookieResponse xmlns=\"{SERVER_SYNC_NS}\"><GetCookieResult>\
             <Expiration>{}</Expiration><EncryptedData>{}</EncryptedData>\
             </GetCookieResult></GetCookieResponse>",
            format_datetime(claims.expires),
            base64_encode(&self.wusp.sealer().seal(&claims))
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
            .wusp
            .sealer()
            .open_cookie(&bytes, Kind::Downstream)
            .map_err(|_| invalid("not a cookie of this server"))?;
        if claims.server_id != self.wusp.server_id() {
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
        let anchor = self.wusp.catalog().config_last_change.to_string();
        let current = op.child_text("configAnchor").map(str::trim) == Some(anchor.as_str());
        let mut out = String::with_capacity(1024);
        let _ = write!(
            out,
            "<GetConfigDataResponse xmlns=\"{SERVER_SYNC_NS}\"><GetConfigDataResult>\
             <CatalogOnlySync>false</CatalogOnlySync><LazySync>true</LazySync>\
             <ServerHostsPsfFiles>false</ServerHostsPsfFiles>\
             <MaxNumberOfComputerIdsInRequest>0</MaxNumberOfComputerIdsInRequest>\
             <MaxNumberOfDriverSetsPerRequest>0</MaxNumberOfDriverSetsPerRequest>\
             <MaxNumberOfPnpHardwareIdsInRequest>0</MaxNumberOfPnpHardwareIdsInRequest>\
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
}
