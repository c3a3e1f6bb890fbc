//! A simulated Windows Update Agent: the scan sequence of a real client against a node's client
//! protocol (GetConfig, GetAuthorizationCookie, GetCookie, RegisterComputer, SyncUpdates until
//! nothing is new, the driver pass, GetExtendedUpdateInfo), local evaluation good enough to walk
//! prerequisites, then Delivery Optimization downloads of what it was told to install, checked
//! against their SHA-1, and the events a client reports.
//!
//! A client only: it writes requests and reads responses with the `soap` codecs and speaks HTTP;
//! it never calls a handler. Requests look like the captured Windows 11 ones, and ask xpress
//! answers as those do (decoded by `http::coding`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{Download, HttpClient, Options, SplitMix, delivery_optimization};
use crate::catalog::{Guid, base64_decode};
use crate::content::path::Digest;
use crate::error::{Error, Kind, Result};
use crate::http::coding::Coding;
use crate::soap::wsus::ErrorCode;
use crate::soap::xsd::format_datetime;
use crate::soap::{Element, Limits};
use crate::soap_client::{self, Failure};

const CLIENT: &str = "/ClientWebService/client.asmx";
const SIMPLE_AUTH: &str = "/SimpleAuthWebService/SimpleAuth.asmx";
const REPORTING: &str = "/ReportingWebService/ReportingWebService.asmx";
const CLIENT_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";
const AUTH_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService";
const REPORTING_NS: &str = "http://www.microsoft.com/SoftwareDistribution";
const AGENT: &str = "Windows-Update-Agent/1507.2601.30012.0 Client-Protocol/2.90";

/// The HTTP client of simulated agents, and the coding they ask answers in.
#[derive(Clone)]
pub struct SoapClient {
    http: Client<HttpConnector, Full<Bytes>>,
    accepts: Coding,
}

/// Agents asking xpress answers, as Windows does.
pub fn soap_client() -> SoapClient {
    soap_client_accepting(Coding::Xpress)
}

/// Agents asking answers in `accepts` (none: `Coding::Identity`).
pub fn soap_client_accepting(accepts: Coding) -> SoapClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    SoapClient {
        http: Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector),
        accepts,
    }
}

/// Who the simulated computer is.
#[derive(Debug, Clone)]
pub struct Machine {
    pub client_id: String,
    pub dns_name: String,
    /// Client-side targeting ("Ring 1"), or none.
    pub target_group: Option<String>,
    /// Seeds which detectoids evaluate as installed: a detectoid is installed unless this seed
    /// rules it out (one in `detectoid_miss` chance each).
    pub seed: u64,
    pub detectoid_miss: u64,
    /// Its devices, which its driver pass lists; none: an empty SystemSpec.
    pub pc: Option<std::sync::Arc<crate::testkit::drivers::Pc>>,
}

impl Machine {
    pub fn new(n: u64, target_group: Option<&str>) -> Machine {
        let id = Guid::random();
        Machine {
            client_id: id.to_string(),
            dns_name: format!("pc{n:05}.branch.example"),
            target_group: target_group.map(str::to_owned),
            seed: n,
            detectoid_miss: 0,
            pc: None,
        }
    }

    /// The same machine with devices.
    pub fn with_pc(mut self, pc: crate::testkit::drivers::Pc) -> Machine {
        self.pc = Some(std::sync::Arc::new(pc));
        self
    }
}

/// An update the server told the client to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    pub revision: u32,
    pub update_id: Guid,
    pub revision_number: u32,
    pub action: String,
}

/// What one scan (and its downloads and reports) did.
#[derive(Debug, Default)]
pub struct Scan {
    /// Everything the server sent, in order.
    pub received: Vec<Offered>,
    /// Deployments sent again as ChangedUpdates (those changed since the cookie's anchor):
    /// (revision id, action).
    pub changed: Vec<(u32, String)>,
    /// What it was told to install (Install / OptionalInstall).
    pub offered: Vec<Offered>,
    /// The drivers its driver pass was sent, with the hardware ids each was chosen for.
    pub drivers: Vec<(Offered, Vec<String>)>,
    /// SyncUpdates calls (pages).
    pub pages: usize,
    /// (operation, latency) of every SOAP call.
    pub calls: Vec<(&'static str, Duration)>,
    /// Bytes of SOAP answers as they came on the wire (coded, when the node coded them).
    pub answer_bytes: u64,
    /// Calls answered ServerBusy, and made again.
    pub busy: usize,
    pub files: Vec<Download>,
    pub downloads_verified: usize,
    pub events_reported: usize,
    /// The HTTP-level faults seen (operation, ErrorCode).
    pub faults: Vec<(&'static str, String)>,
    /// The client's update cache when the scan ended: what its next scan reports.
    pub cache: Cache,
}

/// The revisions a client holds between scans, as it reports them in SyncUpdates, and the
/// last cookie it was given.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    /// Non-leaf revisions that apply (InstalledNonLeafUpdateIDs).
    pub installed: Vec<u32>,
    /// Every other revision received (OtherCachedUpdateIDs).
    pub other: Vec<u32>,
    /// Expired by the next day's scan, and renewed by GetCookie as its `oldCookie` (MS-WUSP
    /// §3.1.5.3): the renewed cookie keeps its anchor, so deployments that did not change
    /// since are not sent again.
    pub cookie: Option<request::Cookie>,
}

/// A SOAP fault answer, with its ErrorCode.
#[derive(Debug, Clone)]
pub struct SoapFault {
    pub operation: &'static str,
    pub code: String,
}

impl std::fmt::Display for SoapFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} answered the fault {}", self.operation, self.code)
    }
}

