//! Failed logins, counted per client address and per (address, user): past `per_user` (10)
//! failures of one user, or `per_address` (30) failures of any users, from one address in a
//! window (a minute), that address gets `TOOMANYREQUESTS` (429) with `Retry-After` until the
//! window is over. An IPv6 address counts as its /64 (`ipv6_prefix`), the block one client
//! owns.
//!
//! An attempt is counted *before* its password is checked: [`Limiter::begin`] takes a
//! reservation in both counts, or refuses (counting nothing); a failure keeps it, a good login
//! gives it back and clears that user's count at that address (never the address's count, nor
//! another user's). So parallel guesses are limited exactly (the 11th of 100 at once is
//! refused before its bcrypt), and a good login of one account does not reset the guesses at
//! another. The same login in flight several times at once (twenty pulls starting together
//! with one pull secret) is one attempt: it shares one place, and [`crate::users::Users`]
//! checks its password once for all of them.
//!
//! At most 8192 keys are tracked; when the table is full, keys whose window is over are
//! forgotten first, and if none is, new keys are counted together under one entry, so memory
//! stays bounded under a flood of addresses or user names.
//!
//! ```
//! use std::net::IpAddr;
//! use donjon_auth::limiter::Limiter;
//!
//! let l = Limiter::default();
//! let ip: IpAddr = "192.0.2.1".parse().unwrap();
//! for i in 0..10 {
//!     let attempt = l.begin(ip, "admin", &format!("guess {i}")).expect("not limited yet");
//!     drop(attempt); // a wrong password: the reservation stays a failure
//! }
//! assert!(l.begin(ip, "admin", "guess 10").is_err(), "10 failures of admin: limited");
//! l.begin(ip, "alice", "alice's password").unwrap().succeeded();
//! assert!(l.begin(ip, "admin", "guess 11").is_err(), "alice's good login does not reset admin's count");
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The most keys tracked.
const MAX_KEYS: usize = 8192;
/// The longest user name kept in a key (longer ones are counted by this prefix).
const USER_MAX: usize = 128;

/// The limits (`auth.login_limit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginLimit {
    /// Failures of one user from one address in a window (default 10).
    pub per_user: u32,
    /// Failures of any users from one address in a window (default 30).
    pub per_address: u32,
    /// The window (default 1m).
    #[serde(with = "donjon_core::config::duration")]
    pub window: Duration,
    /// The prefix length an IPv6 address is counted by (default 64).
    pub ipv6_prefix: u8,
}

