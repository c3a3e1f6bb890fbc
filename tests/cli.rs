//! The binary as an operator meets it: `check-config` reports every problem with its key, exit
//! codes 0 (ok), 1 (runtime failure) and 2 (usage or configuration), and `demo` (the README's
//! first command) runs its whole story on loopback.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn wsus_edge(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsus-edge"));
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .env("WSUS_EDGE_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_reports_every_problem_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[node]\ndata_dir = \"data\"\n[cache]\nmemory_bytes = \"64MiB\"\n",
    )
    .unwrap();
    let out = wsus_edge(dir.path(), &["check-config", "good.toml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok"));

    // A bad value, an unknown key, a missing certificate: all three at once, each by its key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[cache]\nmemory_bytes = \"lots\"\nnope = 1\n[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
    )
    .unwrap();
    let out = wsus_edge(dir.path(), &["check-config", "bad.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for key in ["cache.memory_bytes", "cache.nope", "tls.cert", "tls.key"] {
        assert!(err.contains(key), "{key} named in:\n{err}");
    }

    // An override without the double underscore is not silently ignored.
    let out = wsus_edge(
        dir.path(),
        &["check-config", "good.toml"],
        &[("WSUS_EDGE_CACHE_MEMORY_BYTES", "1GiB")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("WSUS_EDGE_CACHE_MEMORY_BYTES"));
}

#[test]
fn exit_codes_tell_usage_from_failure() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        wsus_edge(dir.path(), &["no-such-command"], &[])
            .status
            .code(),
        Some(2)
    );
    std::fs::write(dir.path().join("bad.toml"), "[listen]\nhttp = 8530\n").unwrap();
    let out = wsus_edge(dir.path(), &["--config", "bad.toml", "serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("listen.http"));
    // A file that is not there to import is a runtime failure, not a usage error.
    let out = wsus_edge(dir.path(), &["import", "no-such-dir"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn demo_tells_its_story() {
    let dir = tempfile::tempdir().unwrap();
    let out = wsus_edge(dir.path(), &["demo", "--clients", "2"], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("scans               2 in "), "{stdout}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    // Every download hashed to its name: "downloads N (N verified …)".
    let line = stdout
        .lines()
        .find(|l| l.starts_with("downloads "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let numbers: Vec<&str> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        numbers.len() >= 2 && numbers[0] == numbers[1] && numbers[0] != "0",
        "{line}"
    );
    assert!(
        stdout.contains("each slice crossed the WAN once"),
        "{stdout}"
    );
    assert!(stdout.contains("admin (branch)      http://127.0.0.1:"));
    // The status reached the root: one line for the branch with both clients.
    let branch = stdout
        .lines()
        .find(|l| l.starts_with("branch demo-branch"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(branch.contains(" 2 computers:"), "{branch}");
    // And what it counted: an install reported for every update offered, each counted once.
    let numbers_of = |prefix: &str| -> Vec<u64> {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {stdout}"))
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    let offered = numbers_of("offered updates")[0];
    let updates = numbers_of("  updates ");
    assert!(updates[0] > 0 && updates[0] <= updates[1], "{updates:?}");
    assert_eq!(updates[3] + updates[4], offered, "{updates:?}");
    assert!(stdout.contains("root status page    http://127.0.0.1:"));
}

/// The emulator as the benchmarks drive it: a ready line, commands on stdin, counters at the end.
#[test]
fn wan_emulator_relays_and_takes_commands() {
    use std::io::{BufRead, BufReader, Read, Write};
    let target = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut emulator = Command::new(env!("CARGO_BIN_EXE_wsus-edge"))
        .args([
            "wan-emulator",
            "--relay",
            &format!("127.0.0.1:0={}", target.local_addr().unwrap()),
            "--delay",
            "5ms",
            "--rate",
            "10Mbit/s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(emulator.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("wan-emulator ready relay=")
        .unwrap_or_else(|| panic!("ready line: {line:?}"))
        .to_owned();

    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"through", &addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = target.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"through");

    let mut stdin = emulator.stdin.take().unwrap();
    stdin.write_all(b"loss 100%\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ok loss=1");
    client.send_to(b"lost", &addr).unwrap();
    stdin.write_all(b"bogus\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("error"), "{line}");
    // The datagram and the commands travel apart: ask until the relay has
    // counted the drop (bounded; each answer is one round trip through it).
    let mut counted = false;
    for _ in 0..200 {
        stdin.write_all(b"stats\n").unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        if line.contains("dropped=1") {
            counted = true;
            break;
        }
        std::thread::yield_now();
    }
    assert!(counted, "the lost datagram was never counted: {line}");

    // The child we spawned and have not reaped.
    let pid = rustix::process::Pid::from_raw(emulator.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    // If it did not end, its stdout never closes: bound the wait.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if done_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .is_err()
        {
            // Still ours: the child is reaped only after `done_tx` has sent.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    });
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let _ = done_tx.send(());
    assert!(emulator.wait().unwrap().success());
    assert!(
        rest.contains("packets_up=1 ") && rest.contains("dropped=1"),
        "{rest}"
    );
}

#[test]
fn version_man_pages_completions_and_progress_come_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = wsus_edge(dir.path(), &["--version"], &[]);
    let version = text(&out.stdout);
    assert!(
        version.starts_with(&format!("wsus-edge {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    let out = wsus_edge(dir.path(), &["generate", "man", "man"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(dir.path().join("man/wsus-edge.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH wsus-edge 1"),
        "{page}"
    );
    for sub in [
        "serve",
        "check-config",
        "status",
        "cert-node",
        "generate-man",
    ] {
        let page = std::fs::read_to_string(dir.path().join(format!("man/wsus-edge-{sub}.1")))
            .unwrap_or_else(|e| panic!("wsus-edge-{sub}.1: {e}"));
        assert!(page.contains(".TH"), "{sub}");
    }
    // man itself reads them.
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("man/wsus-edge-serve.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man (apt-get install man-db)");
    assert!(rendered.status.success());
    assert!(text(&rendered.stdout).contains("SIGHUP"));

    for (shell, mark) in [
        ("bash", "complete -F _wsus__edge"),
        ("zsh", "#compdef wsus-edge"),
        ("fish", "complete -c wsus-edge"),
    ] {
        let out = wsus_edge(dir.path(), &["generate", "completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0));
        let script = text(&out.stdout);
        assert!(script.contains(mark), "{shell}: {script}");
        assert!(script.contains("check-config"), "{shell}");
    }
    // A bash that loads the completion offers the subcommands.
    let completion = dir.path().join("completion.bash");
    std::fs::write(
        &completion,
        wsus_edge(dir.path(), &["generate", "completions", "bash"], &[]).stdout,
    )
    .unwrap();
    let offered = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(wsus-edge che); COMP_CWORD=1; COMP_LINE='wsus-edge che'; \
             COMP_POINT=13; _wsus__edge wsus-edge che wsus-edge; echo \"${{COMPREPLY[@]}}\"",
            completion.display()
        ))
        .output()
        .unwrap();
    assert!(
        text(&offered.stdout).contains("check-config"),
        "{}{}",
        text(&offered.stdout),
        text(&offered.stderr)
    );

    // Long work says how far it got; stderr is not a terminal here, so in plain lines.
    let out = wsus_edge(
        dir.path(),
        &[
            "import",
            "--generate",
            "40",
            "--payload-bytes",
            "4MiB",
            "--drivers",
            "16",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let progress = text(&out.stderr);
    assert!(
        progress.contains("generating: 40/40 updates (100%)"),
        "{progress}"
    );
    assert!(
        progress.contains("payloads: ") && progress.contains("(100%)"),
        "{progress}"
    );
    assert!(!progress.contains('\u{1b}'), "{progress}");
    // The driver updates were imported beside the software: 40 + 16 documents and more.
    let said = text(&out.stdout);
    assert!(said.contains("generated 16 driver updates"), "{said}");
    let catalog = wsus_edge::state::Store::open(&wsus_edge::state::Database::sqlite(
        &dir.path().join("data"),
    ))
    .unwrap()
    .load()
    .unwrap();
    let drivers = catalog
        .revisions()
        .iter()
        .filter(|r| {
            r.update_type == wsus_edge::catalog::UpdateType::Driver && !r.drivers.is_empty()
        })
        .count();
    assert_eq!(drivers, 16);
    // The generated feature updates' keys were imported with it.
    assert!(
        text(&out.stdout).contains("imported 2 decryption keys (2 new or changed)"),
        "{}",
        text(&out.stdout)
    );

    // A key file of a catalog folder: a bad line stops the import and is named; the same
    // keys again change nothing.
    let folder = dir.path().join("keys-only");
    std::fs::create_dir_all(&folder).unwrap();
    let key_file = folder.join("decryption-keys.txt");
    std::fs::write(&key_file, "# digest key\nnot-a-digest AAAA\n").unwrap();
    let out = wsus_edge(dir.path(), &["import", folder.to_str().unwrap()], &[]);
    assert_ne!(out.status.code(), Some(0));
    let said = text(&out.stderr);
    assert!(
        said.contains("decryption-keys.txt line 2") && said.contains("SHA-1"),
        "{said}"
    );
    let catalog = wsus_edge::state::Store::open(&wsus_edge::state::Database::sqlite(
        &dir.path().join("data"),
    ))
    .unwrap()
    .load()
    .unwrap();
    let mut keys: Vec<([u8; 20], Vec<u8>)> = catalog
        .revisions()
        .iter()
        .flat_map(|r| r.files.iter().filter(|f| f.encrypted))
        .map(|f| (f.sha1, catalog.key(&f.sha1).expect("held").to_vec()))
        .collect();
    keys.sort();
    keys.dedup();
    let held = wsus_edge::catalog::keys::format_key_file(&keys);
    std::fs::write(&key_file, held).unwrap();
    let out = wsus_edge(dir.path(), &["import", folder.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("imported 2 decryption keys (0 new or changed)"),
        "{}",
        text(&out.stdout)
    );
}
