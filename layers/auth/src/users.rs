//! Who may log in: an htpasswd file of bcrypt entries (as `htpasswd -B` writes them), and
//! Trow's single `--user`/`--password`.
//!
//! bcrypt is slow on purpose, so checks run on the blocking pool, never on the async workers,
//! and a successful check is remembered for two minutes (keyed by a hash of the user, the
//! password and the entry, so a changed password is never taken from the cache): a pull of 200
//! layers with Basic credentials pays one bcrypt, not 200. An unknown user costs a bcrypt too,
//! so that timing does not tell which users exist. Passwords are never logged or kept.
//!
//! The file is read again when it changes ([`Users::reloader`]), so a rotated Kubernetes
//! secret takes effect without a restart; a file that no longer parses keeps the old table.
//!
//! ```
//! use donjon_auth::users::Htpasswd;
//!
//! let hash = bcrypt::hash("s3cret", 4).unwrap();
//! let table = Htpasswd::parse(&format!("# users\nalice:{hash}\n"), "htpasswd").unwrap();
//! assert!(table.contains("alice"));
//! let e = Htpasswd::parse("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", "htpasswd").unwrap_err();
//! assert!(e.contains("htpasswd:1") && e.contains("bcrypt"), "{e}");
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// How long a successful check is remembered.
const CACHE_TTL: Duration = Duration::from_secs(120);
/// The most remembered checks.
const CACHE_MAX: usize = 4096;
/// How often the htpasswd file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The entries of an htpasswd file: user → bcrypt hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Htpasswd {
    entries: HashMap<String, String>,
}

impl Htpasswd {
    /// Parses `text`; `source` names it in errors (`source:LINE`). Blank lines and `#`
    /// comments are skipped; every other line is `user:$2y$…` (or `$2a$`, `$2b$`).
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        let mut entries = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{source}:{}", i + 1);
            let (user, hash) = line.split_once(':').ok_or_else(|| format!("{at}: expected user:hash"))?;
            if user.is_empty() {
                return Err(format!("{at}: empty user name"));
            }
            if !(hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$")) {
                return Err(format!(
                    "{at}: the entry for {user:?} is not bcrypt (write it with `htpasswd -B`)"
                ));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!("{at}: the bcrypt hash for {user:?} is malformed"));
            }
            entries.insert(user.to_string(), hash.to_string());
        }
        Ok(Self { entries })
    }

    /// Whether `user` has an entry.
    pub fn contains(&self, user: &str) -> bool {
        self.entries.contains_key(user)
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A password given in configuration (Trow's `--password`), kept only as its SHA-256.
#[derive(Clone)]
struct Fixed {
    user: String,
    password_sha256: [u8; 32],
}

/// What identifies the file's content, to see that it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len() })
}

/// The users who may log in, and the checks of their passwords.
pub struct Users {
    file: Option<PathBuf>,
    table: RwLock<Arc<Htpasswd>>,
    stamp: Mutex<Option<Stamp>>,
    fixed: Option<Fixed>,
    /// sha256(user, password, entry) → when it was checked.
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    /// Checks running now, by the same key: the same login at once runs bcrypt once.
    running: Mutex<HashMap<[u8; 32], Arc<tokio::sync::OnceCell<bool>>>>,
    /// A hash to check unknown users against, so that they take as long as the dearest known
    /// one: made again when a reload changes the dearest cost.
    decoy: RwLock<String>,
}

/// A decoy hash as costly as the dearest entry of `table` (htpasswd -B's default cost is 5).
fn decoy_for(table: &Htpasswd) -> Result<String, String> {
    bcrypt::hash(uuid::Uuid::new_v4().to_string(), dearest_cost(table).unwrap_or(5))
        .map_err(|e| format!("bcrypt: {e}"))
}

fn dearest_cost(table: &Htpasswd) -> Option<u32> {
    table.entries.values().filter_map(|h| h.parse::<bcrypt::HashParts>().ok()).map(|h| h.get_cost()).max()
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("file", &self.file)
            .field("users", &self.table.read().map(|t| t.len()).unwrap_or(0))
            .field("fixed", &self.fixed.as_ref().map(|f| &f.user))
            .finish_non_exhaustive()
    }
}

