//! SOAP 1.1 and 1.2 envelopes, sans-IO: a request body becomes a small element tree under hard
//! limits; responses and faults are written as text, the WSUS fault shape in [`wsus`]; the XML
//! Schema forms in [`xsd`]. Owns nothing else; calls nothing but the XML tokenizer.
//!
//! What a request may not do, whatever it claims: declare a DOCTYPE (so no entity can be
//! defined, and no external one fetched), use an entity other than the five predefined ones and
//! character references, nest deeper than `max_depth`, hold more than `max_elements` elements
//! or be longer than `max_bytes`. Each of these is a [`ParseError`], found in one pass without
//! building more than the limits allow.
//!
//! The tree keeps namespaces, local names, attributes and text; handlers look elements up by
//! local name and ignore what they do not know, as real clients send elements their WSDL lacks.
//! The arrays a caller names in [`Limits::packed`] keep their items as [`Packed`] text instead
//! of an element each: the id lists a client re-sends on every SyncUpdates page are most of its
//! elements, and an element per id cost two allocations.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use quick_xml::XmlVersion;
pub mod wsus;
pub mod xsd;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Soap11,
    Soap12,
}

impl Version {
    pub fn namespace(self) -> &'static str {
        match self {
            Version::Soap11 => SOAP11_NS,
            Version::Soap12 => SOAP12_NS,
        }
    }

    /// The Content-Type of a message in this version (SOAP 1.2 carries the action in it).
    pub fn content_type(self) -> &'static str {
        match self {
            Version::Soap11 => "text/xml; charset=utf-8",
            Version::Soap12 => "application/soap+xml; charset=utf-8",
        }
    }
}

/// How much a request may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    /// Packed items count as elements too.
    pub max_elements: usize,
    /// Local names of the arrays whose items are read as [`Packed`] text: items of one local
    /// name each, that hold text only.
    pub packed: &'static [&'static str],
}

impl Default for Limits {
    /// Generous for real clients (a SyncUpdates request is 20–50 KB, ~10 deep, a few thousand
    /// elements) and small enough that a hostile one costs little.
    fn default() -> Limits {
        Limits {
            max_bytes: 4 << 20,
            max_depth: 32,
            max_elements: 200_000,
            packed: &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    TooLarge(usize),
    TooDeep(usize),
    TooManyElements(usize),
    Doctype,
    /// An entity reference other than the predefined five.
    Entity(String),
    Malformed(String),
    /// Well-formed XML whose root is not a SOAP 1.1 or 1.2 Envelope.
    NotEnvelope,
    NoBody,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::TooLarge(n) => write!(f, "request body over {n} bytes"),
            ParseError::TooDeep(n) => write!(f, "XML nested deeper than {n} levels"),
            ParseError::TooManyElements(n) => write!(f, "more than {n} XML elements"),
            ParseError::Doctype => write!(f, "DOCTYPE is not allowed"),
            ParseError::Entity(name) => write!(f, "entity &{name}; is not allowed"),
            ParseError::Malformed(m) => write!(f, "malformed XML: {m}"),
            ParseError::NotEnvelope => write!(f, "not a SOAP envelope"),
            ParseError::NoBody => write!(f, "SOAP envelope without a Body element"),
        }
    }
}

impl std::error::Error for ParseError {}

/// One element: its namespace (if bound), local name, attributes (local name, value), child
/// elements in order, and its text (character data directly inside it, concatenated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Shared by every element of one document in the same namespace.
    pub ns: Option<Arc<str>>,
    pub name: String,
    pub attrs: Vec<(Option<String>, String, String)>,
    pub children: Vec<Element>,
    pub text: String,
    /// The items of an array named in [`Limits::packed`] (then `children` is empty).
    pub packed: Option<Box<Packed>>,
}

/// The items of a packed array: their local name and each one's text, in order. An item that
/// is `xsi:nil` is left out, as handlers skip nil items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packed {
    /// The local name every item has ("" while there is none).
    pub item: String,
    text: String,
    /// Where each item's text ends in `text`, in bytes.
    ends: Vec<u32>,
}

impl Packed {
    /// Each item's text, without surrounding whitespace.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let text = &self.text[start..end as usize];
            start = end as usize;
            text.trim()
        })
    }
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text, without surrounding whitespace.
    pub fn text(&self) -> &str {
        self.text.trim()
    }

    /// The trimmed text of the first child of this name, unless it is absent or `xsi:nil`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).filter(|c| !c.is_nil()).map(Element::text)
    }

    /// An attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, v)| v.as_str())
    }

    /// `xsi:nil="true"`.
    pub fn is_nil(&self) -> bool {
        self.attrs.iter().any(|(ns, n, v)| {
            n == "nil" && ns.as_deref() == Some(XSI_NS) && matches!(v.trim(), "true" | "1")
        })
    }
}

