//! The client protocol's faults: every fault the cookie rules give, and hostile requests
//! answered with a SOAP fault quickly, the node serving on.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use wsus_edge::catalog::Guid;
use wsus_edge::node::Running;
use wsus_edge::served::cookie::{Claims, Kind, Sealer};
use wsus_edge::soap::{self, Limits};
use wsus_edge::state::Store;

const CLIENT: &str = "/ClientWebService/client.asmx";
const NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";

/// POST a raw body; returns (status, ErrorCode of a fault or "", elapsed).
async fn post(node: &Running, path: &str, body: Vec<u8>) -> (u16, String, Duration) {
    let started = Instant::now();
    let (status, body) = post_for_body(node, path, body).await;
    let took = started.elapsed();
    let code = soap::parse(&body, &Limits::default())
        .ok()
        .and_then(|e| {
            e.operation
                .child("detail")
                .and_then(|d| d.child_text("ErrorCode"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, code, took)
}

/// POST a raw body; the status and the body of the answer.
async fn post_for_body(node: &Running, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let request = http::Request::post(format!("http://{}{path}", node.listening().http))
        .header("content-type", "text/xml; charset=utf-8")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let response = client.request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, body.to_vec())
}

fn envelope(op: &str, inner: &str) -> Vec<u8> {
    format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
         <{op} xmlns=\"{NS}\">{inner}</{op}></s:Body></s:Envelope>"
    )
    .into_bytes()
}

fn cookie(sealed: &[u8]) -> String {
    format!(
        "<cookie><Expiration>2030-01-01T00:00:00Z</Expiration><EncryptedData>{}</EncryptedData></cookie>",
        wsus_edge::catalog::base64_encode(sealed)
    )
}

fn sync(cookie: &str) -> Vec<u8> {
    envelope(
        "SyncUpdates",
        &format!(
            "{cookie}<parameters><ExpressQuery>false</ExpressQuery>\
             <SkipSoftwareSync>false</SkipSoftwareSync></parameters>"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_faults_follow_the_protocol() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let node = start(&node_config(&data, None, "", "")).await;
    let store = Store::open(&database(&data)).unwrap();
    // The node's own key (data_dir's cookie.key, or the database's).
    let sealer = node.app.served.sealer();
    let now = wsus_edge::clock::unix_now();
    let claims = Claims {
        kind: Kind::Client,
        server_id: store.server_id().unwrap(),
        issued: now,
        expires: now + 3600,
        config_change: store.load().unwrap().config_last_change,
        anchor: 0,
        groups: vec![wsus_edge::catalog::UNASSIGNED_COMPUTERS],
        client_id: "c-1".into(),
        protocol: "2.90".into(),
    };
    let good = sealer.seal(&claims);
    // Unregistered: told to register first.
    assert_eq!(
        post(&node, CLIENT, sync(&cookie(&good))).await.1,
        "RegistrationRequired"
    );
    let expired = sealer.seal(&Claims {
        expires: now - 1,
        ..claims.clone()
    });
    assert_eq!(
        post(&node, CLIENT, sync(&cookie(&expired))).await.1,
        "CookieExpired"
    );
    let mut tampered = good.clone();
    tampered[20] ^= 0x40;
    assert_eq!(
        post(&node, CLIENT, sync(&cookie(&tampered))).await.1,
        "InvalidCookie"
    );
    let foreign = Sealer::from_key(&[9; 32]).unwrap().seal(&claims);
    assert_eq!(
        post(&node, CLIENT, sync(&cookie(&foreign))).await.1,
        "InvalidCookie"
    );
    let other_server = sealer.seal(&Claims {
        server_id: Guid(1),
        ..claims.clone()
    });
    assert_eq!(
        post(&node, CLIENT, sync(&cookie(&other_server))).await.1,
        "ServerChanged"
    );
    for garbage in ["not base64 at all!", "QUJD", ""] {
        let c = format!("<cookie><EncryptedData>{garbage}</EncryptedData></cookie>");
        let (status, code, _) = post(&node, CLIENT, sync(&c)).await;
        assert_eq!(
            (status, code.as_str()),
            (500, "InvalidCookie"),
            "{garbage:?}"
        );
    }
    // Registered, it scans; over 400 installed non-leaf ids is refused, as WSUS does.
    let registered = envelope(
        "RegisterComputer",
        &format!(
            "{}<computerInfo><DnsName>x</DnsName></computerInfo>",
            cookie(&good)
        ),
    );
    assert_eq!(post(&node, CLIENT, registered).await.0, 200);
    assert_eq!(post(&node, CLIENT, sync(&cookie(&good))).await.0, 200);
    let ids: String = (1..=401).map(|i| format!("<int>{i}</int>")).collect();
    let many = envelope(
        "SyncUpdates",
        &format!(
            "{}<parameters><ExpressQuery>false</ExpressQuery><InstalledNonLeafUpdateIDs>{ids}             </InstalledNonLeafUpdateIDs><SkipSoftwareSync>false</SkipSoftwareSync></parameters>",
            cookie(&good)
        ),
    );
    assert_eq!(post(&node, CLIENT, many).await.1, "InvalidParameters");
    assert_eq!(
        post(&node, CLIENT, envelope("SyncUpdates", &cookie(&good)))
            .await
            .1,
        "InvalidParameters",
        "no parameters"
    );
    // A configuration change (a new group) makes every cookie's configuration stale.
    drop(store);
    Store::open(&database(&data))
        .unwrap()
        .add_group("Late", None)
        .unwrap();
    until(
        "the node to notice the change",
        Duration::from_secs(10),
        async || {
            let (_, code, _) = post(&node, CLIENT, sync(&cookie(&good))).await;
            if code == "ConfigChanged" {
                Ok(())
            } else {
                Err(code)
            }
        },
    )
    .await;
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_fault_fast_and_the_node_serves_on() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&node_config(&dir.path().join("n"), None, "", "")).await;
    let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetConfig xmlns="http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService"><protocolVersion>&lol2;</protocolVersion></GetConfig></s:Body></s:Envelope>"#.to_vec();
    let external = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetConfig xmlns="http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService"><protocolVersion>&e;</protocolVersion></GetConfig></s:Body></s:Envelope>"#.to_vec();
    let deep = format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>{}{}</s:Body></s:Envelope>",
        "<a>".repeat(10_000),
        "</a>".repeat(10_000)
    )
    .into_bytes();
    let truncated_base64 = sync(
        "<cookie><EncryptedData>AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=</EncryptedData></cookie>",
    );
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("entity bomb", bomb, "InvalidParameters"),
        ("external entity", external, "InvalidParameters"),
        ("10,000-deep nesting", deep, "InvalidParameters"),
        ("garbage", b"\x00\xffnot xml".to_vec(), "InvalidParameters"),
        (
            "a cookie of random bytes",
            truncated_base64,
            "InvalidCookie",
        ),
    ];
    for (what, body, want) in cases {
        let (status, code, took) = post(&node, CLIENT, body).await;
        assert_eq!((status, code.as_str()), (500, want), "{what}");
        assert!(took < Duration::from_millis(100), "{what}: {took:?}");
    }
    // A 50 MB body is refused from its Content-Length, before a byte of it is read: the
    // client gets the fault while it would still be sending.
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(node.listening().http)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(
        format!(
            "POST {CLIENT} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n\
             Content-Length: {}\r\n\r\n<s:Envelope",
            50 << 20
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("</s:Envelope>")
        && !String::from_utf8_lossy(&answer).contains("</soap:Envelope>")
    {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("answered without the body")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 500"), "{text}");
    assert!(text.contains("<ErrorCode>InvalidParameters</ErrorCode>"));
    assert!(started.elapsed() < Duration::from_secs(2));

    // Still serving.
    let (status, code, _) = post(
        &node,
        CLIENT,
        envelope("GetConfig", "<protocolVersion>2.90</protocolVersion>"),
    )
    .await;
    assert_eq!((status, code.as_str()), (200, ""));
    node.shutdown(Duration::from_secs(1)).await;
}

/// Answers in the coding the client offers: xpress first (what Windows offers), then gzip
/// (what nodes offer), none when it offers neither or the node does not compress answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_coded_as_offered() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut config = node_config(&dir.path().join("n"), None, "", "");
    let node = start(&config).await;
    config.listen.compress_answers = false;
    config.node.data_dir = dir.path().join("off");
    let off = start(&config).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let cases = [
        (&node, "gzip, deflate", Some("gzip")),
        (&node, "xpress", Some("xpress")),
        (&node, "gzip, xpress", Some("xpress")),
        (&node, "xpress;q=0, gzip", Some("gzip")),
        (&node, "gzip;q=0", None),
        (&node, "br", None),
        (&off, "xpress", None),
        (&off, "gzip", None),
    ];
    for (node, offer, coding) in cases {
        let request = http::Request::post(format!("http://{}{CLIENT}", node.listening().http))
            .header("content-type", "text/xml; charset=utf-8")
            .header("accept-encoding", offer)
            .body(http_body_util::Full::new(bytes::Bytes::from(envelope(
                "GetConfig",
                "<protocolVersion>2.90</protocolVersion>",
            ))))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let encoding = response
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(encoding.as_deref(), coding, "{offer}");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let xml = match coding {
            Some("gzip") => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
                    .unwrap();
                out
            }
            Some(_) => wsus_edge::http::xpress::decompress(&body, 1 << 20).unwrap(),
            None => body.to_vec(),
        };
        let env = soap::parse(&xml, &Limits::default()).unwrap();
        assert_eq!(env.operation.name, "GetConfigResponse");
    }
    node.shutdown(Duration::from_secs(1)).await;
    off.shutdown(Duration::from_secs(1)).await;
}

/// `text` in UTF-16 with its byte-order mark, little- or big-endian.
fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    let mark: [u8; 2] = if big_endian {
        [0xFE, 0xFF]
    } else {
        [0xFF, 0xFE]
    };
    let mut out = mark.to_vec();
    for unit in text.encode_utf16() {
        out.extend(if big_endian {
            unit.to_be_bytes()
        } else {
            unit.to_le_bytes()
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf16_and_byte_order_marked_bodies_are_answered_as_utf8_ones() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&node_config(&dir.path().join("n"), None, "", "")).await;
    // What a Windows 11 client sent, declared as UTF-16 the way such a body declares itself.
    let captured = std::fs::read_to_string(format!(
        "{}/samples/native-wua-capture/01-GetConfig.request.body.xml",
        shared_protocol()
    ))
    .unwrap();
    let (status, plain) = post_for_body(&node, CLIENT, captured.clone().into_bytes()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&plain));
    assert!(String::from_utf8_lossy(&plain).contains("<GetConfigResult>"));
    let declared = format!("<?xml version=\"1.0\" encoding=\"utf-16\"?>{captured}");
    let mut marked = vec![0xEF, 0xBB, 0xBF];
    marked.extend(captured.as_bytes());
    for (what, body) in [
        ("UTF-16LE", utf16(&declared, false)),
        ("UTF-16BE", utf16(&declared, true)),
        ("UTF-8 with its mark", marked),
    ] {
        let (status, answer) = post_for_body(&node, CLIENT, body).await;
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&answer));
        assert_eq!(answer, plain, "{what}");
    }
    // Transcoded before the operation is read: a SyncUpdates of 3,000 ids (over the 2,000
    // elements an unknown operation may have) is parsed under SyncUpdates' limits, and gets
    // the cookie's fault, not a parse error.
    let ids = "<int>7</int>".repeat(3_000);
    let sync = String::from_utf8(envelope(
        "SyncUpdates",
        &format!(
            "{}<parameters><ExpressQuery>false</ExpressQuery><InstalledNonLeafUpdateIDs>{ids}\
             </InstalledNonLeafUpdateIDs><SkipSoftwareSync>false</SkipSoftwareSync></parameters>",
            cookie(b"not a sealed cookie")
        ),
    ))
    .unwrap();
    assert_eq!(
        post(&node, CLIENT, utf16(&sync, false)).await.1,
        "InvalidCookie"
    );
    // A broken UTF-16 body (a lone surrogate) is a fault that says so, and the node serves on.
    let mut broken = utf16(&captured, false);
    broken.extend([0x00, 0xD8]);
    let (status, answer) = post_for_body(&node, CLIENT, broken).await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, 500, "{answer}");
    assert!(answer.contains("invalid UTF-16"), "{answer}");
    assert_eq!(
        post_for_body(&node, CLIENT, captured.into_bytes()).await.0,
        200
    );
    node.shutdown(Duration::from_secs(1)).await;
}