struct Session<'a> {
    http: &'a SoapClient,
    base: &'a str,
    scan: Scan,
}

/// The node as a simulated client reaches it: plain HTTP/1.1 to `base`, with the agent's
/// User-Agent.
struct Node<'a> {
    soap: &'a SoapClient,
    base: &'a str,
}

impl soap_client::Transport for Node<'_> {
    async fn post(
        &self,
        path: &str,
        headers: http::HeaderMap,
        body: Bytes,
        limit: usize,
    ) -> Result<soap_client::Posted> {
        let mut request = Request::post(format!("{}{path}", self.base))
            .header(http::header::USER_AGENT, AGENT)
            .body(Full::new(body))
            .map_err(|e| Error::internal(Kind::Io, e.to_string()))?;
        request.headers_mut().extend(headers);
        let response = self
            .soap
            .http
            .request(request)
            .await
            .map_err(|e| Error::upstream(Kind::Unavailable, "the node").with_source(e))?;
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| Error::upstream(Kind::BadUpstream, e.to_string()))?
            .to_bytes();
        Ok(soap_client::Posted {
            status: parts.status,
            headers: parts.headers,
            body: body.to_vec(),
        })
    }

    fn caller(&self) -> soap_client::Caller {
        soap_client::Caller::WindowsClient
    }

    fn reads_gzip(&self) -> bool {
        false
    }

    fn accepts(&self) -> Coding {
        self.soap.accepts
    }
}

/// How often a call told ServerBusy is made again, and after how long each time.
const BUSY_TRIES: u32 = 10;
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// The most an answer may be (a SyncUpdates page of a large catalog is a few MiB); depth and
/// elements as a node's own defaults.
const ANSWER_LIMITS: Limits = Limits {
    max_bytes: 64 << 20,
    max_depth: 32,
    max_elements: 200_000,
    packed: &[],
};

impl Session<'_> {
    async fn call(
        &mut self,
        path: &str,
        ns: &str,
        operation: &'static str,
        inner: &str,
    ) -> Result<Element> {
        let node = Node {
            soap: self.http,
            base: self.base,
        };
        let mut answer;
        let mut tries = 0;
        loop {
            let started = Instant::now();
            answer = soap_client::call(&node, path, ns, operation, inner, &ANSWER_LIMITS).await;
            self.scan.calls.push((operation, started.elapsed()));
            // A node that is behind says so, and the agent comes back (a Windows client waits
            // for its next scan; this one sooner, to keep the load it offers).
            if !matches!(answer, Err(Failure::Fault(ErrorCode::ServerBusy, _)))
                || tries == BUSY_TRIES
            {
                break;
            }
            tries += 1;
            self.scan.busy += 1;
            tokio::time::sleep(BUSY_PAUSE).await;
        }
        match answer {
            Ok(answer) => {
                self.scan.answer_bytes += answer.received;
                Ok(answer.op)
            }
            Err(Failure::Fault(code, _)) => {
                let code = code.as_str().to_owned();
                self.scan.faults.push((operation, code.clone()));
                Err(Error::upstream(
                    Kind::BadUpstream,
                    SoapFault { operation, code }.to_string(),
                ))
            }
            Err(Failure::Other(e)) => Err(e),
        }
    }
}

impl Session<'_> {
    /// GetConfig, GetAuthorizationCookie, GetCookie: a client cookie (Expiration,
    /// EncryptedData) and the server's MaxExtendedUpdatesPerRequest.
    /// GetConfig, GetAuthorizationCookie and GetCookie (renewing `old` when the client has one):
    /// the client cookie and the most revisions a GetExtendedUpdateInfo may ask for.
    async fn handshake(
        &mut self,
        machine: &Machine,
        old: Option<&request::Cookie>,
    ) -> Result<((String, String), usize)> {
        let config = self
            .call(
                CLIENT,
                CLIENT_NS,
                "GetConfig",
                "<protocolVersion>2.90</protocolVersion>",
            )
            .await?;
        let config = config
            .child("GetConfigResult")
            .ok_or_else(|| Error::upstream(Kind::BadUpstream, "GetConfig without a result"))?;
        let last_change = config.child_text("LastChange").unwrap_or("").to_owned();
        let max_extended: usize = config
            .child("Properties")
            .into_iter()
            .flat_map(|p| p.children_named("ConfigurationProperty"))
            .find(|p| p.child_text("Name") == Some("MaxExtendedUpdatesPerRequest"))
            .and_then(|p| p.child_text("Value")?.parse().ok())
            .unwrap_or(50);
        let auth = self
            .call(
                SIMPLE_AUTH,
                AUTH_NS,
                "GetAuthorizationCookie",
                &request::authorization_cookie(machine),
            )
            .await?;
        let auth_data = auth
            .child("GetAuthorizationCookieResult")
            .and_then(|r| r.child_text("CookieData"))
            .unwrap_or("")
            .to_owned();
        let now = crate::clock::unix_now();
        let cookie = self
            .call(
                CLIENT,
                CLIENT_NS,
                "GetCookie",
                &request::get_cookie(&auth_data, &last_change, now, old),
            )
            .await?;
        Ok((read_cookie(cookie.child("GetCookieResult"))?, max_extended))
    }
}