/// A parsed request: its SOAP version and the body's first element (the operation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub version: Version,
    pub operation: Element,
}

/// A document's bytes as UTF-8: transcoded when they start with a UTF-16 byte-order mark
/// (little- or big-endian), a UTF-8 mark dropped, anything else as it is (the parser checks
/// it). Windows writes some request bodies in UTF-16; WSUS answers them.
pub fn utf8_document(bytes: Vec<u8>) -> Result<Vec<u8>, ParseError> {
    let utf16 = |bytes: &[u8], unit: fn([u8; 2]) -> u16| {
        if !bytes.len().is_multiple_of(2) {
            return Err(ParseError::Malformed("UTF-16 of an odd length".into()));
        }
        let units = bytes.chunks_exact(2).map(|p| unit([p[0], p[1]]));
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map(String::into_bytes)
            .map_err(|e| ParseError::Malformed(format!("invalid UTF-16: {e}")))
    };
    match bytes.as_slice() {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, u16::from_le_bytes),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, u16::from_be_bytes),
        [0xEF, 0xBB, 0xBF, ..] => Ok(bytes[3..].to_vec()),
        _ => Ok(bytes),
    }
}

/// Parse a SOAP request body under `limits`.
pub fn parse(xml: &[u8], limits: &Limits) -> Result<Envelope, ParseError> {
    if xml.len() > limits.max_bytes {
        return Err(ParseError::TooLarge(limits.max_bytes));
    }
    let root = parse_tree(xml, limits)?;
    let version = match root.ns.as_deref() {
        Some(SOAP11_NS) if root.name == "Envelope" => Version::Soap11,
        Some(SOAP12_NS) if root.name == "Envelope" => Version::Soap12,
        _ => return Err(ParseError::NotEnvelope),
    };
    let ns = version.namespace();
    let body = root
        .children
        .into_iter()
        .find(|c| c.name == "Body" && c.ns.as_deref() == Some(ns))
        .ok_or(ParseError::NoBody)?;
    let operation = body.children.into_iter().next().ok_or(ParseError::NoBody)?;
    Ok(Envelope { version, operation })
}

/// The local name of a SOAP call's operation (the first element in its Body), read without
/// building the tree: to pick the service before parsing under that service's limits. None
/// when the document does not get that far (the parse proper says why).
pub fn operation_name(xml: &[u8]) -> Option<String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut in_body = false;
    // Envelope, Header/Body, the operation: a few dozen events unless the Header is long.
    for _ in 0..10_000 {
        buf.clear();
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(e) | Event::Empty(e) if in_body && depth == 2 => {
                return Some(e.local_name().as_ref().to_owned());
            }
            Event::Start(e) => {
                depth += 1;
                in_body = depth == 2 && e.local_name().as_ref() == "Body";
            }
            Event::End(_) => depth = depth.checked_sub(1)?,
            Event::Eof => return None,
            _ => {}
        }
    }
    None
}

