//! A SOAP call's way through the node: who may make it, its body read under a size and a time
//! limit, decoded and parsed under limits sized to its operation, answered by `wusp` (clients)
//! or `wsusss` (downstream servers), logged and counted.
//!
//! The server-server services answer only downstream servers that show an accepted bearer
//! token, or that came through the TLS listener with a client certificate `tls.client_ca`
//! verified, unless the operator opened them (`downstream.allow_anonymous`). That is decided
//! from the head, before a byte of the body is read; on the clients' Reporting path, where the
//! rollup operations share a URL with the clients' ReportEventBatch, an unauthenticated caller
//! gets the clients' body limit and is refused a rollup operation before its body is parsed.
//!
//! A call whose body has arrived waits its turn among the calls being answered
//! ([`crate::http::Admission`], `listen.max_soap_calls`): too long a wait, and the caller is
//! told ServerBusy (503, Retry-After) rather than kept waiting behind a backlog.
//!
//! Parsing builds a tree of up to hundreds of thousands of elements: a large or compressed
//! body is decoded and parsed on the blocking pool, at most [`crate::http::Parsers`]' number at once, with a
//! short queue behind them; past that the caller is told ServerBusy (503, Retry-After).
//!
//! Calls `soap` (sans-IO codecs), `wusp`, `wsusss`, `auth`, `content::response` (bodies) and
//! `metrics`; called by the router in `server`. [`Preparation`] and [`Prepared::answer`] are
//! public for the fuzz targets, which feed them bodies as the router does.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Response, StatusCode};

use super::Listener;
use crate::access::{Peer, Requester};
use crate::app::App;
use crate::http::coding::{self, Coding};
use crate::http::{
    self as response, Body, BodyError, RETRY_AFTER_SECONDS, RequestBody, decode_body, read_body,
};
use crate::soap::wsus::{ErrorCode, Fault, Reply, fault_in};
use crate::soap::{self, Limits};
use crate::{wsusss, wusp};

/// A SOAP body from this size on (bytes) is parsed into a tree of up to millions of small
/// allocations; typical calls are a few KiB.
const RELEASE_AFTER_BYTES: usize = 1 << 20;

/// Bodies below this size (as sent, not compressed) are parsed where they arrive: at most a
/// few thousand elements, well under a millisecond. Larger or compressed ones go to
/// [`Parsers`].
const INLINE_BYTES: usize = 64 << 10;

/// The same for an operation whose id lists are packed ([`wusp::packs_ids`]): a SyncUpdates
/// page of 30,000 ids parses in about half a millisecond, less than the hand-off to the
/// blocking pool and back costs a node on one core.
const INLINE_PACKED_BYTES: usize = 512 << 10;

/// Answers smaller than this (bytes) go as they are: a GetConfig or a cookie, where coding
/// would save less than a packet.
const COMPRESS_FROM_BYTES: usize = 1024;

/// Answers from this size on (bytes) are compressed on the blocking pool.
const OFFLOAD_COMPRESSION_BYTES: usize = 1 << 20;

/// The web service a SOAP call was posted to.
#[derive(Debug, Clone, Copy)]
pub enum SoapService {
    /// The client protocol (Windows Update Agents).
    Client(wusp::Endpoint),
    /// The server-server protocol (downstream servers).
    Server(wsusss::Endpoint),
}

impl SoapService {
    pub(super) fn from_path(path: &str) -> Option<SoapService> {
        wusp::Endpoint::from_path(path)
            .map(SoapService::Client)
            .or_else(|| wsusss::Endpoint::from_path(path).map(SoapService::Server))
    }

    fn namespace(self) -> &'static str {
        match self {
            SoapService::Client(e) => e.namespace(),
            SoapService::Server(e) => e.namespace(),
        }
    }
}

/// A body made ready for its service: decoded, its operation found, parsed.
pub enum Prepared {
    Parsed {
        service: SoapService,
        envelope: soap::Envelope,
    },
    Unparsable(SoapService, soap::ParseError),
    Refused(BodyError),
    /// A rollup operation on the Reporting path from a caller that is no known downstream.
    Unauthenticated,
}

/// What the preparation of one body needs to know, owned so that it can run on the blocking
/// pool.
pub struct Preparation {
    pub service: SoapService,
    pub coding: Coding,
    /// The caller showed it is a downstream server (or anyone may be).
    pub trusted: bool,
    /// The clients' limits (the service's, for the server-server ones).
    pub client: Limits,
    pub wsusss: Arc<wsusss::Service>,
}