impl Default for LoginLimit {
    fn default() -> Self {
        Self { per_user: 10, per_address: 30, window: Duration::from_secs(60), ipv6_prefix: 64 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(IpAddr, String),
    /// Where new addresses are counted when the table is full, by a hash of the address.
    OverflowAddress(u8),
    /// Where new (address, user) pairs are counted when the table is full, likewise.
    OverflowUser(u8),
}

/// Buckets of each overflow kind.
const OVERFLOW_BUCKETS: u64 = 64;

#[derive(Debug)]
struct Count {
    n: u32,
    since: Instant,
}

#[derive(Debug, Default)]
struct Table {
    counts: HashMap<Key, Count>,
    /// Attempts in flight with the same (address group, user, password): they share one place,
    /// so that twenty pulls starting at once with one pull secret are one attempt, not twenty.
    in_flight: HashMap<[u8; 32], Shared>,
    /// When expired counts were last dropped (at most once a second while the table is full).
    swept: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    holders: usize,
    /// The place was given back (one of them succeeded).
    settled: bool,
    address: Key,
    user: Key,
}

/// Counts failed logins.
#[derive(Debug, Default)]
pub struct Limiter {
    limit: LoginLimit,
    table: Arc<Mutex<Table>>,
}

/// A login attempt that holds its place in the counts: dropped, it stays counted as a failure;
/// [`Attempt::succeeded`] gives it back.
#[must_use = "an attempt is a failure unless `succeeded` is called"]
#[derive(Debug)]
pub struct Attempt {
    table: Arc<Mutex<Table>>,
    id: [u8; 32],
}

impl Attempt {
    /// The password was right: the address's count gets its place back, and the user's
    /// failures at this address are forgotten.
    pub fn succeeded(self) {
        let Ok(mut t) = self.table.lock() else { return };
        let Some(shared) = t.in_flight.get_mut(&self.id) else { return };
        if std::mem::replace(&mut shared.settled, true) {
            return;
        }
        let (address, user) = (shared.address.clone(), shared.user.clone());
        for key in [address, user] {
            match key {
                // That user's failures at that address are forgotten.
                Key::User(..) => {
                    t.counts.remove(&key);
                }
                // Shared counts only get this attempt's place back.
                _ => {
                    if let Some(c) = t.counts.get_mut(&key) {
                        c.n = c.n.saturating_sub(1);
                    }
                }
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Ok(mut t) = self.table.lock() else { return };
        if let Some(shared) = t.in_flight.get_mut(&self.id) {
            shared.holders -= 1;
            if shared.holders == 0 {
                t.in_flight.remove(&self.id);
            }
        }
    }
}

impl Limiter {
    /// A limiter with these limits.
    pub fn new(limit: LoginLimit) -> Self {
        Self { limit, table: Arc::default() }
    }

    /// The limits.
    pub fn limit(&self) -> &LoginLimit {
        &self.limit
    }

    /// The group `ip` is counted by: itself, or its IPv6 prefix (an IPv4-mapped address as the
    /// IPv4 one).
    fn group(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u32::from(self.limit.ipv6_prefix.min(128));
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
                }
            },
        }
    }

    /// Takes a place for a login of `user` with `password` from `ip` in both counts (or
    /// shares the place of the same login in flight), or says how long `ip` must wait.
    /// Nothing is counted for a refused attempt.
    pub fn begin(&self, ip: IpAddr, user: &str, password: &str) -> Result<Attempt, Duration> {
        let group = self.group(ip);
        let user: String = user.chars().take(USER_MAX).collect();
        let id = attempt_id(group, &user, password);
        let window = self.limit.window;
        let Ok(mut guard) = self.table.lock() else { return Err(window) };
        let t = &mut *guard;
        if let Some(shared) = t.in_flight.get_mut(&id) {
            shared.holders += 1;
            return Ok(Attempt { table: self.table.clone(), id });
        }
        let bucket = (hash_of(&group) % OVERFLOW_BUCKETS) as u8;
        let wanted = [
            (Key::Address(group), Key::OverflowAddress(bucket), self.limit.per_address),
            (Key::User(group, user), Key::OverflowUser(bucket), self.limit.per_user),
        ];
        let missing = wanted.iter().filter(|(k, _, _)| !t.counts.contains_key(k)).count();
        if t.counts.len() + missing > MAX_KEYS
            && t.swept.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            t.counts.retain(|_, c| c.since.elapsed() < window);
            t.swept = Some(Instant::now());
        }
        // Each count's key: its own, or its overflow bucket when the table has no room for it.
        let mut fresh = 0;
        let keys = wanted.map(|(key, overflow, max)| {
            let room = t.counts.contains_key(&key) || t.counts.len() + fresh < MAX_KEYS;
            fresh += usize::from(room && !t.counts.contains_key(&key));
            (if room { key } else { overflow }, max)
        });
        let wait = keys
            .iter()
            .filter_map(|(key, max)| t.counts.get(key).filter(|c| c.since.elapsed() < window && c.n >= *max))
            .map(|c| window.saturating_sub(c.since.elapsed()).max(Duration::from_secs(1)))
            .max();
        if let Some(w) = wait {
            return Err(w);
        }
        let [(address, _), (user, _)] = keys;
        for key in [&address, &user] {
            let c = t.counts.entry(key.clone()).or_insert(Count { n: 0, since: Instant::now() });
            if c.since.elapsed() >= window {
                *c = Count { n: 0, since: Instant::now() };
            }
            c.n += 1;
        }
        t.in_flight.insert(id, Shared { holders: 1, settled: false, address, user });
        Ok(Attempt { table: self.table.clone(), id })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().map(|t| t.counts.len()).unwrap_or(0)
    }
}

/// An attempt's identity: the same (group, user, password) is the same attempt.
fn attempt_id(group: IpAddr, user: &str, password: &str) -> [u8; 32] {
    crate::users::digest_of(&[group.to_string().as_bytes(), user.as_bytes(), password.as_bytes()])
}

