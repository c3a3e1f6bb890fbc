//! The operations of the three client services: parse what the handler needs from the request
//! element (unknown elements ignored, as real clients send elements the WSDL lacks), check the
//! cookie, answer from the catalog, write the response element in the order the schema wants.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use super::{Call, Endpoint, Service};
use crate::catalog::driver::SystemSpec;
use crate::catalog::scope::{self, Offer, SyncRequest};
use crate::catalog::{
    Action, Catalog, FileRef, Guid, UNASSIGNED_COMPUTERS, UpdateType, base64_decode, base64_encode,
};
use crate::lock::{lock, read, write};
use crate::report::{Computer, Event};
use crate::served::cookie::{Claims, Kind};
use crate::soap::wsus::{ErrorCode, Fault};
use crate::soap::xsd::{format_date, format_datetime, parse_bool, parse_datetime, parse_version};
use crate::soap::{Element, Escaped, escape_text, escaped_element, text_element};

type Result<T> = std::result::Result<T, Fault>;

/// The answer to `op`, written after what `out` holds (the envelope's head): the whole text,
/// or the fault (and `out` is dropped).
pub(super) async fn dispatch(
    service: &Arc<Service>,
    endpoint: Endpoint,
    op: &Element,
    call: &Call<'_>,
    out: String,
) -> Result<String> {
    match (endpoint, op.name.as_str()) {
        (Endpoint::SimpleAuth, "GetAuthorizationCookie") => {
            service.get_authorization_cookie(op, call, out)
        }
        (Endpoint::Client, "GetConfig") => service.get_config(op, out),
        (Endpoint::Client, "GetCookie") => service.get_cookie(op, call, out),
        (Endpoint::Client, "RegisterComputer") => service.register_computer(op, call, out).await,
        (Endpoint::Client, "StartCategoryScan") => service.start_category_scan(op, out),
        (Endpoint::Client, "SyncUpdates") => service.sync_updates(op, call, out).await,
        (Endpoint::Client, "SyncPrinterCatalog") => service.sync_printer_catalog(op, call, out),
        (Endpoint::Client, "RefreshCache") => service.refresh_cache(op, call, out),
        (Endpoint::Client, "GetExtendedUpdateInfo") => {
            service.get_extended_update_info(op, call, out)
        }
        (Endpoint::Client, "GetExtendedUpdateInfo2") => {
            service.get_extended_update_info2(op, call, out)
        }
        (Endpoint::Client, "GetFileLocations") => service.get_file_locations(op, call, out),
        (Endpoint::Reporting, "ReportEventBatch") => {
            service.report_event_batch(op, call, out).await
        }
        (_, name) => Err(Fault::invalid(format!("operation {name} is not supported"))),
    }
}

/// Items of an array element (`<ids><int>1</int>…</ids>`); absent or nil = empty.
fn items<'a>(parent: &'a Element, array: &str, item: &'a str) -> Vec<&'a Element> {
    parent
        .child(array)
        .filter(|a| !a.is_nil())
        .map(|a| a.children_named(item).filter(|i| !i.is_nil()).collect())
        .unwrap_or_default()
}

/// The ints of an array, read from its packed texts where the operation's limits pack it
/// (`limits_for`), else from its `int` elements.
fn int_items(parent: &Element, array: &str) -> Result<Vec<u32>> {
    let Some(list) = parent.child(array).filter(|a| !a.is_nil()) else {
        return Ok(Vec::new());
    };
    let parse = |text: &str| {
        text.parse::<i64>()
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| Fault::invalid(format!("{array} holds {text:?}")))
    };
    match list.packed.as_deref() {
        Some(packed) if packed.item == "int" => packed.texts().map(parse).collect(),
        Some(_) => Ok(Vec::new()),
        None => list
            .children_named("int")
            .filter(|i| !i.is_nil())
            .map(|i| parse(i.text()))
            .collect(),
    }
}

/// The operation's response element opened on `out`, which holds the envelope's head
/// ([`soap::open_envelope`]): a handler writes its answer where the reply's bytes will be.
fn open_response(out: &mut String, name: &str, ns: &str) {
    let _ = write!(out, "<{name} xmlns=\"{ns}\">");
}

/// `<array><item>id</item>…</array>` appended to `out`; nothing for no ids.
fn id_list<T: std::fmt::Display>(
    out: &mut String,
    array: &str,
    item: &str,
    ids: impl IntoIterator<Item = T>,
) {
    let mut ids = ids.into_iter().peekable();
    if ids.peek().is_none() {
        return;
    }
    let _ = write!(out, "<{array}>");
    for id in ids {
        let _ = write!(out, "<{item}>{id}</{item}>");
    }
    let _ = write!(out, "</{array}>");
}

/// The cookie element every client operation carries.
fn cookie_element(out: &mut String, name: &str, expires: i64, sealed: &[u8]) {
    let _ = write!(
        out,
        "<{name}><Expiration>{}</Expiration><EncryptedData>{}</EncryptedData></{name}>",
        format_datetime(expires),
        base64_encode(sealed)
    );
}

/// The client protocol version from the cookie, for gating response fields.
fn client_at_least(claims: &Claims, major: u32, minor: u32) -> bool {
    parse_version(&claims.protocol).is_some_and(|v| v >= (major, minor))
}

