//! SOAP for the tests of the web services: envelopes and calls ([`soap_call`],
//! [`soap_call_to`]), and the Python checks (zeep and others) run against a node.

use http_body_util::BodyExt;
use wsus_edge::node::Running;

use super::url;

/// A SOAP 1.1 call as a server writes it (the crate's one client's envelope).
pub fn soap_envelope(ns: &str, operation: &str, inner: &str) -> String {
    wsus_edge::soap_client::envelope(wsus_edge::soap_client::Caller::Server, ns, operation, inner)
}

/// POST a SOAP 1.1 call; (status, WWW-Authenticate, the answer's operation element or fault
/// detail, as a tree when it is SOAP).
pub async fn soap_call(
    node: &Running,
    path: &str,
    ns: &str,
    operation: &str,
    inner: &str,
    token: Option<&str>,
) -> (u16, Option<String>, Option<wsus_edge::soap::Element>) {
    soap_call_to(&url(node, path), ns, operation, inner, token).await
}

/// [`soap_call`] to a URL (a node that is a process of its own).
pub async fn soap_call_to(
    url: &str,
    ns: &str,
    operation: &str,
    inner: &str,
    token: Option<&str>,
) -> (u16, Option<String>, Option<wsus_edge::soap::Element>) {
    let mut builder = http::Request::post(url)
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", format!("\"{ns}/{operation}\""));
    if let Some(t) = token {
        builder = builder.header("authorization", format!("Bearer {t}"));
    }
    let request = builder
        .body(http_body_util::Full::new(bytes::Bytes::from(
            soap_envelope(ns, operation, inner),
        )))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let tree = wsus_edge::soap::parse(&body, &wsus_edge::soap::Limits::default())
        .ok()
        .map(|e| e.operation);
    (status, challenge, tree)
}

/// Run a check script of tests/zeep (python3 with zeep, which `.ci/run` installs) with `args`;
/// asserts it passed with no failure and returns its output, one line per check.
pub async fn zeep_checks(script: &str, args: Vec<String>) -> String {
    python_checks("zeep", script, args).await
}

/// Run `tests/{dir}/{script}` (a Python check printing one line per check and "0 failures");
/// its output.
pub async fn python_checks(dir: &str, script: &str, args: Vec<String>) -> String {
    let path = format!("{}/tests/{dir}/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(path)
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (.ci/run installs it with zeep, websocket-client and chromium)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("\n0 failures"), "{stdout}");
    stdout
}

/// `../shared/protocol` beside the checkout.
pub fn shared_protocol() -> String {
    format!("{}/../shared/protocol", env!("CARGO_MANIFEST_DIR"))
}
