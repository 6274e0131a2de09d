//! The layer rule of [`crate`]'s docs, checked against the sources: every `crate::…` and
//! `super::…` path in a module is resolved to the module it names, and the graph they make must
//! go downwards only (`http`, `jobs` → `service` → state and infrastructure), have no circle,
//! and keep `axum` out of `service/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside the crate (`["service", "orders"]`; the crate root is empty).
type ModPath = Vec<String>;

/// How high a top-level module sits: a module may use its own top-level module and those below.
fn rank(top: &str) -> u8 {
    match top {
        "http" | "jobs" => 3,
        "service" => 2,
        _ => 1,
    }
}

/// Every `.rs` file under `dir` with its module path (`bin/` is a separate crate).
fn modules(root: &Path, dir: &Path, out: &mut BTreeMap<ModPath, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let relative = path.strip_prefix(root).unwrap();
        if path.is_dir() {
            if relative != Path::new("bin") {
                modules(root, &path, out);
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let mut segments: ModPath = relative.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        let file = segments.pop().unwrap();
        match file.as_str() {
            "lib.rs" | "mod.rs" => {}
            other => segments.push(other.trim_end_matches(".rs").to_owned()),
        }
        out.insert(segments, path);
    }
}

/// The code of a file without its comments (doc links may name any module).
fn code_of(text: &str) -> String {
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths written after a `crate::` or `super::` at the start of `rest`, with `{a, b::c}`
/// groups expanded.
fn paths(rest: &str) -> Vec<Vec<String>> {
    let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
    let after = &rest[ident.len()..];
    if ident.is_empty() {
        let Some(group) = after.strip_prefix('{') else { return Vec::new() };
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.extend(paths(group[start..i].trim_start()));
                    return out;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(paths(group[start..i].trim_start()));
                    start = i + 1;
                }
                _ => {}
            }
        }
        return out;
    }
    match after.strip_prefix("::") {
        Some(more) => {
            let tails = paths(more);
            if tails.is_empty() {
                return vec![vec![ident]];
            }
            tails.into_iter().map(|tail| std::iter::once(ident.clone()).chain(tail).collect()).collect()
        }
        None => vec![vec![ident]],
    }
}

/// The modules `module`'s code names, resolved to the longest known module path.
fn references(module: &ModPath, code: &str, known: &BTreeSet<ModPath>) -> BTreeSet<ModPath> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("::") {
        let before = &code[..at];
        let word_start = before.rfind(|c: char| !is_ident(c)).map_or(0, |i| i + 1);
        let (word, rest) = (&before[word_start..], &code[at + 2..]);
        let base: ModPath = match word {
            "crate" => Vec::new(),
            // `super::super::x`: only the first `super` starts a path.
            "super" if !before[..word_start].ends_with("::") => {
                let mut base = module.clone();
                let mut rest = rest;
                base.pop();
                while let Some(more) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = more;
                }
                for path in paths(rest) {
                    found.insert(resolve(&base, &path, known));
                }
                continue;
            }
            _ => continue,
        };
        for path in paths(rest) {
            found.insert(resolve(&base, &path, known));
        }
    }
    found
}

fn resolve(base: &ModPath, path: &[String], known: &BTreeSet<ModPath>) -> ModPath {
    let mut full = base.clone();
    let mut best = base.clone();
    for segment in path {
        full.push(segment.clone());
        if known.contains(&full) {
            best = full.clone();
        }
    }
    best
}

/// Every module's references to other modules, leaving out a module's uses of its own
/// ancestors (a child reading its parent's shared types) and the crate root.
fn graph() -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    modules(&root, &root, &mut files);
    let known: BTreeSet<ModPath> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &files {
        if module.is_empty() || module.first().is_some_and(|m| m == "layering") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let refs = references(module, &code, &known)
            .into_iter()
            .filter(|r| !r.is_empty() && r != module && !module.starts_with(r))
            .collect();
        graph.insert(module.clone(), refs);
    }
    graph
}

#[test]
fn layers_do_not_import_upwards_sideways_or_in_a_circle() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (module, refs) in &graph {
        let top = &module[0];
        for r in refs {
            let other = &r[0];
            // Infrastructure modules may use one another (the circle check below still applies).
            let above = rank(other) > rank(top) || (rank(other) == rank(top) && rank(top) > 1);
            if other != top && above {
                wrong.push(format!("{} uses {} (same layer or above)", module.join("::"), r.join("::")));
            }
        }
    }
    assert!(wrong.is_empty(), "layer rule broken:\n{}", wrong.join("\n"));

    // A circle: depth-first search for a back edge.
    fn visit(
        node: &ModPath,
        graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        state: &mut BTreeMap<ModPath, bool>,
        stack: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        match state.get(node) {
            Some(true) => return None,
            Some(false) => {
                let from = stack.iter().position(|n| n == node).unwrap();
                return Some(stack[from..].to_vec());
            }
            None => {}
        }
        state.insert(node.clone(), false);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, state, stack) {
                return Some(circle);
            }
        }
        stack.pop();
        state.insert(node.clone(), true);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        let circle = visit(node, &graph, &mut state, &mut Vec::new());
        assert!(
            circle.is_none(),
            "modules import each other in a circle: {}",
            circle.unwrap().iter().map(|m| m.join("::")).collect::<Vec<_>>().join(" → ")
        );
    }
}

#[test]
fn the_service_layer_knows_nothing_of_axum() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/service");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        assert!(!code.contains("axum"), "{} uses axum", path.display());
    }
}

#[test]
fn paths_are_read_with_their_groups() {
    let read = |s: &str| paths(s).into_iter().map(|p| p.join("::")).collect::<Vec<_>>();
    assert_eq!(read("a::b::C;"), ["a::b::C"]);
    assert_eq!(read("{a, b::{c, d}};"), ["a", "b::c", "b::d"]);
    let known: BTreeSet<ModPath> = [vec!["service".to_owned()], vec!["service".to_owned(), "sales".to_owned()]].into();
    let module = vec!["service".to_owned(), "orders".to_owned()];
    let refs = references(&module, "use super::sales::x; use crate::service::Error;", &known);
    assert_eq!(refs, [vec!["service".to_owned()], vec!["service".to_owned(), "sales".to_owned()]].into());
}