/// Request bodies as the Windows Update Agent writes them, and the cookie read from answers
/// (sans-IO: also what benchmarks drive a handler with).
pub mod request {
    use std::fmt::Write as _;

    use super::Machine;
    use crate::error::{Error, Kind, Result};
    use crate::soap::{self, Element};

    /// A client cookie as it travels: (Expiration, EncryptedData).
    pub type Cookie = (String, String);

    /// One ReportingEvent as Windows writes it; `misc` is MiscData's `<string>` items.
    pub fn reporting_event(
        client_id: &str,
        time: &str,
        instance: &str,
        id: u16,
        (update, revision): (crate::catalog::Guid, u32),
        hresult: i32,
        misc: &str,
    ) -> String {
        format!(
            "<ReportingEvent><BasicData><TargetID><Sid>{client_id}</Sid></TargetID>\
             <SequenceNumber>0</SequenceNumber><TimeAtTarget>{time}</TimeAtTarget>\
             <EventInstanceID>{instance}</EventInstanceID><NamespaceID>1</NamespaceID>\
             <EventID>{id}</EventID><SourceID>101</SourceID><UpdateID><UpdateID>{update}\
             </UpdateID><RevisionNumber>{revision}</RevisionNumber></UpdateID><Win32HResult>\
             {hresult}</Win32HResult><AppName>AutomaticUpdates</AppName></BasicData>\
             <ExtendedData><MiscData><string>A=1</string>{misc}</MiscData><ComputerBrand>\
             Contoso</ComputerBrand><ComputerModel>Simulated</ComputerModel><BiosRevision>1\
             </BiosRevision><ProcessorArchitecture>Amd64Compatible</ProcessorArchitecture>\
             <OSVersion><Major>10</Major><Minor>0</Minor><Build>26200</Build><Revision>0\
             </Revision><ServicePackMajor>0</ServicePackMajor><ServicePackMinor>0\
             </ServicePackMinor></OSVersion><OSLocaleID>1033</OSLocaleID></ExtendedData>\
             <PrivateData/></ReportingEvent>"
        )
    }

    pub fn cookie_xml(name: &str, cookie: &Cookie) -> String {
        format!(
            "<{name}><Expiration>{}</Expiration><EncryptedData>{}</EncryptedData></{name}>",
            cookie.0, cookie.1
        )
    }

    /// The cookie element of an answer (GetCookieResult, NewCookie).
    pub fn read_cookie(e: Option<&Element>) -> Result<Cookie> {
        let e = e.ok_or_else(|| Error::upstream(Kind::BadUpstream, "no cookie in the answer"))?;
        Ok((
            e.child_text("Expiration").unwrap_or("").to_owned(),
            e.child_text("EncryptedData").unwrap_or("").to_owned(),
        ))
    }

    /// GetAuthorizationCookie's parameters.
    pub fn authorization_cookie(machine: &Machine) -> String {
        let mut inner = String::new();
        soap::text_element(&mut inner, "clientId", &machine.client_id);
        if let Some(group) = &machine.target_group {
            soap::text_element(&mut inner, "targetGroupName", group);
        }
        soap::text_element(&mut inner, "dnsName", &machine.dns_name);
        inner
    }

    /// GetCookie's parameters as a first-time client sends them: an old cookie with only its
    /// clear Expiration. `now` in seconds since the epoch.
    /// GetCookie's parameters: with `old`, the client's last cookie to renew; without, an
    /// `oldCookie` of only an Expiration, as a client that never had one sends.
    pub fn get_cookie(
        auth_data: &str,
        last_change: &str,
        now: i64,
        old: Option<&Cookie>,
    ) -> String {
        let now = crate::soap::xsd::format_datetime(now);
        let old = match old {
            Some(cookie) => cookie_xml("oldCookie", cookie),
            None => format!("<oldCookie><Expiration>{now}</Expiration></oldCookie>"),
        };
        format!(
            "<authCookies><AuthorizationCookie><PlugInId>SimpleTargeting</PlugInId>\
             <CookieData>{auth_data}</CookieData></AuthorizationCookie></authCookies>\
             {old}<lastChange>{last_change}</lastChange><currentTime>{now}</currentTime>\
             <protocolVersion>2.90</protocolVersion>"
        )
    }

