//! One client of the WSUS web services for every caller in the crate: the sync and the rollup
//! (to the upstream, over the upstream link) and the simulated Windows clients (over a plain
//! HTTP client). A call is one SOAP 1.1 envelope with its SOAPAction, gzip-coded when the peer
//! is known to read that; its answer, asked in the caller's coding (gzip for a node, xpress for
//! a Windows client), is read whole under a size bound, decoded, parsed, and
//! comes back as the operation's response element or the WSUS fault.
//!
//! The way bytes travel is the caller's: a [`Transport`] posts a body and hands the answer
//! back. The rest is sans-IO ([`request`], [`read_answer`]). May call: `soap`, `http` (the
//! codings), `error`.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::error::{Error, Kind};
use crate::http::coding::{self, Coding};
use crate::soap::wsus::ErrorCode;
use crate::soap::{self, Element, Limits, Version};

/// Request bodies smaller than this go as they are: gzip would save less than a packet.
const GZIP_FROM: usize = 1024;

/// How a SOAP call's bytes travel to its peer and back.
pub trait Transport: Sync {
    /// POST `body` (with `headers`, to which the transport adds what it always sends) to
    /// `path`, and read the answer: at most `limit` bytes of body, an error past that.
    fn post(
        &self,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
        limit: usize,
    ) -> impl std::future::Future<Output = Result<Posted, Error>> + Send;

    /// Who calls through it: the form of the request follows.
    fn caller(&self) -> Caller;

    /// Whether the peer reads gzip-coded request bodies (RFC 7694: learnt from its answers).
    fn reads_gzip(&self) -> bool;

    /// The coding it asks answers in (Accept-Encoding): what its caller asks by default.
    fn accepts(&self) -> Coding {
        match self.caller() {
            Caller::Server => Coding::Gzip,
            Caller::WindowsClient => Coding::Xpress,
        }
    }
}

/// Who makes a call, which decides how its request looks on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A server (a node's sync and rollup): the envelope WSUS servers write, with its XML
    /// declaration; asks gzip answers and sends gzip to a peer that reads it.
    Server,
    /// A Windows Update Agent: the envelope as captured from Windows 11 (no declaration, the
    /// `s:` prefix); asks xpress answers, as Windows does.
    WindowsClient,
}

/// The SOAP 1.1 envelope `caller` writes around `<operation xmlns="ns">inner</operation>`
/// (`inner` is XML already). Sans-IO.
pub fn envelope(caller: Caller, ns: &str, operation: &str, inner: &str) -> String {
    let op = format!("<{operation} xmlns=\"{ns}\">{inner}</{operation}>");
    match caller {
        Caller::Server => soap::envelope(Version::Soap11, &op),
        Caller::WindowsClient => format!(
            "<s:Envelope xmlns:s=\"{}\"><s:Body>{op}</s:Body></s:Envelope>",
            soap::SOAP11_NS
        ),
    }
}

/// An answer as it came back.
pub struct Posted {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as received (before any content decoding).
    pub body: Vec<u8>,
}

/// An answer to a call, with the bytes that crossed the link.
pub struct Answer {
    /// The operation's response element.
    pub op: Element,
    /// The request body as sent (gzip-coded when the peer reads that).
    pub sent: u64,
    /// The answer body as received.
    pub received: u64,
}

/// Why a call failed: a protocol fault (the caller may recover), or anything else.
#[derive(Debug)]
pub enum Failure {
    Fault(ErrorCode, String),
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Other(e)
    }
}

impl Failure {
    /// The failure as the crate's error: a fault that may pass (the server busy or changed, a
    /// cookie to renew) is worth a retry, the others are not.
    pub fn into_error(self) -> Error {
        match self {
            Failure::Other(e) => e,
            Failure::Fault(code, message) => {
                let retry = matches!(
                    code,
                    ErrorCode::ServerBusy
                        | ErrorCode::InternalServerError
                        | ErrorCode::InvalidCookie
                        | ErrorCode::ServerChanged
                );
                Error::upstream(Kind::BadUpstream, format!("{message} ({})", code.as_str()))
                    .retryable(retry)
            }
        }
    }
}

/// The body and headers of `caller`'s call of `operation` in `ns`: its [`envelope`], its
/// SOAPAction and content type. Sans-IO.
pub fn request(
    caller: Caller,
    ns: &str,
    operation: &str,
    inner: &str,
) -> Result<(String, HeaderMap), Error> {
    let body = envelope(caller, ns, operation, inner);
    let mut headers = HeaderMap::new();
    let action = HeaderValue::from_str(&format!("\"{ns}/{operation}\""))
        .map_err(|e| Error::internal(Kind::Io, format!("{operation}: SOAPAction: {e}")))?;
    headers.insert("SOAPAction", action);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(Version::Soap11.content_type()),
    );
    Ok((body, headers))
}