impl Users {
    /// The users of the htpasswd file at `path` (read now), and a fixed user, if given.
    pub fn new(file: Option<&Path>, fixed: Option<(&str, &str)>) -> Result<Self, String> {
        let (table, st) = match file {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                (Htpasswd::parse(&text, &p.display().to_string())?, stamp(p))
            }
            None => (Htpasswd::default(), None),
        };
        let fixed = fixed.map(|(user, password)| Fixed {
            user: user.to_string(),
            password_sha256: Sha256::digest(password.as_bytes()).into(),
        });
        let decoy = RwLock::new(decoy_for(&table)?);
        Ok(Self {
            file: file.map(Path::to_path_buf),
            table: RwLock::new(Arc::new(table)),
            stamp: Mutex::new(st),
            fixed,
            cache: Mutex::new(HashMap::new()),
            running: Mutex::default(),
            decoy,
        })
    }

    fn table(&self) -> Arc<Htpasswd> {
        self.table.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// Whether `user` exists.
    pub fn exists(&self, user: &str) -> bool {
        self.fixed.as_ref().is_some_and(|f| f.user == user) || self.table().contains(user)
    }

    /// A short fingerprint of `user`'s entry: refresh tokens carry it, so that a changed
    /// password (or a removed user) ends them.
    pub fn fingerprint(&self, user: &str) -> Option<String> {
        let entry = match &self.fixed {
            Some(f) if f.user == user => hex::encode(f.password_sha256),
            _ => self.table().entries.get(user)?.clone(),
        };
        Some(hex::encode(&Sha256::digest(entry.as_bytes())[..8]))
    }

    /// Whether `password` is `user`'s.
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        if let Some(f) = &self.fixed {
            if f.user == user {
                let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                return bool::from(given.ct_eq(&f.password_sha256));
            }
        }
        let entry = self.table().entries.get(user).cloned();
        let key = cache_key(user, password, entry.as_deref().unwrap_or(""));
        if entry.is_some() && self.cached(&key) {
            return true;
        }
        let known = entry.is_some();
        let hash = entry.unwrap_or_else(|| self.decoy.read().map(|d| d.clone()).unwrap_or_default());
        // One bcrypt for the same check asked several times at once; the others wait for it.
        let cell = match self.running.lock() {
            Ok(mut r) => r.entry(key).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let password = password.to_string();
        let ok = *cell
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                    .await
                    .unwrap_or(false)
            })
            .await;
        if let Ok(mut r) = self.running.lock() {
            if r.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                r.remove(&key);
            }
        }
        if ok && known {
            self.remember(key);
        }
        ok && known
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        let Ok(cache) = self.cache.lock() else { return false };
        cache.get(key).is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    fn remember(&self, key: [u8; 32]) {
        let Ok(mut cache) = self.cache.lock() else { return };
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, at| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, Instant::now());
    }

    /// Reads the file again if it changed since the last read. A file that cannot be read or
    /// parsed leaves the table as it was, and says why.
    pub fn reload(&self) {
        let Some(path) = &self.file else { return };
        let now = stamp(path);
        let Ok(mut last) = self.stamp.lock() else { return };
        if now == *last {
            return;
        }
        *last = now;
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Htpasswd::parse(&t, &path.display().to_string()))
        {
            Ok(table) => {
                tracing::info!(file = %path.display(), users = table.len(), "htpasswd reloaded");
                // Unknown users keep costing what the dearest user costs.
                let cost = dearest_cost(&table).unwrap_or(5);
                let stale = self
                    .decoy
                    .read()
                    .ok()
                    .and_then(|d| d.parse::<bcrypt::HashParts>().ok())
                    .is_none_or(|d| d.get_cost() != cost);
                if stale {
                    match decoy_for(&table) {
                        Ok(d) => {
                            if let Ok(mut old) = self.decoy.write() {
                                *old = d;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "htpasswd reload: no new decoy hash"),
                    }
                }
                if let Ok(mut t) = self.table.write() {
                    *t = Arc::new(table);
                }
                if let Ok(mut c) = self.cache.lock() {
                    c.clear();
                }
            }
            Err(e) => tracing::warn!(error = %e, "htpasswd not reloaded; keeping the previous users"),
        }
    }

    /// The background future that reloads the file when it changes (every 5 s).
    pub fn reloader(self: Arc<Self>) -> impl std::future::Future<Output = ()> + Send + 'static {
        async move {
            if self.file.is_none() {
                return std::future::pending().await;
            }
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let users = self.clone();
                let _ = tokio::task::spawn_blocking(move || users.reload()).await;
            }
        }
    }
}