/// A revision's deployment; `hardware_ids`: the devices a driver was chosen for, which clients
/// of protocol 1.6 and later are told (MS-WUSP 2.2.2.2.4).
fn deployment(out: &mut String, o: &Offer, claims: &Claims, hardware_ids: Option<&Vec<String>>) {
    let _ = write!(
        out,
        "<Deployment><ID>{}</ID><Action>{}</Action>",
        o.deployment_id,
        o.action.as_str()
    );
    if let Some(deadline) = o.deadline {
        text_element(out, "Deadline", &format_datetime(deadline));
    }
    // OptionalInstall is offered, not pushed; everything else WSUS marks assigned.
    let assigned = o.action != Action::OptionalInstall;
    let _ = write!(
        out,
        "<IsAssigned>{assigned}</IsAssigned><LastChangeTime>{}</LastChangeTime>",
        format_date(o.last_change)
    );
    if o.download_priority != 2 {
        let _ = write!(
            out,
            "<DownloadPriority>{}</DownloadPriority>",
            o.download_priority
        );
    }
    if let Some(ids) = hardware_ids.filter(|ids| !ids.is_empty() && client_at_least(claims, 1, 6)) {
        out.push_str("<HardwareIds>");
        for id in ids {
            text_element(out, "string", id);
        }
        out.push_str("</HardwareIds>");
    }
    if client_at_least(claims, 1, 8) {
        out.push_str(
            "<AutoSelect>0</AutoSelect><AutoDownload>0</AutoDownload>\
             <SupersedenceBehavior>0</SupersedenceBehavior>",
        );
    }
    out.push_str("</Deployment>");
}

/// Room for a SyncInfo: an UpdateInfo is its core fragment and about 250 bytes of deployment
/// around it.
fn reserve_sync_info(out: &mut String, catalog: &Catalog, result: &scope::SyncResult) {
    let cores = result
        .new_updates
        .iter()
        .filter_map(|o| catalog.revision(o.revision));
    out.reserve(
        2048 + cores
            .map(|r| r.fragments.core.as_str().len() + 256)
            .sum::<usize>()
            + (result.changed_updates.len() + result.out_of_scope.len()) * 256,
    );
}

/// The lists of a SyncInfo (SyncUpdates' and SyncPrinterCatalog's answer): NewUpdates,
/// OutOfScopeRevisionIDs (`gone`), ChangedUpdates, Truncated.
fn sync_info(
    out: &mut String,
    catalog: &Catalog,
    result: &scope::SyncResult,
    claims: &Claims,
    gone: &[u32],
) {
    if !result.new_updates.is_empty() {
        out.push_str("<NewUpdates>");
        for o in &result.new_updates {
            let xml = catalog.revision(o.revision).map(|r| &r.fragments.core);
            update_info(out, o, claims, xml, result.hardware_ids.get(&o.revision));
        }
        out.push_str("</NewUpdates>");
    }
    id_list(out, "OutOfScopeRevisionIDs", "int", gone);
    if !result.changed_updates.is_empty() {
        out.push_str("<ChangedUpdates>");
        for o in &result.changed_updates {
            update_info(out, o, claims, None, result.hardware_ids.get(&o.revision));
        }
        out.push_str("</ChangedUpdates>");
    }
    let _ = write!(out, "<Truncated>{}</Truncated>", result.truncated);
}

fn update_info(
    out: &mut String,
    o: &Offer,
    claims: &Claims,
    xml: Option<&Escaped>,
    hardware_ids: Option<&Vec<String>>,
) {
    let _ = write!(out, "<UpdateInfo><ID>{}</ID>", o.revision);
    deployment(out, o, claims, hardware_ids);
    let _ = write!(out, "<IsLeaf>{}</IsLeaf>", o.is_leaf);
    if let Some(xml) = xml {
        escaped_element(out, "Xml", xml);
    }
    out.push_str("</UpdateInfo>");
}

/// `http://host:port/Content/XX/SHA1.ext` for a file.
fn file_url(base: &str, file: &FileRef) -> String {
    let hex = hex::encode_upper(file.sha1);
    let ext = file.extension();
    let dot = if ext.is_empty() { "" } else { "." };
    format!("{base}/Content/{}/{hex}{dot}{ext}", &hex[38..])
}

fn file_location(out: &mut String, base: &str, file: &FileRef) {
    let _ = write!(
        out,
        "<FileLocation><FileDigest>{}</FileDigest><Url>{}</Url></FileLocation>",
        base64_encode(&file.sha1),
        escape_text(&file_url(base, file))
    );
}

impl Service {
    /// Whether a client holding `claims` may scan `catalog`: its configuration unchanged since
    /// the cookie, and the client registered.
    fn may_scan(&self, claims: &Claims, catalog: &Catalog) -> Result<()> {
        if claims.config_change != catalog.config_last_change {
            return Err(Fault::new(ErrorCode::ConfigChanged, ""));
        }
        if !read(&self.registered).contains(&claims.client_id) {
            return Err(Fault::new(ErrorCode::RegistrationRequired, ""));
        }
        Ok(())
    }

    /// Open and check the client cookie of an operation: ours, not expired.
    fn client_cookie(&self, op: &Element, now: i64) -> Result<Claims> {
        let sealed = op
            .child("cookie")
            .filter(|c| !c.is_nil())
            .and_then(|c| c.child_text("EncryptedData"))
            .ok_or_else(|| Fault::new(ErrorCode::InvalidCookie, "no cookie"))?;
        let bytes = base64_decode(sealed)
            .ok_or_else(|| Fault::new(ErrorCode::InvalidCookie, "cookie is not base64"))?;
        let claims = self
            .served
            .sealer()
            .open_cookie(&bytes, Kind::Client)
            .map_err(|_| Fault::new(ErrorCode::InvalidCookie, "not a cookie of this server"))?;
        if claims.server_id != self.served.server_id() {
            return Err(Fault::new(
                ErrorCode::ServerChanged,
                "cookie of another server",
            ));
        }
        if claims.expires <= now {
            return Err(Fault::new(ErrorCode::CookieExpired, ""));
        }
        Ok(claims)
    }

