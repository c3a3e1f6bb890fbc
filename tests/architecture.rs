//! The module graph of the crate against the rule `src/lib.rs` states: a module may call those
//! listed before it in the lib's module list, never one after it. So no circle, and no arrow
//! that runs back up. Read from the sources: every `crate::<module>` path (plain, in a `use`
//! group, or `super::<module>` at a module's top level), comments left out.
//!
//! `cargo test --test architecture -- --nocapture` prints the graph (module → what it imports).
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The modules in the order `src/lib.rs` lists them (its `//! - [`name`]` lines).
fn order() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs");
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split_once("`]"))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` without `//` comments (doc comments name modules in prose and links) and without its
/// `#[cfg(test)] mod … { … }` blocks: a module's unit tests may use whatever the crate has (the
/// test kit's catalogs, the store they import them into); they are not the product's graph.
fn code_of(text: &str) -> String {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let code = match line.find("//") {
            // A `//` inside a string literal ("http://...") is kept: it names no module.
            Some(i) if line[..i].matches('"').count() % 2 == 0 => &line[..i],
            _ => line,
        };
        let opens_tests = code.trim() == "#[cfg(test)]"
            && lines.peek().is_some_and(|next| {
                let next = next.trim();
                (next.starts_with("mod ") || next.starts_with("pub mod ")) && next.ends_with('{')
            });
        if !opens_tests {
            out.push(code);
            continue;
        }
        let mut depth = 0i64;
        for skipped in lines.by_ref() {
            depth += skipped.matches('{').count() as i64 - skipped.matches('}').count() as i64;
            if depth <= 0 {
                break;
            }
        }
    }
    out.join("\n")
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules `code` names: `crate::x`, `crate::{x, y::z}`, and with `super_is_root`
/// (a module's own top file) `super::x`.
fn references(code: &str, super_is_root: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if super_is_root {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue; // `wsus_edge_crate::` and the like
            }
            let rest = &code[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // The group's top-level items, up to its closing brace.
                let mut depth = 0usize;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && !c.is_whitespace() => {
                            item_start = false;
                            let name = ident_at(&group[i..]);
                            if !name.is_empty() && name != "self" {
                                out.insert(name.to_owned());
                            }
                        }
                        _ => {}
                    }
                }
            } else {
                let name = ident_at(rest);
                if !name.is_empty() {
                    out.insert(name.to_owned());
                }
            }
        }
    }
    out
}

/// Module → the other top-level modules it names.
fn graph(modules: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in all {
        let rel = file.strip_prefix(&root).expect("under src");
        let parts: Vec<_> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let top = match parts.as_slice() {
            [one] => one.trim_end_matches(".rs").to_owned(),
            [dir, ..] => dir.clone(),
            [] => continue,
        };
        if top == "lib" || top == "main" {
            continue;
        }
        let own_top_file = parts.len() == 1 || (parts.len() == 2 && parts[1] == "mod.rs");
        let text = std::fs::read_to_string(&file).expect("a source file");
        let named = references(&code_of(&text), own_top_file);
        graph.entry(top.clone()).or_default().extend(
            named
                .into_iter()
                .filter(|m| *m != top && modules.contains(m)),
        );
    }
    graph
}

#[test]
fn every_import_runs_down_the_list_in_lib_rs() {
    let modules = order();
    assert!(
        modules.len() > 20,
        "src/lib.rs lists its modules: {modules:?}"
    );
    let graph = graph(&modules);
    for module in graph.keys() {
        assert!(
            modules.contains(module),
            "src/{module} is not in the module list of src/lib.rs"
        );
    }
    let rank = |m: &str| modules.iter().position(|x| x == m).expect("listed");
    let mut against = Vec::new();
    for module in &modules {
        let imports = graph.get(module).cloned().unwrap_or_default();
        println!(
            "{module} -> {}",
            imports.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        for import in imports {
            if rank(&import) > rank(module) {
                against.push(format!("{module} -> {import}"));
            }
        }
    }
    assert!(
        against.is_empty(),
        "imports against the order of src/lib.rs (move the code, or the module in the list if \
         the list is wrong): {against:#?}"
    );
}

#[test]
fn the_reader_sees_every_form_of_path() {
    let code = code_of(
        "use crate::{http::{Body, text}, soap, self};\nfn f() { crate::clock::unix_now(); }\n\
         // crate::admin in a comment\nlet u = \"http://x\"; super::lock::read(&l);\n\
         #[cfg(test)]\nmod tests {\n    fn t() { crate::node::start(); }\n}\nuse crate::auth;",
    );
    let named = references(&code, true);
    let want: BTreeSet<String> = ["http", "soap", "clock", "lock", "auth"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(named, want);
    assert!(!references(&code, false).contains("lock"));
}
