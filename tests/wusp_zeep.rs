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
use wsus_edge::catalog::{Action, Decision, Guid};
use wsus_edge::testkit::drivers::{Metadata, document};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_and_the_captured_requests_get_schema_valid_answers() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = catalog_root(dir.path()).await;
    // A display driver and a printer driver, approved for everyone: the driver pass and the
    // Add Printer Wizard's call have something to send.
    let driver = Guid::parse("6b0f4d3e-9a2c-4f1e-8b7d-2c5e1f0a9d01").unwrap();
    let printer = Guid::parse("6b0f4d3e-9a2c-4f1e-8b7d-2c5e1f0a9d02").unwrap();
    let display = Metadata::new(
        "PCI\\VEN_8086&DEV_46A8",
        "2024-01-12",
        "31.0.101.5186",
        "Intel",
    );
    let mut queue = Metadata::new(
        "HPLaserJetM404_Series",
        "2023-10-01",
        "61.290.1.25111",
        "HP",
    );
    queue.class = "Printers".into();
    let documents = [
        document(
            driver,
            100,
            "Intel - Display - 31.0.101.5186",
            &[],
            &[display],
            None,
        ),
        document(
            printer,
            100,
            "HP - Printers - 61.290.1.25111",
            &[],
            &[queue],
            None,
        ),
    ];
    node.app.served.change(|s, _| s.import(&documents)).unwrap();
    node.app
        .served
        .change(|s, c| {
            s.decide(
                c,
                Some(&[driver, printer]),
                "All Computers",
                Decision::Approve(Action::Install),
                None,
            )
        })
        .unwrap();
    let shared = shared_protocol();
    let stdout = zeep_checks(
        "check_wusp.py",
        vec![
            format!("http://{}", node.listening().http),
            format!("{shared}/wsdl"),
            Guid::random().to_string(),
            "Ring 1".into(),
            format!("{shared}/samples/native-wua-capture"),
        ],
    )
    .await;
    assert!(stdout.matches("ok   ").count() >= 30, "{stdout}");
    node.shutdown(Duration::from_secs(1)).await;
}