/// Parse any XML document into its root element under `limits` (for SOAP bodies, and for the
/// update documents of the catalog).
pub fn parse_tree(xml: &[u8], limits: &Limits) -> Result<Element, ParseError> {
    let malformed = |e: quick_xml::Error| ParseError::Malformed(e.to_string());
    let mut reader = NsReader::from_reader(xml);
    reader.config_mut().expand_empty_elements = false;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    // A document names a handful of namespaces; each is allocated once.
    let mut namespaces: Vec<Arc<str>> = Vec::new();
    // Inside an item of the packed array on top of the stack: whether the item is kept (not
    // nil). Its text goes to the array's `Packed`.
    let mut item: Option<bool> = None;
    loop {
        // Events borrow the input itself: nothing is copied into a buffer first.
        let (resolved, event) = reader.read_resolved_event().map_err(malformed)?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                elements += 1;
                if elements > limits.max_elements {
                    return Err(ParseError::TooManyElements(limits.max_elements));
                }
                if stack.len() >= limits.max_depth {
                    return Err(ParseError::TooDeep(limits.max_depth));
                }
                if root.is_some() {
                    return Err(ParseError::Malformed(
                        "content after the root element".into(),
                    ));
                }
                if let Some(Element {
                    name: array,
                    packed: Some(packed),
                    ..
                }) = stack.last_mut()
                {
                    if item.is_some() {
                        return Err(ParseError::Malformed(format!(
                            "an item of {array} holds an element"
                        )));
                    }
                    let kept = !packed_item_is_nil(e, &reader)?;
                    let name = e.local_name();
                    if packed.item.is_empty() {
                        packed.item = name.as_ref().to_owned();
                    } else if packed.item != name.as_ref() {
                        return Err(ParseError::Malformed(format!(
                            "{array} holds <{}> among <{}> items",
                            name.as_ref(),
                            packed.item
                        )));
                    }
                    if matches!(event, Event::Empty(_)) {
                        if kept {
                            packed.end_item();
                        }
                    } else {
                        item = Some(kept);
                    }
                    continue;
                }
                let ns = match resolved {
                    ResolveResult::Bound(ns) => Some(intern(&mut namespaces, ns.as_ref())),
                    ResolveResult::Unbound => None,
                    ResolveResult::Unknown(prefix) => {
                        return Err(ParseError::Malformed(format!(
                            "undeclared namespace prefix {prefix:?}"
                        )));
                    }
                };
                let name = e.local_name().as_ref().to_owned();
                let packed = limits
                    .packed
                    .contains(&name.as_str())
                    .then(Box::<Packed>::default);
                let mut element = Element {
                    ns,
                    name,
                    packed,
                    ..Element::default()
                };
                for attr in e.attributes() {
                    let attr = attr.map_err(|e| ParseError::Malformed(e.to_string()))?;
                    let key = attr.key;
                    if key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let value = attribute_value(&attr)?;
                    let (attr_ns, local) = reader.resolver().resolve_attribute(key);
                    let attr_ns = match attr_ns {
                        ResolveResult::Bound(ns) => Some(ns.as_ref().to_owned()),
                        _ => None,
                    };
                    element
                        .attrs
                        .push((attr_ns, local.as_ref().to_owned(), value.into_owned()));
                }
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root, element);
                } else {
                    let packed = element.packed.is_some();
                    stack.push(element);
                    if packed {
                        scan_plain_items(&mut reader, &mut stack, &mut elements, limits)?;
                    } else {
                        read_leaf_text(&mut reader, &mut stack, e.name().into_inner())?;
                    }
                }
            }
            Event::End(_) => {
                if let Some(kept) = item.take() {
                    if kept {
                        packed_top(&mut stack)?.end_item();
                    }
                    scan_plain_items(&mut reader, &mut stack, &mut elements, limits)?;
                    continue;
                }
                let element = stack
                    .pop()
                    .ok_or_else(|| ParseError::Malformed("unmatched end tag".into()))?;
                close(&mut stack, &mut root, element);
            }
            Event::Text(t) => {
                let text = t.xml_content(XmlVersion::Implicit1_0);
                match (item, stack.last_mut()) {
                    (Some(kept), _) => {
                        if kept {
                            packed_top(&mut stack)?.text.push_str(&text);
                        }
                    }
                    // The whitespace between the items of a packed array says nothing.
                    (None, Some(top)) if top.packed.is_some() && text.trim().is_empty() => {}
                    (None, Some(top)) => top.text.push_str(&text),
                    (None, None) if text.trim().is_empty() => {}
                    (None, None) => {
                        return Err(ParseError::Malformed("text outside the root".into()));
                    }
                }
            }
            Event::CData(t) => {
                let text = t.xml_content(XmlVersion::Implicit1_0);
                push_text(&mut stack, item, &text)?;
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch,
                    Ok(None) => {
                        let name: &str = &r;
                        match name {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "apos" => '\'',
                            "quot" => '"',
                            other => return Err(ParseError::Entity(other.to_owned())),
                        }
                    }
                    Err(e) => return Err(ParseError::Malformed(e.to_string())),
                };
                push_text(&mut stack, item, ch.encode_utf8(&mut [0; 4]))?;
            }
            Event::DocType(_) => return Err(ParseError::Doctype),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(ParseError::Malformed("unexpected end of document".into()));
    }
    root.ok_or_else(|| ParseError::Malformed("no root element".into()))
}