    /// A fresh cookie carrying `claims` (same expiry: use does not extend it).
    fn reseal(&self, claims: &Claims) -> Vec<u8> {
        self.served.sealer().seal(claims)
    }

    fn get_authorization_cookie(
        &self,
        op: &Element,
        call: &Call<'_>,
        mut out: String,
    ) -> Result<String> {
        let client_id = op.child_text("clientId").unwrap_or("");
        let valid_id = !client_id.is_empty()
            && client_id.len() <= 255
            && client_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '{' | '}'));
        if !valid_id {
            return Err(Fault::invalid("clientId"));
        }
        let catalog = self.served.catalog();
        // Client-side targeting: "Servers;Workstations". Names the catalog does not know are
        // ignored; a computer in no known group is Unassigned.
        let mut groups: Vec<Guid> = op
            .child_text("targetGroupName")
            .unwrap_or("")
            .split(';')
            .filter_map(|name| catalog.group_by_name(name))
            .map(|g| g.id)
            .collect();
        groups.dedup();
        groups.truncate(crate::served::cookie::MAX_GROUPS);
        if groups.is_empty() {
            groups.push(UNASSIGNED_COMPUTERS);
        }
        let claims = Claims {
            kind: Kind::Authorization,
            server_id: self.served.server_id(),
            issued: call.now,
            expires: call.now + self.settings.cookie_lifetime,
            config_change: catalog.config_last_change,
            anchor: 0,
            groups,
            client_id: client_id.to_ascii_lowercase(),
            protocol: String::new(),
        };
        open_response(
            &mut out,
            "GetAuthorizationCookieResponse",
            super::SIMPLE_AUTH_NS,
        );
        let _ = write!(
            out,
            "<GetAuthorizationCookieResult><PlugInId>SimpleTargeting</PlugInId>\
             <CookieData>{}</CookieData></GetAuthorizationCookieResult>\
             </GetAuthorizationCookieResponse>",
            base64_encode(&self.served.sealer().seal(&claims))
        );
        Ok(out)
    }

    fn get_config(&self, op: &Element, mut out: String) -> Result<String> {
        if let Some(v) = op.child_text("protocolVersion")
            && parse_version(v).is_none()
        {
            return Err(Fault::invalid("protocolVersion"));
        }
        let catalog = self.served.catalog();
        open_response(&mut out, "GetConfigResponse", super::CLIENT_NS);
        let _ = write!(
            out,
            "<GetConfigResult><LastChange>{}</LastChange>\
             <IsRegistrationRequired>true</IsRegistrationRequired><AuthInfo><AuthPlugInInfo>\
             <PlugInID>SimpleTargeting</PlugInID>\
             <ServiceUrl>SimpleAuthWebService/SimpleAuth.asmx</ServiceUrl><Parameter/>\
             </AuthPlugInInfo></AuthInfo><Properties>",
            format_datetime(catalog.config_last_change)
        );
        // Not PackageServerShare: the UNC path of the SMB share of locally published packages
        // (for repair); this node serves no SMB share, and a path to nothing would send clients
        // looking for one.
        for (name, value) in [
            (
                "MaxExtendedUpdatesPerRequest",
                self.settings.max_extended.to_string(),
            ),
            ("ProtocolVersion", "3.2".to_owned()),
            ("IsInventoryRequired", "0".to_owned()),
            ("ClientReportingLevel", "2".to_owned()),
        ] {
            let _ = write!(
                out,
                "<ConfigurationProperty><Name>{name}</Name><Value>{value}</Value>\
                 </ConfigurationProperty>"
            );
        }
        out.push_str("</Properties></GetConfigResult></GetConfigResponse>");
        Ok(out)
    }

    fn get_cookie(&self, op: &Element, call: &Call<'_>, mut out: String) -> Result<String> {
        let auth = items(op, "authCookies", "AuthorizationCookie");
        let [auth] = auth.as_slice() else {
            return Err(Fault::new(
                ErrorCode::InvalidAuthorizationCookie,
                "exactly one AuthorizationCookie",
            ));
        };
        let auth = auth
            .child_text("CookieData")
            .and_then(base64_decode)
            .and_then(|b| {
                self.served
                    .sealer()
                    .open_cookie(&b, Kind::Authorization)
                    .ok()
            })
            .filter(|c| c.server_id == self.served.server_id() && c.expires > call.now)
            .ok_or_else(|| Fault::new(ErrorCode::InvalidAuthorizationCookie, ""))?;
        let protocol = op.child_text("protocolVersion").unwrap_or("1.0");
        if parse_version(protocol).is_none() {
            return Err(Fault::invalid("protocolVersion"));
        }
        // An old cookie with only its clear Expiration (what a first-time client sends) is no
        // cookie; one with data must be ours.
        let old = match op
            .child("oldCookie")
            .filter(|c| !c.is_nil())
            .and_then(|c| c.child_text("EncryptedData"))
            .filter(|d| !d.is_empty())
        {
            Some(data) => Some(
                base64_decode(data)
                    .and_then(|b| self.served.sealer().open_cookie(&b, Kind::Client).ok())
                    .ok_or_else(|| Fault::new(ErrorCode::InvalidCookie, "oldCookie"))?,
            ),
            None => None,
        };
        let catalog = self.served.catalog();
        let last_change = op
            .child_text("lastChange")
            .and_then(parse_datetime)
            .ok_or_else(|| Fault::invalid("lastChange"))?;
        if last_change != catalog.config_last_change {
            return Err(Fault::new(ErrorCode::ConfigChanged, ""));
        }
        let claims = Claims {
            kind: Kind::Client,
            server_id: self.served.server_id(),
            issued: call.now,
            expires: call.now + self.settings.cookie_lifetime,
            config_change: catalog.config_last_change,
            anchor: old.as_ref().map_or(0, |o| o.anchor),
            groups: auth.groups,
            client_id: auth.client_id,
            protocol: protocol.to_owned(),
        };
        open_response(&mut out, "GetCookieResponse", super::CLIENT_NS);
        cookie_element(
            &mut out,
            "GetCookieResult",
            claims.expires,
            &self.reseal(&claims),
        );
        out.push_str("</GetCookieResponse>");
        Ok(out)
    }

    async fn register_computer(
        self: &Arc<Self>,
        op: &Element,
        call: &Call<'_>,
        mut out: String,
    ) -> Result<String> {
        let claims = self.client_cookie(op, call.now)?;
        let info = op
            .child("computerInfo")
            .filter(|c| !c.is_nil())
            .ok_or_else(|| Fault::invalid("computerInfo"))?;
        let text = |name: &str| info.child_text(name).unwrap_or("").to_owned();
        let computer = Computer {
            client_id: claims.client_id.clone(),
            dns_name: text("DnsName"),
            os_version: format!(
                "{}.{}.{}.{}",
                text("OSMajorVersion"),
                text("OSMinorVersion"),
                text("OSBuildNumber"),
                text("OSServicePackMajorNumber")
            ),
            os_locale: text("OSLocale"),
            manufacturer: text("ComputerManufacturer"),
            model: text("ComputerModel"),
            processor: text("ProcessorArchitecture"),
            client_version: format!(
                "{}.{}.{}.{}",
                text("ClientVersionMajorNumber"),
                text("ClientVersionMinorNumber"),
                text("ClientVersionBuildNumber"),
                text("ClientVersionQfeNumber")
            ),
            groups: claims.groups.clone(),
        };
        let service = self.clone();
        let now = call.now;
        tokio::task::spawn_blocking(move || {
            lock(&service.journal).register(&computer, now)?;
            write(&service.registered).insert(computer.client_id);
            Ok::<_, crate::catalog::CatalogError>(())
        })
        .await
        .map_err(Fault::internal)?
        .map_err(Fault::internal)?;
        open_response(&mut out, "RegisterComputerResponse", super::CLIENT_NS);
        out.push_str("</RegisterComputerResponse>");
        Ok(out)
    }

    fn start_category_scan(&self, op: &Element, mut out: String) -> Result<String> {
        let requested = op
            .child("requestedCategories")
            .filter(|r| !r.is_nil())
            .ok_or_else(|| Fault::invalid("requestedCategories"))?;
        let relations: Vec<&Element> = requested.children_named("CategoryRelationship").collect();
        if relations.len() >= 200 {
            return Err(Fault::invalid("requestedCategories"));
        }
        let catalog = self.served.catalog();
        let mut groups: std::collections::BTreeMap<i64, Vec<Guid>> = Default::default();
        let mut errors = Vec::new();
        let mut broken = HashSet::new();
        for r in relations {
            let index = r
                .child_text("IndexOfAndGroup")
                .and_then(|i| i.parse::<i64>().ok())
                .ok_or_else(|| Fault::invalid("IndexOfAndGroup"))?;
            let id = r
                .child_text("CategoryId")
                .and_then(Guid::parse)
                .ok_or_else(|| Fault::invalid("CategoryId"))?;
            let known = catalog
                .latest(id)
                .is_some_and(|c| c.update_type == UpdateType::Category);
            if !known {
                errors.push(id);
                broken.insert(index);
            }
            groups.entry(index).or_default().push(id);
        }
        // MS-WUSP §3.1.5.6: a group of one product, or of a product and a classification,
        // contributes the product; any other shape clears the list.
        let mut preferred = Vec::new();
        for (index, ids) in groups {
            if broken.contains(&index) {
                continue;
            }
            let kind = |id: &Guid| {
                catalog
                    .latest(*id)
                    .and_then(|r| r.category_type.clone())
                    .unwrap_or_default()
            };
            let products: Vec<Guid> = ids
                .iter()
                .filter(|i| kind(i) == "Product")
                .copied()
                .collect();
            let classifications = ids
                .iter()
                .filter(|i| kind(i) == "UpdateClassification")
                .count();
            if products.len() == 1
                && products.len() + classifications == ids.len()
                && classifications <= 1
            {
                preferred.push(products[0]);
            } else {
                preferred.clear();
                break;
            }
        }
        open_response(&mut out, "StartCategoryScanResponse", super::CLIENT_NS);
        // The preferred list is there even when empty.
        if preferred.is_empty() {
            out.push_str("<preferredCategoryIds></preferredCategoryIds>");
        }
        id_list(&mut out, "preferredCategoryIds", "guid", preferred);
        id_list(&mut out, "requestedCategoryIdsInError", "guid", errors);
        out.push_str("</StartCategoryScanResponse>");
        Ok(out)
    }

    async fn sync_updates(
        self: &Arc<Self>,
        op: &Element,
        call: &Call<'_>,
        mut out: String,
    ) -> Result<String> {
        let mut claims = self.client_cookie(op, call.now)?;
        let loaded = self.served.snapshot();
        let catalog: &Catalog = &loaded.catalog;
        self.may_scan(&claims, catalog)?;
        let p = op
            .child("parameters")
            .filter(|p| !p.is_nil())
            .ok_or_else(|| Fault::invalid("parameters"))?;
        let installed = int_items(p, "InstalledNonLeafUpdateIDs")?;
        if installed.len() > self.settings.max_installed {
            return Err(Fault::invalid("parameters.InstalledNonLeafUpdateIDs"));
        }
        let skip_software = p
            .child_text("SkipSoftwareSync")
            .and_then(parse_bool)
            .unwrap_or(false);
        if !skip_software && p.child("SystemSpec").is_some_and(|s| !s.is_nil()) {
            return Err(Fault::invalid("parameters.SystemSpec"));
        }
        let system_spec = SystemSpec::read(p).map_err(Fault::invalid)?;
        if let Some(spec) = &system_spec {
            self.note_device_ids(spec, call.now);
        }
        let mut other = int_items(p, "OtherCachedUpdateIDs")?;
        if skip_software {
            other.extend(int_items(p, "CachedDriverIDs")?);
        }
        let filter_categories = items(p, "FilterCategoryIds", "CategoryIdentifier")
            .into_iter()
            .map(|c| {
                c.child_text("Id")
                    .and_then(Guid::parse)
                    .ok_or_else(|| Fault::invalid("parameters.FilterCategoryIds"))
            })
            .collect::<Result<Vec<_>>>()?;
        let two_groups = p
            .child_text("NeedTwoGroupOutOfScopeUpdates")
            .and_then(parse_bool)
            .unwrap_or(false);
        let scope = loaded.scope(&claims.groups, call.now);
        let result = scope::sync(
            catalog,
            &scope,
            &SyncRequest {
                installed_non_leaf: installed,
                other_cached: other,
                skip_software,
                filter_categories: filter_categories.clone(),
                anchor: claims.anchor,
                page_size: self.settings.page_size,
                system_spec,
                printers: false,
            },
        );
        let modern = client_at_least(&claims, 1, 7);
        reserve_sync_info(&mut out, catalog, &result);
        open_response(&mut out, "SyncUpdatesResponse", super::CLIENT_NS);
        out.push_str("<SyncUpdatesResult>");
        // With a category scan and the two-group option, revisions still deployed but outside
        // the scanned categories go in their own list (MS-WUSP §2.2.2.2.4).
        let (gone, deployed_elsewhere): (Vec<u32>, Vec<u32>) =
            if modern && two_groups && !filter_categories.is_empty() {
                result
                    .out_of_scope
                    .iter()
                    .partition(|id| !scope.contains(**id))
            } else {
                (result.out_of_scope.clone(), Vec::new())
            };
        sync_info(&mut out, catalog, &result, &claims, &gone);
        claims.anchor = result.new_anchor;
        cookie_element(&mut out, "NewCookie", claims.expires, &self.reseal(&claims));
        if modern {
            id_list(
                &mut out,
                "DeployedOutOfScopeRevisionIds",
                "int",
                &deployed_elsewhere,
            );
            let _ = write!(
                out,
                "<DriverSyncNotNeeded>{}</DriverSyncNotNeeded>",
                result.driver_sync_not_needed
            );
        }
        out.push_str("</SyncUpdatesResult></SyncUpdatesResponse>");
        // When it last scanned, for status views; not worth failing the scan over. Once a
        // pass, on its last page: a first scan of a large catalog has dozens of pages.
        if !result.truncated {
            let service = self.clone();
            let (client, now) = (claims.client_id.clone(), call.now);
            tokio::task::spawn_blocking(move || {
                let _ = lock(&service.journal).touch_sync(&client, now);
            });
        }
        Ok(out)
    }

    /// Keep the device ids of a driver pass not seen before (a downstream node that syncs
    /// drivers on demand asks its upstream for them), up to [`super::MAX_DEVICE_IDS`]; written
    /// off the async workers, never failing the scan.
    fn note_device_ids(self: &Arc<Self>, spec: &SystemSpec, now: i64) {
        let fresh: Vec<String> = {
            let known = read(&self.device_ids);
            let mut fresh: Vec<String> = spec
                .devices
                .iter()
                .flat_map(|d| d.hardware_ids.iter().chain(&d.compatible_ids))
                .filter(|id| !known.contains(*id))
                .cloned()
                .collect();
            fresh.sort_unstable();
            fresh.dedup();
            fresh.truncate(super::MAX_DEVICE_IDS.saturating_sub(known.len()));
            fresh
        };
        if fresh.is_empty() {
            return;
        }
        write(&self.device_ids).extend(fresh.iter().cloned());
        let service = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = lock(&service.journal).add_device_ids(&fresh, now) {
                tracing::warn!(error = %e, "keeping the device ids of a driver pass");
            }
        });
    }

    /// MS-WUSP 3.1.5.12, asked by the Add Printer Wizard: the printer drivers deployed to the
    /// client whose prerequisites it has (the call names no device, so every one of them),
    /// one revision per update; what it has cached of them (`printerUpdateIDs`) is not sent
    /// again, and what it caches that is no longer deployed is out of scope. The cookie keeps
    /// its anchor: the spec's newest deployment time would make the next SyncUpdates skip
    /// software deployments that changed since the client's last software sync.
    fn sync_printer_catalog(
        &self,
        op: &Element,
        call: &Call<'_>,
        mut out: String,
    ) -> Result<String> {
        let claims = self.client_cookie(op, call.now)?;
        let loaded = self.served.snapshot();
        let catalog: &Catalog = &loaded.catalog;
        self.may_scan(&claims, catalog)?;
        let installed = int_items(op, "installedNonLeafUpdateIDs")?;
        if installed.len() > self.settings.max_installed {
            return Err(Fault::invalid("installedNonLeafUpdateIDs"));
        }
        let scope = loaded.scope(&claims.groups, call.now);
        let result = scope::sync(
            catalog,
            &scope,
            &SyncRequest {
                installed_non_leaf: installed,
                other_cached: int_items(op, "printerUpdateIDs")?,
                skip_software: true,
                printers: true,
                anchor: claims.anchor,
                page_size: self.settings.page_size,
                ..SyncRequest::default()
            },
        );
        reserve_sync_info(&mut out, catalog, &result);
        open_response(&mut out, "SyncPrinterCatalogResponse", super::CLIENT_NS);
        out.push_str("<SyncPrinterCatalogResult>");
        sync_info(&mut out, catalog, &result, &claims, &result.out_of_scope);
        cookie_element(&mut out, "NewCookie", claims.expires, &self.reseal(&claims));
        out.push_str("</SyncPrinterCatalogResult></SyncPrinterCatalogResponse>");
        Ok(out)
    }

    fn refresh_cache(&self, op: &Element, call: &Call<'_>, mut out: String) -> Result<String> {
        let claims = self.client_cookie(op, call.now)?;
        if op.child("globalIDs").is_none_or(|g| g.is_nil()) {
            return Err(Fault::invalid("globalIDs"));
        }
        let loaded = self.served.snapshot();
        let scope = loaded.scope(&claims.groups, call.now);
        open_response(&mut out, "RefreshCacheResponse", super::CLIENT_NS);
        out.push_str("<RefreshCacheResult>");
        for identity in items(op, "globalIDs", "UpdateIdentity") {
            let Some((id, rev)) = update_identity(identity) else {
                return Err(Fault::invalid("globalIDs.UpdateIdentity"));
            };
            let Some(r) = loaded.catalog.by_identity(id, rev) else {
                continue;
            };
            let Some(o) = scope.get(r.id) else {
                continue;
            };
            let _ = write!(
                out,
                "<RefreshCacheResult><RevisionID>{}</RevisionID><GlobalID><UpdateID>{id}</UpdateID>\
                 <RevisionNumber>{rev}</RevisionNumber></GlobalID><IsLeaf>{}</IsLeaf>",
                r.id, o.is_leaf
            );
            deployment(&mut out, o, &claims, None);
            out.push_str("</RefreshCacheResult>");
        }
        out.push_str("</RefreshCacheResult></RefreshCacheResponse>");
        Ok(out)
    }

    fn get_extended_update_info(
        &self,
        op: &Element,
        call: &Call<'_>,
        mut out: String,
    ) -> Result<String> {
        let claims = self.client_cookie(op, call.now)?;
        let ids = int_items(op, "revisionIDs")?;
        if ids.len() > self.settings.max_extended {
            return Err(Fault::invalid("revisionIDs"));
        }
        let asked = Asked::read(op)?;
        let loaded = self.served.snapshot();
        let catalog = &loaded.catalog;
        let scope = loaded.scope(&claims.groups, call.now);
        let (in_scope, out_of_scope): (Vec<u32>, Vec<u32>) =
            ids.iter().partition(|id| scope.contains(**id));
        let (fragments, files) = asked.parts(catalog, &in_scope);
        out.reserve(parts_size(&fragments, &files) + out_of_scope.len() * 16);
        open_response(&mut out, "GetExtendedUpdateInfoResponse", super::CLIENT_NS);
        out.push_str("<GetExtendedUpdateInfoResult>");
        write_parts(&mut out, call.content_base, &fragments, &files);
        id_list(&mut out, "OutOfScopeRevisionIDs", "int", out_of_scope);
        out.push_str("</GetExtendedUpdateInfoResult></GetExtendedUpdateInfoResponse>");
        Ok(out)
    }

    /// GetExtendedUpdateInfo by update identity (MS-WUSP 2.2.2.2.10): the fragments asked,
    /// FileLocations when FileUrl is asked, and each update's UpdateEncryptionDetail (whether
    /// any of its files is encrypted, `File/@IsEncrypted`). Identities unknown or out of the
    /// client's scope are left out: the answer has no list for them. When FileDecryption is
    /// asked, the key of each of their files that this node holds (imported at a root, synced
    /// down by MS-WSUSSS GetUpdateDecryptionData elsewhere), in FileDecryptionData and again in
    /// FileDecryptionData2, which the spec makes the same; SecurityData is the key once more,
    /// as WSUS sends it.
    fn get_extended_update_info2(
        &self,
        op: &Element,
        call: &Call<'_>,
        mut out: String,
    ) -> Result<String> {
        let claims = self.client_cookie(op, call.now)?;
        let identities = items(op, "updateIDs", "UpdateIdentity")
            .into_iter()
            .map(|i| update_identity(i).ok_or_else(|| Fault::invalid("updateIDs.UpdateIdentity")))
            .collect::<Result<Vec<_>>>()?;
        if identities.len() > self.settings.max_extended {
            return Err(Fault::invalid("updateIDs"));
        }
        let asked = Asked::read(op)?;
        let loaded = self.served.snapshot();
        let catalog = &loaded.catalog;
        let scope = loaded.scope(&claims.groups, call.now);
        let in_scope: Vec<u32> = identities
            .iter()
            .filter_map(|(id, revision)| catalog.by_identity(*id, *revision))
            .map(|r| r.id)
            .filter(|id| scope.contains(*id))
            .collect();
        let (fragments, files) = asked.parts(catalog, &in_scope);
        let wants = |kind: &str| asked.types.iter().any(|t| t == kind);
        out.reserve(parts_size(&fragments, &files) + in_scope.len() * 200);
        open_response(&mut out, "GetExtendedUpdateInfo2Response", super::CLIENT_NS);
        out.push_str("<GetExtendedUpdateInfo2Result>");
        let files = if wants("FileUrl") { files } else { Vec::new() };
        write_parts(&mut out, call.content_base, &fragments, &files);
        if wants("FileDecryption") {
            let mut keyed: Vec<(&[u8; 20], &[u8])> = in_scope
                .iter()
                .filter_map(|id| catalog.revision(*id))
                .flat_map(|r| r.files.iter())
                .filter_map(|f| Some((&f.sha1, catalog.key(&f.sha1)?)))
                .collect();
            keyed.sort_unstable();
            keyed.dedup();
            let lists = [
                ("FileDecryptionData", "FileDecryption"),
                ("FileDecryptionData2", "FileDecryption2"),
            ];
            for (list, item) in lists.into_iter().filter(|_| !keyed.is_empty()) {
                let _ = write!(out, "<{list}>");
                for (sha1, key) in &keyed {
                    let key = base64_encode(key);
                    let _ = write!(
                        out,
                        "<{item}><FileDigest>{}</FileDigest><DecryptionKey>{key}</DecryptionKey>\
                         <SecurityData><base64Binary>{key}</base64Binary></SecurityData></{item}>",
                        base64_encode(*sha1)
                    );
                }
                let _ = write!(out, "</{list}>");
            }
        }
        if !in_scope.is_empty() {
            out.push_str("<UpdateEncryptionDetails>");
        }
        for r in in_scope.iter().filter_map(|id| catalog.revision(*id)) {
            let _ = write!(
                out,
                "<UpdateEncryptionDetail><UpdateIdentity><UpdateID>{}</UpdateID>\
                 <RevisionNumber>{}</RevisionNumber></UpdateIdentity>\
                 <HasEncryptedFiles>{}</HasEncryptedFiles></UpdateEncryptionDetail>",
                r.update_id,
                r.revision_number,
                r.files.iter().any(|f| f.encrypted)
            );
        }
        if !in_scope.is_empty() {
            out.push_str("</UpdateEncryptionDetails>");
        }
        out.push_str("</GetExtendedUpdateInfo2Result></GetExtendedUpdateInfo2Response>");
        Ok(out)
    }

    fn get_file_locations(&self, op: &Element, call: &Call<'_>, mut out: String) -> Result<String> {
        let claims = self.client_cookie(op, call.now)?;
        if op.child("fileDigests").is_none_or(|d| d.is_nil()) {
            return Err(Fault::invalid("fileDigests"));
        }
        let digests = items(op, "fileDigests", "base64Binary")
            .into_iter()
            .map(|d| {
                base64_decode(d.text())
                    .and_then(|b| <[u8; 20]>::try_from(b).ok())
                    .ok_or_else(|| Fault::invalid("fileDigests"))
            })
            .collect::<Result<Vec<_>>>()?;
        let catalog = self.served.catalog();
        open_response(&mut out, "GetFileLocationsResponse", super::CLIENT_NS);
        out.push_str("<GetFileLocationsResult><FileLocations>");
        for digest in &digests {
            if let Some(file) = catalog.file(digest) {
                file_location(&mut out, call.content_base, file);
            }
        }
        out.push_str("</FileLocations>");
        cookie_element(&mut out, "NewCookie", claims.expires, &self.reseal(&claims));
        out.push_str("</GetFileLocationsResult></GetFileLocationsResponse>");
        Ok(out)
    }

    async fn report_event_batch(
        self: &Arc<Self>,
        op: &Element,
        call: &Call<'_>,
        mut out: String,
    ) -> Result<String> {
        let claims = self.client_cookie(op, call.now)?;
        if claims.config_change != self.served.catalog().config_last_change {
            return Err(Fault::new(ErrorCode::ConfigChanged, ""));
        }
        let mut events = Vec::new();
        for e in items(op, "eventBatch", "ReportingEvent") {
            let Some(basic) = e.child("BasicData") else {
                return Err(Fault::invalid("eventBatch.ReportingEvent.BasicData"));
            };
            let bad =
                |what: &str| Fault::invalid(format!("eventBatch.ReportingEvent.BasicData.{what}"));
            let instance = basic
                .child_text("EventInstanceID")
                .and_then(Guid::parse)
                .ok_or_else(|| bad("EventInstanceID"))?;
            let number = |name: &str| -> Result<i32> {
                basic
                    .child_text(name)
                    .and_then(|v| v.parse::<i64>().ok())
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| bad(name))
            };
            let update = basic
                .child("UpdateID")
                .and_then(update_identity)
                .filter(|(id, _)| *id != Guid::NIL);
            let misc = e
                .child("ExtendedData")
                .map(|x| items(x, "MiscData", "string"))
                .unwrap_or_default()
                .iter()
                .map(|s| s.text().to_owned())
                .collect();
            events.push(Event {
                client_id: claims.client_id.clone(),
                instance,
                event_id: number("EventID")?,
                source_id: number("SourceID")?,
                update,
                hresult: number("Win32HResult")?,
                time: basic
                    .child_text("TimeAtTarget")
                    .and_then(parse_datetime)
                    .ok_or_else(|| bad("TimeAtTarget"))?,
                misc,
            });
        }
        // Durable before the client hears "true": nothing it was told is accepted is lost.
        let service = self.clone();
        let now = call.now;
        tokio::task::spawn_blocking(move || lock(&service.journal).append(&events, now))
            .await
            .map_err(Fault::internal)?
            .map_err(Fault::internal)?;
        open_response(&mut out, "ReportEventBatchResponse", super::REPORTING_NS);
        out.push_str(
            "<ReportEventBatchResult>true</ReportEventBatchResult></ReportEventBatchResponse>",
        );
        Ok(out)
    }
}