    /// RegisterComputer's parameters, shaped like a Windows 11 Pro machine's.
    pub fn register_computer(cookie: &Cookie, machine: &Machine) -> String {
        format!(
            "{}<computerInfo><DnsName>{}</DnsName><OSMajorVersion>10</OSMajorVersion>\
             <OSMinorVersion>0</OSMinorVersion><OSBuildNumber>26200</OSBuildNumber>\
             <OSServicePackMajorNumber>0</OSServicePackMajorNumber>\
             <OSServicePackMinorNumber>0</OSServicePackMinorNumber><OSLocale>en-US</OSLocale>\
             <ComputerManufacturer>Contoso</ComputerManufacturer><ComputerModel>Simulated\
             </ComputerModel><BiosVersion>unknown</BiosVersion><BiosName>unknown</BiosName>\
             <BiosReleaseDate>2022-02-02T00:00:00Z</BiosReleaseDate>\
             <ProcessorArchitecture>AMD64</ProcessorArchitecture><SuiteMask>256</SuiteMask>\
             <OldProductType>1</OldProductType><NewProductType>48</NewProductType>\
             <SystemMetrics>0</SystemMetrics><ClientVersionMajorNumber>1507\
             </ClientVersionMajorNumber><ClientVersionMinorNumber>2601\
             </ClientVersionMinorNumber><ClientVersionBuildNumber>30012\
             </ClientVersionBuildNumber><ClientVersionQfeNumber>0</ClientVersionQfeNumber>\
             <OSDescription>Windows 11 Pro</OSDescription></computerInfo>",
            cookie_xml("cookie", cookie),
            soap::escape_text(&machine.dns_name)
        )
    }

    /// GetExtendedUpdateInfo of `revisions`: their Extended and LocalizedProperties fragments
    /// and file locations, as the captured Windows 11 request asks.
    pub fn extended_update_info(cookie: &Cookie, revisions: &[u32]) -> String {
        let mut ids = String::new();
        for id in revisions {
            let _ = write!(ids, "<int>{id}</int>");
        }
        format!(
            "{}<revisionIDs>{ids}</revisionIDs><infoTypes>\
             <XmlUpdateFragmentType>Extended</XmlUpdateFragmentType>\
             <XmlUpdateFragmentType>LocalizedProperties</XmlUpdateFragmentType>\
             </infoTypes><locales><string>en-US</string><string>en</string></locales>\
             <deviceAttributes>E:IsContainerMgmtInstalled=0</deviceAttributes>\
             <GeoId>USA</GeoId>",
            cookie_xml("cookie", cookie)
        )
    }

    /// SyncUpdates of the software pass, with what the client holds (omitted when empty, as
    /// the first call of a real scan omits them).
    pub fn sync_software(
        cookie: &Cookie,
        installed_non_leaf: &[u32],
        other_cached: &[u32],
    ) -> String {
        let ids = |name: &str, list: &[u32]| {
            if list.is_empty() {
                return String::new();
            }
            let mut x = format!("<{name}>");
            for id in list {
                let _ = write!(x, "<int>{id}</int>");
            }
            let _ = write!(x, "</{name}>");
            x
        };
        format!(
            "{}<parameters><ExpressQuery>false</ExpressQuery>{}{}\
             <SkipSoftwareSync>false</SkipSoftwareSync>\
             <NeedTwoGroupOutOfScopeUpdates>true</NeedTwoGroupOutOfScopeUpdates>\
             <AlsoPerformRegularSync>true</AlsoPerformRegularSync><ComputerSpec/>\
             </parameters>",
            cookie_xml("cookie", cookie),
            ids("InstalledNonLeafUpdateIDs", installed_non_leaf),
            ids("OtherCachedUpdateIDs", other_cached),
        )
    }
}

use request::{cookie_xml, read_cookie};

/// Rough evaluation of an update's core fragment, enough to walk the prerequisite graph:
/// categories are installed; a detectoid is, unless the machine's seed rules it out; software
/// is not (it is what the scan is for).
fn installed(machine: &Machine, core: &str, update_id: Guid) -> bool {
    if core.contains("UpdateType=\"Category\"") {
        return true;
    }
    if core.contains("UpdateType=\"Detectoid\"") {
        if machine.detectoid_miss == 0 {
            return true;
        }
        let draw = SplitMix(machine.seed ^ update_id.0 as u64).next_u64();
        return !draw.is_multiple_of(machine.detectoid_miss);
    }
    false
}

/// The elements named `name` in an update fragment (several top-level elements, no root), as
/// their attributes: read as a stream, for the load generator spends its CPU on the node's
/// answers and not on trees of fragments it looks at twice. Stops after `most`.
fn fragment_elements(xml: &str, name: &str, most: usize) -> Vec<HashMap<String, String>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut found = Vec::new();
    while found.len() < most {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) if e.local_name().as_ref() == name => {
                found.push(
                    e.attributes()
                        .flatten()
                        .filter_map(|a| {
                            let value = a
                                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .ok()?
                                .into_owned();
                            Some((a.key.local_name().as_ref().to_owned(), value))
                        })
                        .collect(),
                );
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    found
}

fn identity(core: &str) -> Option<(Guid, u32)> {
    let id = fragment_elements(core, "UpdateIdentity", 1).pop()?;
    Some((
        Guid::parse(id.get("UpdateID")?)?,
        id.get("RevisionNumber")?.parse().ok()?,
    ))
}

/// One full scan of `machine` against the node at `base` (`http://host:port`).
pub async fn scan(http: &SoapClient, base: &str, machine: &Machine) -> Result<Scan> {
    scan_from(http, base, machine, None).await
}

/// A later scan of a client that holds `cache` (from its previous scan) and is registered: what
/// a branch answers all day. Extended information is fetched only for what is new.
pub async fn rescan(
    http: &SoapClient,
    base: &str,
    machine: &Machine,
    cache: &Cache,
) -> Result<Scan> {
    scan_from(http, base, machine, Some(cache)).await
}