fn hash_of(v: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher as _;
    // SipHash with fixed keys: the same address always lands in the same bucket.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let l = Limiter::default();
        for i in 0..(MAX_KEYS as u32 / 2 + 100_000) {
            drop(l.begin(IpAddr::from(i.to_be_bytes()), "u", "p"));
        }
        assert!(l.len() <= MAX_KEYS + 2 * OVERFLOW_BUCKETS as usize, "{}", l.len());
        // New addresses share overflow buckets, which took the last failures: they are slowed
        // together, by bucket.
        let limited =
            (0..50u32).filter(|i| l.begin(IpAddr::from((0xC000_0000 + i).to_be_bytes()), "u", "p").is_err());
        assert!(limited.count() > 0);
        assert!(l.begin(IpAddr::from(1u32.to_be_bytes()), "u", "p2").is_ok(), "one failure is fine");
    }

    #[test]
    fn another_users_success_resets_nothing() {
        let l = Limiter::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut checked = 0;
        for round in 0..6 {
            for i in 0..9 {
                if let Ok(a) = l.begin(ip, "admin", &format!("guess {round} {i}")) {
                    checked += 1;
                    drop(a);
                }
            }
            l.begin(ip, "alice", "right").map(Attempt::succeeded).ok();
        }
        assert_eq!(checked, 10, "guesses at admin checked, whatever alice does");
    }

    #[test]
    fn the_address_count_holds_many_users() {
        let l = Limiter::default();
        let ip: IpAddr = "192.0.2.8".parse().unwrap();
        let checked = (0..100).filter(|i| l.begin(ip, &format!("user{i}"), "p").is_ok()).count();
        assert_eq!(checked, 30, "30 failures of any users from one address");
        let elsewhere: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(l.begin(elsewhere, "user0", "p").is_ok(), "another address is not limited");
    }

    #[test]
    fn a_reservation_is_taken_before_the_check() {
        let l = Limiter::default();
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        // 100 guesses in flight at once, none finished: exactly the limit get through.
        let held: Vec<Attempt> =
            (0..100).filter_map(|i| l.begin(ip, "admin", &format!("g{i}")).ok()).collect();
        assert_eq!(held.len(), 10);
        // A good login gives its place back.
        let l = Limiter::default();
        for _ in 0..50 {
            l.begin(ip, "alice", "right").unwrap().succeeded();
        }
        assert!(l.begin(ip, "alice", "right").is_ok());
        // The same login twenty times at once is one attempt: all get through, one place.
        let l = Limiter::default();
        let same: Vec<Attempt> = (0..20).filter_map(|_| l.begin(ip, "kubelet", "pull-secret").ok()).collect();
        assert_eq!(same.len(), 20);
        let others = (0..20).filter(|i| l.begin(ip, "kubelet", &format!("other {i}")).is_ok()).count();
        assert_eq!(others, 9, "the twenty took one place of ten");
        // A refused attempt counts nothing.
        let l = Limiter::default();
        for i in 0..10 {
            drop(l.begin(ip, "admin", &format!("g{i}")));
        }
        for i in 0..1000 {
            assert!(l.begin(ip, &format!("flood{i}"), "p").is_ok() || i >= 20);
        }
        assert!(l.len() < 100, "refused attempts add no keys: {}", l.len());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let l = Limiter::default();
        for i in 0..10u16 {
            drop(
                l.begin(format!("2001:db8:1:2::{i:x}").parse().unwrap(), "admin", &format!("g{i}")).unwrap(),
            );
        }
        assert!(l.begin("2001:db8:1:2:ffff::1".parse().unwrap(), "admin", "x").is_err(), "the same /64");
        assert!(l.begin("2001:db8:1:3::1".parse().unwrap(), "admin", "x").is_ok(), "another /64");
        let exact = Limiter::new(LoginLimit { ipv6_prefix: 128, ..Default::default() });
        for i in 0..10u16 {
            drop(
                exact.begin(format!("2001:db8::{i:x}").parse().unwrap(), "admin", &format!("g{i}")).unwrap(),
            );
        }
        assert!(exact.begin("2001:db8::ff".parse().unwrap(), "admin", "x").is_ok(), "prefix 128: exact");
        let mapped = Limiter::default();
        for i in 0..10 {
            drop(mapped.begin("::ffff:192.0.2.1".parse().unwrap(), "a", &format!("g{i}")).unwrap());
        }
        assert!(mapped.begin("192.0.2.1".parse().unwrap(), "a", "x").is_err(), "mapped is the IPv4 address");
    }
}
