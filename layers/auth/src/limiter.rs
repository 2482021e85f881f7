//! Failed logins, counted per client address and per (address, user): past `per_user` (10)
//! failures of one user, or `per_address` (30) failures of any users, from one address in a
//! window (a minute), that address gets `TOOMANYREQUESTS` (429) with `Retry-After` until the
//! window is over. An IPv6 address counts as its /64 (`ipv6_prefix`), the block one client
//! owns.
//!
//! An attempt is counted *before* its password is checked: [`Limiter::begin`] takes a
//! reservation in both counts, or refuses; a failure keeps it, a good login gives it back and
//! clears that user's count at that address (never the address's count, nor another user's).
//! So parallel guesses are limited exactly (the 11th of 100 at once is refused before its
//! bcrypt), and a good login of one account does not reset the guesses at another.
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
//! for _ in 0..10 {
//!     let attempt = l.begin(ip, "admin").expect("not limited yet");
//!     drop(attempt); // a wrong password: the reservation stays a failure
//! }
//! assert!(l.begin(ip, "admin").is_err(), "10 failures of admin: limited");
//! l.begin(ip, "alice").unwrap().succeeded();
//! assert!(l.begin(ip, "admin").is_err(), "alice's good login does not reset admin's count");
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
    /// Where new keys are counted when the table is full.
    Overflow,
}

#[derive(Debug)]
struct Count {
    n: u32,
    since: Instant,
}

/// Counts failed logins.
#[derive(Debug, Default)]
pub struct Limiter {
    limit: LoginLimit,
    table: Arc<Mutex<HashMap<Key, Count>>>,
}

/// A login attempt that holds its place in the counts: dropped, it stays counted as a failure;
/// [`Attempt::succeeded`] gives it back.
#[must_use = "an attempt is a failure unless `succeeded` is called"]
#[derive(Debug)]
pub struct Attempt {
    table: Arc<Mutex<HashMap<Key, Count>>>,
    address: Key,
    user: Key,
}

impl Attempt {
    /// The password was right: the address's count gets its place back, and the user's
    /// failures at this address are forgotten.
    pub fn succeeded(self) {
        let Ok(mut table) = self.table.lock() else { return };
        table.remove(&self.user);
        if let Some(c) = table.get_mut(&self.address) {
            c.n = c.n.saturating_sub(1);
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

    /// Takes a place for a login of `user` from `ip` in both counts, or says how long `ip`
    /// must wait.
    pub fn begin(&self, ip: IpAddr, user: &str) -> Result<Attempt, Duration> {
        let group = self.group(ip);
        let user: String = user.chars().take(USER_MAX).collect();
        let (address, user) = (Key::Address(group), Key::User(group, user));
        let window = self.limit.window;
        let Ok(mut table) = self.table.lock() else { return Err(window) };
        let mut keys = [address, user];
        let mut wait = None;
        for (key, max) in keys.iter_mut().zip([self.limit.per_address, self.limit.per_user]) {
            if !table.contains_key(key) && table.len() >= MAX_KEYS {
                table.retain(|_, c| c.since.elapsed() < window);
                if table.len() >= MAX_KEYS {
                    *key = Key::Overflow;
                }
            }
            let c = table.entry(key.clone()).or_insert(Count { n: 0, since: Instant::now() });
            if c.since.elapsed() >= window {
                *c = Count { n: 0, since: Instant::now() };
            }
            if c.n >= max {
                let left = window.saturating_sub(c.since.elapsed()).max(Duration::from_secs(1));
                wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        for key in &keys {
            if let Some(c) = table.get_mut(key) {
                c.n += 1;
            }
        }
        let [address, user] = keys;
        Ok(Attempt { table: self.table.clone(), address, user })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let l = Limiter::default();
        for i in 0..(MAX_KEYS as u32 / 2 + 1000) {
            drop(l.begin(IpAddr::from(i.to_be_bytes()), "u"));
        }
        assert!(l.len() <= MAX_KEYS + 1, "{}", l.len());
        // New addresses share the overflow entry, which took the last failures: they are
        // slowed together.
        assert!(l.begin("203.0.113.9".parse().unwrap(), "u").is_err());
        assert!(l.begin(IpAddr::from(1u32.to_be_bytes()), "u").is_ok(), "one failure is fine");
    }

    #[test]
    fn another_users_success_resets_nothing() {
        let l = Limiter::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut checked = 0;
        for _ in 0..6 {
            for _ in 0..9 {
                if let Ok(a) = l.begin(ip, "admin") {
                    checked += 1;
                    drop(a);
                }
            }
            l.begin(ip, "alice").map(Attempt::succeeded).ok();
        }
        assert_eq!(checked, 10, "guesses at admin checked, whatever alice does");
    }

    #[test]
    fn the_address_count_holds_many_users() {
        let l = Limiter::default();
        let ip: IpAddr = "192.0.2.8".parse().unwrap();
        let checked = (0..100).filter(|i| l.begin(ip, &format!("user{i}")).is_ok()).count();
        assert_eq!(checked, 30, "30 failures of any users from one address");
        let elsewhere: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(l.begin(elsewhere, "user0").is_ok(), "another address is not limited");
    }

    #[test]
    fn a_reservation_is_taken_before_the_check() {
        let l = Limiter::default();
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        // 100 attempts in flight at once, none finished: exactly the limit get through.
        let held: Vec<Attempt> = (0..100).filter_map(|_| l.begin(ip, "admin").ok()).collect();
        assert_eq!(held.len(), 10);
        // A good login gives its place back.
        let l = Limiter::default();
        for _ in 0..50 {
            l.begin(ip, "alice").unwrap().succeeded();
        }
        assert!(l.begin(ip, "alice").is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let l = Limiter::default();
        for i in 0..10u16 {
            drop(l.begin(format!("2001:db8:1:2::{i:x}").parse().unwrap(), "admin").unwrap());
        }
        assert!(l.begin("2001:db8:1:2:ffff::1".parse().unwrap(), "admin").is_err(), "the same /64");
        assert!(l.begin("2001:db8:1:3::1".parse().unwrap(), "admin").is_ok(), "another /64");
        let exact = Limiter::new(LoginLimit { ipv6_prefix: 128, ..Default::default() });
        for i in 0..10u16 {
            drop(exact.begin(format!("2001:db8::{i:x}").parse().unwrap(), "admin").unwrap());
        }
        assert!(exact.begin("2001:db8::ff".parse().unwrap(), "admin").is_ok(), "prefix 128: exact");
        let mapped = Limiter::default();
        for _ in 0..10 {
            drop(mapped.begin("::ffff:192.0.2.1".parse().unwrap(), "a").unwrap());
        }
        assert!(mapped.begin("192.0.2.1".parse().unwrap(), "a").is_err(), "mapped is the IPv4 address");
    }
}