impl Packed {
    fn end_item(&mut self) {
        // `Limits::max_bytes` keeps a document far below 4 GiB.
        self.ends
            .push(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
    }
}

/// Read, straight from the input, the items of the packed array on top of the stack that need
/// no XML parser, as most clients write them: unprefixed `<name>text</name>` whose text holds
/// no reference and no carriage return, with whitespace between. Stops before anything else (a
/// nil, prefixed or empty item, a comment, the array's end tag), which the event loop reads
/// next: the reader is left where an event ends, as if it had read these items itself. The
/// event loop reads every document this accepts to the same `Packed` (a test holds them to it).
fn scan_plain_items(
    reader: &mut NsReader<&[u8]>,
    stack: &mut [Element],
    elements: &mut usize,
    limits: &Limits,
) -> Result<(), ParseError> {
    if stack.len() >= limits.max_depth {
        return Ok(());
    }
    let packed = packed_top(stack)?;
    let input: &[u8] = reader.get_ref();
    let mut read = 0;
    loop {
        let mut at = read;
        while input
            .get(at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            at += 1;
        }
        let Some(open) = plain_tag(input, at, b"<") else {
            break;
        };
        let name = &input[at + 1..open - 1];
        if !packed.item.is_empty() && !same(packed.item.as_bytes(), name) {
            break;
        }
        // The text: ASCII without references up to the next tag (ids are digits).
        let mut lt = open;
        while let Some(&b) = input.get(lt) {
            if b == b'<' || b == b'&' || b == b'\r' || !b.is_ascii() {
                break;
            }
            lt += 1;
        }
        let Some(close) =
            plain_tag(input, lt, b"</").filter(|&c| same(&input[lt + 2..c - 1], name))
        else {
            break;
        };
        let Ok(text) = std::str::from_utf8(&input[open..lt]) else {
            break;
        };
        *elements += 1;
        if *elements > limits.max_elements {
            return Err(ParseError::TooManyElements(limits.max_elements));
        }
        if packed.item.is_empty() {
            // ASCII, as `plain_tag` accepts only that.
            packed.item = String::from_utf8_lossy(name).into_owned();
        }
        packed.text.push_str(text);
        packed.end_item();
        read = close;
    }
    let rest = &input[read..];
    *reader.get_mut() = rest;
    Ok(())
}

/// Byte strings compared in place: tag names are a few bytes, shorter than a call costs.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The text of the element just opened on top of the stack, read whole when nothing but text
/// comes before its end tag: most elements are such leaves, and an update fragment carried as
/// escaped text would otherwise be an event per `&lt;`. Leaves the reader before the end tag,
/// which the event loop reads next; reads nothing when the content is anything else, or holds
/// a carriage return (the event loop normalizes line ends).
fn read_leaf_text(
    reader: &mut NsReader<&[u8]>,
    stack: &mut [Element],
    qname: &str,
) -> Result<(), ParseError> {
    let input: &[u8] = reader.get_ref();
    let Some(lt) = input.iter().position(|&b| b == b'<') else {
        return Ok(());
    };
    let end = &input[lt..];
    let closes = end.starts_with(b"</")
        && end.get(2..2 + qname.len()) == Some(qname.as_bytes())
        && end.get(2 + qname.len()) == Some(&b'>');
    if !closes || lt == 0 {
        return Ok(());
    }
    let Ok(raw) = std::str::from_utf8(&input[..lt]) else {
        return Ok(());
    };
    if raw.contains('\r') {
        return Ok(());
    }
    let text = quick_xml::escape::unescape(raw).map_err(|e| match e {
        quick_xml::escape::EscapeError::UnrecognizedEntity(_, name) => ParseError::Entity(name),
        other => ParseError::Malformed(other.to_string()),
    })?;
    if let Some(top) = stack.last_mut() {
        top.text.push_str(&text);
    }
    *reader.get_mut() = end;
    Ok(())
}

/// `lead` then an unprefixed ASCII name then `>` at `at` in `input`: the index past the `>`.
fn plain_tag(input: &[u8], at: usize, lead: &[u8]) -> Option<usize> {
    let start = at + lead.len();
    if !same(input.get(at..start)?, lead) {
        return None;
    }
    let first = *input.get(start)?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let mut end = start + 1;
    while input
        .get(end)
        .is_some_and(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        end += 1;
    }
    (*input.get(end)? == b'>').then_some(end + 1)
}

/// The packed array an open item belongs to: the top of the stack while an item is open.
fn packed_top(stack: &mut [Element]) -> Result<&mut Packed, ParseError> {
    stack
        .last_mut()
        .and_then(|top| top.packed.as_deref_mut())
        .ok_or_else(|| ParseError::Malformed("an item outside a packed array".into()))
}

/// Character data for the open item (dropped when it is nil), or for the element on top.
fn push_text(stack: &mut [Element], item: Option<bool>, text: &str) -> Result<(), ParseError> {
    match item {
        Some(true) => packed_top(stack)?.text.push_str(text),
        Some(false) => {}
        None => {
            if let Some(top) = stack.last_mut() {
                top.text.push_str(text);
            }
        }
    }
    Ok(())
}

fn attribute_value<'a>(
    attr: &'a quick_xml::events::attributes::Attribute<'a>,
) -> Result<Cow<'a, str>, ParseError> {
    attr.normalized_value(XmlVersion::Implicit1_0)
        .map_err(|e| match e {
            quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(
                _,
                name,
            )) => ParseError::Entity(name),
            other => ParseError::Malformed(other.to_string()),
        })
}

