//! An independent SOAP stack (Python zeep, built from Microsoft's WSDLs) calls every operation
//! of the client protocol against a running node, and every answer is validated against the
//! WSDL's XML schema; then the captured Windows 11 requests are replayed and must succeed, as
//! they did against a real WSUS. The checks are in tests/zeep/check_wusp.py; `.ci/run` installs
//! zeep.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_and_the_captured_requests_get_schema_valid_answers() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = catalog_root(dir.path()).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let shared = format!("{root}/../shared/protocol");
    let base = format!("http://{}", node.listening().http);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(format!("{root}/tests/zeep/check_wusp.py"))
            .arg(&base)
            .arg(format!("{shared}/wsdl"))
            .arg(wsus_edge::catalog::Guid::random().to_string())
            .arg("Ring 1")
            .arg(format!("{shared}/samples/native-wua-capture"))
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (.ci/run installs it with zeep)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "zeep checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("0 failures"), "{stdout}");
    assert!(stdout.matches("ok   ").count() >= 30, "{stdout}");
    node.shutdown(Duration::from_secs(1)).await;
}
