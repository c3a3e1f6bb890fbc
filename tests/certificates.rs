//! The certificates an operator makes with `wsus-edge cert` are the ones nodes accept: a branch
//! syncs from its root over HTTPS and over HTTP/3 with mutual TLS. A certificate made the usual
//! wrong way (`openssl req -x509`, a CA) is named as the mistake it is, with its fix, by
//! `check-config` on the node that holds it and in the sync error of the branch that meets it.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_wsus-edge");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(args: &[&str]) {
    let (code, out) = run(args);
    assert_eq!(code, 0, "wsus-edge {args:?}:\n{out}");
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_syncs_over_https_and_http3_with_certificates_made_by_wsus_edge_cert() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    ok(&[
        "cert",
        "ca",
        "--out",
        &s(&pki),
        "--name",
        "Contoso update CA",
    ]);
    ok(&[
        "cert",
        "node",
        "--ca",
        &s(&pki),
        "--name",
        "localhost",
        "--san",
        "127.0.0.1",
        "--out",
        &s(&pki),
    ]);
    for branch in ["branch-tcp", "branch-quic"] {
        ok(&[
            "cert",
            "client",
            "--ca",
            &s(&pki),
            "--name",
            branch,
            "--out",
            &s(&pki),
        ]);
    }
    let root_extra = format!(
        "https = \"127.0.0.1:0\"\n[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
        s(&pki.join("localhost.pem")),
        s(&pki.join("localhost-key.pem")),
        s(&pki.join("ca.pem")),
    );
    let (root, _, _) = catalog_root_with(dir.path(), &root_extra).await;
    let port = root.listening().https.unwrap().port();
    for (name, transport) in [("branch-tcp", "tcp"), ("branch-quic", "quic")] {
        let upstream = format!(
            "transport = \"{transport}\"\nca = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n\
             sync_interval = \"1h\"\ntimeout = \"10s\"\nconnect_timeout = \"2s\"",
            s(&pki.join("ca.pem")),
            s(&pki.join(format!("{name}.pem"))),
            s(&pki.join(format!("{name}-key.pem"))),
        );
        // check-config agrees before the node starts.
        let config_file = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config_file,
            format!(
                "[node]\ndata_dir = {:?}\n[upstream]\nurl = \"https://localhost:{port}\"\n{upstream}\n",
                s(&dir.path().join(name))
            ),
        )
        .unwrap();
        ok(&["check-config", &s(&config_file)]);
        let branch = branch_with(
            &dir.path().join(name),
            &format!("https://localhost:{port}"),
            &upstream,
            "",
        )
        .await;
        let status = replica_until(&branch, |s| s.syncs > 0).await;
        assert_eq!(status.last_error, None, "{name}");
        let sync = status.last_sync.unwrap();
        assert!(
            sync.applied.new_revisions > 0 && sync.applied.deployments > 0,
            "{name}"
        );
        let used = branch
            .app
            .upstream
            .as_ref()
            .unwrap()
            .transport_status()
            .last_used;
        let expected = if transport == "quic" {
            "http3"
        } else {
            "http2"
        };
        assert_eq!(used, Some(expected), "{name}");
        branch.shutdown(std::time::Duration::from_secs(2)).await;
    }
    // The root's own configuration passes check-config too.
    let root_file = dir.path().join("root.toml");
    std::fs::write(
        &root_file,
        format!(
            "[node]\ndata_dir = {:?}\n[listen]\n{root_extra}",
            s(&dir.path().join("root"))
        ),
    )
    .unwrap();
    ok(&["check-config", &s(&root_file)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_ca_as_a_server_certificate_is_named_with_its_fix() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("self.pem"), dir.path().join("self-key.pem"));
    // What most guides say to run: a self-signed certificate, which openssl makes a CA.
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            &s(&key),
            "-out",
            &s(&cert),
        ])
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let root_file = dir.path().join("root.toml");
    std::fs::write(
        &root_file,
        format!(
            "[node]\ndata_dir = {:?}\n[listen]\nhttps = \"127.0.0.1:8531\"\n[tls]\ncert = {:?}\n\
             key = {:?}\n",
            s(&dir.path().join("root")),
            s(&cert),
            s(&key)
        ),
    )
    .unwrap();
    let (code, out) = run(&["check-config", &s(&root_file)]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("tls.cert") && out.contains("is a CA certificate"),
        "{out}"
    );
    assert!(
        out.contains("wsus-edge cert node"),
        "the fix is named: {out}"
    );

    // A node started with it anyway: the branch says what is wrong, not only webpki's words.
    let root_extra = format!(
        "https = \"127.0.0.1:0\"\n[tls]\ncert = {:?}\nkey = {:?}\n",
        s(&cert),
        s(&key)
    );
    let (root, _, _) = catalog_root_with(dir.path(), &root_extra).await;
    let port = root.listening().https.unwrap().port();
    let branch = branch_with(
        &dir.path().join("branch"),
        &format!("https://localhost:{port}"),
        &format!(
            "transport = \"tcp\"\nca = {:?}\nsync_interval = \"1h\"\nconnect_timeout = \"2s\"",
            s(&cert)
        ),
        "",
    )
    .await;
    let status = replica_until(&branch, |s| s.failed_syncs > 0).await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("the upstream presents a CA certificate as its own"),
        "{error}"
    );
    assert!(error.contains("CaUsedAsEndEntity"), "{error}");
}

