//! An independent SOAP stack (Python zeep, built from Microsoft's WSDLs) calls every operation
//! of the client protocol against a running node, and every answer is validated against the
//! WSDL's XML schema; then the captured Windows 11 requests are replayed and must succeed, as
//! they did against a real WSUS. The checks are in tests/zeep/check_wusp.py; `.ci/run` installs
//! zeep.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_and_the_captured_requests_get_schema_valid_answers() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = catalog_root(dir.path()).await;
    let shared = shared_protocol();
    let stdout = zeep_checks(
        "check_wusp.py",
        vec![
            format!("http://{}", node.listening().http),
            format!("{shared}/wsdl"),
            wsus_edge::catalog::Guid::random().to_string(),
            "Ring 1".into(),
            format!("{shared}/samples/native-wua-capture"),
        ],
    )
    .await;
    assert!(stdout.matches("ok   ").count() >= 30, "{stdout}");
    node.shutdown(Duration::from_secs(1)).await;
}
