//! Eviction of cached content: past `registry_proxies.max_size`, the least recently pulled
//! cached manifests go, oldest first, until what is cached fits; with `max_age`, every cached
//! manifest not pulled for that long goes too. Then the blobs only they needed are collected
//! (`donjon_core::gc`, restricted to those blobs), so the bytes are freed.
//!
//! Only cached content (`f/<host>/…`) is evicted, and only it is counted: a blob that a
//! pushed image references is neither counted nor freed, and a blob another cached manifest
//! still references stays while that manifest stays, and so does a blob linked anywhere within
//! the grace period (a push mounting a cached base layer). Pull times are kept in memory (one
//! map entry per cached manifest reference, no write to the store per pull); for the size
//! limit, what was not pulled since this process started counts from when it was cached, and
//! for the age limit from the process's start, so a restart never makes hot content look old.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use donjon_core::gc::{self, GcError, GcOptions};
use donjon_core::mirror;
use donjon_core::{Digest, Name, Reference, StoreError};

use crate::layer::Shared;

/// What one eviction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// Cached bytes before.
    pub cached_bytes: u64,
    /// Manifests evicted: repository and digest.
    pub manifests: Vec<(String, Digest)>,
    /// Bytes the collection freed.
    pub bytes_freed: u64,
}

struct CachedManifest {
    repo: Name,
    digest: Digest,
    last_pulled: SystemTime,
    refs: Vec<Digest>,
}

/// What the store holds, as eviction sees it.
struct Survey {
    /// The cached repositories' manifests, with when each was last pulled.
    cached: Vec<CachedManifest>,
    /// What pushed (not cached) manifests reference: never evicted.
    pushed: HashSet<Digest>,
    /// What cached repositories link: the blobs a pass may free (those of earlier passes that
    /// stopped half-way among them).
    cache_linked: BTreeSet<Digest>,
}

async fn survey(
    store: &dyn donjon_core::Store,
    pulled: &HashMap<(Name, String), SystemTime>,
) -> Result<Survey, GcError> {
    let mut s = Survey { cached: vec![], pushed: HashSet::new(), cache_linked: BTreeSet::new() };
    for repo in gc::repositories(store).await? {
        let revisions = gc::revisions(store, &repo).await?;
        if !mirror::is_cached(&repo) {
            s.pushed.extend(revisions.into_iter().flat_map(|(_, refs)| refs));
            continue;
        }
        match store.layer_list(&repo).await {
            Ok(links) => s.cache_linked.extend(links.into_iter().map(|l| l.digest)),
            Err(StoreError::NameUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let last = last_pulls(store, &repo, pulled).await?;
        for (rev, refs) in revisions {
            let last_pulled = last.get(&rev.digest).copied().unwrap_or(rev.modified).max(rev.modified);
            s.cached.push(CachedManifest { repo: repo.clone(), digest: rev.digest, last_pulled, refs });
        }
    }
    Ok(s)
}

/// When each manifest of `repo` was last pulled: by digest, or by a tag pointing at it.
async fn last_pulls(
    store: &dyn donjon_core::Store,
    repo: &Name,
    pulled: &HashMap<(Name, String), SystemTime>,
) -> Result<HashMap<Digest, SystemTime>, GcError> {
    let mut last: HashMap<Digest, SystemTime> = HashMap::new();
    for ((r, reference), t) in pulled.iter().filter(|((r, _), _)| r == repo) {
        let digest = match reference.parse::<Reference>() {
            Ok(Reference::Digest(d)) => d,
            Ok(tag @ Reference::Tag(_)) => match store.manifest_get(r, &tag).await {
                Ok(m) => m.digest,
                Err(StoreError::ManifestUnknown(_) | StoreError::BlobUnknown(_)) => continue,
                Err(e) => return Err(e.into()),
            },
            Err(_) => continue,
        };
        let e = last.entry(digest).or_insert(*t);
        *e = (*e).max(*t);
    }
    Ok(last)
}

/// One eviction pass over the store. See the module docs.
pub(crate) async fn evict(
    shared: &Shared,
    max_size: Option<u64>,
    max_age: Option<Duration>,
    settle: Duration,
    grace: Duration,
) -> Result<Eviction, GcError> {
    let store = &*shared.store;
    let now = SystemTime::now();
    let sizes: HashMap<Digest, u64> =
        store.blob_list().await?.into_iter().map(|b| (b.digest, b.size)).collect();
    let pulled = shared.pulled.lock().map(|p| p.clone()).unwrap_or_default();
    let Survey { mut cached, pushed, cache_linked } = survey(store, &pulled).await?;
    // what the cache holds: blobs cached manifests reference and no pushed one does
    let mut users: HashMap<Digest, usize> = HashMap::new();
    for m in &cached {
        for d in m.refs.iter().filter(|d| !pushed.contains(*d)).collect::<BTreeSet<_>>() {
            *users.entry(d.clone()).or_default() += 1;
        }
    }
    let mut total: u64 = users.keys().map(|d| sizes.get(d).copied().unwrap_or(0)).sum();
    let mut report = Eviction { cached_bytes: total, ..Eviction::default() };
    cached.sort_by_key(|m| m.last_pulled);
    // Pulls before this process started are not known: age counts from its start at the
    // earliest, so a restart never makes hot content look old.
    let too_old = |m: &CachedManifest| {
        let since = m.last_pulled.max(shared.started);
        max_age.is_some_and(|a| now.duration_since(since).unwrap_or_default() > a)
    };
    let mut freed: BTreeSet<Digest> = BTreeSet::new();
    for m in &cached {
        // in pull order: once one may stay, so may every one after it
        if !(max_size.is_some_and(|limit| total > limit) || too_old(m)) {
            break;
        }
        for d in m.refs.iter().filter(|d| !pushed.contains(*d)).collect::<BTreeSet<_>>() {
            if let Some(n) = users.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    total = total.saturating_sub(sizes.get(d).copied().unwrap_or(0));
                    freed.insert(d.clone());
                }
            }
        }
        report.manifests.push((m.repo.to_string(), m.digest.clone()));
    }
    // what cached repositories link and no manifest references: left by a pass that stopped
    // half-way, or kept by the grace period last time
    let orphans: BTreeSet<Digest> = cache_linked
        .iter()
        .filter(|d| sizes.contains_key(*d) && !pushed.contains(*d) && !users.contains_key(*d))
        .cloned()
        .collect();
    if report.manifests.is_empty() && orphans.is_empty() {
        return Ok(report);
    }
    for (repo, digest) in &report.manifests {
        let Ok(name) = repo.parse::<Name>() else { continue };
        match store.manifest_delete(&name, digest).await {
            Ok(()) | Err(StoreError::ManifestUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        shared.forget(&name, digest);
    }
    // A blob linked within `grace` anywhere (a push that mounts a cached base layer) stays.
    let only: BTreeSet<Digest> = freed.into_iter().chain(orphans).collect();
    let options = GcOptions { grace, settle, only: Some(only), ..GcOptions::default() };
    let collected = gc::collect(store, &options).await?;
    report.bytes_freed = collected.bytes_freed;
    Ok(report)
}
