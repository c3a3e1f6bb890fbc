//! The entry points of the fuzz targets (`fuzz/`): each feeds untrusted bytes to the code that
//! reads them in a node, the way the node does, and panics where an outcome breaks what must
//! hold (an answer that is not well-formed XML, a range outside the object). AFL++ drives them
//! instrumented (`fuzz/run`); the regression tests of what it found and the replay of the
//! committed corpora (`tests/fuzz_corpora.rs`) call these same functions.
//!
//! What an input means is up to each target: a first byte often picks the endpoint or the
//! operation, the rest is the body. [`seeds`] makes a first corpus of real messages, those of a
//! real session with the fixture's services, so that the fuzzer starts past the cookie checks.
//!
//! The SOAP targets answer from a fixture node: a small generated catalog with approvals in a
//! data directory of its own, a fixed cookie key and server identity (so that cookies in the
//! committed corpora stay valid) and a fixed clock. The directory is made once per process
//! ([`prepare_in`] or on first use); the services and the runtime are opened on first use, which
//! under AFL's fork server is in each child, after the fork.
//!
//! Stands where the listeners and the upstream link stand: may call every module but `cli`.

// The fixture is the harness, not the node: if it cannot be made, the run stops there.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::catalog::{self, ALL_COMPUTERS, Action, Guid};
use crate::config::Config;
use crate::content::fill::{self, Answer as Head};
use crate::content::path::ContentPath;
use crate::content::range::{self, Conditions, Plan, Validators};
use crate::http::coding::Coding;
use crate::served::Served;
use crate::served::cookie;
use crate::server::calls::{Answer, Context, Preparation, SoapService};
use crate::soap::wsus::Reply;
use crate::soap::{self, Limits};
use crate::wsusss::{self, blob, rollup_client, sync};
use crate::wusp;

/// A fuzz target: bytes in; a panic is a finding.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/` builds them.
pub const TARGETS: &[(&str, Target)] = &[
    ("client_call", client_call),
    ("server_call", server_call),
    ("upstream_answer", upstream_answer),
    ("upstream_head", upstream_head),
    ("cookie", cookie),
    ("range", range),
    ("content_path", content_path),
    ("cabinet", cabinet),
    ("config", config),
];

pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The fixture's clock (seconds since the epoch): 2026-01-01T00:00:00Z.
pub const NOW: i64 = 1_767_225_600;
/// The fixture's cookie key and identity.
const KEY: [u8; 32] = [0x5e; 32];
const SERVER_ID: Guid = Guid(0x5eed_f022_0000_4000_8000_0000_0000_0001);

/// What an answer of the fixture may hold, read back: far above any limit of a request.
const ANSWER_LIMITS: Limits = Limits {
    max_bytes: 64 << 20,
    max_depth: 64,
    max_elements: 4_000_000,
    packed: &[],
};

static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();
static FIXTURE: OnceLock<Fixture> = OnceLock::new();

struct Fixture {
    runtime: tokio::runtime::Runtime,
    wusp: Arc<wusp::Service>,
    wsusss: Arc<wsusss::Service>,
}

/// Make the fixture's data directory under `dir` (once per process; later calls do nothing):
/// a catalog of 12 generated updates, each deployable one approved for all computers.
pub fn prepare_in(dir: &Path) {
    DATA_DIR.get_or_init(|| {
        let data = dir.join("node");
        if !data.join("cookie.key").exists() {
            make_data_dir(dir, &data).unwrap_or_else(|e| panic!("fuzz fixture in {dir:?}: {e}"));
        }
        data
    });
}

