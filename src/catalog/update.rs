//! One update document (`<upd:Update>`, as WSUS stores it) read into what the server needs to
//! know of it, and the fragments it hands to clients, derived as MS-WUSP §3.1.1.1 says and as
//! real WSUS does where the spec is silent. Sans-IO: text in, values out.
//!
//! The fragments (MS-WUSP §3.1.1.1, with what a WS2025 WSUS does besides):
//! - Core: `UpdateIdentity`; `Properties` with only UpdateType, ExplicitlyDeployable,
//!   AutoSelectOnWebSites, OSUpgrade, EulaID (defaults dropped, no child elements);
//!   `Relationships`; `ApplicabilityRules`.
//! - Extended: the rest of `Properties` renamed `ExtendedProperties` (publishing attributes
//!   dropped), then `Files`, then `HandlerSpecificData`.
//! - LocalizedProperties: one per language; Eula: one per `EulaFile`.
//!
//! Elements lose their namespaces; those of the base, MSI and driver applicability rules are
//! renamed `b.`, `m.` and `d.` + local name; `xsi:type` becomes `type`. An element of a
//! namespace outside Microsoft's update schemas (an embedded CBS manifest) keeps an `xmlns`
//! where its namespace begins. No whitespace between elements, `<X a="v" />` when empty.

use std::fmt::Write as _;

use crate::soap::{self, Element, Escaped, Limits, XSI_NS, escape, escape_text};

use super::driver::DriverMeta;
use super::{CatalogError, FileRef, Guid, UpdateType};

pub const UPDATE_NS: &str = "http://schemas.microsoft.com/msus/2002/12/Update";
const BAR_NS: &str = "http://schemas.microsoft.com/msus/2002/12/BaseApplicabilityRules";
const MSI_NS: &str = "http://schemas.microsoft.com/msus/2002/12/MsiApplicabilityRules";
const DRIVER_NS: &str = "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/WindowsDriver";
/// Every schema of Microsoft's update metadata lives under this prefix.
const MSUS_PREFIX: &str = "http://schemas.microsoft.com/msus/";

/// Core keeps these `Properties` attributes, in this order.
const CORE_ATTRS: [&str; 5] = [
    "UpdateType",
    "ExplicitlyDeployable",
    "AutoSelectOnWebSites",
    "OSUpgrade",
    "EulaID",
];
/// Neither fragment carries these (publishing bookkeeping).
const DROPPED_ATTRS: [&str; 7] = [
    "PublicationState",
    "PublisherID",
    "CreationDate",
    "IsPublic",
    "LegacyName",
    "DetectoidType",
    "PerUser",
];

/// Limits for update documents: larger than for client requests (CBS manifests reach hundreds
/// of KB), still bounded.
pub const DOCUMENT_LIMITS: Limits = Limits {
    max_bytes: 64 << 20,
    max_depth: 64,
    max_elements: 2_000_000,
    packed: &[],
};

/// One prerequisite clause: satisfied when any of `ids` is installed (AND across clauses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub ids: Vec<Guid>,
    pub is_category: bool,
}

/// What the server reads from an update document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub update_id: Guid,
    pub revision_number: u32,
    pub update_type: UpdateType,
    /// `Company`, `ProductFamily`, `Product`, `UpdateClassification` for categories.
    pub category_type: Option<String>,
    pub explicitly_deployable: bool,
    pub prerequisites: Vec<Clause>,
    /// Bundled updates: AtLeastOne groups of (UpdateID, RevisionNumber).
    pub bundled: Vec<Vec<(Guid, u32)>>,
    pub superseded: Vec<Guid>,
    pub files: Vec<FileRef>,
    /// A driver update's `ApplicabilityRules/Metadata/WindowsDriverMetaData`; empty for others.
    pub drivers: Vec<DriverMeta>,
    /// `Properties/SecuredFragment` is FileDecryption (MS-WSUSSS §3.1.1.1): the keys of its
    /// files come from the upstream by GetUpdateDecryptionData.
    pub file_decryption: bool,
    /// (language, title), in document order.
    pub titles: Vec<(String, String)>,
    /// `Properties/KBArticleID`, trimmed; none when absent or empty.
    pub kb: Option<String>,
    pub fragments: Fragments,
}

/// The XML fragments of a revision that clients fetch (MS-WUSP §3.1.1), each a `T`: `String`
/// as derived from the document and stored, [`Escaped`] as served (inside `<Xml>` elements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragments<T = String> {
    pub core: T,
    pub extended: T,
    /// (language, fragment)
    pub localized: Vec<(String, T)>,
    /// (language, GeoId or "", fragment)
    pub eula: Vec<(String, String, T)>,
}

