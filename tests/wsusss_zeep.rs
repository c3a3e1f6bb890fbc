//! An independent SOAP stack (Python zeep, built from Microsoft's MS-WSUSSS WSDLs) starts a
//! sync against a running node as a downstream server would, and every answer is validated
//! against the WSDL's XML schema. The checks are in tests/zeep/check_wsusss.py.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_gets_schema_valid_answers_from_the_upstream_side() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = catalog_root(dir.path()).await;
    let stdout = zeep_checks(
        "check_wsusss.py",
        vec![
            format!("http://{}", node.listening().http),
            format!("{}/wsdl", shared_protocol()),
        ],
    )
    .await;
    assert!(stdout.matches("ok   ").count() >= 20, "{stdout}");
    node.shutdown(Duration::from_secs(1)).await;
}