async fn scan_from(
    http: &SoapClient,
    base: &str,
    machine: &Machine,
    cache: Option<&Cache>,
) -> Result<Scan> {
    let mut s = Session {
        http,
        base,
        scan: Scan::default(),
    };
    let old = cache.and_then(|c| c.cookie.as_ref());
    let (mut cookie, max_extended) = s.handshake(machine, old).await?;

    if cache.is_none() {
        s.call(
            CLIENT,
            CLIENT_NS,
            "RegisterComputer",
            &request::register_computer(&cookie, machine),
        )
        .await?;
    }

    // The software pass: call until nothing new and not truncated.
    let Cache {
        installed: mut installed_ids,
        other: mut other_ids,
        cookie: _,
    } = cache.cloned().unwrap_or_default();
    for _ in 0..500 {
        let answer = s
            .call(
                CLIENT,
                CLIENT_NS,
                "SyncUpdates",
                &request::sync_software(&cookie, &installed_ids, &other_ids),
            )
            .await?;
        s.scan.pages += 1;
        let result = answer
            .child("SyncUpdatesResult")
            .ok_or_else(|| Error::upstream(Kind::BadUpstream, "SyncUpdates without a result"))?;
        cookie = read_cookie(result.child("NewCookie"))?;
        let new: Vec<&Element> = result
            .child("NewUpdates")
            .map(|n| n.children_named("UpdateInfo").collect())
            .unwrap_or_default();
        let truncated = result.child_text("Truncated") == Some("true");
        s.scan.changed.extend(
            result
                .child("ChangedUpdates")
                .into_iter()
                .flat_map(|c| c.children_named("UpdateInfo"))
                .filter_map(|info| {
                    let rev = info.child_text("ID")?.parse().ok()?;
                    let action = info.child("Deployment")?.child_text("Action")?;
                    Some((rev, action.to_owned()))
                }),
        );
        for gone in result
            .child("OutOfScopeRevisionIDs")
            .into_iter()
            .flat_map(|o| o.children_named("int"))
        {
            if let Ok(id) = gone.text().parse::<u32>() {
                installed_ids.retain(|i| *i != id);
                other_ids.retain(|i| *i != id);
            }
        }
        if new.is_empty() && !truncated {
            break;
        }
        for info in new {
            let rev: u32 = info
                .child_text("ID")
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| Error::upstream(Kind::BadUpstream, "UpdateInfo without ID"))?;
            let leaf = info.child_text("IsLeaf") == Some("true");
            let action = info
                .child("Deployment")
                .and_then(|d| d.child_text("Action"))
                .ok_or_else(|| Error::upstream(Kind::BadUpstream, "UpdateInfo without Deployment"))?
                .to_owned();
            let core = info.child_text("Xml").unwrap_or("");
            let (update_id, revision_number) = identity(core).ok_or_else(|| {
                Error::upstream(Kind::BadUpstream, format!("revision {rev}: core fragment"))
            })?;
            let offered = Offered {
                revision: rev,
                update_id,
                revision_number,
                action: action.clone(),
            };
            if matches!(action.as_str(), "Install" | "OptionalInstall") {
                s.scan.offered.push(offered.clone());
            }
            s.scan.received.push(offered);
            if !leaf && installed(machine, core, update_id) {
                installed_ids.push(rev);
            } else {
                other_ids.push(rev);
            }
        }
    }
    // The driver pass: the machine's devices (an empty list without them; real clients ask
    // all the same).
    let (spec, rest) = machine
        .pc
        .as_ref()
        .map(|pc| pc.parameters())
        .unwrap_or_else(|| {
            (
                "<SystemSpec/>".to_owned(),
                "<FeatureScoreMatchingKey>AMD64.10.0</FeatureScoreMatchingKey>".to_owned(),
            )
        });
    let answer = s
        .call(
            CLIENT,
            CLIENT_NS,
            "SyncUpdates",
            &format!(
                "{}<parameters><ExpressQuery>false</ExpressQuery>{spec}<SkipSoftwareSync>true\
                 </SkipSoftwareSync>{rest}</parameters>",
                cookie_xml("cookie", &cookie)
            ),
        )
        .await?;
    for info in answer
        .child("SyncUpdatesResult")
        .and_then(|r| r.child("NewUpdates"))
        .into_iter()
        .flat_map(|n| n.children_named("UpdateInfo"))
    {
        let revision: u32 = info
            .child_text("ID")
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| Error::upstream(Kind::BadUpstream, "UpdateInfo without ID"))?;
        let deployment = info.child("Deployment");
        let (update_id, revision_number) = identity(info.child_text("Xml").unwrap_or(""))
            .ok_or_else(|| {
                Error::upstream(
                    Kind::BadUpstream,
                    format!("revision {revision}: core fragment"),
                )
            })?;
        let hardware_ids = deployment
            .and_then(|d| d.child("HardwareIds"))
            .into_iter()
            .flat_map(|h| h.children_named("string"))
            .map(|s| s.text().to_owned())
            .collect();
        s.scan.drivers.push((
            Offered {
                revision,
                update_id,
                revision_number,
                action: deployment
                    .and_then(|d| d.child_text("Action"))
                    .unwrap_or("")
                    .to_owned(),
            },
            hardware_ids,
        ));
    }

    // Extended information and file locations of what it will install, bundle members (whose
    // files an installed bundle brings) included.
    let to_install: Vec<u32> = s
        .scan
        .received
        .iter()
        .filter(|o| matches!(o.action.as_str(), "Install" | "OptionalInstall" | "Bundle"))
        .map(|o| o.revision)
        .collect();
    let mut urls: BTreeMap<[u8; 20], String> = BTreeMap::new();
    let mut sizes: HashMap<[u8; 20], u64> = HashMap::new();
    for batch in to_install.chunks(max_extended.max(1)) {
        let answer = s
            .call(
                CLIENT,
                CLIENT_NS,
                "GetExtendedUpdateInfo",
                &request::extended_update_info(&cookie, batch),
            )
            .await?;
        let result = answer.child("GetExtendedUpdateInfoResult");
        for update in result
            .and_then(|r| r.child("Updates"))
            .into_iter()
            .flat_map(|u| u.children_named("Update"))
        {
            let xml = update.child_text("Xml").unwrap_or("");
            // Sizes come from the Extended fragment's File elements.
            for file in fragment_elements(xml, "File", usize::MAX) {
                if let (Some(d), Some(size)) = (
                    file.get("Digest").and_then(|d| base64_decode(d)),
                    file.get("Size").and_then(|s| s.parse::<u64>().ok()),
                ) && let Ok(d) = <[u8; 20]>::try_from(d)
                {
                    sizes.insert(d, size);
                }
            }
        }
        for location in result
            .and_then(|r| r.child("FileLocations"))
            .into_iter()
            .flat_map(|f| f.children_named("FileLocation"))
        {
            if let (Some(d), Some(url)) = (
                location.child_text("FileDigest").and_then(base64_decode),
                location.child_text("Url"),
            ) && let Ok(d) = <[u8; 20]>::try_from(d)
            {
                urls.insert(d, url.to_owned());
            }
        }
    }
    for (digest, url) in urls {
        if let Some(size) = sizes.get(&digest) {
            s.scan.files.push(Download {
                url,
                size: *size,
                sha1: Digest(digest),
            });
        }
    }
    s.scan.cache = Cache {
        installed: installed_ids,
        other: other_ids,
        cookie: Some(cookie),
    };
    Ok(s.scan)
}

