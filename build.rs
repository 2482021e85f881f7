//! Stamps the binary with the commit it was built from, for `donjon --version` and the
//! start-up line: `DONJON_COMMIT` from the environment when set (a packager's build), else
//! `git rev-parse HEAD` when this package is the top of its git checkout, else `unknown` (a
//! source tarball, or a copy inside another repository). `DONJON_COMMIT_SOURCE` says which
//! (`env`, `git`, `unknown`). Uncommitted changes are not marked: cargo does not rerun this
//! script when a source file changes.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=DONJON_COMMIT");
    let (commit, source) = match std::env::var("DONJON_COMMIT") {
        Ok(c) if !c.is_empty() => (c, "env"),
        _ => from_git().map_or(("unknown".to_string(), "unknown"), |c| (c, "git")),
    };
    println!("cargo:rustc-env=DONJON_COMMIT={commit}");
    println!("cargo:rustc-env=DONJON_COMMIT_SOURCE={source}");
}

/// HEAD's commit, when the checkout's top is this package; rerun when HEAD or its branch moves.
fn from_git() -> Option<String> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let same = |a: &str, b: &str| Path::new(a).canonicalize().ok() == Path::new(b).canonicalize().ok();
    if !same(&top, &manifest) {
        return None;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // Only files that exist: cargo takes a missing one as changed, and would rerun every build.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    watch.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &r]));
    }
    for p in watch.into_iter().flatten() {
        let p = if Path::new(&p).is_absolute() { p } else { format!("{top}/{p}") };
        if Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    Some(commit)
}
