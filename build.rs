//! Records the commit the binary is built from, for `--version` and `wsus_edge_build_info`
//! (as `BUILD_COMMIT`: a name outside `WSUS_EDGE_*`, which are settings, and cargo passes it to
//! the processes of `cargo test` too):
//! `BUILD_COMMIT` from the environment when set (a build without `.git`, such as a container
//! build, passes it in), else `git rev-parse`, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BUILD_COMMIT");
    // A new commit moves HEAD or the branch it names (loose or packed).
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            let text = String::from_utf8(out.stdout).ok()?;
            (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
        });
    let commit = commit.unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BUILD_COMMIT={}", commit.trim());
}