/// The LocalizedProperties fragment for the client's locales: the first exact match, else the
/// first language match ("en-us" → "en"), else English, else the first there is.
/// An `UpdateIdentity` (UpdateID, RevisionNumber); `None` when either is missing or malformed.
fn update_identity(e: &Element) -> Option<(Guid, u32)> {
    let id = e.child_text("UpdateID").and_then(Guid::parse)?;
    let revision = e.child_text("RevisionNumber")?.trim().parse::<u32>().ok()?;
    Some((id, revision))
}

/// What a GetExtendedUpdateInfo (either) asks of each update: fragment kinds, and locales.
struct Asked {
    types: Vec<String>,
    /// Lower case.
    locales: Vec<String>,
}

impl Asked {
    /// infoTypes must be there; locales too when a localized kind is asked.
    fn read(op: &Element) -> Result<Asked> {
        if op.child("infoTypes").is_none_or(|t| t.is_nil()) {
            return Err(Fault::invalid("infoTypes"));
        }
        let types: Vec<String> = items(op, "infoTypes", "XmlUpdateFragmentType")
            .iter()
            .map(|t| t.text().to_owned())
            .collect();
        let wants_locale = types
            .iter()
            .any(|t| t == "LocalizedProperties" || t == "Eula");
        if wants_locale && op.child("locales").is_none_or(|l| l.is_nil()) {
            return Err(Fault::invalid("locales"));
        }
        let locales = items(op, "locales", "string")
            .iter()
            .map(|l| l.text().to_ascii_lowercase())
            .collect();
        Ok(Asked { types, locales })
    }