/// Download every file of a scan as Delivery Optimization does, from `content_server` (an
/// alternate download server, `http://host:port`) when given, else from the URLs the server
/// gave. Records how many hashed right.
pub async fn download(
    http: &HttpClient,
    scan: &mut Scan,
    seed: u64,
    content_server: Option<&str>,
) -> Result<Vec<super::Outcome>> {
    let mut outcomes = Vec::new();
    for (i, file) in scan.files.iter().enumerate() {
        let mut file = file.clone();
        if let Some(server) = content_server
            && let Some(at) = file.url.find("/Content/")
        {
            file.url = format!("{}{}", server.trim_end_matches('/'), &file.url[at..]);
        }
        let outcome = delivery_optimization(
            http,
            &file,
            Options {
                seed: seed.wrapping_mul(31).wrapping_add(i as u64),
                timeout: Duration::from_secs(120),
                ..Options::default()
            },
        )
        .await?;
        outcomes.push(outcome);
    }
    scan.downloads_verified = outcomes.iter().filter(|o| o.verified).count();
    Ok(outcomes)
}

/// Report what a scan led to: a scan-success event, then an install event per offered update
/// (success, or failure for every `fail_every`th), as ReportEventBatch.
/// A fresh client cookie of a registered `machine` (the scan's handshake again).
pub async fn client_cookie(
    http: &SoapClient,
    base: &str,
    machine: &Machine,
) -> Result<request::Cookie> {
    let mut s = Session {
        http,
        base,
        scan: Scan::default(),
    };
    Ok(s.handshake(machine, None).await?.0)
}

