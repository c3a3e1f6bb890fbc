//! The rollup endpoints of a node (MS-WSUSSS reporting phase, upstream side), called by an
//! independent SOAP stack (zeep from Microsoft's Reporting WSDL) as a downstream server would;
//! then what the node kept, as its admin API shows it: the rolled-up computers under their
//! branch with the states sent, and the branch's summary.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_rollups_are_kept_and_shown() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = catalog_root(dir.path()).await;
    let stdout = zeep_checks(
        "check_rollup.py",
        vec![
            format!("http://{}", node.listening().http),
            format!("{}/wsdl", shared_protocol()),
        ],
    )
    .await;
    assert!(stdout.matches("ok   ").count() >= 14, "{stdout}");
    let ids: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("COMPUTERS "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .split_whitespace()
        .collect();
    let (c1, c3, u1, u2, branch) = (ids[0], ids[2], ids[4], ids[5], ids[7]);

    let admin = |p: &str| format!("http://{}{p}", node.listening().admin);
    let json = |got: &Got| -> serde_json::Value {
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        serde_json::from_slice(&got.body).unwrap()
    };
    let one = json(&get(&admin(&format!("/api/v1/computers/{c1}")), &[]).await);
    assert_eq!(one["dns_name"], "pc1.rollup.example");
    let states = one["update_states"].as_array().unwrap();
    let state_of = |u: &str| {
        states
            .iter()
            .find(|s| s["update"] == u)
            .map(|s| s["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state_of(u1).as_deref(), Some("installed"));
    assert_eq!(state_of(u2).as_deref(), Some("failed"));
    // A computer sent without details is not kept until they come.
    assert_eq!(
        get(&admin(&format!("/api/v1/computers/{c3}")), &[])
            .await
            .status,
        404
    );
    let failing = json(&get(&admin("/api/v1/computers?state=failed"), &[]).await);
    assert_eq!(failing.as_array().unwrap().len(), 1);
    let servers = json(&get(&admin("/api/v1/downstreams"), &[]).await);
    let rolled = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == branch)
        .unwrap_or_else(|| panic!("{servers}"));
    assert_eq!(rolled["computers"], 2);
    assert_eq!(rolled["with_errors"], 1);
    assert!(rolled["last_rollup"].as_i64().is_some());
    node.shutdown(Duration::from_secs(1)).await;
}

const REPORTING: &str = "/ReportingWebService/ReportingWebService.asmx";
const NS: &str = "http://www.microsoft.com/SoftwareDistribution";
const COOKIE: &str =
    "<cookie><Expiration>9999-12-31T23:59:59.9999999</Expiration><EncryptedData/></cookie>";

/// Rollups share the clients' Reporting path but not their openness: with downstream tokens
/// configured they need one, while clients' reports on the same path do not. Batches over
/// the advertised maxima are refused, and nothing of them is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_are_gated_and_bounded() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("downstream.tokens");
    std::fs::write(&tokens, "rollup-token\n").unwrap();
    let (node, _, _) = catalog_root_with(
        dir.path(),
        &format!(
            "[downstream]\ntoken_file = {:?}\n",
            tokens.to_string_lossy()
        ),
    )
    .await;
    let config = |token| {
        soap_call(
            &node,
            REPORTING,
            NS,
            "GetRollupConfiguration",
            COOKIE,
            token,
        )
    };
    assert_eq!(config(None).await.0, 401);
    assert_eq!(config(Some("wrong")).await.0, 401);
    let (status, _, op) = config(Some("rollup-token")).await;
    assert_eq!(status, 200);
    let result = op.unwrap();
    let result = result.child("GetRollupConfigurationResult").unwrap();
    let max: usize = result
        .child_text("RollupComputerStatusMaxBatchSize")
        .unwrap()
        .parse()
        .unwrap();

    // A client's report on the same path is the client protocol's business (its own fault
    // for a bad cookie), never a 401.
    let (status, challenge, _) = soap_call(
        &node,
        REPORTING,
        NS,
        "ReportEventBatch",
        &format!("{COOKIE}<clientTime>2026-12-01T00:00:00Z</clientTime><eventBatch/>"),
        None,
    )
    .await;
    assert_ne!(status, 401);
    assert_eq!(challenge, None);

    // One computer over the maximum: refused, naming the parameter.
    let one = "<ComputerStatusRollupInfo><InstanceId>a0a08746-4dbe-4a37-9adf-9e7652c0b421\
               </InstanceId><ComputerId>pc</ComputerId><EffectiveLastDetectionTime>\
               2026-12-01T00:00:00Z</EffectiveLastDetectionTime><RollupNumber>1</RollupNumber>\
               <IsFullRollup>true</IsFullRollup></ComputerStatusRollupInfo>";
    let (status, _, fault) = soap_call(
        &node,
        REPORTING,
        NS,
        "RollupComputerStatus",
        &format!(
            "{COOKIE}<clientTime>2026-12-01T00:00:00Z</clientTime>\
             <parentServerId>a0a08746-4dbe-4a37-9adf-9e7652c0b421</parentServerId>\
             <computers>{}</computers>",
            one.repeat(max + 1)
        ),
        Some("rollup-token"),
    )
    .await;
    assert_eq!(status, 500);
    let fault = fault.unwrap();
    let detail = fault.child("detail").unwrap();
    assert_eq!(detail.child_text("ErrorCode"), Some("InvalidParameters"));
    assert!(
        detail
            .child_text("Message")
            .unwrap()
            .starts_with("computers")
    );
    node.shutdown(Duration::from_secs(1)).await;
}