impl Preparation {
    /// Decode, pick the service by the operation (the Reporting path), parse under the
    /// operation's limits. Sans-IO: bytes in, a value out.
    pub fn prepare(self, raw: Vec<u8>) -> (Prepared, usize) {
        let reporting = matches!(self.service, SoapService::Client(wusp::Endpoint::Reporting));
        let limit = if reporting && self.trusted {
            wsusss::rollup::LIMITS.max_bytes
        } else {
            self.client.max_bytes
        };
        let bytes = match decode_body(self.coding, raw, limit) {
            Ok(bytes) => bytes,
            Err(e) => return (Prepared::Refused(e), 0),
        };
        let size = bytes.len();
        let bytes = match soap::utf8_document(bytes) {
            Ok(bytes) => bytes,
            Err(e) => return (Prepared::Unparsable(self.service, e), size),
        };
        let operation = soap::operation_name(&bytes);
        let mut service = self.service;
        if reporting
            && operation
                .as_deref()
                .is_some_and(|op| wsusss::rollup::OPERATIONS.contains(&op))
        {
            if !self.trusted {
                return (Prepared::Unauthenticated, size);
            }
            service = SoapService::Server(wsusss::Endpoint::Reporting);
        } else if size > self.client.max_bytes {
            return (Prepared::Refused(BodyError::TooLarge), size);
        }
        let limits = match service {
            SoapService::Client(_) => wusp::limits_for(&self.client, operation.as_deref()),
            SoapService::Server(endpoint) => self.wsusss.limits_for(endpoint, operation.as_deref()),
        };
        let prepared = match soap::parse(&bytes, &limits) {
            Ok(envelope) => Prepared::Parsed { service, envelope },
            Err(e) => Prepared::Unparsable(service, e),
        };
        (prepared, size)
    }
}

/// Who answers a prepared call, and what the call brings besides its body.
pub struct Context<'a> {
    pub wusp: &'a Arc<wusp::Service>,
    pub wsusss: &'a Arc<wsusss::Service>,
    /// The SOAPAction header.
    pub action: Option<&'a str>,
    /// `http://host:port` content URLs are made from.
    pub content_base: &'a str,
    pub peer: Option<std::net::SocketAddr>,
    /// Seconds since the epoch.
    pub now: i64,
}

/// What a prepared call comes to.
pub enum Answer {
    /// The service's answer (a fault for a body that did not parse).
    Reply(Reply),
    Refused(BodyError),
    Unauthenticated,
}

impl Prepared {
    pub async fn answer(self, context: &Context<'_>) -> Answer {
        Answer::Reply(match self {
            Prepared::Refused(e) => return Answer::Refused(e),
            Prepared::Unauthenticated => return Answer::Unauthenticated,
            Prepared::Unparsable(service, e) => fault_in(
                soap::Version::Soap11,
                service.namespace(),
                "(unparsed)",
                &Fault::invalid(e.to_string()),
            ),
            Prepared::Parsed {
                service: SoapService::Server(endpoint),
                envelope,
            } => {
                context
                    .wsusss
                    .call(endpoint, envelope, context.peer, context.now)
                    .await
            }
            Prepared::Parsed {
                service: SoapService::Client(endpoint),
                envelope,
            } => {
                let call = wusp::Call {
                    endpoint,
                    action: context.action,
                    content_base: context.content_base,
                    now: context.now,
                };
                context.wusp.call(call, envelope).await
            }
        })
    }
}

/// What the access line says of a SOAP call besides who sent it.
#[derive(Default)]
struct Call {
    operation: Option<String>,
    fault: Option<&'static str>,
    /// The body as read (decoded), in bytes.
    bytes_in: usize,
    bytes_out: usize,
}

/// A SOAP call, answered by [`answer`], with its access line and its metrics.
pub(super) async fn soap(
    app: &App,
    service: SoapService,
    listener: Listener,
    parts: &http::request::Parts,
    body: RequestBody,
    requester: &Requester,
) -> Response<Body> {
    let started = Instant::now();
    let mut call = Call::default();
    let response = answer(app, service, listener, parts, body, &mut call).await;
    let elapsed = started.elapsed();
    let operation = call.operation.as_deref().unwrap_or("-");
    if call.operation.is_some() {
        app.metrics.soap_call(operation, call.fault, elapsed);
    }
    tracing::info!(
        target: "wsus_edge::access",
        request_id = %requester.id,
        client = %requester.client(),
        user_agent = requester.agent(),
        method = %parts.method,
        path = %parts.uri.path(),
        operation = %operation,
        status = response.status().as_u16(),
        fault = %call.fault.unwrap_or("-"),
        bytes_in = call.bytes_in,
        bytes = call.bytes_out,
        ms = elapsed.as_millis() as u64,
    );
    response
}