/// Whether an item of a packed array says `xsi:nil="true"`; its other attributes mean nothing
/// to an item of text and are not kept.
fn packed_item_is_nil(
    e: &quick_xml::events::BytesStart<'_>,
    reader: &NsReader<&[u8]>,
) -> Result<bool, ParseError> {
    for attr in e.attributes() {
        let attr = attr.map_err(|e| ParseError::Malformed(e.to_string()))?;
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        let (ns, local) = reader.resolver().resolve_attribute(attr.key);
        if local.as_ref() == "nil"
            && matches!(ns, ResolveResult::Bound(ns) if ns.as_ref() == XSI_NS)
            && matches!(attribute_value(&attr)?.trim(), "true" | "1")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn intern(namespaces: &mut Vec<Arc<str>>, ns: &str) -> Arc<str> {
    if let Some(known) = namespaces.iter().find(|n| n[..] == *ns) {
        return known.clone();
    }
    let fresh: Arc<str> = ns.into();
    namespaces.push(fresh.clone());
    fresh
}

fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

/// Text escaped for XML character data and attribute values.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

/// Text escaped for XML character data only (`"` and `'` stay as they are, as WSUS writes them).
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

fn escape_with(s: &str, quotes: bool) -> Cow<'_, str> {
    if !s.bytes().any(|b| is_special(b, quotes)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    escape_into(&mut out, s, quotes);
    Cow::Owned(out)
}

fn is_special(b: u8, quotes: bool) -> bool {
    matches!(b, b'<' | b'>' | b'&') || (quotes && matches!(b, b'"' | b'\''))
}

/// `s` escaped onto `out`, copying the runs between special characters whole (every special
/// character is ASCII, so a run always ends on a character boundary).
fn escape_into(out: &mut String, s: &str, quotes: bool) {
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        if !is_special(b, quotes) {
            continue;
        }
        out.push_str(&s[run..i]);
        out.push_str(match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'"' => "&quot;",
            _ => "&apos;",
        });
        run = i + 1;
    }
    out.push_str(&s[run..]);
}

/// Text escaped once for XML character data, to be written many times as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Escaped(String);

