//! The fuzz targets of wsus-edge in one binary (their code is `wsus_edge::fuzzing`):
//!
//! - `wsus-edge-fuzz run <target>`: AFL++'s persistent loop over test cases of `<target>`
//!   (run under `afl-fuzz`, built by `fuzz/run`);
//! - `wsus-edge-fuzz seed <target> <dir>`: write a first corpus of real messages into `<dir>`;
//! - `wsus-edge-fuzz list`: the targets.
//!
//! `WSUS_EDGE_FUZZ_DIR` names where the SOAP targets keep their fixture node (default: the
//! temporary directory).

use std::path::PathBuf;
use std::process::ExitCode;

use wsus_edge::fuzzing;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fixture = std::env::var_os("WSUS_EDGE_FUZZ_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wsus-edge-fuzz-fixture"));
    match args[..] {
        ["list"] => {
            for (name, _) in fuzzing::TARGETS {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        ["seed", name, dir] => {
            if fuzzing::target(name).is_none() {
                eprintln!("no target {name:?}");
                return ExitCode::from(2);
            }
            fuzzing::prepare_in(&fixture);
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("corpus directory");
            for (i, seed) in fuzzing::seeds(name).iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:03}")), seed).expect("seed");
            }
            ExitCode::SUCCESS
        }
        ["run", name] => {
            let Some(target) = fuzzing::target(name) else {
                eprintln!("no target {name:?}");
                return ExitCode::from(2);
            };
            // The fixture's directory is made before AFL's fork server starts: once, not in
            // every child.
            fuzzing::prepare_in(&fixture);
            // A panic is a finding, except the cabinet decoders' own: a node catches those
            // (`wsusss::blob`), and so does the target.
            afl::fuzz(name != "cabinet", target);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: wsus-edge-fuzz list | seed <target> <dir> | run <target>");
            ExitCode::from(2)
        }
    }
}
