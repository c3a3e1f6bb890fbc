//! Hostile and repeated ReportEventBatch calls: a malformed event refuses the whole batch, a
//! redelivered batch is kept once, an event id the server does not know is kept but changes
//! no state, a batch of 100,000 events is refused without reading it whole, and a cookie of
//! another server is refused; nothing of a refused batch is kept.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use wsus_edge::catalog::Guid;
use wsus_edge::simulate::wua::{self, request};
use wsus_edge::state::Journal;

const REPORTING: &str = "/ReportingWebService/ReportingWebService.asmx";
const NS: &str = "http://www.microsoft.com/SoftwareDistribution";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_repeated_reports() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, approved, _) = catalog_root(dir.path()).await;
    let base = format!("http://{}", node.listening().http);
    let soap = wua::soap_client();
    let machine = wua::Machine::new(3, None);
    wua::scan(&soap, &base, &machine).await.unwrap();
    let cookie = wua::client_cookie(&soap, &base, &machine).await.unwrap();
    let time = "2026-12-01T10:00:00Z";
    let event = |instance: &str, id: u16| {
        request::reporting_event(
            &machine.client_id,
            time,
            instance,
            id,
            (approved[0], 200),
            0,
            "",
        )
    };
    let batch = |cookie: &request::Cookie, events: &str| {
        format!(
            "{}<clientTime>{time}</clientTime><eventBatch>{events}</eventBatch>",
            request::cookie_xml("cookie", cookie)
        )
    };
    let post = |body: String| {
        let node = &node;
        async move { soap_call(node, REPORTING, NS, "ReportEventBatch", &body, None).await }
    };
    let kept = || {
        Journal::open(&database(&dir.path().join("root")))
            .unwrap()
            .event_count()
            .unwrap()
    };
    let accepted = |answer: &(u16, Option<String>, Option<wsus_edge::soap::Element>)| {
        answer.0 == 200
            && answer
                .2
                .as_ref()
                .and_then(|op| op.child_text("ReportEventBatchResult"))
                == Some("true")
    };

    // One malformed event: the batch is refused, naming the field, and nothing is kept.
    let good = Guid::random().to_string();
    let answer = post(batch(
        &cookie,
        &(event(&good, 183) + &event("not-a-guid", 183)),
    ))
    .await;
    assert_eq!(answer.0, 500);
    let detail = answer.2.as_ref().unwrap().child("detail").unwrap();
    assert_eq!(detail.child_text("ErrorCode"), Some("InvalidParameters"));
    assert!(
        detail
            .child_text("Message")
            .unwrap()
            .contains("EventInstanceID")
    );
    assert_eq!(kept(), 0);

    // The same batch twice (a client retrying after a lost answer): kept once.
    let events = event(&good, 183) + &event(&Guid::random().to_string(), 999);
    assert!(accepted(&post(batch(&cookie, &events)).await));
    assert!(accepted(&post(batch(&cookie, &events)).await));
    assert_eq!(kept(), 2);
    // The install event set the update's state; the unknown event id 999 changed nothing.
    let states = Journal::open(&database(&dir.path().join("root")))
        .unwrap()
        .computer_updates(&machine.client_id)
        .unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].0, approved[0]);

    // 100,000 events in one call: refused (the body is over the limit), nothing kept.
    // The node may answer before the client has sent it all, and close: either is a refusal.
    let one = event(&Guid::random().to_string(), 183);
    let body = soap_envelope(
        NS,
        "ReportEventBatch",
        &batch(&cookie, &one.repeat(100_000)),
    );
    assert!(body.len() > 50 << 20);
    let request = http::Request::post(format!("{base}{REPORTING}"))
        .header("content-type", "text/xml; charset=utf-8")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    match client.request(request).await {
        Ok(response) => assert!(response.status().as_u16() >= 400, "{}", response.status()),
        Err(e) => {
            let why = format!("{e:?}");
            assert!(
                why.contains("BrokenPipe") || why.contains("ConnectionReset"),
                "{why}"
            );
        }
    }
    assert_eq!(kept(), 2);

    // A cookie sealed by another server.
    let other_dir = tempfile::tempdir().unwrap();
    let (other, _, _) = catalog_root(other_dir.path()).await;
    let other_base = format!("http://{}", other.listening().http);
    wua::scan(&soap, &other_base, &machine).await.unwrap();
    let foreign = wua::client_cookie(&soap, &other_base, &machine)
        .await
        .unwrap();
    let answer = post(batch(&foreign, &event(&Guid::random().to_string(), 183))).await;
    assert_eq!(answer.0, 500);
    assert!(!accepted(&answer));
    assert_eq!(kept(), 2);

    other.shutdown(Duration::from_secs(1)).await;
    node.shutdown(Duration::from_secs(1)).await;
}