/// `config/central.toml` and `config/branch.toml` as shipped, moved under `root` (every
/// /etc/wsus-edge and /var/lib/wsus-edge path).
fn shipped(name: &str, root: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name),
    )
    .unwrap()
    .replace("/etc/wsus-edge", &s(&root.join("etc")))
    .replace("/var/lib/wsus-edge", &s(&root.join("data")));
    std::fs::create_dir_all(root).unwrap();
    let path = root.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_shipped_configurations_pass_once_the_documented_files_are_made() {
    let dir = tempfile::tempdir().unwrap();
    let (central_dir, branch_dir) = (dir.path().join("central"), dir.path().join("branch"));
    let central = shipped("central.toml", &central_dir);
    let branch = shipped("branch.toml", &branch_dir);
    std::fs::create_dir_all(central_dir.join("data")).unwrap();
    std::fs::create_dir_all(branch_dir.join("data")).unwrap();
    // Before: each missing file is named with how to make it.
    let (code, out) = run(&["check-config", &s(&central)]);
    assert_eq!(code, 2);
    assert!(
        out.contains("tls.cert") && out.contains("wsus-edge cert node"),
        "{out}"
    );
    assert!(
        out.contains("downstream.token_file") && out.contains("openssl rand"),
        "{out}"
    );

    // The commands of the files' own comments (deploy/README.md step 1).
    let tls = central_dir.join("etc/tls");
    let ca = tls.join("ca");
    ok(&["cert", "ca", "--out", &s(&ca)]);
    ok(&[
        "cert",
        "node",
        "--ca",
        &s(&ca),
        "--name",
        "central.example.org",
        "--out",
        &s(&tls),
    ]);
    let token = Command::new("openssl")
        .args(["rand", "-hex", "32"])
        .output()
        .unwrap();
    assert!(token.status.success());
    std::fs::write(central_dir.join("etc/downstream.tokens"), &token.stdout).unwrap();
    let (code, out) = run(&["check-config", &s(&central)]);
    assert_eq!(code, 0, "{out}");

    let branch_tls = branch_dir.join("etc/tls");
    ok(&[
        "cert",
        "client",
        "--ca",
        &s(&ca),
        "--name",
        "branch-a",
        "--out",
        &s(&branch_tls),
    ]);
    std::fs::copy(ca.join("ca.pem"), branch_tls.join("ca.pem")).unwrap();
    std::fs::write(branch_dir.join("etc/upstream.token"), &token.stdout).unwrap();
    let (code, out) = run(&["check-config", &s(&branch)]);
    assert_eq!(code, 0, "{out}");
}