fn cache_key(user: &str, password: &str, entry: &str) -> [u8; 32] {
    digest_of(&[user.as_bytes(), password.as_bytes(), entry.as_bytes()])
}

/// SHA-256 of `parts`, each preceded by its length (so that no two lists of parts collide).
pub(crate) fn digest_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, lines: &str) -> PathBuf {
        let p = dir.join("htpasswd");
        std::fs::write(&p, lines).unwrap();
        p
    }

    #[tokio::test]
    async fn bcrypt_entries_check_and_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("right", 4).unwrap();
        let users = Users::new(Some(&file(dir.path(), &format!("alice:{hash}\n"))), None).unwrap();
        assert!(users.verify("alice", "right").await);
        assert!(!users.verify("alice", "wrong").await);
        assert!(!users.verify("mallory", "right").await, "unknown users fail (after a decoy check)");
        assert!(users.cached(&cache_key("alice", "right", &hash)));
        assert!(!users.cached(&cache_key("alice", "wrong", &hash)), "failures are not remembered");
        assert!(users.exists("alice") && !users.exists("mallory"));
    }

    #[tokio::test]
    async fn unknown_users_cost_the_dearest_user_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), &format!("alice:{}\n", bcrypt::hash("a", 4).unwrap()));
        let users = Users::new(Some(&path), None).unwrap();
        let cost = |u: &Users| u.decoy.read().unwrap().parse::<bcrypt::HashParts>().unwrap().get_cost();
        assert_eq!(cost(&users), 4);
        // A reload adds a dearer user (and the file's size changes, so it is seen as changed).
        std::fs::write(
            &path,
            format!("alice:{}\nbob:{}\n", bcrypt::hash("a", 4).unwrap(), bcrypt::hash("b", 6).unwrap()),
        )
        .unwrap();
        users.reload();
        assert!(users.exists("bob"));
        assert_eq!(cost(&users), 6, "the decoy follows the dearest entry");
        assert!(!users.verify("mallory", "x").await);
    }

    #[tokio::test]
    async fn the_same_check_at_once_runs_one_bcrypt() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("right", 4).unwrap();
        let users = Arc::new(Users::new(Some(&file(dir.path(), &format!("alice:{hash}\n"))), None).unwrap());
        let checks = (0..20).map(|_| {
            let u = users.clone();
            tokio::spawn(async move { u.verify("alice", "wrong").await })
        });
        for c in checks {
            assert!(!c.await.unwrap());
        }
        assert!(users.running.lock().unwrap().is_empty(), "nothing is left running");
        assert!(users.verify("alice", "right").await);
    }

    #[tokio::test]
    async fn a_fixed_user_compares_in_constant_time() {
        let users = Users::new(None, Some(("trow", "pass"))).unwrap();
        assert!(users.verify("trow", "pass").await);
        assert!(!users.verify("trow", "pas").await);
        assert!(!users.verify("other", "pass").await);
        assert_ne!(users.fingerprint("trow"), None);
    }

    #[test]
    fn other_hash_kinds_are_refused_naming_the_line() {
        for bad in ["u:$apr1$xyz$abc", "u:plain", "u:{SHA}abc", "nocolon", ":$2y$05$x"] {
            let e = Htpasswd::parse(&format!("# c\n\n{bad}\n"), "f").unwrap_err();
            assert!(e.starts_with("f:3:"), "{bad}: {e}");
        }
        assert!(Htpasswd::parse("u:$2y$05$short", "f").unwrap_err().contains("malformed"));
    }

    #[tokio::test]
    async fn a_changed_file_is_read_again_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let a = bcrypt::hash("one", 4).unwrap();
        let p = file(dir.path(), &format!("alice:{a}\n"));
        let users = Users::new(Some(&p), None).unwrap();
        let before = users.fingerprint("alice");
        let b = bcrypt::hash("two", 4).unwrap();
        std::fs::write(&p, format!("alice:{b}\nbob:{b}\n")).unwrap();
        users.reload();
        assert!(users.verify("alice", "two").await);
        assert!(!users.verify("alice", "one").await);
        assert!(users.exists("bob"));
        assert_ne!(users.fingerprint("alice"), before, "a new password ends refresh tokens");
        std::fs::write(&p, "broken line, and longer than before\n").unwrap();
        users.reload();
        assert!(users.exists("bob"), "a broken file keeps the previous users");
    }
}