/// The self-update directory (MS-WUSP §2.1, `/SelfUpdate`) exists, in any case, for GET and
/// HEAD, and holds nothing: a 404 that says why, as IIS answers for a missing file (Windows 10
/// and later never ask; §3.1.5.1 <49>). Other methods are refused with what it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_update_directory_answers_not_found_and_says_why() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&node_config(&dir.path().join("n"), None, "", "")).await;
    for path in [
        "/selfupdate/wuident.cab",
        "/SelfUpdate/wuident.cab",
        "/SELFUPDATE/WSUS3/x86/Other/wsus3setup.cab",
        "/selfupdate",
    ] {
        let got = get(&url(&node, path), &[]).await;
        assert_eq!(got.status, 404, "{path}");
        let text = String::from_utf8_lossy(&got.body);
        assert!(text.contains("self-update"), "{path}: {text}");
        let head = request("HEAD", &url(&node, path), &[]).await;
        assert_eq!(head.status, 404, "{path}");
        assert!(head.body.is_empty());
    }
    let post = request("POST", &url(&node, "/selfupdate/wuident.cab"), &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    // Other unknown paths stay plain 404s; a name merely starting alike is not the directory.
    let other = get(&url(&node, "/selfupdates/wuident.cab"), &[]).await;
    assert_eq!(other.status, 404);
    assert!(!String::from_utf8_lossy(&other.body).contains("self-update"));
    assert_eq!(
        metric(
            &node,
            "wsus_edge_requests_total",
            "path=\"selfupdate\",status=\"404\""
        )
        .await,
        8.0
    );
    node.shutdown(Duration::from_secs(1)).await;
}