impl Fragments {
    /// Escaped once for every answer that carries them.
    pub fn escaped(&self) -> Fragments<Escaped> {
        Fragments {
            core: Escaped::new(&self.core),
            extended: Escaped::new(&self.extended),
            localized: self
                .localized
                .iter()
                .map(|(lang, x)| (lang.clone(), Escaped::new(x)))
                .collect(),
            eula: self
                .eula
                .iter()
                .map(|(lang, geo, x)| (lang.clone(), geo.clone(), Escaped::new(x)))
                .collect(),
        }
    }
}

impl Parsed {
    /// The files whose keys come by GetUpdateDecryptionData (see [`super::keys::needing_keys`]).
    pub fn needing_keys(&self) -> Vec<[u8; 20]> {
        let files: Vec<([u8; 20], bool)> =
            self.files.iter().map(|f| (f.sha1, f.encrypted)).collect();
        super::keys::needing_keys(self.file_decryption, &files)
    }
}

fn bad(message: impl Into<String>) -> CatalogError {
    CatalogError::Document(message.into())
}

/// Read an update document.
pub fn parse(xml: &str) -> Result<Parsed, CatalogError> {
    let root = soap::parse_tree(xml.as_bytes(), &DOCUMENT_LIMITS)
        .map_err(|e| bad(format!("not readable XML: {e}")))?;
    if root.name != "Update" || root.ns.as_deref() != Some(UPDATE_NS) {
        return Err(bad("the root element is not upd:Update"));
    }
    let child = |name: &str| {
        root.children
            .iter()
            .find(|c| c.name == name && c.ns.as_deref() == Some(UPDATE_NS))
    };
    let identity = child("UpdateIdentity").ok_or_else(|| bad("no UpdateIdentity"))?;
    let update_id = identity
        .attr("UpdateID")
        .and_then(Guid::parse)
        .ok_or_else(|| bad("UpdateIdentity without a valid UpdateID"))?;
    let revision_number = identity
        .attr("RevisionNumber")
        .and_then(|r| r.trim().parse::<u32>().ok())
        .ok_or_else(|| bad("UpdateIdentity without a valid RevisionNumber"))?;
    let properties = child("Properties").ok_or_else(|| bad("no Properties"))?;
    let update_type = match properties.attr("UpdateType") {
        Some("Software") => UpdateType::Software,
        Some("Driver") => UpdateType::Driver,
        Some("Category") => UpdateType::Category,
        Some("Detectoid") => UpdateType::Detectoid,
        other => return Err(bad(format!("UpdateType {other:?}"))),
    };
    let explicitly_deployable = properties
        .attr("ExplicitlyDeployable")
        .is_some_and(|v| v.trim() == "true");
    let file_decryption = properties
        .child_text("SecuredFragment")
        .is_some_and(|f| f.trim().eq_ignore_ascii_case("FileDecryption"));
    let kb = properties
        .child_text("KBArticleID")
        .map(str::trim)
        .filter(|kb| !kb.is_empty())
        .map(str::to_owned);
    let category_type = child("HandlerSpecificData")
        .and_then(|h| h.child("CategoryInformation"))
        .and_then(|c| c.attr("CategoryType"))
        .map(str::to_owned);

    let mut prerequisites = Vec::new();
    let mut bundled = Vec::new();
    let mut superseded = Vec::new();
    if let Some(rel) = child("Relationships") {
        if let Some(pre) = rel.child("Prerequisites") {
            for clause in &pre.children {
                match clause.name.as_str() {
                    "UpdateIdentity" => prerequisites.push(Clause {
                        ids: vec![identity_id(clause)?],
                        is_category: false,
                    }),
                    "AtLeastOne" => prerequisites.push(Clause {
                        ids: clause
                            .children_named("UpdateIdentity")
                            .map(identity_id)
                            .collect::<Result<_, _>>()?,
                        is_category: clause.attr("IsCategory").is_some_and(|v| v == "true"),
                    }),
                    _ => {}
                }
            }
        }
        if let Some(b) = rel.child("BundledUpdates") {
            for group in b.children_named("AtLeastOne") {
                let members = group
                    .children_named("UpdateIdentity")
                    .map(|m| {
                        let rev = m
                            .attr("RevisionNumber")
                            .and_then(|r| r.trim().parse::<u32>().ok())
                            .ok_or_else(|| bad("bundled UpdateIdentity without RevisionNumber"))?;
                        Ok((identity_id(m)?, rev))
                    })
                    .collect::<Result<Vec<_>, CatalogError>>()?;
                bundled.push(members);
            }
        }
        if let Some(s) = rel.child("SupersededUpdates") {
            superseded = s
                .children_named("UpdateIdentity")
                .map(identity_id)
                .collect::<Result<_, _>>()?;
        }
    }
    let files = match child("Files") {
        Some(files) => files
            .children_named("File")
            .map(file_ref)
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let drivers = match (update_type, child("ApplicabilityRules")) {
        (UpdateType::Driver, Some(rules)) => super::driver::read_metadata(rules)?,
        _ => Vec::new(),
    };
    let titles = child("LocalizedPropertiesCollection")
        .map(|c| {
            c.children_named("LocalizedProperties")
                .filter_map(|lp| {
                    Some((
                        lp.child_text("Language")?.to_ascii_lowercase(),
                        lp.child_text("Title").unwrap_or("").to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let fragments = fragments(&root);
    Ok(Parsed {
        update_id,
        revision_number,
        update_type,
        category_type,
        explicitly_deployable,
        prerequisites,
        bundled,
        superseded,
        files,
        drivers,
        file_decryption,
        titles,
        kb,
        fragments,
    })
}

/// The KBArticleID an extended fragment (as [`parse`] derives it) carries: what a revision
/// loaded from its stored fragments has of it without its document read again. Looked for
/// among `ExtendedProperties`' own children only (a handler's data may hold anything).
pub fn kb_of_extended(extended: &str) -> Option<String> {
    // An `<ExtendedProperties ... />` without children has none.
    let (properties, _) = extended.split_once("</ExtendedProperties>")?;
    let (_, rest) = properties.split_once("<KBArticleID>")?;
    let (kb, _) = rest.split_once("</KBArticleID>")?;
    // Digits in practice; text is stored escaped, and a KB number with markup is none.
    let kb = kb.trim();
    (!kb.is_empty() && !kb.contains(['<', '&'])).then(|| kb.to_owned())
}

fn identity_id(e: &Element) -> Result<Guid, CatalogError> {
    e.attr("UpdateID")
        .and_then(Guid::parse)
        .ok_or_else(|| bad("UpdateIdentity without a valid UpdateID"))
}

fn file_ref(file: &Element) -> Result<FileRef, CatalogError> {
    let name = file
        .attr("FileName")
        .ok_or_else(|| bad("File without FileName"))?;
    let sha1 = file
        .attr("Digest")
        .and_then(super::base64_decode)
        .and_then(|d| <[u8; 20]>::try_from(d).ok())
        .ok_or_else(|| bad(format!("File {name}: Digest is not a base64 SHA-1")))?;
    let size = file
        .attr("Size")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| bad(format!("File {name}: no Size")))?;
    let sha256 = file
        .children_named("AdditionalDigest")
        .find(|d| d.attr("Algorithm") == Some("SHA256"))
        .and_then(|d| super::base64_decode(d.text()))
        .and_then(|d| <[u8; 32]>::try_from(d).ok());
    let encrypted = file
        .attr("IsEncrypted")
        .and_then(crate::soap::xsd::parse_bool)
        .unwrap_or(false);
    Ok(FileRef {
        sha1,
        sha256,
        name: name.to_owned(),
        size,
        encrypted,
    })
}

fn fragments(root: &Element) -> Fragments {
    let update_children = |name: &'static str| {
        root.children
            .iter()
            .filter(move |c| c.name == name && c.ns.as_deref() == Some(UPDATE_NS))
    };
    let first = |name: &'static str| update_children(name).next();
    let mut core = String::new();
    let mut extended = String::new();
    if let Some(identity) = first("UpdateIdentity") {
        write_element(&mut core, identity, None);
    }
    if let Some(properties) = first("Properties") {
        core.push_str("<Properties");
        for name in CORE_ATTRS {
            if let Some(value) = properties.attr(name)
                && !is_default(name, value)
            {
                let _ = write!(core, " {name}=\"{}\"", escape(value));
            }
        }
        core.push_str(" />");
        extended.push_str("<ExtendedProperties");
        for (ns, name, value) in &properties.attrs {
            let dropped = CORE_ATTRS.contains(&name.as_str())
                || DROPPED_ATTRS.contains(&name.as_str())
                || is_default(name, value);
            if !dropped {
                write_attr(&mut extended, ns.as_deref(), name, value);
            }
        }
        if properties.children.is_empty() {
            extended.push_str(" />");
        } else {
            extended.push('>');
            for c in &properties.children {
                write_element(&mut extended, c, properties.ns.as_deref());
            }
            extended.push_str("</ExtendedProperties>");
        }
    }
    for name in ["Relationships", "ApplicabilityRules"] {
        if let Some(e) = first(name) {
            write_element(&mut core, e, None);
        }
    }
    for name in ["Files", "HandlerSpecificData"] {
        if let Some(e) = first(name) {
            write_element(&mut extended, e, None);
        }
    }
    let mut localized = Vec::new();
    let mut eula = Vec::new();
    if let Some(collection) = first("LocalizedPropertiesCollection") {
        for lp in collection.children_named("LocalizedProperties") {
            if let Some(lang) = lp.child_text("Language") {
                let mut out = String::new();
                write_element(&mut out, lp, None);
                localized.push((lang.to_ascii_lowercase(), out));
            }
        }
        for file in collection.children_named("EulaFile") {
            let mut out = String::new();
            write_element(&mut out, file, None);
            eula.push((
                file.attr("Language").unwrap_or("").to_ascii_lowercase(),
                file.attr("GeoId").unwrap_or("").to_owned(),
                out,
            ));
        }
    }
    Fragments {
        core,
        extended,
        localized,
        eula,
    }
}

/// Attributes real WSUS leaves out of fragments when they hold their default.
fn is_default(name: &str, value: &str) -> bool {
    matches!(
        (name, value.trim()),
        (
            "ExplicitlyDeployable" | "AutoSelectOnWebSites" | "OSUpgrade" | "PerUser",
            "false"
        ) | ("IsPublic", "true")
    )
}

fn fragment_name(e: &Element) -> String {
    match e.ns.as_deref() {
        Some(BAR_NS) => format!("b.{}", e.name),
        Some(MSI_NS) => format!("m.{}", e.name),
        Some(DRIVER_NS) => format!("d.{}", e.name),
        _ => e.name.clone(),
    }
}

fn write_attr(out: &mut String, ns: Option<&str>, name: &str, value: &str) {
    // xsi:type loses its prefix, not its value ("cmd:CommandLineInstallation").
    let name = if ns == Some(XSI_NS) && name == "type" {
        "type"
    } else {
        name
    };
    let _ = write!(out, " {name}=\"{}\"", escape(value));
}

/// Serialize `e` for a fragment; `parent_ns` is the namespace its parent element had (for
/// deciding where a foreign default namespace begins).
fn write_element(out: &mut String, e: &Element, parent_ns: Option<&str>) {
    let name = fragment_name(e);
    let _ = write!(out, "<{name}");
    if let Some(ns) = e.ns.as_deref()
        && !ns.starts_with(MSUS_PREFIX)
        && Some(ns) != parent_ns
    {
        let _ = write!(out, " xmlns=\"{}\"", escape(ns));
    }
    for (ns, attr, value) in &e.attrs {
        write_attr(out, ns.as_deref(), attr, value);
    }
    // Text matters in leaves only; whitespace between child elements is layout.
    let text = if e.children.is_empty() {
        e.text.as_str()
    } else {
        ""
    };
    if e.children.is_empty() && text.is_empty() {
        out.push_str(" />");
        return;
    }
    out.push('>');
    out.push_str(&escape_text(text));
    for c in &e.children {
        write_element(out, c, e.ns.as_deref());
    }
    let _ = write!(out, "</{name}>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        let path = format!("{}/tests/data/updates/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A real WSUS category document gives exactly the fragments a real WSUS served for it.
    #[test]
    fn a_real_category_derives_the_fragments_wsus_served() {
        let p = parse(&data("a-product.xml")).unwrap();
        assert_eq!(p.update_type, UpdateType::Category);
        assert_eq!(p.category_type.as_deref(), Some("Product"));
        assert_eq!(p.revision_number, 202);
        assert_eq!(p.fragments.core, data("a-core.expected"));
        assert_eq!(p.fragments.extended, data("a-extended.expected"));
        assert_eq!(
            p.fragments.localized,
            vec![("en".to_owned(), data("a-lp-en.expected"))]
        );
        assert_eq!(
            p.prerequisites,
            vec![Clause {
                ids: vec![Guid::parse("6964aab4-c5b5-43bd-a17d-ffb4346a8e1d").unwrap()],
                is_category: true
            }]
        );
    }

    #[test]
    fn software_and_bundle_fragments_follow_the_rules() {
        let d = parse(&data("d-software.xml")).unwrap();
        assert_eq!(d.update_type, UpdateType::Software);
        assert!(d.explicitly_deployable);
        assert_eq!(d.fragments.core, data("d-core.expected"));
        assert_eq!(d.fragments.extended, data("d-extended.expected"));
        assert_eq!(d.fragments.localized[0].1, data("d-lp-en.expected"));
        assert_eq!(d.fragments.localized[1].0, "de");
        assert_eq!(d.prerequisites.len(), 3);
        assert!(!d.prerequisites[0].is_category && d.prerequisites[1].is_category);
        assert_eq!(d.files.len(), 1);
        let file = &d.files[0];
        assert_eq!(
            hex::encode_upper(file.sha1),
            "BD789D42A2E027008EE3E7C4FBEE6720DD6DC4C9"
        );
        assert_eq!((file.size, file.extension().as_str()), (6_662_560, "exe"));
        assert!(file.sha256.is_some());

        // The KB number, read from the document and from the stored extended fragment alike.
        assert_eq!(d.kb.as_deref(), Some("5099999"));
        assert_eq!(kb_of_extended(&d.fragments.extended), d.kb);
        let a = parse(&data("a-product.xml")).unwrap();
        assert_eq!((a.kb, kb_of_extended(&a.fragments.extended)), (None, None));
        assert_eq!(
            kb_of_extended(
                "<ExtendedProperties /><HandlerSpecificData><KBArticleID>1</KBArticleID></HandlerSpecificData>"
            ),
            None,
            "only the properties' own"
        );

        let e = parse(&data("e-bundle.xml")).unwrap();
        assert_eq!(e.fragments.core, data("e-core.expected"));
        assert_eq!(
            e.bundled,
            vec![vec![(d.update_id, 200)]],
            "the bundle names (d) by identity"
        );
        assert_eq!(e.superseded.len(), 1);
        assert!(e.files.is_empty());
    }

    #[test]
    fn foreign_namespaces_keep_a_declaration_and_text_is_escaped() {
        let doc = format!(
            "<upd:Update xmlns:upd=\"{UPDATE_NS}\"><upd:UpdateIdentity UpdateID=\
             \"11111111-2222-4333-8444-555555555555\" RevisionNumber=\"1\" /><upd:Properties \
             UpdateType=\"Detectoid\" /><upd:LocalizedPropertiesCollection><upd:LocalizedProperties>\
             <upd:Language>EN</upd:Language><upd:Title>A &amp; B &lt;x&gt; \"q\"</upd:Title>\
             </upd:LocalizedProperties></upd:LocalizedPropertiesCollection><upd:ApplicabilityRules>\
             <upd:Metadata><assembly xmlns=\"urn:schemas-microsoft-com:asm.v3\"><id v=\"1\" />\
             </assembly></upd:Metadata></upd:ApplicabilityRules></upd:Update>"
        );
        let p = parse(&doc).unwrap();
        assert!(p.fragments.core.ends_with(
            "<ApplicabilityRules><Metadata><assembly xmlns=\"urn:schemas-microsoft-com:asm.v3\">\
             <id v=\"1\" /></assembly></Metadata></ApplicabilityRules>"
        ));
        assert_eq!(p.titles, vec![("en".into(), "A & B <x> \"q\"".into())]);
        assert_eq!(
            p.fragments.localized[0].1,
            "<LocalizedProperties><Language>EN</Language><Title>A &amp; B &lt;x&gt; \"q\"</Title>\
             </LocalizedProperties>"
        );
        assert_eq!(p.fragments.extended, "<ExtendedProperties />");
    }

    #[test]
    fn unusable_documents_say_why() {
        let err = |doc: &str| match parse(doc) {
            Err(CatalogError::Document(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err("<Update/>").contains("upd:Update"));
        assert!(err(&format!("<u:Update xmlns:u=\"{UPDATE_NS}\"/>")).contains("UpdateIdentity"));
        assert!(
            err(&format!(
                "<u:Update xmlns:u=\"{UPDATE_NS}\"><u:UpdateIdentity UpdateID=\"x\" \
                 RevisionNumber=\"1\"/></u:Update>"
            ))
            .contains("UpdateID")
        );
        assert!(err("<!DOCTYPE x><x/>").contains("DOCTYPE"));
    }
}