    /// The fragments asked of `revisions` (kind by kind, as asked), and their files, each once.
    fn parts<'c>(
        &self,
        catalog: &'c Catalog,
        revisions: &[u32],
    ) -> (Vec<(u32, &'c Escaped)>, Vec<&'c FileRef>) {
        let locales = &self.locales;
        let mut fragments: Vec<(u32, &Escaped)> = Vec::new();
        for kind in &self.types {
            for id in revisions {
                let Some(r) = catalog.revision(*id) else {
                    continue;
                };
                let f = &r.fragments;
                match kind.as_str() {
                    "Core" => fragments.push((*id, &f.core)),
                    "Extended" => fragments.push((*id, &f.extended)),
                    "LocalizedProperties" => {
                        fragments.extend(pick_locale(&f.localized, locales).map(|x| (*id, x)));
                    }
                    "Eula" => fragments.extend(
                        f.eula
                            .iter()
                            .filter(|(lang, _, _)| locales.iter().any(|l| l == lang))
                            .map(|(_, _, x)| (*id, x)),
                    ),
                    _ => {}
                }
            }
        }
        let mut files: Vec<&FileRef> = Vec::new();
        let mut seen = HashSet::new();
        for r in revisions.iter().filter_map(|id| catalog.revision(*id)) {
            for file in &r.files {
                if seen.insert(file.sha1) {
                    files.push(file);
                }
            }
        }
        (fragments, files)
    }
}

