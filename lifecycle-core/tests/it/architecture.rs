//! ARCHITECTURE.md's promise about this crate, checked on its source: its modules form no
//! import circle, and nothing but tests depends on the testing kit.
//!
//! A module's imports are the `crate::` paths in its code (comments and unit tests left out),
//! the way a reader follows them; a path through a re-export at the crate root would hide an
//! arrow, so none is used (`crate::Type` paths are counted under the module named `Type`,
//! which does not exist, and so never close a circle: write `crate::module::Type`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src` and the top-level modules its code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_str().unwrap().trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let code: String = code
            .lines()
            .map(|line| line.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let uses = graph.entry(module.clone()).or_default();
        for rest in code.split("crate::").skip(1) {
            uses.extend(named(rest));
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| modules.contains(m));
    }
    for (module, uses) in &mut graph {
        uses.remove(module);
    }
    graph
}

/// The modules `rest` (what follows a `crate::`) names: one, or each of a `{...}` group's
/// (over several lines, nested groups inside).
fn named(rest: &str) -> Vec<String> {
    let ident = |s: &str| {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let (mut depth, mut names, mut start) = (0, Vec::new(), 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                names.push(ident(&group[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(ident(&group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

/// A circle among the modules, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            return Some(path[at..].to_vec());
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in &graph[module] {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_form_no_import_circle() {
    let graph = imports();
    assert!(graph.len() > 20, "the source was read: {graph:?}");
    assert!(
        graph["run"].contains("record") && graph["handle"].contains("state"),
        "imports were found: {graph:?}"
    );
    assert_eq!(circle(&graph), None, "{graph:#?}");
}

#[test]
fn only_tests_depend_on_the_testing_kit() {
    let graph = imports();
    let users: Vec<_> = graph
        .iter()
        .filter(|(_, uses)| uses.contains("testing"))
        .map(|(module, _)| module)
        .collect();
    assert!(users.is_empty(), "{users:?} use the testing kit");
}

#[test]
fn a_group_names_each_of_its_modules() {
    let rest = "{\n    handle::{Phase, State},\n    record::Record,\n};\nuse x;";
    assert_eq!(named(rest), ["handle", "record"]);
    assert_eq!(named("report::Report;"), ["report"]);
}

#[test]
fn a_circle_is_found_when_there_is_one() {
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
        ("d".to_owned(), BTreeSet::new()),
    ]);
    assert_eq!(
        circle(&graph),
        Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
    );
}
