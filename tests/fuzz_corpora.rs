//! The committed fuzz corpora (`fuzz/corpus/TARGET`, grown and minimised by `fuzz/run --merge`)
//! replayed through their targets as plain tests, and each finding of the fuzzers kept as a
//! test of its own: what was found once stays fixed without AFL++ or an instrumented build.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use wsus_edge::fuzzing::{self, TARGETS};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Every target has a corpus, and every input in it runs through the target without a panic
/// (a failed check of a target is a panic too).
#[test]
fn every_committed_corpus_replays_without_a_finding() {
    let fixture = tempfile::tempdir().unwrap();
    fuzzing::prepare_in(fixture.path());
    let mut failed = Vec::new();
    for (name, target) in TARGETS {
        let files = corpus(name);
        assert!(files.len() >= 3, "{name}: {} inputs committed", files.len());
        for file in files {
            let input = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| target(&input)).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "findings: {failed:#?}");
}