/// Whether the caller may use the server-server services: it showed an accepted token, or a
/// client certificate the TLS listener verified, or the operator opened them to anyone.
fn is_downstream(app: &App, listener: Listener, headers: &http::HeaderMap) -> bool {
    app.downstream_open
        || (listener == Listener::Tls && app.downstream_certificates)
        || app.downstream_tokens.accepts(headers)
}

fn unauthenticated(app: &App, parts: &http::request::Parts) -> Response<Body> {
    app.metrics.refused("unauthenticated");
    tracing::warn!(
        path = %parts.uri.path(),
        peer = %parts.extensions.get::<Peer>().map_or("-".into(), |p| p.0.to_string()),
        "downstream server refused: no accepted bearer token or client certificate"
    );
    crate::auth::unauthorized("Bearer realm=\"wsus-edge downstream\"")
}

/// A SOAP call: who may make it, the body read and parsed under the limits of its service and
/// operation, the answer as the service gives it.
async fn answer(
    app: &App,
    service: SoapService,
    listener: Listener,
    parts: &http::request::Parts,
    body: RequestBody,
    call: &mut Call,
) -> Response<Body> {
    if parts.method != http::Method::POST {
        let mut r = response::text(StatusCode::METHOD_NOT_ALLOWED, "SOAP services take POST");
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let trusted = is_downstream(app, listener, &parts.headers);
    if matches!(service, SoapService::Server(_)) && !trusted {
        return unauthenticated(app, parts);
    }
    let client = match service {
        SoapService::Client(_) => *app.wusp.limits(),
        SoapService::Server(endpoint) => app.wsusss.limits_for(endpoint, None),
    };
    // Downstream servers roll up on the clients' Reporting path, with larger bodies: only a
    // caller known as one gets their limit.
    let reporting = matches!(service, SoapService::Client(wusp::Endpoint::Reporting));
    let limit = if reporting && trusted {
        wsusss::rollup::LIMITS.max_bytes
    } else {
        client.max_bytes
    };
    let coding = Coding::of(&parts.headers);
    let read = read_body(&parts.headers, body, limit, app.limits.body_timeout).await;
    let raw = match read {
        Ok(raw) => raw,
        Err(e) => return refused_body(app, service, e, limit),
    };
    // Taken once the body is here, so that a slow sender holds nothing but its connection;
    // held until the answer is written and coded.
    let Some(_admitted) = app.admission.admit().await else {
        return busy(
            app,
            service,
            call,
            "the server is answering as many calls as it may; try again later",
        );
    };
    let preparation = Preparation {
        service,
        coding,
        trusted,
        client,
        wsusss: app.wsusss.clone(),
    };
    let inline = coding == Coding::Identity
        && (raw.len() < INLINE_BYTES
            || raw.len() < INLINE_PACKED_BYTES
                && matches!(service, SoapService::Client(_))
                && wusp::packs_ids(soap::operation_name(&raw).as_deref()));
    let large = coding != Coding::Identity || raw.len() >= RELEASE_AFTER_BYTES;
    let prepared = if inline {
        Some(preparation.prepare(raw))
    } else {
        app.parsers.run(move || preparation.prepare(raw)).await
    };
    let Some((prepared, bytes_in)) = prepared else {
        return busy(
            app,
            service,
            call,
            "the server is parsing as many large requests as it may; try again later",
        );
    };
    call.bytes_in = bytes_in;
    let content_base = content_base(app, listener, parts);
    let context = Context {
        wusp: &app.wusp,
        wsusss: &app.wsusss,
        action: parts
            .headers
            .get("soapaction")
            .and_then(|v| v.to_str().ok()),
        content_base: &content_base,
        peer: parts.extensions.get::<Peer>().map(|p| p.0),
        now: crate::clock::unix_now(),
    };
    let reply = match prepared.answer(&context).await {
        Answer::Reply(reply) => reply,
        Answer::Refused(e) => return refused_body(app, service, e, limit),
        Answer::Unauthenticated => return unauthenticated(app, parts),
    };
    if large || bytes_in >= RELEASE_AFTER_BYTES {
        // On the blocking pool: trimming a large heap takes milliseconds that the other requests
        // on this worker (the content path) should not wait for. The answer waits, so the memory
        // is back before the caller sees it.
        let _ = tokio::task::spawn_blocking(crate::allocator::release_freed_memory).await;
    }
    respond(app, parts, reply, call).await
}

/// The answer to a body that could not be had: a fault in the service's terms when it is too
/// large (clients understand those), plain HTTP otherwise.
fn refused_body(app: &App, service: SoapService, e: BodyError, limit: usize) -> Response<Body> {
    app.metrics.refused(e.reason());
    match (e, service) {
        (BodyError::TooLarge, SoapService::Client(endpoint)) => {
            let reply = wusp::oversized(endpoint, limit);
            respond_plain(reply)
        }
        (BodyError::TooLarge, SoapService::Server(endpoint)) => respond_plain(fault_in(
            soap::Version::Soap11,
            endpoint.namespace(),
            "(unparsed)",
            &Fault::invalid(format!("request body over {limit} bytes")),
        )),
        (e, _) => e.response(limit),
    }
}

/// ServerBusy: every call or every parser taken and the wait for one too long. 503 with
/// Retry-After, which both Windows clients and downstream servers take as "later".
fn busy(app: &App, service: SoapService, call: &mut Call, why: &str) -> Response<Body> {
    app.metrics.refused("busy");
    let reply = fault_in(
        soap::Version::Soap11,
        service.namespace(),
        "(unparsed)",
        &Fault::new(ErrorCode::ServerBusy, why),
    );
    call.fault = reply.fault.map(|f| f.as_str());
    let mut r = respond_plain(reply);
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(RETRY_AFTER_SECONDS),
    );
    r
}