fn make_data_dir(dir: &Path, data: &Path) -> Result<(), String> {
    let payloads = dir.join("payloads");
    std::fs::create_dir_all(&payloads).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(data).map_err(|e| e.to_string())?;
    std::fs::write(data.join("cookie.key"), KEY).map_err(|e| e.to_string())?;
    let generated = crate::testkit::generate::generate(12, 7, 64 << 10, &payloads)
        .map_err(|e| e.to_string())?;
    let mut store = crate::state::Store::open(&crate::state::Database::sqlite(data))
        .map_err(|e| e.to_string())?;
    store.set_server_id(SERVER_ID).map_err(|e| e.to_string())?;
    store
        .import(&generated.documents)
        .map_err(|e| e.to_string())?;
    for id in &generated.deployable {
        let revisions = store.revisions_of(*id).map_err(|e| e.to_string())?;
        store
            .approve(&revisions, ALL_COMPUTERS, Action::Install, None, NOW - 3600)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        if DATA_DIR.get().is_none() {
            prepare_in(&std::env::temp_dir().join("wsus-edge-fuzz-fixture"));
        }
        let data = crate::state::Database::sqlite(DATA_DIR.get().expect("prepared"));
        let served = Arc::new(Served::open(&data).expect("catalog in service"));
        let settings = wusp::Settings::default();
        let limits = settings.limits;
        let wusp = Arc::new(wusp::Service::open(served.clone(), &data, settings).expect("wusp"));
        let wsusss = Arc::new(wsusss::Service::open(served, &data, limits).expect("wsusss"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Fixture {
            runtime,
            wusp,
            wsusss,
        }
    })
}

/// The answer of the fixture's `service` to `body` (as sent, gzip when `gzip`), prepared and
/// answered as the router does; `None` when it was refused before any answer was made.
fn call(service: SoapService, gzip: bool, trusted: bool, body: &[u8]) -> Option<Reply> {
    let f = fixture();
    let preparation = Preparation {
        service,
        coding: if gzip { Coding::Gzip } else { Coding::Identity },
        trusted,
        client: *f.wusp.limits(),
        wsusss: f.wsusss.clone(),
    };
    let (prepared, _) = preparation.prepare(body.to_vec());
    let context = Context {
        wusp: &f.wusp,
        wsusss: &f.wsusss,
        action: None,
        content_base: "http://branch.example:8530",
        peer: None,
        now: NOW,
    };
    match f.runtime.block_on(prepared.answer(&context)) {
        Answer::Reply(reply) => {
            // Whatever came in, what goes out is a well-formed SOAP message.
            if let Err(e) = soap::parse(reply.body.as_bytes(), &ANSWER_LIMITS) {
                panic!("{} answered malformed SOAP: {e}", reply.operation);
            }
            Some(reply)
        }
        Answer::Refused(_) | Answer::Unauthenticated => None,
    }
}

/// The client protocol: byte 0 picks the endpoint (bits 0–1: Client, SimpleAuth, Reporting,
/// Client), whether the body is gzip (bit 2) and whether the caller is a known downstream
/// server (bit 3: the rollup operations on the Reporting path); the rest is the body.
pub fn client_call(data: &[u8]) {
    let Some((&head, body)) = data.split_first() else {
        return;
    };
    call(client_service(head), head & 4 != 0, head & 8 != 0, body);
}

fn client_service(head: u8) -> SoapService {
    SoapService::Client(match head & 3 {
        1 => wusp::Endpoint::SimpleAuth,
        2 => wusp::Endpoint::Reporting,
        _ => wusp::Endpoint::Client,
    })
}

/// The server-server protocol as an upstream answers it (the caller authenticated): byte 0
/// picks the endpoint (ServerSync, DssAuth, Reporting by its value modulo 3) and gzip (bit 2).
pub fn server_call(data: &[u8]) {
    let Some((&head, body)) = data.split_first() else {
        return;
    };
    call(server_service(head), head & 4 != 0, true, body);
}

fn server_service(head: u8) -> SoapService {
    SoapService::Server(match (head & 3) % 3 {
        1 => wsusss::Endpoint::DssAuth,
        2 => wsusss::Endpoint::Reporting,
        _ => wsusss::Endpoint::ServerSync,
    })
}

/// What a branch reads from its upstream's answers, by operation.
pub const ANSWERED: &[&str] = &[
    "GetAuthConfig",
    "GetAuthorizationCookie",
    "GetCookie",
    "GetConfigData",
    "GetRevisionIdList",
    "GetUpdateData",
    "GetDeployments",
    "GetRollupConfiguration",
    "GetOutOfSyncComputers",
    "GetUpdateDecryptionData",
];

/// An upstream's SOAP answer as a branch reads it: byte 0 picks the operation (its value
/// modulo [`ANSWERED`]'s length, in the low nibble), gzip (bit 4), xpress (bit 6, when not
/// gzip) and status 500 rather than 200 (bit 5: how faults come); the rest is the body. One more operation, past the list,
/// reads the body as an update document.
pub fn upstream_answer(data: &[u8]) {
    let Some((&head, body)) = data.split_first() else {
        return;
    };
    let pick = usize::from(head & 0x0f) % (ANSWERED.len() + 1);
    let Some(&operation) = ANSWERED.get(pick) else {
        if let Ok(text) = std::str::from_utf8(body) {
            let _ = catalog::update::parse(text);
        }
        return;
    };
    let status = if head & 0x20 != 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let coding = if head & 0x10 != 0 {
        Coding::Gzip
    } else if head & 0x40 != 0 {
        Coding::Xpress
    } else {
        Coding::Identity
    };
    let Ok(op) = sync::read_answer(operation, status, coding, body.to_vec()) else {
        return;
    };
    if operation.starts_with("GetRollup") || operation == "GetOutOfSyncComputers" {
        let _ = rollup_client::read_result(operation, &op);
    } else {
        let _ = sync::read_result(operation, &op);
    }
}

/// The head of an upstream's answer to a slice request, as hyper reads it (httparse) and the
/// fill judges it: byte 0 picks the slice asked for (its index, of 4 MiB slices); the rest is
/// the status line and the header fields.
pub fn upstream_head(data: &[u8]) {
    let Some((&slice, raw)) = data.split_first() else {
        return;
    };
    let first = u64::from(slice) << 22;
    let last = first + (4 << 20) - 1;
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    if !matches!(response.parse(raw), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let Some(status) = response.code.and_then(|c| StatusCode::from_u16(c).ok()) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for field in response.headers.iter() {
        // hyper refuses an answer with a field it cannot represent.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) else {
            return;
        };
        headers.append(name, value);
    }
    let Ok((head, learned)) = fill::read_head(status, &headers, first, last, NOW as u64) else {
        return;
    };
    match head {
        Head::Partial {
            first: got_first,
            last: got_last,
            total,
        } => assert!(
            got_first == first && got_last <= last && got_last < total && learned.size == total,
            "accepted bytes {got_first}-{got_last}/{total} for {first}-{last}"
        ),
        Head::Whole { total } | Head::Unsatisfiable { total } => {
            assert_eq!(learned.size, total);
        }
    }
}

/// The sealer every cookie of the fixture and of the `cookie` target is sealed with.
pub fn sealer() -> cookie::Sealer {
    cookie::Sealer::from_key(&KEY).expect("a 32-byte key")
}

/// A cookie as a client or a downstream server shows it: byte 0 picks the kind (modulo 3) and
/// whether the rest is the base64 text of the XML (bit 7) or the sealed bytes. An opened cookie
/// must be one this key sealed: sealed again, it opens to the same claims.
pub fn cookie(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let kind = match head % 3 {
        0 => cookie::Kind::Authorization,
        1 => cookie::Kind::Client,
        _ => cookie::Kind::DownstreamAuthorization,
    };
    let sealed = if head & 0x80 != 0 {
        match std::str::from_utf8(rest)
            .ok()
            .and_then(catalog::base64_decode)
        {
            Some(bytes) => bytes,
            None => return,
        }
    } else {
        rest.to_vec()
    };
    let sealer = sealer();
    if let Ok(claims) = sealer.open_cookie(&sealed, kind) {
        assert_eq!(claims.kind, kind);
        let again = sealer.open_cookie(&sealer.seal(&claims), kind);
        assert_eq!(again.ok().as_ref(), Some(&claims));
    }
}

/// A GET's range and conditional headers against an object: byte 0 picks the object's length;
/// the rest is Range, If-Range, If-Match, If-None-Match, If-Modified-Since and
/// If-Unmodified-Since, separated by newlines (an empty one is absent). What a plan serves lies
/// within the object, sorted, apart, and at most `max_parts` of it.
pub fn range(data: &[u8]) {
    const LENGTHS: [u64; 8] = [0, 1, 2, 100, 4096, (8 << 20) + 3, 1 << 40, u64::MAX >> 1];
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let len = LENGTHS[usize::from(pick) % LENGTHS.len()];
    let mut fields = rest
        .split(|&b| b == b'\n')
        .map(|f| (!f.is_empty()).then_some(f));
    let mut next = || fields.next().flatten();
    let conditions = Conditions {
        range: next(),
        if_range: next(),
        if_match: next(),
        if_none_match: next(),
        if_modified_since: next(),
        if_unmodified_since: next(),
    };
    let etag = "\"5eedf022d2c6b8a1\"";
    let validators = Validators {
        etag,
        last_modified: (NOW - 86_400) as u64,
    };
    let limits = range::Limits::default();
    let _ = range::first_wanted_byte(conditions.range);
    if let Some(Ok(specs)) = conditions.range.map(range::parse_range)
        && let Some(resolved) = range::resolve(&specs, len)
    {
        assert!(resolved.iter().all(|r| r.start <= r.end && r.end < len));
    }
    if let Plan::Partial(ranges) = range::evaluate(&conditions, len, &validators, &limits) {
        assert!(!ranges.is_empty() && ranges.len() <= limits.max_parts);
        assert!(ranges.iter().all(|r| r.start <= r.end && r.end < len));
        assert!(ranges.windows(2).all(|w| w[0].end + 1 < w[1].start));
        if let [one] = ranges[..] {
            let header = range::content_range(one, len);
            assert_eq!(header, format!("bytes {}-{}/{len}", one.start, one.end));
        } else {
            let body = range::multipart(&ranges, len, "application/octet-stream", "fuzz");
            let data: u64 = ranges.iter().map(|r| r.len()).sum();
            assert!(body.body_len > data);
        }
    }
}

/// A request path under `/Content/`: a path that parses names itself again.
pub fn content_path(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = ContentPath::parse(path) {
        assert!(path.eq_ignore_ascii_case(&parsed.url_path()), "{path}");
        assert_eq!(ContentPath::parse(&parsed.url_path()), Ok(parsed));
    }
}

/// A cabinet as an upstream sends it in `XmlUpdateBlobCompressed` (after base64).
pub fn cabinet(data: &[u8]) {
    let _ = blob::document_of_cabinet(data);
}

/// A configuration file, then after a NUL byte the environment (`NAME=VALUE` lines): refused
/// with at least one problem that names its key and says what is wrong, or accepted.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    match Config::parse(file, "fuzz.toml", &env) {
        Ok(_) => {}
        Err(e) => {
            assert!(!e.problems.is_empty());
            assert!(e.problems.iter().all(|p| !p.message.is_empty()));
        }
    }
}