pub async fn report(
    http: &SoapClient,
    base: &str,
    machine: &Machine,
    scan: &mut Scan,
    fail_every: usize,
) -> Result<usize> {
    // A fresh cookie: the scan's may be near its end.
    let mut s = Session {
        http,
        base,
        scan: std::mem::take(scan),
    };
    let (cookie, _) = s.handshake(machine, None).await?;
    let now = crate::clock::unix_now();

    let time = format_datetime(now);
    let event = |id: u16, update: Option<&Offered>, hresult: i32, misc: &str| {
        let update = update.map_or((Guid::NIL, 0), |u| (u.update_id, u.revision_number));
        let instance = Guid::random().to_string();
        request::reporting_event(
            &machine.client_id,
            &time,
            &instance,
            id,
            update,
            hresult,
            misc,
        )
    };
    let mut batch = event(147, None, 0, "");
    let offered = s.scan.offered.clone();
    let (mut installed, mut failures) = (Vec::new(), Vec::new());
    for (i, o) in offered.iter().enumerate() {
        let failed = fail_every > 0 && (i + 1) % fail_every == 0;
        batch.push_str(&event(
            if failed { 182 } else { 183 },
            Some(o),
            if failed { -2_145_099_769 } else { 0 },
            "",
        ));
        let list = if failed {
            &mut failures
        } else {
            &mut installed
        };
        list.push(o.update_id.to_string().to_uppercase());
    }
    // What it was sent for evaluation alone (PreDeploymentCheck) it finds it needs: a
    // simulated machine lacks every update.
    let needed: Vec<String> = s
        .scan
        .received
        .iter()
        .filter(|o| o.action == "PreDeploymentCheck")
        .map(|o| o.update_id.to_string().to_uppercase())
        .collect();
    // The status of every update deployed to it, as Windows sends it after installing:
    // V = installed, g = failed, U = needed (MS-WUSP §2.2.2.3.1).
    let mut lists = String::new();
    for (tag, ids) in [("V", &installed), ("g", &failures), ("U", &needed)] {
        if !ids.is_empty() {
            let _ = write!(lists, "<string>{tag}={}</string>", ids.join(";"));
        }
    }
    batch.push_str(&event(156, None, 0, &lists));
    let answer = s
        .call(
            REPORTING,
            REPORTING_NS,
            "ReportEventBatch",
            &format!(
                "{}<clientTime>{}</clientTime><eventBatch>{batch}</eventBatch>",
                cookie_xml("cookie", &cookie),
                format_datetime(now)
            ),
        )
        .await?;
    if answer.child_text("ReportEventBatchResult") != Some("true") {
        return Err(Error::upstream(
            Kind::BadUpstream,
            "ReportEventBatch not accepted",
        ));
    }
    s.scan.events_reported = 2 + offered.len();
    *scan = s.scan;
    Ok(scan.events_reported)
}

/// Many simulated clients at once.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The node clients scan (`http://host:port`).
    pub server: String,
    /// Where they download content from, when not from the scanned node (an alternate
    /// download server, as the UpdateServiceUrlAlternate policy sets).
    pub content_server: Option<String>,
    pub clients: usize,
    /// Clients scanning at the same time.
    pub concurrency: usize,
    pub group: Option<String>,
    pub download: bool,
    pub report: bool,
    pub seed: u64,
    /// Scans each client makes after the first, once every first scan is done, with the cache
    /// its previous scan left (the steady state of a branch).
    pub rescans: usize,
    /// With `report`: every this-many-th offered update is reported failed (0: none).
    pub fail_every: usize,
    /// First scans started per second, whether or not earlier ones have ended (at most
    /// `concurrency` at once): an offered load, for latency at a fraction of capacity. None:
    /// each scan starts when one ends.
    pub rate: Option<f64>,
    /// The same for the rescans, which cost a node far less than first scans.
    pub rescan_rate: Option<f64>,
    /// The coding its clients ask answers in (Windows: xpress).
    pub accepts: Coding,
    /// Devices for the machines: the `seed + n`th PC of this driver catalog's fleet; none:
    /// machines without devices.
    pub drivers: Option<std::sync::Arc<crate::testkit::drivers::DriverCatalog>>,
}

/// What a fleet did.
#[derive(Debug, Default)]
pub struct FleetReport {
    pub scans: usize,
    /// One line per client that failed.
    pub failures: Vec<String>,
    /// The latency of every SOAP call.
    pub calls: Vec<Duration>,
    pub elapsed: Duration,
    pub offered: usize,
    /// Drivers the driver passes were sent.
    pub drivers: usize,
    pub downloads: Vec<super::Outcome>,
    pub events: usize,
    pub pages: usize,
    /// Bytes of SOAP answers on the wire.
    pub answer_bytes: u64,
    /// Calls answered ServerBusy (and made again).
    pub busy: usize,
    /// Bytes of the distinct files the clients were given.
    pub distinct_bytes: u64,
    /// The rescans, when the fleet made any.
    pub rescans: Option<RescanReport>,
}

/// What the rescans of a fleet did (after every first scan).
#[derive(Debug, Default)]
pub struct RescanReport {
    pub scans: usize,
    pub failures: Vec<String>,
    pub calls: Vec<Duration>,
    pub elapsed: Duration,
    pub pages: usize,
    /// Revisions sent anew (none when nothing changed on the server).
    pub received: usize,
    /// Deployments sent again as changed.
    pub changed: usize,
    /// Bytes of SOAP answers on the wire.
    pub answer_bytes: u64,
    /// Calls answered ServerBusy (and made again).
    pub busy: usize,
}

/// A latency percentile (nearest rank).
pub fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut v = latencies.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

impl FleetReport {
    /// A latency percentile of the SOAP calls of the first scans.
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.calls, p)
    }
}

/// Run `fleet.clients` simulated clients, `fleet.concurrency` at a time, then their rescans.
pub async fn run(fleet: &Fleet) -> FleetReport {
    let (mut out, caches) = first_scans(fleet).await;
    if fleet.rescans > 0 {
        out.rescans = Some(rescans(fleet, caches).await);
    }
    out
}

/// When the `n`th scan of a fleet with an offered `rate` starts, from `started`.
async fn start_at(started: Instant, rate: Option<f64>, n: usize) {
    if let Some(rate) = rate.filter(|r| *r > 0.0) {
        tokio::time::sleep_until((started + Duration::from_secs_f64(n as f64 / rate)).into()).await;
    }
}