fn respond_plain(reply: Reply) -> Response<Body> {
    let mut r = Response::new(response::full_body(reply.body));
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    r
}

/// The HTTP answer to a call the service answered: in the coding the caller offers when the
/// node compresses answers. A large answer is compressed on the blocking pool (a 12 MB one
/// takes tens of milliseconds the content path on this worker should not wait for).
async fn respond(
    app: &App,
    parts: &http::request::Parts,
    reply: Reply,
    call: &mut Call,
) -> Response<Body> {
    call.fault = reply.fault.map(|f| f.as_str());
    call.operation = Some(reply.operation.clone());
    let coding = if app.compress_answers && reply.body.len() >= COMPRESS_FROM_BYTES {
        Coding::offered(&parts.headers)
    } else {
        Coding::Identity
    };
    let (body, coded) = if coding == Coding::Identity {
        (reply.body, None)
    } else if reply.body.len() >= OFFLOAD_COMPRESSION_BYTES {
        let body = reply.body;
        let coded = tokio::task::spawn_blocking(move || {
            let coded = coding::encode(coding, body.as_bytes());
            (body, coded)
        })
        .await;
        match coded {
            Ok(coded) => coded,
            // Only a panic of the encoder, which takes any bytes.
            Err(_) => {
                return response::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the answer could not be coded",
                );
            }
        }
    } else {
        let coded = coding::encode(coding, reply.body.as_bytes());
        (reply.body, coded)
    };
    let encoding = coded.as_ref().and(coding.header());
    call.bytes_out = coded.as_ref().map_or(body.len(), Vec::len);
    let mut r = Response::new(match coded {
        Some(b) => response::full_body(b),
        None => response::full_body(body),
    });
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let h = r.headers_mut();
    h.insert(
        http::header::VARY,
        HeaderValue::from_static("Accept-Encoding"),
    );
    // What this node reads in requests (RFC 7694): downstream servers compress their posts.
    h.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip"),
    );
    if let Some(encoding) = encoding {
        h.insert(http::header::CONTENT_ENCODING, encoding);
    }
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("private"),
    );
    r
}

/// `http://host:port` of the plain HTTP listener, as the client reaches this node.
fn content_base(app: &App, listener: Listener, parts: &http::request::Parts) -> String {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .filter(|h| !h.is_empty() && h.len() < 256 && !h.contains(['/', ' ', '@']));
    let http_port = app.listen.http.port();
    match (host, listener) {
        (Some(host), Listener::Plain) => format!("http://{host}"),
        (Some(host), Listener::Tls) => {
            let name = match host.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => host,
            };
            format!("http://{name}:{http_port}")
        }
        (None, _) => format!("http://{}", app.listen.http),
    }
}
