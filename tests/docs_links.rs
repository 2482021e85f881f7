//! Every relative link of the README, ARCHITECTURE.md, CHANGELOG.md and `docs/*.md` leads to a
//! file that exists, and every `#anchor` to a heading of its target (GitHub's slugs).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// GitHub's anchor of a heading: lower case, spaces to `-`, punctuation but `-` and `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Whether `line` opens or closes a fenced code block (also indented, inside a list item).
fn is_fence(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("```") || l.starts_with("~~~")
}

/// The anchors of a markdown file's headings (outside code blocks); a repeated heading gets
/// `-1`, `-2`… as on GitHub.
fn anchors(text: &str) -> HashSet<String> {
    let mut fence = false;
    let mut out = HashSet::new();
    for line in text.lines() {
        if is_fence(line) {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            let title = line.trim_start_matches('#');
            if !title.starts_with(' ') {
                continue; // `#word` is no heading
            }
            let base = slug(&title.replace('`', ""));
            let mut anchor = base.clone();
            let mut n = 0;
            while !out.insert(anchor.clone()) {
                n += 1;
                anchor = format!("{base}-{n}");
            }
        }
    }
    out
}

/// `line` without its inline code spans: a `[x](y)` between backticks is no link.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        match after.find(&"`".repeat(ticks)) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                out.push_str(&rest[start..]);
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `[text](target)` and `![alt](target)` targets of a markdown file (outside code blocks
/// and code spans), without a `"title"` or `<…>`.
fn links(text: &str) -> Vec<String> {
    let mut fence = false;
    let mut out = vec![];
    for line in text.lines() {
        if is_fence(line) {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            // The target ends at the `)` that closes the one after `]`.
            let mut depth = 0;
            let Some(end) = after.char_indices().find_map(|(i, c)| match c {
                '(' => {
                    depth += 1;
                    None
                }
                ')' if depth == 0 => Some(i),
                ')' => {
                    depth -= 1;
                    None
                }
                _ => None,
            }) else {
                break;
            };
            let target = after[..end].trim();
            let target = target.split_once(" \"").map_or(target, |(t, _)| t);
            out.push(target.trim_start_matches('<').trim_end_matches('>').replace("%20", " "));
            rest = &after[end..];
        }
    }
    out
}

fn pages(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        ["README.md", "ARCHITECTURE.md", "CHANGELOG.md"].iter().map(|f| root.join(f)).collect();
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            v.push(p);
        }
    }
    v
}

/// The broken links of `page`: a missing file, or an anchor its target lacks.
fn broken(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap();
    let dir = page.parent().unwrap();
    let mut bad = vec![];
    for target in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
            continue;
        }
        let (file, anchor) = match target.split_once('#') {
            Some((f, a)) => (f, Some(a)),
            None => (target.as_str(), None),
        };
        let path = if file.is_empty() { page.to_path_buf() } else { dir.join(file) };
        if !path.exists() {
            bad.push(format!("{target}: no file {}", path.display()));
            continue;
        }
        if let Some(a) = anchor {
            let headings = anchors(&std::fs::read_to_string(&path).unwrap_or_default());
            if !headings.contains(a) {
                bad.push(format!("{target}: no heading #{a} in {}", path.display()));
            }
        }
    }
    bad
}

#[test]
fn every_relative_link_and_anchor_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bad = vec![];
    let mut count = 0;
    for page in pages(root) {
        count += links(&std::fs::read_to_string(&page).unwrap()).len();
        bad.extend(broken(&page).into_iter().map(|b| format!("{}: {b}", page.display())));
    }
    assert!(count > 20, "the pages link to each other ({count} links)");
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

#[test]
fn a_broken_link_is_found() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.md"),
        "# Title\n\n## Sub part\n\n[ok](#sub-part) [gone](b.md) [no](a.md#nope)\n",
    )
    .unwrap();
    let bad = broken(&dir.path().join("a.md"));
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].starts_with("b.md: no file") && bad[1].starts_with("a.md#nope: no heading"), "{bad:?}");
    assert_eq!(slug("Using `donjon` with docker, podman"), "using-donjon-with-docker-podman");
    assert_eq!(slug("Use it with …"), "use-it-with-");
    // Code is no link, a repeated heading gets a number, a title is not part of the target.
    std::fs::write(
        dir.path().join("c.md"),
        "## Part\n\n## Part\n\n`[code](nowhere.md)` [t](a.md \"A title\") [second](#part-1)\n\n  ```text\n  [in a fence](nowhere.md)\n  # not a heading\n  ```\n",
    )
    .unwrap();
    let bad = broken(&dir.path().join("c.md"));
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(links("[a](x.md) ![b](y.png) `[c](z.md)`"), ["x.md", "y.png"]);
}

#[test]
fn the_readme_is_what_a_newcomer_needs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.lines().count() <= 200, "the README stays short: guides go to docs/");
    assert!(readme.contains("cargo run --release") && readme.contains("cargo test --workspace"));
    // The stack diagram is drawn once: in docs/stack.md, which the crate docs include.
    let stack = std::fs::read_to_string(root.join("docs/stack.md")).unwrap();
    let marker = "└─ ContentStoreLayer";
    assert!(stack.contains(marker));
    for page in pages(root).into_iter().filter(|p| !p.ends_with("docs/stack.md")) {
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(!text.contains(marker), "{} draws the stack again: link docs/stack.md", page.display());
    }
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    assert!(lib.contains("include_str!(\"../docs/stack.md\")"));
}
