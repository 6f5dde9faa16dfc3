//! The server crate's module graph, read from its source: which top-level module of
//! `src/` names which (every `crate::<module>`, doc links included: a lower module's
//! docs do not point up either), and the cycles among them.
//! `tests/api/platform.rs` checks the rule of `src/lib.rs` ("dependencies point down")
//! with it; run `cargo test --test api module_graph -- --nocapture` to see the
//! picture.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the modules it names.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The graph of the crate whose sources are in `src`.
pub fn read(src: &Path) -> Graph {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(src).expect("src/ is readable").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            modules.insert(name);
        } else if let Some(stem) = name.strip_suffix(".rs")
            && stem != "lib"
            && stem != "main"
        {
            modules.insert(stem.to_owned());
        }
    }
    let mut graph: Graph = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for module in &modules {
        let mut files = Vec::new();
        collect(&src.join(module), &mut files);
        collect(&src.join(format!("{module}.rs")), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file is readable");
            for named in names(&text) {
                if named != *module && modules.contains(&named) {
                    graph.get_mut(module).expect("known").insert(named);
                }
            }
        }
    }
    graph
}

fn collect(path: &Path, files: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("readable").flatten() {
            collect(&entry.path(), files);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        files.push(path.to_owned());
    }
}

/// The first segment after each `crate::`, including each item of
/// `use crate::{a::X, b}` groups.
fn names(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    found.insert(ident(item.trim()));
                }
            } else {
                found.insert(ident(rest));
            }
        }
    }
    found
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The strongly connected components with more than one module: the import cycles.
pub fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    // Two modules are in one cycle when each reaches the other.
    let reach: BTreeMap<&String, BTreeSet<&String>> = graph
        .keys()
        .map(|start| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![start];
            while let Some(m) = stack.pop() {
                for next in &graph[m] {
                    if seen.insert(next) {
                        stack.push(next);
                    }
                }
            }
            (start, seen)
        })
        .collect();
    let mut cycles: Vec<BTreeSet<String>> = Vec::new();
    for a in graph.keys() {
        let component: BTreeSet<String> = graph
            .keys()
            .filter(|b| a == *b || (reach[a].contains(b) && reach[b].contains(a)))
            .cloned()
            .collect();
        if component.len() > 1 && !cycles.contains(&component) {
            cycles.push(component);
        }
    }
    cycles
}

/// The modules in layers: each names only modules of lower layers (or its own cycle).
pub fn layers(graph: &Graph) -> Vec<Vec<String>> {
    let mut placed: BTreeMap<&String, usize> = BTreeMap::new();
    let mut layers: Vec<Vec<String>> = Vec::new();
    while placed.len() < graph.len() {
        let layer: Vec<&String> = graph
            .iter()
            .filter(|(m, deps)| !placed.contains_key(m) && deps.iter().all(|d| placed.contains_key(d)))
            .map(|(m, _)| m)
            .collect();
        if layer.is_empty() {
            // What is left is in cycles: one last layer.
            layers.push(
                graph
                    .keys()
                    .filter(|m| !placed.contains_key(m))
                    .cloned()
                    .collect(),
            );
            break;
        }
        for m in &layer {
            placed.insert(m, layers.len());
        }
        layers.push(layer.into_iter().cloned().collect());
    }
    layers
}
