//! The crate's top-level modules depend on each other without circles: the
//! daemon wires the engine, the sink and the control socket; the data plane
//! implements the sink without knowing the daemon; the status document and
//! the sink interface are leaves. A `use crate::x` that closes a circle fails
//! here, naming it. Test code (`#[cfg(test)]` onwards, `tests` files) is left
//! out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let rel_s = rel.to_string_lossy();
        let top = rel_s
            .split('/')
            .next()
            .unwrap_or("")
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" || rel_s.contains("tests") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                g.entry(top.clone()).or_default().insert(name);
            }
        }
    }
    g
}

/// A path from `from` back to itself, if any.
fn circle(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in g.get(&node).into_iter().flatten() {
            if next == from {
                let mut p = path.clone();
                p.push(from.to_string());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn top_level_modules_form_no_circle() {
    let g = graph();
    assert!(
        g.contains_key("daemon") && g.contains_key("dataplane"),
        "{g:?}"
    );
    for m in g.keys() {
        if let Some(c) = circle(&g, m) {
            panic!(
                "modules depend on each other in a circle: {}",
                c.join(" -> ")
            );
        }
    }
}

#[test]
fn the_sink_and_the_status_document_are_leaves() {
    let g = graph();
    let allowed: BTreeSet<&str> = ["model", "config", "status", "kernel"].into();
    for leaf in ["sink", "status"] {
        for dep in g.get(leaf).into_iter().flatten() {
            assert!(
                allowed.contains(dep.as_str()),
                "{leaf} depends on {dep}: it may name only the model, the config, the status \
                 document and the kernel probe's report"
            );
        }
    }
}