/// What [`write_parts`] writes, about: `<Update><ID>…</ID><Xml>…</Xml></Update>` is 45 bytes
/// around its fragment, a FileLocation about 200.
fn parts_size(fragments: &[(u32, &Escaped)], files: &[&FileRef]) -> usize {
    fragments
        .iter()
        .map(|(_, x)| x.as_str().len() + 48)
        .sum::<usize>()
        + files.len() * 256
        + 256
}

/// Updates and FileLocations, each left out when empty.
fn write_parts(out: &mut String, base: &str, fragments: &[(u32, &Escaped)], files: &[&FileRef]) {
    if !fragments.is_empty() {
        out.push_str("<Updates>");
        for (id, xml) in fragments {
            let _ = write!(out, "<Update><ID>{id}</ID>");
            escaped_element(out, "Xml", xml);
            out.push_str("</Update>");
        }
        out.push_str("</Updates>");
    }
    if !files.is_empty() {
        out.push_str("<FileLocations>");
        for file in files {
            file_location(out, base, file);
        }
        out.push_str("</FileLocations>");
    }
}

fn pick_locale<'a, T>(localized: &'a [(String, T)], locales: &[String]) -> Option<&'a T> {
    let find = |lang: &str| localized.iter().find(|(l, _)| l == lang).map(|(_, x)| x);
    locales
        .iter()
        .find_map(|l| find(l))
        .or_else(|| {
            locales
                .iter()
                .find_map(|l| l.split_once('-').and_then(|(lang, _)| find(lang)))
        })
        .or_else(|| find("en"))
        .or_else(|| localized.first().map(|(_, x)| x))
}