impl Escaped {
    pub fn new(text: &str) -> Escaped {
        Escaped(escape_text(text).into_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `<name>escaped</name>` appended to `out`.
pub fn escaped_element(out: &mut String, name: &str, escaped: &Escaped) {
    out.reserve(escaped.0.len() + 2 * name.len() + 5);
    let _ = write!(out, "<{name}>{}</{name}>", escaped.0);
}

/// `<name>escaped text</name>` appended to `out`.
pub fn text_element(out: &mut String, name: &str, text: &str) {
    out.reserve(text.len() + text.len() / 8 + 2 * name.len() + 5);
    let _ = write!(out, "<{name}>");
    escape_into(out, text, false);
    let _ = write!(out, "</{name}>");
}

/// The ErrorCode and Message of a fault answer (the operation element of its envelope is
/// `Fault`), from its `detail` (SOAP 1.1) or `Detail` (1.2); the code is "" when the detail
/// has none. None when it is not a fault.
pub fn fault_detail(op: &Element) -> Option<(&str, &str)> {
    if op.name != "Fault" {
        return None;
    }
    let detail = op.child("detail").or_else(|| op.child("Detail"));
    let field = |name: &str| detail.and_then(|d| d.child_text(name)).unwrap_or("");
    Some((field("ErrorCode"), field("Message")))
}

/// A whole response: `body` (already XML) inside an envelope of `version`.
pub fn envelope(version: Version, body: &str) -> String {
    let mut out = open_envelope(version, body.len());
    out.push_str(body);
    close_envelope(out)
}

/// A response's head: what comes before the body's operation element, with room for
/// `capacity` bytes more. A large answer written after it is never copied to be wrapped.
pub fn open_envelope(version: Version, capacity: usize) -> String {
    let mut out = String::with_capacity(capacity + 300);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    let _ = write!(
        out,
        "<soap:Envelope xmlns:soap=\"{}\" xmlns:xsi=\"{XSI_NS}\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><soap:Body>",
        version.namespace()
    );
    out
}

/// A response opened by [`open_envelope`], its body written, closed.
pub fn close_envelope(mut out: String) -> String {
    out.push_str("</soap:Body></soap:Envelope>");
    out
}

/// Who is at fault: the request (1.1 `Client`, 1.2 `Sender`) or this server (`Server`,
/// `Receiver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    Client,
    Server,
}

/// A fault envelope. `detail` is XML placed inside `<detail>` (1.1) or `<soap:Detail>` (1.2).
pub fn fault(version: Version, code: FaultCode, reason: &str, detail: Option<&str>) -> String {
    let mut body = String::new();
    match version {
        Version::Soap11 => {
            let code = match code {
                FaultCode::Client => "soap:Client",
                FaultCode::Server => "soap:Server",
            };
            let _ = write!(
                body,
                "<soap:Fault><faultcode>{code}</faultcode><faultstring>{}</faultstring>",
                escape(reason)
            );
            if let Some(detail) = detail {
                let _ = write!(body, "<detail>{detail}</detail>");
            }
            body.push_str("</soap:Fault>");
        }
        Version::Soap12 => {
            let code = match code {
                FaultCode::Client => "soap:Sender",
                FaultCode::Server => "soap:Receiver",
            };
            let _ = write!(
                body,
                "<soap:Fault><soap:Code><soap:Value>{code}</soap:Value></soap:Code>\
                 <soap:Reason><soap:Text xml:lang=\"en\">{}</soap:Text></soap:Reason>",
                escape(reason)
            );
            if let Some(detail) = detail {
                let _ = write!(body, "<soap:Detail>{detail}</soap:Detail>");
            }
            body.push_str("</soap:Fault>");
        }
    }
    envelope(version, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: &str, body: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"{version}\" \
             xmlns:xsi=\"{XSI_NS}\"><s:Body>{body}</s:Body></s:Envelope>"
        )
    }

    #[test]
    fn escaped_text_reads_back_as_written() {
        let text = "é<Update a=\"1\" b='2'>x & y</Update>>ü";
        assert_eq!(
            escape(text),
            "é&lt;Update a=&quot;1&quot; b=&apos;2&apos;&gt;x &amp; y&lt;/Update&gt;&gt;ü"
        );
        assert!(matches!(escape_text("plain é"), Cow::Borrowed("plain é")));
        let mut body = String::from("<Op xmlns=\"urn:x\">");
        text_element(&mut body, "Xml", text);
        body.push_str("</Op>");
        let env = parse(req(SOAP11_NS, &body).as_bytes(), &Limits::default()).unwrap();
        assert_eq!(env.operation.child_text("Xml"), Some(text));
    }

    #[test]
    fn reads_an_operation_with_namespaces_text_and_nil() {
        let xml = req(
            SOAP11_NS,
            "<GetCookie xmlns=\"urn:x\"><a>1 &lt; 2 &#x26; &#65;</a><oldCookie xsi:nil=\"true\"/>\
             <b attr=\"v&amp;w\"><![CDATA[<raw>]]></b><c/></GetCookie>",
        );
        let env = parse(xml.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(env.version, Version::Soap11);
        let op = &env.operation;
        assert_eq!(
            (op.name.as_str(), op.ns.as_deref()),
            ("GetCookie", Some("urn:x"))
        );
        assert_eq!(op.child_text("a"), Some("1 < 2 & A"));
        assert!(op.child("oldCookie").unwrap().is_nil());
        assert_eq!(op.child_text("oldCookie"), None);
        assert_eq!(op.child("b").unwrap().attr("attr"), Some("v&w"));
        assert_eq!(op.child_text("b"), Some("<raw>"));
        assert_eq!(op.child_text("c"), Some(""));
        assert_eq!(op.child("c").unwrap().ns.as_deref(), Some("urn:x"));

        let env = parse(req(SOAP12_NS, "<Op/>").as_bytes(), &Limits::default()).unwrap();
        assert_eq!(env.version, Version::Soap12);
    }

    #[test]
    fn hostile_input_is_refused() {
        let limits = Limits {
            max_bytes: 10_000,
            max_depth: 16,
            max_elements: 100,
            packed: &[],
        };
        let p = |s: &str| parse(s.as_bytes(), &limits).unwrap_err();
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
                    <!ENTITY lol2 \"&lol;&lol;\">]><lolz>&lol2;</lolz>";
        assert_eq!(p(bomb), ParseError::Doctype);
        let external = "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>";
        assert_eq!(p(external), ParseError::Doctype);
        assert_eq!(
            p(&req(SOAP11_NS, "<a>&undefined;</a>")),
            ParseError::Entity("undefined".into())
        );
        let deep = format!("{}{}", "<a>".repeat(20), "</a>".repeat(20));
        assert_eq!(p(&deep), ParseError::TooDeep(16));
        let many = req(SOAP11_NS, &format!("<op>{}</op>", "<i/>".repeat(200)));
        assert_eq!(p(&many), ParseError::TooManyElements(100));
        assert_eq!(p(&"x".repeat(10_001)), ParseError::TooLarge(10_000));
        assert_eq!(p("<Envelope/>"), ParseError::NotEnvelope);
        assert_eq!(
            p(&format!("<s:Envelope xmlns:s=\"{SOAP11_NS}\"/>")),
            ParseError::NoBody
        );
        assert!(matches!(p("<a><b></a>"), ParseError::Malformed(_)));
        assert!(matches!(p("<p:a/>"), ParseError::Malformed(_)));
        assert!(matches!(p(""), ParseError::Malformed(_)));
    }

    #[test]
    fn responses_and_faults_are_well_formed_and_parse_back() {
        let mut body = String::new();
        text_element(&mut body, "Message", "a < b & \"c\"");
        let out = envelope(Version::Soap11, &format!("<R xmlns=\"urn:r\">{body}</R>"));
        let back = parse(out.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(back.operation.child_text("Message"), Some("a < b & \"c\""));
        for version in [Version::Soap11, Version::Soap12] {
            let f = fault(
                version,
                FaultCode::Client,
                "bad & worse",
                Some("<ErrorCode>X</ErrorCode>"),
            );
            let back = parse(f.as_bytes(), &Limits::default()).unwrap();
            assert_eq!(back.operation.name, "Fault");
            assert!(f.contains("<ErrorCode>X</ErrorCode>"));
            assert!(f.contains("bad &amp; worse"));
        }
    }

    const IDS: &[&str] = &["Ids"];

    /// An array's item texts and its own text (trimmed).
    type Items = (Vec<String>, String);

    /// The operation parsed with `Ids` packed and without: the packed texts, and the texts of
    /// the non-nil children as the handlers read an unpacked array; each with the array's text.
    fn packed_and_unpacked(items: &str) -> (Result<Items, ParseError>, Result<Items, ParseError>) {
        let doc = req(
            SOAP11_NS,
            &format!("<Op xmlns=\"urn:o\"><Ids>{items}</Ids><After/></Op>"),
        );
        let packed = Limits {
            packed: IDS,
            ..Limits::default()
        };
        let read = parse(doc.as_bytes(), &packed).map(|e| {
            let op = e.operation;
            assert!(
                op.child("After").is_some(),
                "what follows the array is read"
            );
            let ids = op.child("Ids").expect("the array");
            assert!(ids.children.is_empty(), "{:?}", ids.children);
            let packed = ids.packed.as_deref().expect("packed");
            (
                packed.texts().map(str::to_owned).collect(),
                ids.text().to_owned(),
            )
        });
        let plain = parse(doc.as_bytes(), &Limits::default()).map(|e| {
            let ids = e.operation.child("Ids").cloned().expect("the array");
            let texts = ids
                .children
                .iter()
                .filter(|c| !c.is_nil())
                .map(|c| c.text().to_owned())
                .collect();
            (texts, ids.text().to_owned())
        });
        (read, plain)
    }

    #[test]
    fn a_packed_array_holds_what_its_elements_would() {
        for items in [
            "",
            "<int>1</int><int>22</int>",
            "\n  <int>1</int>\n  <int> 2 </int>\r\n",
            // Forms the plain scan leaves to the event loop, alone and between plain items.
            "<int>1</int><int >2</int ><int>3</int>",
            "<int>1</int><int xsi:nil=\"true\"/><int>3</int><int xsi:nil=\"true\"></int>",
            "<int>&#52;2</int><int>4&amp;</int><int><![CDATA[5]]></int>",
            "<int>1</int><!-- a comment --><int>2</int><?pi x?>",
            "<n:int xmlns:n=\"urn:n\">7</n:int><n:int xmlns:n=\"urn:n\">8</n:int><int>9</int>",
            "<int>1\r\n</int><int/><int>x</int>",
            "<int>1</int>text between<int>2</int>",
        ] {
            let (packed, plain) = packed_and_unpacked(items);
            assert!(plain.is_ok(), "{items:?}: {plain:?}");
            assert_eq!(packed, plain, "{items:?}");
        }
    }

    #[test]
    fn a_packed_array_refuses_what_is_not_a_list_of_text() {
        for (items, says) in [
            (
                "<int>1</int><long>2</long>",
                "holds <long> among <int> items",
            ),
            (
                "<int>1</int><int><b/></int>",
                "an item of Ids holds an element",
            ),
            ("<int>1</int><int>2</inx>", "expected `</int>`"),
        ] {
            let (packed, _) = packed_and_unpacked(items);
            match packed {
                Err(ParseError::Malformed(m)) => assert!(m.contains(says), "{items}: {m}"),
                other => panic!("{items}: {other:?}"),
            }
        }
        // Unclosed after plain items: the end of the document is still found missing.
        let doc = req(SOAP11_NS, "<Op><Ids><int>1</int><int>2</int>");
        let limits = Limits {
            packed: IDS,
            ..Limits::default()
        };
        assert!(matches!(
            parse(doc.as_bytes(), &limits),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn packed_items_count_against_the_limits() {
        let items = "<int>1</int>".repeat(50);
        let doc = req(SOAP11_NS, &format!("<Op><Ids>{items}</Ids></Op>"));
        // Envelope, Body, Op, Ids: 4 elements besides the items.
        for (elements, ok) in [(54, true), (53, false)] {
            let limits = Limits {
                max_elements: elements,
                packed: IDS,
                ..Limits::default()
            };
            let got = parse(doc.as_bytes(), &limits);
            assert_eq!(got.is_ok(), ok, "{elements}: {got:?}");
            if !ok {
                assert_eq!(got, Err(ParseError::TooManyElements(elements)));
            }
        }
        // The items are one level below the array: at depth 5.
        let limits = Limits {
            max_depth: 4,
            packed: IDS,
            ..Limits::default()
        };
        assert_eq!(parse(doc.as_bytes(), &limits), Err(ParseError::TooDeep(4)));
    }

    proptest::proptest! {
        #[test]
        fn packed_and_element_parses_agree(
            forms in proptest::collection::vec(0usize..8, 0..24),
            values in proptest::collection::vec(0u32..100_000, 24),
        ) {
            let items: String = forms
                .iter()
                .zip(&values)
                .map(|(form, v)| match form {
                    0 => format!("<int>{v}</int>"),
                    1 => format!(" \n<int>{v}</int>"),
                    2 => format!("<int >{v}</int>"),
                    3 => "<int xsi:nil=\"true\"/>".to_owned(),
                    4 => format!("<int>{}&#{};</int>", v / 10, 48 + v % 10),
                    5 => format!("<!--c--><int>{v}</int>"),
                    6 => format!("<int>{v}\r\n</int>"),
                    _ => "<int/>".to_owned(),
                })
                .collect();
            let (packed, plain) = packed_and_unpacked(&items);
            proptest::prop_assert!(plain.is_ok());
            proptest::prop_assert_eq!(packed, plain);
        }
    }

    /// `<Leaf>{text}</Leaf>` parsed as written (whole, [`read_leaf_text`]) and with a space in
    /// its end tag, which only the event loop reads.
    fn leaf_both_ways(text: &str) -> (Result<String, ParseError>, Result<String, ParseError>) {
        let read = |end: &str| {
            let doc = req(
                SOAP11_NS,
                &format!("<Op><Leaf>{text}</Leaf{end}><After/></Op>"),
            );
            parse(doc.as_bytes(), &Limits::default()).map(|e| {
                assert!(e.operation.child("After").is_some());
                e.operation.child("Leaf").expect("the leaf").text.clone()
            })
        };
        (read(""), read(" "))
    }

    #[test]
    fn a_leaf_read_whole_holds_what_the_events_would() {
        for text in [
            "plain",
            "&lt;Update a=\"1\"&gt;x &amp; y&lt;/Update&gt;",
            "&#60;&#x3C;&apos;&quot;",
            "line\r\nend",
            "é ü 𝄞",
            "",
        ] {
            let (whole, events) = leaf_both_ways(text);
            assert!(events.is_ok(), "{text:?}: {events:?}");
            assert_eq!(whole, events, "{text:?}");
        }
        for text in ["&bogus;", "&#xD800;", "a & b"] {
            let (whole, events) = leaf_both_ways(text);
            assert!(whole.is_err(), "{text:?}: {whole:?}");
            assert!(events.is_err(), "{text:?}: {events:?}");
        }
        assert!(matches!(leaf_both_ways("&bogus;").0, Err(ParseError::Entity(n)) if n == "bogus"));
    }

    proptest::proptest! {
        #[test]
        fn leaves_read_whole_and_by_events_agree(
            pieces in proptest::collection::vec(0usize..9, 0..40),
            chars in proptest::collection::vec(proptest::char::range('\u{20}', '\u{2FF}'), 40),
        ) {
            let text: String = pieces
                .iter()
                .zip(&chars)
                .map(|(piece, c)| match piece {
                    0 => "&lt;".to_owned(),
                    1 => "&gt;".to_owned(),
                    2 => "&amp;".to_owned(),
                    3 => format!("&#{};", u32::from(*c)),
                    4 => format!("&#x{:x};", u32::from(*c)),
                    5 => " \n\t".to_owned(),
                    _ if matches!(c, '<' | '&') => "x".to_owned(),
                    _ => c.to_string(),
                })
                .collect();
            let (whole, events) = leaf_both_ways(&text);
            proptest::prop_assert!(events.is_ok());
            proptest::prop_assert_eq!(whole, events);
        }
    }
}