/// The first scans of a fleet (with downloads and reports as it says), and each client's
/// cache for its rescans.
pub async fn first_scans(fleet: &Fleet) -> (FleetReport, Vec<(Machine, Cache)>) {
    let soap = soap_client_accepting(fleet.accepts);
    let http = super::http_client();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(fleet.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..fleet.clients {
        let (soap, http, gate, fleet) = (soap.clone(), http.clone(), gate.clone(), fleet.clone());
        tasks.spawn(async move {
            start_at(started, fleet.rate, n).await;
            let _permit = gate.acquire_owned().await;
            let number = fleet.seed.wrapping_add(n as u64);
            let mut machine = Machine::new(number, fleet.group.as_deref());
            if let Some(drivers) = &fleet.drivers {
                machine = machine.with_pc(drivers.pc(number));
            }
            let mut scan = scan(&soap, &fleet.server, &machine).await?;
            let mut downloads = Vec::new();
            if fleet.download {
                downloads =
                    download(&http, &mut scan, n as u64, fleet.content_server.as_deref()).await?;
            }
            if fleet.report {
                report(&soap, &fleet.server, &machine, &mut scan, fleet.fail_every).await?;
            }
            Ok::<_, Error>((machine, scan, downloads))
        });
    }
    let mut out = FleetReport::default();
    let mut distinct = std::collections::HashMap::new();
    let mut caches = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((machine, scan, downloads))) => {
                for f in &scan.files {
                    distinct.insert(f.sha1, f.size);
                }
                out.scans += 1;
                out.offered += scan.offered.len();
                out.drivers += scan.drivers.len();
                out.pages += scan.pages;
                out.answer_bytes += scan.answer_bytes;
                out.busy += scan.busy;
                out.events += scan.events_reported;
                out.calls.extend(scan.calls.iter().map(|(_, d)| *d));
                out.downloads.extend(downloads);
                caches.push((machine, scan.cache));
            }
            Ok(Err(e)) => out.failures.push(e.to_string()),
            Err(e) => out.failures.push(e.to_string()),
        }
    }
    out.elapsed = started.elapsed();
    out.distinct_bytes = distinct.values().sum();
    (out, caches)
}

/// Every client that scanned scans `fleet.rescans` more times, from its own cache: the
/// `k`th rescans of all clients before any client's `k+1`th.
pub async fn rescans(fleet: &Fleet, caches: Vec<(Machine, Cache)>) -> RescanReport {
    let soap = soap_client_accepting(fleet.accepts);
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(fleet.concurrency.max(1)));
    let started = Instant::now();
    let clients = caches.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (machine, mut cache)) in caches.into_iter().enumerate() {
        let (soap, gate, fleet) = (soap.clone(), gate.clone(), fleet.clone());
        tasks.spawn(async move {
            let mut scans = Vec::new();
            for k in 0..fleet.rescans {
                start_at(started, fleet.rescan_rate, k * clients + i).await;
                let _permit = gate.acquire().await;
                let scan = rescan(&soap, &fleet.server, &machine, &cache).await?;
                cache = scan.cache.clone();
                scans.push(scan);
            }
            Ok::<_, Error>(scans)
        });
    }
    let mut out = RescanReport::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(scans)) => {
                for scan in scans {
                    out.scans += 1;
                    out.pages += scan.pages;
                    out.received += scan.received.len();
                    out.changed += scan.changed.len();
                    out.answer_bytes += scan.answer_bytes;
                    out.busy += scan.busy;
                    out.calls.extend(scan.calls.iter().map(|(_, d)| *d));
                }
            }
            Ok(Err(e)) => out.failures.push(e.to_string()),
            Err(e) => out.failures.push(e.to_string()),
        }
    }
    out.elapsed = started.elapsed();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_read_without_a_root() {
        let core = "<UpdateIdentity UpdateID=\"9a3b1d2c-1111-4c4c-8a8a-0123456789ab\" \
                    RevisionNumber=\"204\" /><Properties UpdateType=\"Software\" />\
                    <Relationships><Prerequisites><UpdateIdentity \
                    UpdateID=\"00000000-0000-0000-0000-000000000001\" /></Prerequisites>\
                    </Relationships>";
        let (id, revision) = identity(core).unwrap();
        assert_eq!(id.to_string(), "9a3b1d2c-1111-4c4c-8a8a-0123456789ab");
        assert_eq!(revision, 204);
        assert!(identity("<Properties UpdateType=\"Software\"/>").is_none());
        assert!(
            identity("<UpdateIdentity UpdateID=\"not a guid\" RevisionNumber=\"1\"/>").is_none()
        );

        let extended = "<ExtendedProperties DefaultPropertiesLanguage=\"en\" />\
                        <Files><File Digest=\"AAECAwQFBgcICQoLDA0ODxAREhM=\" \
                        DigestAlgorithm=\"SHA1\" FileName=\"a&amp;b.cab\" Size=\"1234\" />\
                        <File Digest=\"FBUWFxgZGhscHR4fICEiIyQlJic=\" Size=\"5\"></File></Files>";
        let files = fragment_elements(extended, "File", usize::MAX);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0]["Size"], "1234");
        assert_eq!(
            files[0]["FileName"], "a&b.cab",
            "attribute values unescaped"
        );
        assert_eq!(files[1]["Digest"], "FBUWFxgZGhscHR4fICEiIyQlJic=");
        assert_eq!(fragment_elements(extended, "File", 1).len(), 1);
    }
}
