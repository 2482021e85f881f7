//! Garbage collection, online: it runs while the registry serves pushes and pulls, on the
//! filesystem and on S3, from one replica or several at once.
//!
//! 1. **Untagged manifests** (with `delete_untagged`): a manifest no tag reaches, directly or
//!    through an index, is deleted, unless it is a referrer (`subject`) of a manifest that
//!    stays, or its revision was written within `grace`.
//! 2. **Mark**: every manifest revision of every repository marks itself, its config and
//!    layers, and the manifests an index lists.
//! 3. **Hide**: a blob nothing marked, written more than `grace` ago and linked nowhere within
//!    `grace`, moves to the store's quarantine (no reader, upload or mount sees it any more).
//! 4. **Settle, then mark again**: after `settle` (longer than any manifest `PUT` takes
//!    between checking its blobs and committing), a second mark sees every manifest that was
//!    checked against a blob before the blob was hidden, and every manifest pushed again
//!    meanwhile (a revision whose bytes are hidden keeps them). What it marks comes back, and
//!    marking goes on until nothing more does; an untagged manifest deleted in step 1 that a
//!    manifest committed meanwhile lists (an index) gets its revision back. The rest is deleted
//!    for good, with the `_layers` links to it that nothing in their repository references.
//!    Should anything fail after step 3, everything hidden is given back.
//!
//! `grace` keeps a blob pushed a moment ago, whose manifest is still on its way; `settle` closes
//! the race between a manifest `PUT` and the sweep, which is why Distribution's collector must
//! run with the registry stopped or read-only and this one need not. A push that checks a
//! blob while it is hidden is refused (`MANIFEST_BLOB_UNKNOWN`) and succeeds when the client
//! retries (it uploads the blob again); a pull of an image pushed in that instant may fail for
//! `settle` until its blob comes back. A dry run reports what phases 1 and 3 would remove, with
//! sizes, and changes nothing. A blob in quarantine that a run which did not finish left behind
//! is settled by the next run. Repositories are every folder with manifests or links
//! ([`Store::repository_folders`]): the links of an emptied repository go with their blobs.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use donjon_core::memory::MemoryStore;
//! use donjon_core::gc::{collect, GcOptions};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryStore::default());
//! let options = GcOptions { grace: Duration::ZERO, settle: Duration::ZERO, ..GcOptions::default() };
//! let report = collect(&*store, &options).await.unwrap();
//! assert_eq!(report.bytes_freed, 0);
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::manifest;
use crate::store::{Manifest, ManifestPut, Store, StoreError, Stored};
use crate::{Digest, Name, Reference};

/// How a collection runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GcOptions {
    /// Nothing written more recently than this is removed (default 1 h).
    #[serde(with = "crate::config::duration")]
    pub grace: Duration,
    /// Delete manifests no tag reaches first (Distribution's `--delete-untagged`).
    pub delete_untagged: bool,
    /// Report what would go; change nothing.
    pub dry_run: bool,
    /// How long hidden blobs wait before the second mark (default 1 min).
    #[serde(with = "crate::config::duration")]
    pub settle: Duration,
    /// Only these blobs (and links to them) may go, when they are garbage: the pull-through
    /// cache's eviction collects what it evicted and leaves the rest of the store alone.
    #[serde(skip)]
    pub only: Option<BTreeSet<Digest>>,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(3600),
            delete_untagged: false,
            dry_run: false,
            settle: Duration::from_secs(60),
            only: None,
        }
    }
}

/// What a collection removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Repositories looked at.
    pub repositories: usize,
    /// Untagged manifests deleted: repository and digest.
    pub manifests: Vec<(String, Digest)>,
    /// `_layers` links removed: repository and digest.
    pub links: Vec<(String, Digest)>,
    /// Blobs deleted, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Blobs hidden and given back because a manifest came to need them meanwhile.
    pub restored: usize,
    /// The grace period the collection ran with.
    #[serde(with = "crate::config::duration")]
    pub grace: Duration,
    /// Garbage the grace period kept: blobs nothing references, written or linked within it.
    pub held_back: HeldBack,
}

/// Blobs nothing references that a collection kept because they are younger than its grace
/// period (a push whose manifest is still on its way looks like this).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeldBack {
    /// How many.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// How long ago the youngest of them was written or linked.
    #[serde(with = "crate::config::duration::option")]
    pub youngest: Option<Duration>,
}

