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
    pub max_elements: usize,
}

impl Default for Limits {
    /// Generous for real clients (a SyncUpdates request is 20–50 KB, ~10 deep, a few thousand
    /// elements) and small enough that a hostile one costs little.
    fn default() -> Limits {
        Limits {
            max_bytes: 4 << 20,
            max_depth: 32,
            max_elements: 200_000,
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
                let ns = match resolved {
                    ResolveResult::Bound(ns) => Some(intern(&mut namespaces, ns.as_ref())),
                    ResolveResult::Unbound => None,
                    ResolveResult::Unknown(prefix) => {
                        return Err(ParseError::Malformed(format!(
                            "undeclared namespace prefix {prefix:?}"
                        )));
                    }
                };
                let mut element = Element {
                    ns,
                    name: e.local_name().as_ref().to_owned(),
                    ..Element::default()
                };
                for attr in e.attributes() {
                    let attr = attr.map_err(|e| ParseError::Malformed(e.to_string()))?;
                    let key = attr.key;
                    if key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let value =
                        attr.normalized_value(XmlVersion::Implicit1_0)
                            .map_err(|e| match e {
                                quick_xml::Error::Escape(
                                    quick_xml::escape::EscapeError::UnrecognizedEntity(_, name),
                                ) => ParseError::Entity(name),
                                other => ParseError::Malformed(other.to_string()),
                            })?;
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
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| ParseError::Malformed("unmatched end tag".into()))?;
                close(&mut stack, &mut root, element);
            }
            Event::Text(t) => {
                let text = t.xml_content(XmlVersion::Implicit1_0);
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(ParseError::Malformed("text outside the root".into())),
                }
            }
            Event::CData(t) => {
                let text = t.xml_content(XmlVersion::Implicit1_0);
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
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
                if let Some(top) = stack.last_mut() {
                    top.text.push(ch);
                }
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

/// A whole response: `body` (already XML) inside an envelope of `version`.
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

pub fn envelope(version: Version, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 300);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    let _ = write!(
        out,
        "<soap:Envelope xmlns:soap=\"{}\" xmlns:xsi=\"{XSI_NS}\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><soap:Body>",
        version.namespace()
    );
    out.push_str(body);
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
}
