//! Stamps the binary with the commit it was built from, for `donjon --version` and the
//! start-up line: `DONJON_COMMIT` from the environment when set (a packager's build), else
//! `git rev-parse` of this checkout, else `unknown` (a source tarball). Uncommitted changes
//! are not marked: cargo does not rerun this script when a source file changes.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=DONJON_COMMIT");
    let commit = match std::env::var("DONJON_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => match git(&["rev-parse", "--short=12", "HEAD"]) {
            Some(c) => {
                // Rerun when HEAD moves (a commit, a checkout, a fetch into packed refs).
                if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                    for f in ["HEAD", "packed-refs"] {
                        println!("cargo:rerun-if-changed={dir}/{f}");
                    }
                    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                        println!("cargo:rerun-if-changed={dir}/{r}");
                    }
                }
                c
            }
            None => "unknown".to_string(),
        },
    };
    println!("cargo:rustc-env=DONJON_COMMIT={commit}");
}