/// A first corpus for `target`: the messages of a real session with the fixture (every client
/// operation with valid cookies, every server-server operation, the upstream answers they
/// got), and typical headers, paths and files for the rest.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "client_call" => client_session().into_iter().map(|(s, _)| s).collect(),
        "server_call" => server_session().into_iter().map(|(s, _)| s).collect(),
        "upstream_answer" => server_session()
            .into_iter()
            .filter_map(|(request, answer)| {
                let name = soap::operation_name(&request[1..])?;
                let pick = ANSWERED.iter().position(|o| *o == name)?;
                Some([&[pick as u8][..], answer.as_bytes()].concat())
            })
            .collect(),
        "upstream_head" => [
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-4194303/9000000\r\n\
             Content-Length: 4194304\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 9000000\r\n\r\n",
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */100\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n",
        ]
        .iter()
        .map(|h| [&[0u8][..], h.as_bytes()].concat())
        .collect(),
        "cookie" => {
            let sealer = sealer();
            let claims = |kind| cookie::Claims {
                kind,
                server_id: SERVER_ID,
                issued: NOW,
                expires: NOW + 3600,
                config_change: NOW - 60,
                anchor: 0,
                groups: vec![catalog::UNASSIGNED_COMPUTERS],
                client_id: "5eedf022-0000-4000-8000-000000000001".into(),
                protocol: "2.90".into(),
            };
            [
                (0u8, cookie::Kind::Authorization),
                (1, cookie::Kind::Client),
                (2, cookie::Kind::DownstreamAuthorization),
            ]
            .iter()
            .flat_map(|&(pick, kind)| {
                let sealed = sealer.seal(&claims(kind));
                let text = catalog::base64_encode(&sealed);
                [
                    [&[pick][..], &sealed].concat(),
                    [&[pick | 0x80][..], text.as_bytes()].concat(),
                ]
            })
            .collect()
        }
        "range" => [
            &b"\x05bytes=0-99"[..],
            b"\x05bytes=-500\n\"5eedf022d2c6b8a1\"",
            b"\x05bytes=0-0,5-9,100-,-1",
            b"\x06bytes=4194304-8388607\nThu, 31 Dec 2025 00:00:00 GMT",
            b"\x03\n\n\"x\", \"5eedf022d2c6b8a1\"\nW/\"5eedf022d2c6b8a1\"",
            b"\x04bytes=1-2\n\n\n\nWed, 31 Dec 2025 00:00:00 GMT\nThu, 01 Jan 2026 00:00:00 GMT",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect(),
        "content_path" => [
            "/Content/A1/0123456789ABCDEF0123456789ABCDEF012345A1.cab",
            "/content/ff/00000000000000000000000000000000000000ff.psf",
            "/Content/../etc/passwd",
            "/Content/A1/%2e%2e/x.cab",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "cabinet" => {
            let document = "<Update><UpdateIdentity UpdateID=\"x\" RevisionNumber=\"1\"/></Update>";
            vec![crate::testkit::cabinet::lzx_cabinet(
                "blob.xml",
                document.as_bytes(),
            )]
        }
        "config" => [
            "",
            "[node]\nname = \"branch-1\"\ndata_dir = \"/var/lib/wsus-edge\"\n\n[upstream]\n\
             url = \"https://central.example:8531\"\n\n[cache]\ndisk_bytes = \"200GiB\"\n\
             memory_bytes = \"2GiB\"\n",
            "[listen]\nhttp = \"0.0.0.0:8530\"\nheader_timeout = \"10s\"\n\0\
             WSUS_EDGE_CACHE__MEMORY_BYTES=1GiB\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        _ => Vec::new(),
    }
}

/// The calls of a session with the fixture, each as its target reads it, with its answer.
#[derive(Default)]
struct Session(Vec<(Vec<u8>, String)>);

impl Session {
    /// Call `operation` with `inner` as its parameters; the answer, parsed.
    fn exchange(
        &mut self,
        service: SoapService,
        trusted: bool,
        head: u8,
        ns: &str,
        operation: &str,
        inner: &str,
    ) -> Option<soap::Envelope> {
        let body = crate::soap_client::envelope(
            crate::soap_client::Caller::WindowsClient,
            ns,
            operation,
            inner,
        );
        let answer = call(service, false, trusted, body.as_bytes())
            .map(|r| r.body)
            .unwrap_or_default();
        let parsed = soap::parse(answer.as_bytes(), &ANSWER_LIMITS).ok();
        self.0
            .push(([&[head][..], body.as_bytes()].concat(), answer));
        parsed
    }
}

/// The text of `child` in the `result` of an answer ("" when it has none).
fn result_text(answer: &Option<soap::Envelope>, result: &str, child: &str) -> String {
    answer
        .as_ref()
        .and_then(|e| e.operation.child(result))
        .and_then(|r| r.child_text(child))
        .unwrap_or("")
        .to_owned()
}

/// A client's session with the fixture, each call as [`client_call`] reads it, with its
/// answer: authorization, cookie, registration, scan, extended info, file locations, report.
fn client_session() -> Vec<(Vec<u8>, String)> {
    use crate::simulate::wua::{Machine, request};
    let machine = Machine::new(1, None);
    let mut session = Session::default();
    let mut exchange = |head: u8, operation: &str, ns: &str, inner: &str| {
        session.exchange(client_service(head), false, head, ns, operation, inner)
    };
    let config = exchange(
        0,
        "GetConfig",
        wusp::CLIENT_NS,
        "<protocolVersion>2.90</protocolVersion>",
    );
    let last_change = result_text(&config, "GetConfigResult", "LastChange");
    let auth = exchange(
        1,
        "GetAuthorizationCookie",
        wusp::SIMPLE_AUTH_NS,
        &request::authorization_cookie(&machine),
    );
    let auth_data = result_text(&auth, "GetAuthorizationCookieResult", "CookieData");
    let got = exchange(
        0,
        "GetCookie",
        wusp::CLIENT_NS,
        &request::get_cookie(&auth_data, &last_change, NOW, None),
    );
    let Some(cookie) = got
        .as_ref()
        .and_then(|e| request::read_cookie(e.operation.child("GetCookieResult")).ok())
    else {
        return session.0;
    };
    exchange(
        0,
        "RegisterComputer",
        wusp::CLIENT_NS,
        &request::register_computer(&cookie, &machine),
    );
    let scan = exchange(
        0,
        "SyncUpdates",
        wusp::CLIENT_NS,
        &request::sync_software(&cookie, &[], &[]),
    );
    let revisions: Vec<u32> = scan
        .as_ref()
        .and_then(|e| e.operation.child("SyncUpdatesResult"))
        .and_then(|r| r.child("NewUpdates"))
        .map(|n| {
            n.children_named("UpdateInfo")
                .filter_map(|u| u.child_text("ID")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let ids = |name: &str| {
        let mut x = format!("<{name}>");
        for id in &revisions {
            x.push_str(&format!("<int>{id}</int>"));
        }
        x.push_str(&format!("</{name}>"));
        x
    };
    let cookie_xml = request::cookie_xml("cookie", &cookie);
    exchange(
        0,
        "SyncUpdates",
        wusp::CLIENT_NS,
        &request::sync_software(&cookie, &revisions, &revisions),
    );
    exchange(
        0,
        "GetExtendedUpdateInfo",
        wusp::CLIENT_NS,
        &format!(
            "{cookie_xml}{}<infoTypes><XmlUpdateFragmentType>Extended</XmlUpdateFragmentType>\
             <XmlUpdateFragmentType>LocalizedProperties</XmlUpdateFragmentType>\
             <XmlUpdateFragmentType>Eula</XmlUpdateFragmentType></infoTypes>\
             <locales><string>en-US</string><string>en</string></locales>",
            ids("revisionIDs")
        ),
    );
    exchange(
        0,
        "GetFileLocations",
        wusp::CLIENT_NS,
        &format!(
            "{cookie_xml}<fileDigests><base64Binary>AAECAwQFBgcICQoLDA0ODxAREhM=\
             </base64Binary></fileDigests>"
        ),
    );
    exchange(
        0,
        "RefreshCache",
        wusp::CLIENT_NS,
        &format!(
            "{cookie_xml}<globalIDs><UpdateIdentity><UpdateID>{}</UpdateID>\
             <RevisionNumber>1</RevisionNumber></UpdateIdentity></globalIDs>",
            Guid::NIL
        ),
    );
    let event = request::reporting_event(
        &machine.client_id,
        "2026-01-01T00:00:00Z",
        &Guid::NIL.to_string(),
        183,
        (Guid::NIL, 1),
        0,
        "<string>B=2</string>",
    );
    exchange(
        2,
        "ReportEventBatch",
        wusp::REPORTING_NS,
        &format!(
            "{cookie_xml}<clientTime>2026-01-01T00:00:00Z</clientTime>\
             <eventBatch>{event}</eventBatch>"
        ),
    );
    session.0
}

/// A downstream server's session with the fixture, each call as [`server_call`] reads it,
/// with its answer: authorization, cookie, configuration, revisions, update data,
/// deployments, and a rollup.
fn server_session() -> Vec<(Vec<u8>, String)> {
    let mut session = Session::default();
    let mut exchange = |head: u8, operation: &str, ns: &str, inner: &str| {
        session.exchange(server_service(head), true, head, ns, operation, inner)
    };
    let sync_ns = wsusss::SERVER_SYNC_NS;
    exchange(0, "GetAuthConfig", sync_ns, "");
    let downstream = "5eedf022-0000-4000-8000-000000000002";
    let auth = exchange(
        1,
        "GetAuthorizationCookie",
        wsusss::DSS_AUTH_NS,
        &format!("<accountName>branch-1</accountName><accountGuid>{downstream}</accountGuid>"),
    );
    let data = result_text(&auth, "GetAuthorizationCookieResult", "CookieData");
    let got = exchange(
        0,
        "GetCookie",
        sync_ns,
        &format!(
            "<authCookies><AuthorizationCookie><PlugInId>DssTargeting</PlugInId>\
             <CookieData>{data}</CookieData></AuthorizationCookie></authCookies>\
             <protocolVersion>1.20</protocolVersion>"
        ),
    );
    let cookie = got
        .as_ref()
        .and_then(|e| e.operation.child("GetCookieResult"))
        .map(|r| {
            format!(
                "<cookie><Expiration>{}</Expiration><EncryptedData>{}</EncryptedData></cookie>",
                r.child_text("Expiration").unwrap_or(""),
                r.child_text("EncryptedData").unwrap_or("")
            )
        })
        .unwrap_or_default();
    exchange(0, "GetConfigData", sync_ns, &cookie);
    let mut listed = Vec::new();
    let mut anchor = String::new();
    for config in [true, false] {
        let list = exchange(
            0,
            "GetRevisionIdList",
            sync_ns,
            &format!(
                "{cookie}<filter><GetConfig>{config}</GetConfig>\
                 <Get63LanguageOnly>false</Get63LanguageOnly></filter>"
            ),
        );
        let result = list
            .as_ref()
            .and_then(|e| e.operation.child("GetRevisionIdListResult"));
        if !config {
            anchor = result
                .and_then(|r| r.child_text("Anchor"))
                .unwrap_or("")
                .to_owned();
        }
        if let Some(ids) = result.and_then(|r| r.child("NewRevisions")) {
            listed.extend(ids.children_named("UpdateIdentity").take(8).map(|i| {
                format!(
                    "<UpdateIdentity><UpdateID>{}</UpdateID><RevisionNumber>{}</RevisionNumber>\
                     </UpdateIdentity>",
                    i.child_text("UpdateID").unwrap_or(""),
                    i.child_text("RevisionNumber").unwrap_or("")
                )
            }));
        }
    }
    exchange(
        0,
        "GetUpdateData",
        sync_ns,
        &format!("{cookie}<updateIds>{}</updateIds>", listed.concat()),
    );
    exchange(
        0,
        "GetUpdateDecryptionData",
        sync_ns,
        &format!("{cookie}<updateIds>{}</updateIds>", listed.concat()),
    );
    exchange(
        0,
        "GetDeployments",
        sync_ns,
        &format!("{cookie}<syncAnchor>{anchor}</syncAnchor>"),
    );
    exchange(2, "GetRollupConfiguration", sync_ns, &cookie);
    exchange(
        2,
        "RollupDownstreamServers",
        sync_ns,
        &format!(
            "{cookie}<clientTime>2026-01-01T00:00:00Z</clientTime><downstreamServers>\
             <DownstreamServerRollupInfo><ServerId>{downstream}</ServerId>\
             <FullDomainName>branch-1</FullDomainName><LastSyncTime>2026-01-01T00:00:00Z\
             </LastSyncTime><ParentServerId>00000000-0000-0000-0000-000000000000\
             </ParentServerId><Version>0.1.0</Version><IsReplica>true</IsReplica>\
             <LastRollupTime>2026-01-01T00:00:00Z</LastRollupTime></DownstreamServerRollupInfo>\
             </downstreamServers>"
        ),
    );
    exchange(
        2,
        "GetOutOfSyncComputers",
        sync_ns,
        &format!(
            "{cookie}<parentServerId>{downstream}</parentServerId><lastRollupNumbers>\
             <ComputerLastRollupNumber><ComputerId>pc1</ComputerId><RollupNumber>1\
             </RollupNumber></ComputerLastRollupNumber></lastRollupNumbers>"
        ),
    );
    session.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(session: &[(Vec<u8>, String)]) -> Vec<String> {
        session
            .iter()
            .filter(|(_, answer)| answer.is_empty() || answer.contains(":Fault>"))
            .map(|(request, answer)| {
                let name = soap::operation_name(&request[1..]).unwrap_or_default();
                format!("{name}: {answer}")
            })
            .collect()
    }

    /// The first corpora start past the cookie checks: every call of both sessions is
    /// answered, none with a fault.
    #[test]
    fn the_seed_sessions_are_answered_without_faults() {
        let dir = std::env::temp_dir().join(format!("wsus-edge-fuzz-test-{}", std::process::id()));
        prepare_in(&dir);
        let client = client_session();
        assert_eq!(client.len(), 10);
        assert_eq!(faults(&client), Vec::<String>::new());
        let server = server_session();
        assert_eq!(server.len(), 12);
        assert_eq!(faults(&server), Vec::<String>::new());
        let answers = seeds("upstream_answer");
        assert_eq!(
            answers.len(),
            11,
            "one per answer read by a branch, both listings"
        );
        for seed in &answers {
            upstream_answer(seed);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
