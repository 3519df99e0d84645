//! The architecture, checked: each stage of `src/` imports only the stages it may (`src/lib.rs`
//! draws them), and no two modules import each other, directly or round a loop. Read from the
//! source as text: `crate::…` paths outside comments and tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What each top-level module may import besides itself.
fn allowed(stage: &str) -> &'static [&'static str] {
    match stage {
        "core" => &[],
        "ports" => &["core"],
        "aws" | "memory" => &["core", "ports"],
        "app" => &["core", "ports"],
        "settings" => &["core", "ports", "app", "aws"],
        "cli" => &["core", "ports", "app", "aws", "settings"],
        "lambda" => &["core", "ports", "app", "aws", "settings"],
        _ => &["core", "ports", "app", "aws", "settings", "cli", "lambda"],
    }
}

/// Every module of `src/` (`a::b`) with its source, tests and comments left out.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // An inline test module ends the file's code.
            let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or_default();
            // Comments out. (A `//` inside a string cuts the rest of its line too; imports here sit on
            // lines of their own.)
            let code: String =
                text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
            out.insert(parts.join("::"), code);
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    // Modules declared under `#[cfg(test)]` are tests: they may reach for the in-memory adapter.
    let mut tests = BTreeSet::new();
    for (name, code) in &out {
        for decl in code.split("#[cfg(test)]").skip(1) {
            let decl = decl.trim_start().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
            if let Some(rest) = decl.strip_prefix("mod ") {
                let child: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                tests.insert(if name.is_empty() { child } else { format!("{name}::{child}") });
            }
        }
    }
    out.retain(|m, _| !tests.iter().any(|t| m == t || m.starts_with(&format!("{t}::"))));
    out
}

/// The modules each module names through `crate::` (the longest known prefix of each path).
fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (name, code) in modules {
        let mut deps = BTreeSet::new();
        for path in paths(code) {
            let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            let target = (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|p| modules.contains_key(p));
            if let Some(t) = target {
                // A module naming its own ancestor or descendant is its own business.
                if t != *name && !name.starts_with(&format!("{t}::")) && !t.starts_with(&format!("{name}::")) {
                    deps.insert(t);
                }
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// Every path after `crate::`, a grouped import (`crate::{a::b, c}`) expanded one level.
fn paths(code: &str) -> Vec<String> {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(n, _)| n);
            let mut level = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain(std::iter::once(',')) {
                match c {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 0 => out.push(std::mem::take(&mut item).trim().to_owned()),
                    c if level == 0 && ident(c) => item.push(c),
                    _ => {}
                }
            }
        } else {
            out.push(rest.chars().take_while(|c| ident(*c)).collect());
        }
    }
    out
}

#[test]
fn grouped_imports_are_read_too() {
    let got = paths("use crate::{cli, memory::{Memory, World}};\nlet x = crate::core::arn::KeyArn::parse(s);");
    assert_eq!(got, ["cli", "memory::", "core::arn::KeyArn::parse"]);
}

fn stage(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

#[test]
fn each_stage_imports_only_the_stages_before_it() {
    let modules = modules();
    assert!(modules.contains_key("core::decide") && modules.contains_key("aws"), "{:?}", modules.keys());
    let mut wrong = Vec::new();
    for (module, deps) in imports(&modules) {
        for dep in deps {
            let (from, to) = (stage(&module), stage(&dep));
            if from != to && !allowed(from).contains(&to) {
                wrong.push(format!("{module} imports {dep}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports across the pipeline's direction:\n{}", wrong.join("\n"));
}

#[test]
fn no_two_modules_import_each_other_even_round_a_loop() {
    let graph = imports(&modules());
    // Depth-first search for a back edge; the path to it is the loop.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for dep in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(dep, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("an import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn no_file_of_the_crate_is_over_400_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut long = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let lines = std::fs::read_to_string(&path).unwrap().lines().count();
                if lines > 400 {
                    long.push(format!("{} ({lines} lines)", path.strip_prefix(&root).unwrap().display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "split by topic: {long:?}");
}