/// Call `operation` of the service at `path` over `transport`; the answer read under `limits`.
pub async fn call(
    transport: &impl Transport,
    path: &str,
    ns: &str,
    operation: &str,
    inner: &str,
    limits: &Limits,
) -> Result<Answer, Failure> {
    let caller = transport.caller();
    let (body, mut headers) = request(caller, ns, operation, inner)?;
    let coded = (caller == Caller::Server && transport.reads_gzip() && body.len() >= GZIP_FROM)
        .then(|| coding::gzip(body.as_bytes()).ok())
        .flatten();
    let body = match coded {
        Some(packed) => {
            headers.insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
            Bytes::from(packed)
        }
        None => Bytes::from(body),
    };
    let sent = body.len() as u64;
    if let Some(accepts) = transport.accepts().header() {
        headers.insert(http::header::ACCEPT_ENCODING, accepts);
    }
    let posted = transport
        .post(path, headers, body, limits.max_bytes)
        .await
        .map_err(|e| e.context(operation))?;
    let received = posted.body.len() as u64;
    let coding = Coding::of(&posted.headers);
    let op = read_answer(operation, posted.status, coding, posted.body, limits)?;
    Ok(Answer { op, sent, received })
}

/// An answer to `operation` as it came (its status, its coding, its body), read under
/// `limits`: the operation's response element, or the fault. Sans-IO.
pub fn read_answer(
    operation: &str,
    status: StatusCode,
    coding: Coding,
    answer: Vec<u8>,
    limits: &Limits,
) -> Result<Element, Failure> {
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(Error::upstream(
            Kind::BadUpstream,
            format!(
                "{operation}: the upstream refused this server (HTTP {status}); check \
                 upstream.token_file or the client certificate"
            ),
        )
        .retryable(false)
        .into());
    }
    let answer = coding::decode(coding, answer, limits.max_bytes).map_err(|e| {
        Error::upstream(
            Kind::BadUpstream,
            format!("{operation}: the answer's coding ({coding:?}): {e}"),
        )
    })?;
    let envelope = soap::parse(&answer, limits).map_err(|e| {
        Error::upstream(
            Kind::BadUpstream,
            format!("{operation}: the answer (HTTP {status}) is not SOAP: {e}"),
        )
    })?;
    let op = envelope.operation;
    if let Some((code, message)) = soap::fault_detail(&op) {
        let message = message.to_owned();
        return Err(match ErrorCode::parse(code) {
            Some(code) => Failure::Fault(code, format!("{operation}: {message}")),
            None => Error::upstream(
                Kind::BadUpstream,
                format!("{operation}: fault {code:?} {message}"),
            )
            .into(),
        });
    }
    if status != StatusCode::OK || op.name != format!("{operation}Response") {
        return Err(Error::upstream(
            Kind::BadUpstream,
            format!("{operation}: HTTP {status} with <{}>", op.name),
        )
        .into());
    }
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "http://www.microsoft.com/SoftwareDistribution";

    #[test]
    fn a_request_is_an_envelope_with_its_action() {
        for caller in [Caller::Server, Caller::WindowsClient] {
            let (body, headers) = request(caller, NS, "Ping", "<x>1</x>").unwrap();
            let parsed = soap::parse(body.as_bytes(), &Limits::default()).unwrap();
            assert_eq!(parsed.operation.name, "Ping");
            assert_eq!(parsed.operation.ns.as_deref(), Some(NS));
            assert_eq!(parsed.operation.child_text("x"), Some("1"));
            assert_eq!(headers["SOAPAction"], format!("\"{NS}/Ping\"").as_str());
            assert_eq!(body.starts_with("<?xml"), caller == Caller::Server);
        }
    }

    #[test]
    fn answers_are_read_as_response_fault_or_error() {
        let limits = Limits::default();
        let ok = soap::envelope(Version::Soap11, &format!("<PingResponse xmlns=\"{NS}\"/>"));
        let op = read_answer(
            "Ping",
            StatusCode::OK,
            Coding::Identity,
            ok.clone().into_bytes(),
            &limits,
        );
        assert_eq!(op.unwrap().name, "PingResponse");
        let packed = coding::gzip(ok.as_bytes()).unwrap();
        assert!(read_answer("Ping", StatusCode::OK, Coding::Gzip, packed, &limits).is_ok());
        let packed = crate::http::xpress::compress(ok.as_bytes());
        assert!(read_answer("Ping", StatusCode::OK, Coding::Xpress, packed, &limits).is_ok());
        let not_xpress = read_answer(
            "Ping",
            StatusCode::OK,
            Coding::Xpress,
            ok.clone().into_bytes(),
            &limits,
        );
        assert!(matches!(not_xpress, Err(Failure::Other(_))));

        let fault = crate::soap::wsus::fault_in(
            Version::Soap11,
            NS,
            "Ping",
            &crate::soap::wsus::Fault::new(ErrorCode::ServerBusy, "later"),
        );
        match read_answer(
            "Ping",
            StatusCode::INTERNAL_SERVER_ERROR,
            Coding::Identity,
            fault.body.into_bytes(),
            &limits,
        ) {
            Err(Failure::Fault(ErrorCode::ServerBusy, m)) => assert!(m.contains("later"), "{m}"),
            other => panic!("not the fault: {:?}", other.map(|e| e.name)),
        }
        let refused = read_answer(
            "Ping",
            StatusCode::UNAUTHORIZED,
            Coding::Identity,
            Vec::new(),
            &limits,
        );
        assert!(matches!(refused, Err(Failure::Other(ref e)) if !e.is_retryable()));
        let wrong = read_answer(
            "Other",
            StatusCode::OK,
            Coding::Identity,
            ok.into_bytes(),
            &limits,
        );
        assert!(matches!(wrong, Err(Failure::Other(_))));
    }
}