/// Why a collection stopped. Nothing it had not yet decided is removed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored manifest could not be read: its references are unknown, so nothing is swept.
    #[error("manifest {digest} in {repo} cannot be parsed, so what it references is unknown; nothing was swept: {why}")]
    Unreadable {
        /// The repository.
        repo: String,
        /// The manifest.
        digest: Digest,
        /// The parser's message.
        why: String,
    },
}

/// What a manifest refers to.
struct Refs {
    /// Config, layers and child manifests.
    all: Vec<Digest>,
    /// Child manifests (of an index).
    children: Vec<Digest>,
    subject: Option<Digest>,
}

fn references(repo: &str, m: &Manifest) -> Result<Refs, GcError> {
    let unreadable =
        |why: String| GcError::Unreadable { repo: repo.to_string(), digest: m.digest.clone(), why };
    if m.media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        // Docker schema 1, from a tree Distribution wrote: its layers are `fsLayers[].blobSum`.
        let v: serde_json::Value = serde_json::from_slice(&m.bytes).map_err(|e| unreadable(e.to_string()))?;
        let all = v["fsLayers"]
            .as_array()
            .map(|l| l.iter().filter_map(|x| x["blobSum"].as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        return Ok(Refs { all, children: vec![], subject: None });
    }
    let p =
        manifest::parse(&m.bytes, Some(&m.media_type)).map_err(|e| unreadable(e.message().to_string()))?;
    let children: Vec<Digest> = p.manifests.iter().map(|c| c.digest.clone()).collect();
    let mut all: Vec<Digest> = p.blobs.iter().map(|b| b.digest.clone()).collect();
    all.extend(children.iter().cloned());
    Ok(Refs { all, children, subject: p.subject })
}

/// Every repository folder, all pages ([`Store::repository_folders`]: emptied ones too).
pub async fn repositories(store: &dyn Store) -> Result<Vec<Name>, StoreError> {
    let mut out = vec![];
    let mut last: Option<String> = None;
    loop {
        let page = store.repository_folders(last.as_deref(), 1000).await?;
        let Some(end) = page.last().cloned() else { break };
        for r in &page {
            // a repository whose name does not parse would go unmarked: stop instead
            out.push(
                r.parse::<Name>()
                    .map_err(|e| StoreError::Corrupt(format!("repository folder {r:?}: {e}")))?,
            );
        }
        last = Some(end);
    }
    Ok(out)
}

/// Each manifest revision of `repo`, with what it references: itself, its config and
/// layers, the manifests it lists. A revision whose manifest cannot be read now (deleted
/// meanwhile, or its bytes in quarantine: pushed again while a collection runs) references
/// itself only, so that its bytes are kept, and read on the next mark. An unknown repository
/// has none.
pub async fn revisions(store: &dyn Store, repo: &Name) -> Result<Vec<(Stored, Vec<Digest>)>, GcError> {
    let list = match store.revision_list(repo).await {
        Ok(r) => r,
        Err(StoreError::NameUnknown(_)) => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    let mut out = vec![];
    for rev in list {
        let mut refs = match store.manifest_get(repo, &Reference::Digest(rev.digest.clone())).await {
            Ok(manifest) => references(repo.as_str(), &manifest)?.all,
            Err(StoreError::ManifestUnknown(_) | StoreError::BlobUnknown(_)) => vec![],
            Err(e) => return Err(e.into()),
        };
        refs.push(rev.digest.clone());
        out.push((rev, refs));
    }
    Ok(out)
}

/// What one mark found.
#[derive(Default)]
struct Marks {
    /// Every digest some manifest (or revision) references.
    all: HashSet<Digest>,
    /// Per repository, what its manifests reference.
    by_repo: HashMap<Name, HashSet<Digest>>,
    /// Digests linked somewhere within `grace`.
    young_links: HashSet<Digest>,
    /// Each repository's links, with their times.
    links: HashMap<Name, Vec<Stored>>,
}

async fn mark(
    store: &dyn Store,
    repos: &[Name],
    gone: &HashSet<(Name, Digest)>,
    cutoff: SystemTime,
) -> Result<Marks, GcError> {
    let mut m = Marks::default();
    for repo in repos {
        let mut refs = HashSet::new();
        for (rev, digests) in revisions(store, repo).await? {
            if !gone.contains(&(repo.clone(), rev.digest.clone())) {
                refs.extend(digests);
            }
        }
        let links = match store.layer_list(repo).await {
            Ok(l) => l,
            Err(StoreError::NameUnknown(_)) => vec![],
            Err(e) => return Err(e.into()),
        };
        m.young_links.extend(links.iter().filter(|l| l.modified >= cutoff).map(|l| l.digest.clone()));
        m.all.extend(refs.iter().cloned());
        m.by_repo.insert(repo.clone(), refs);
        m.links.insert(repo.clone(), links);
    }
    Ok(m)
}

/// The manifests of `repo` no tag and no revision written since `cutoff` reaches (directly or
/// through an index), and no kept manifest is the subject of.
async fn untagged(store: &dyn Store, repo: &Name, cutoff: SystemTime) -> Result<Vec<Manifest>, GcError> {
    let revisions = match store.revision_list(repo).await {
        Ok(r) => r,
        Err(StoreError::NameUnknown(_)) => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    let mut refs: BTreeMap<Digest, Refs> = BTreeMap::new();
    let mut manifests: BTreeMap<Digest, Manifest> = BTreeMap::new();
    for rev in &revisions {
        match store.manifest_get(repo, &Reference::Digest(rev.digest.clone())).await {
            Ok(m) => {
                refs.insert(rev.digest.clone(), references(repo.as_str(), &m)?);
                manifests.insert(rev.digest.clone(), m);
            }
            Err(StoreError::ManifestUnknown(_) | StoreError::BlobUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let tags = match store.tags(repo).await {
        Ok(t) => t,
        Err(StoreError::NameUnknown(_)) => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    let mut kept: BTreeSet<Digest> = BTreeSet::new();
    // a revision written within the grace period is a root too: an index pushed by digest,
    // to be tagged in a moment, keeps its children
    let mut todo: Vec<Digest> =
        revisions.iter().filter(|r| r.modified >= cutoff).map(|r| r.digest.clone()).collect();
    for t in tags {
        let Ok(tag) = t.parse() else { continue };
        match store.manifest_get(repo, &Reference::Tag(tag)).await {
            Ok(m) => todo.push(m.digest),
            Err(StoreError::ManifestUnknown(_) | StoreError::BlobUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // what tags reach, through indexes; then referrers of what is kept, until nothing changes
    loop {
        while let Some(d) = todo.pop() {
            if kept.insert(d.clone()) {
                if let Some(r) = refs.get(&d) {
                    todo.extend(r.children.iter().cloned());
                }
            }
        }
        let more: Vec<Digest> = refs
            .iter()
            .filter(|(d, r)| !kept.contains(*d) && r.subject.as_ref().is_some_and(|s| kept.contains(s)))
            .map(|(d, _)| d.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        todo = more;
    }
    Ok(revisions
        .into_iter()
        .filter(|r| !kept.contains(&r.digest) && r.modified < cutoff)
        .filter_map(|r| manifests.remove(&r.digest))
        .collect())
}

/// Runs one collection over `store`, and records it in the metrics (`donjon_gc_runs_total`,
/// `donjon_gc_freed_bytes_total`, `donjon_gc_freed_blobs_total`). See the module docs.
pub async fn collect(store: &dyn Store, o: &GcOptions) -> Result<GcReport, GcError> {
    let r = run(store, o).await;
    let m = crate::metrics::metrics();
    match &r {
        Ok(report) if report.dry_run => m.record_gc("dry_run"),
        Ok(report) => {
            m.record_gc("ok");
            m.gc_freed_bytes.inc_by(report.bytes_freed);
            m.gc_freed_blobs.inc_by(report.blobs.len() as u64);
        }
        Err(_) => m.record_gc("error"),
    }
    r
}

async fn run(store: &dyn Store, o: &GcOptions) -> Result<GcReport, GcError> {
    let cutoff = SystemTime::now().checked_sub(o.grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let leftover = store.quarantine_list().await?;
    let repos = repositories(store).await?;
    let mut report =
        GcReport { dry_run: o.dry_run, repositories: repos.len(), grace: o.grace, ..GcReport::default() };

    // 1. untagged manifests
    let deleted =
        if o.delete_untagged { delete_untagged(store, &repos, cutoff, o.dry_run).await? } else { vec![] };
    report.manifests = deleted.iter().map(|(r, m)| (r.to_string(), m.digest.clone())).collect();
    // A dry run pretends they are gone; a run sees them go, or come back if pushed again.
    let gone: HashSet<(Name, Digest)> = match o.dry_run {
        true => deleted.iter().map(|(r, m)| (r.clone(), m.digest.clone())).collect(),
        false => HashSet::new(),
    };

    // 2. mark
    let marks = mark(store, &repos, &gone, cutoff).await?;
    let allowed = |d: &Digest| o.only.as_ref().is_none_or(|only| only.contains(d));
    let (candidates, young): (Vec<Stored>, Vec<Stored>) = store
        .blob_list()
        .await?
        .into_iter()
        .filter(|b| allowed(&b.digest) && !marks.all.contains(&b.digest))
        .partition(|b| b.modified < cutoff && !marks.young_links.contains(&b.digest));
    report.held_back = held_back(&young, &marks);
    if o.dry_run {
        let going: BTreeSet<Digest> = candidates.iter().map(|b| b.digest.clone()).collect();
        report.links = stale_links(&marks, &going, &marks, cutoff)
            .into_iter()
            .map(|(r, d)| (r.to_string(), d))
            .collect();
        report.bytes_freed = candidates.iter().map(|b| b.size).sum();
        report.blobs = candidates.into_iter().map(|b| (b.digest, b.size)).collect();
        return Ok(report);
    }

    // 3. hide; 4. settle, mark again, give back what is needed, delete the rest. Should
    // anything fail on the way, everything hidden is given back.
    let mut held: BTreeMap<Digest, u64> = leftover.into_iter().map(|d| (d, 0)).collect();
    let outcome = async {
        for b in &candidates {
            if store.blob_quarantine(&b.digest).await? {
                held.insert(b.digest.clone(), b.size);
            }
        }
        settle(store, o, &deleted, &mut held, &mut report).await
    }
    .await;
    let last = match outcome {
        Ok(last) => last,
        Err(e) => {
            for d in held.keys() {
                if let Err(r) = store.blob_release(d, true).await {
                    tracing::error!(digest = %d, "garbage collection could not give back a hidden blob: {r}");
                }
            }
            return Err(e);
        }
    };
    let mut freed = BTreeSet::new();
    for (d, size) in held {
        store.blob_release(&d, false).await?;
        report.bytes_freed += size;
        report.blobs.push((d.clone(), size));
        freed.insert(d);
    }
    for (repo, d) in stale_links(&marks, &freed, &last, cutoff) {
        match store.blob_unlink(&repo, &d).await {
            Ok(()) | Err(StoreError::BlobUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        report.links.push((repo.to_string(), d));
    }
    Ok(report)
}

/// Step 1: the untagged manifests of every repository, deleted unless `dry_run`.
async fn delete_untagged(
    store: &dyn Store,
    repos: &[Name],
    cutoff: SystemTime,
    dry_run: bool,
) -> Result<Vec<(Name, Manifest)>, GcError> {
    let mut deleted = vec![];
    for repo in repos {
        for m in untagged(store, repo, cutoff).await? {
            if !dry_run {
                match store.manifest_delete(repo, &m.digest).await {
                    Ok(()) | Err(StoreError::ManifestUnknown(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            deleted.push((repo.clone(), m));
        }
    }
    Ok(deleted)
}

/// Step 4: after `settle` (when anything was hidden or deleted), marks again and gives back
/// what the marks need, until nothing more comes back: hidden blobs, and the revisions of
/// `deleted` manifests that a manifest committed meanwhile lists (an index pushed in that
/// instant). Returns the last marks; `held` keeps what goes for good.
async fn settle(
    store: &dyn Store,
    o: &GcOptions,
    deleted: &[(Name, Manifest)],
    held: &mut BTreeMap<Digest, u64>,
    report: &mut GcReport,
) -> Result<Marks, GcError> {
    // Nothing hidden and no manifest deleted: nothing a push under way could need back.
    if !held.is_empty() || !deleted.is_empty() {
        tracing::info!(
            "garbage collection: {} blob(s) hidden, {} manifest(s) deleted; waiting {} (settle) for \
             manifest pushes under way to finish, then marking again",
            held.len(),
            deleted.len(),
            crate::config::duration::format(o.settle)
        );
        tokio::time::sleep(o.settle).await;
    }
    loop {
        let repos = repositories(store).await?;
        let again = mark(store, &repos, &HashSet::new(), SystemTime::UNIX_EPOCH).await?;
        let back: Vec<Digest> = held.keys().filter(|d| again.all.contains(*d)).cloned().collect();
        let mut revived = false;
        for (repo, m) in deleted {
            let wanted = again.by_repo.get(repo).is_some_and(|r| r.contains(&m.digest));
            if wanted && !store.manifest_exists(repo, &m.digest).await? {
                // Released first: should that fail, it is still held, and given back then.
                if held.contains_key(&m.digest) {
                    store.blob_release(&m.digest, true).await?;
                    held.remove(&m.digest);
                    report.restored += 1;
                }
                let put = ManifestPut {
                    digest: m.digest.clone(),
                    media_type: m.media_type.clone(),
                    bytes: m.bytes.clone(),
                    tags: vec![],
                    referrer: referrer_of(m),
                };
                store.manifest_put(repo, put).await?;
                revived = true;
            }
        }
        for d in &back {
            if held.remove(d).is_some() {
                store.blob_release(d, true).await?;
                report.restored += 1;
            }
        }
        // what came back may reference more of what is hidden: mark until nothing does
        if back.is_empty() && !revived {
            return Ok(again);
        }
    }
}

/// The links that go with blobs `deleted` for good: written before `cutoff`, and referenced by
/// nothing in their repository by the `last` marks (the links themselves are `first`'s).
fn stale_links(
    first: &Marks,
    deleted: &BTreeSet<Digest>,
    last: &Marks,
    cutoff: SystemTime,
) -> Vec<(Name, Digest)> {
    let mut out = vec![];
    for (repo, links) in &first.links {
        let refs = last.by_repo.get(repo);
        for l in links {
            if deleted.contains(&l.digest)
                && l.modified < cutoff
                && !refs.is_some_and(|r| r.contains(&l.digest))
            {
                out.push((repo.clone(), l.digest.clone()));
            }
        }
    }
    out
}

/// What the grace period keeps of the garbage: `young`'s count, bytes, and the age of the
/// youngest (its write, or its newest link).
fn held_back(young: &[Stored], marks: &Marks) -> HeldBack {
    let mut newest: HashMap<&Digest, SystemTime> = young.iter().map(|b| (&b.digest, b.modified)).collect();
    for l in marks.links.values().flatten() {
        if let Some(t) = newest.get_mut(&l.digest) {
            *t = (*t).max(l.modified);
        }
    }
    let now = SystemTime::now();
    HeldBack {
        blobs: young.len(),
        bytes: young.iter().map(|b| b.size).sum(),
        youngest: newest.values().max().map(|t| now.duration_since(*t).unwrap_or_default()),
    }
}

/// The referrers entry of a manifest that has a `subject`.
fn referrer_of(m: &Manifest) -> Option<(Digest, crate::store::Descriptor)> {
    let p = manifest::parse(&m.bytes, Some(&m.media_type)).ok()?;
    let subject = p.subject.clone()?;
    Some((subject, p.descriptor(m.digest.clone(), m.bytes.len() as u64)))
}

/// Collections on a schedule: every `interval` (the first after one interval, at most an hour).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GcSchedule {
    /// How often.
    #[serde(with = "crate::config::duration")]
    pub interval: Duration,
    /// How each run goes.
    pub options: GcOptions,
}

/// The scheduled collection over `store`, as a future to spawn: each run logs one line with
/// what it freed; a run that fails logs why, and the next one comes at its time; while
/// `read_only` is on, runs are skipped.
pub async fn collector(
    store: std::sync::Arc<dyn Store>,
    schedule: GcSchedule,
    read_only: crate::store::ReadOnlySwitch,
) {
    let mut wait = schedule.interval.min(Duration::from_secs(3600));
    loop {
        tokio::time::sleep(wait).await;
        wait = schedule.interval;
        if read_only.is_on() {
            tracing::info!("garbage collection skipped: the registry is read-only");
            continue;
        }
        let started = std::time::Instant::now();
        match collect(&*store, &schedule.options).await {
            Ok(r) => tracing::info!(
                blobs = r.blobs.len(),
                bytes = r.bytes_freed,
                manifests = r.manifests.len(),
                links = r.links.len(),
                restored = r.restored,
                seconds = started.elapsed().as_secs_f64(),
                "{}",
                r.summary()
            ),
            Err(e) => tracing::error!("garbage collection stopped: {e}"),
        }
    }
}

impl GcReport {
    /// One line for the log: what went, in words, and what the grace period kept.
    ///
    /// ```
    /// use std::time::Duration;
    /// use donjon_core::gc::{GcReport, HeldBack};
    ///
    /// let r = GcReport {
    ///     dry_run: true,
    ///     grace: Duration::from_secs(3600),
    ///     held_back: HeldBack { blobs: 2, bytes: 64 << 20, youngest: Some(Duration::from_secs(120)) },
    ///     ..GcReport::default()
    /// };
    /// assert!(r.summary().contains("the 1h grace period holds back 2 unreferenced blob(s), 64.0 MiB"));
    /// assert!(r.summary().contains("the youngest written 2m ago"));
    /// assert!(r.summary().contains("--grace 0s"));
    /// ```
    pub fn summary(&self) -> String {
        let verb = if self.dry_run { "would free" } else { "freed" };
        let mut line = format!(
            "garbage collection {verb} {} blob(s), {} bytes ({:.1} MiB); {} untagged manifest(s), {} link(s); {} repositories; {} blob(s) given back",
            self.blobs.len(),
            self.bytes_freed,
            mib(self.bytes_freed),
            self.manifests.len(),
            self.links.len(),
            self.repositories,
            self.restored,
        );
        let h = &self.held_back;
        if h.blobs > 0 {
            let age = h.youngest.map_or(String::new(), |a| {
                format!(
                    ", the youngest written {} ago",
                    crate::config::duration::format(Duration::from_secs(a.as_secs()))
                )
            });
            line.push_str(&format!(
                "; the {} grace period holds back {} unreferenced blob(s), {:.1} MiB{age}: to collect them now, \
                 run with --grace 0s while no push is under way",
                crate::config::duration::format(self.grace),
                h.blobs,
                mib(h.bytes),
            ));
        }
        line
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::memory::MemoryStore;
    use crate::store::ManifestPut;

    async fn push(store: &MemoryStore, repo: &Name, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let body = crate::store::bytes_stream(bytes::Bytes::copy_from_slice(data));
        store.blob_put(repo, &d, body).await.expect("put");
        d
    }

    /// An image whose manifest was deleted: its config and layer are garbage, but young.
    async fn deleted_image(store: &MemoryStore) -> u64 {
        let repo: Name = "gc/app".parse().unwrap();
        let (config, layer) = (b"{}".as_slice(), vec![7u8; 1000]);
        let cd = push(store, &repo, config).await;
        let ld = push(store, &repo, &layer).await;
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":1000}}]}}"#
        );
        let digest = Digest::sha256_of(bytes.as_bytes());
        let put = ManifestPut {
            digest: digest.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes: bytes.clone().into(),
            tags: vec!["v1".parse().unwrap()],
            referrer: None,
        };
        store.manifest_put(&repo, put).await.expect("manifest");
        store.manifest_delete(&repo, &digest).await.expect("delete");
        (config.len() + layer.len() + bytes.len()) as u64
    }

    #[tokio::test]
    async fn the_report_says_what_the_grace_period_holds_back() {
        let store = Arc::new(MemoryStore::default());
        let bytes = deleted_image(&store).await;
        let o = GcOptions { dry_run: true, ..GcOptions::default() };
        let r = collect(&*store, &o).await.unwrap();
        assert!(r.blobs.is_empty(), "all of it is younger than an hour: {r:?}");
        assert_eq!((r.held_back.blobs, r.held_back.bytes), (3, bytes), "config, layer and manifest");
        assert!(r.held_back.youngest.is_some_and(|a| a < Duration::from_secs(60)), "{r:?}");
        assert!(
            r.summary().contains("the 1h grace period holds back 3 unreferenced blob(s)"),
            "{}",
            r.summary()
        );
        // With no grace, they go, and nothing is held back.
        let o = GcOptions { dry_run: true, grace: Duration::ZERO, ..GcOptions::default() };
        let r = collect(&*store, &o).await.unwrap();
        assert_eq!((r.blobs.len(), r.bytes_freed, r.held_back.blobs), (3, bytes, 0));
        assert!(!r.summary().contains("holds back"), "{}", r.summary());
    }

    /// The settle wait is for a push that checked a hidden blob: with nothing hidden and no
    /// manifest deleted there is none to wait for.
    #[tokio::test]
    async fn nothing_hidden_means_no_settle_wait() {
        let store = Arc::new(MemoryStore::default());
        deleted_image(&store).await;
        let o = GcOptions { settle: Duration::from_secs(3600), ..GcOptions::default() };
        let r = tokio::time::timeout(Duration::from_secs(30), collect(&*store, &o)).await;
        let r = r.expect("a collection that hid nothing waited for its settle").unwrap();
        assert_eq!((r.blobs.len(), r.held_back.blobs), (0, 3));
    }
}
