//! `/v2/_catalog` pages at scale: a filesystem store with 100,000 repositories (1,000
//! organisations of 100 repositories each, as Distribution lays them out), pages of 1,000
//! taken at the start, the middle and the end, through the store (`Store::catalog`), beside a
//! walk of the whole tree per page (what the catalog did before) on the same tree. Then the
//! web page's catalog (`/ui/`, pages of 100) over the same store, through the composed
//! registry as the server calls it: the time to its whole body, and its weight.
//!
//! ```text
//! cargo bench --bench catalog                       # 100,000 repositories
//! DONJON_BENCH_REPOS=20000 cargo bench --bench catalog
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use donjon::Store;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The whole tree walked, sorted and cut: the catalog before the ordered walk.
fn walk_everything(root: &Path, last: Option<&str>, n: usize) -> Vec<String> {
    let mut found = vec![];
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('_') {
                if name == "_manifests" && !prefix.is_empty() {
                    found.push(prefix.clone());
                }
                continue;
            }
            let full = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            stack.push((e.path(), full));
        }
    }
    found.sort();
    found.retain(|r| last.is_none_or(|l| r.as_str() > l));
    found.truncate(n);
    found
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let repos: usize =
        std::env::var("DONJON_BENCH_REPOS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().join("docker/registry/v2/repositories");
    let t = Instant::now();
    let mut names = vec![];
    for i in 0..repos {
        let name = format!("org-{:04}/app-{:03}", i / 100, i % 100);
        std::fs::create_dir_all(base.join(&name).join("_manifests/tags")).expect("mkdir");
        std::fs::create_dir_all(base.join(&name).join("_layers")).expect("mkdir");
        names.push(name);
    }
    names.sort();
    println!("{repos} repositories made in {:.1?}", t.elapsed());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let store = rt.block_on(donjon::FsStore::open(dir.path())).expect("store");
    let page = 1000;
    println!("{:<22} {:>14} {:>22}", "page of 1,000 after", "ordered walk", "walk of the whole tree");
    for (label, last) in [
        ("(first page)", None),
        ("the middle", Some(names[repos / 2].clone())),
        ("the last page", Some(names[repos.saturating_sub(page + 1)].clone())),
    ] {
        let mut ordered = vec![];
        let mut whole = vec![];
        for _ in 0..5 {
            let t = Instant::now();
            let got = rt.block_on(store.catalog(last.as_deref(), page)).expect("catalog");
            ordered.push(t.elapsed());
            let t = Instant::now();
            let want = walk_everything(&base, last.as_deref(), page);
            whole.push(t.elapsed());
            assert_eq!(got, want, "both walks give the same page");
        }
        println!("{:<22} {:>14.1?} {:>22.1?}", label, median(ordered), median(whole));
    }

    let registry = donjon::Registry::builder(Arc::new(store)).browse(donjon::BrowseLayer::new()).build();
    println!("\n{:<34} {:>10} {:>10} {:>6}", "web page", "time", "bytes", "rows");
    let mid = format!("/ui/?last={}", names[repos / 2]);
    for (label, uri) in [
        ("/ui/ (first page of 100)", "/ui/"),
        ("/ui/?last=<the middle>", mid.as_str()),
        ("/ui/?q=app-042 (1 name in 100)", "/ui/?q=app-042"),
        ("/ui/?q=nothing (no match)", "/ui/?q=nothing"),
    ] {
        let mut times = vec![];
        let mut size = 0;
        let mut rows = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let req = http::Request::get(uri).body(donjon::Body::empty()).expect("request");
            let resp = rt.block_on(registry.clone().oneshot(req)).expect("infallible");
            assert_eq!(resp.status(), 200, "{uri}");
            let body = rt.block_on(resp.into_body().collect()).expect("body").to_bytes();
            times.push(t.elapsed());
            size = body.len();
            rows = String::from_utf8_lossy(&body).matches("<li><a href=").count();
        }
        println!("{:<34} {:>10.1?} {:>10} {:>6}", label, median(times), size, rows);
    }
}
