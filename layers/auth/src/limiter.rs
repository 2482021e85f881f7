//! Failed logins, counted per client address: past 10 failures in a minute, the address gets
//! `TOOMANYREQUESTS` (429) with `Retry-After` until the minute is over. At most 8192
//! addresses are tracked; when the table is full, addresses whose minute is over are forgotten
//! first, and if none is, the failures of new addresses are counted together under one entry,
//! so memory stays bounded under a flood of addresses.
//!
//! ```
//! use std::net::IpAddr;
//! use donjon_auth::limiter::Limiter;
//!
//! let l = Limiter::default();
//! let ip: IpAddr = "192.0.2.1".parse().unwrap();
//! for _ in 0..10 {
//!     assert!(l.retry_after(ip).is_none());
//!     l.failed(ip);
//! }
//! assert!(l.retry_after(ip).is_some());
//! l.succeeded(ip);
//! assert!(l.retry_after(ip).is_none());
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in a window.
const MAX_FAILURES: u32 = 10;
/// The window.
const WINDOW: Duration = Duration::from_secs(60);
/// The most addresses tracked.
const MAX_ADDRESSES: usize = 8192;
/// Where failures of untracked addresses are counted when the table is full.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// Counts failed logins per address.
#[derive(Debug, Default)]
pub struct Limiter {
    table: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Limiter {
    /// How long `ip` must wait, if it has failed too often.
    pub fn retry_after(&self, ip: IpAddr) -> Option<Duration> {
        let table = self.table.lock().ok()?;
        let (n, since) = table
            .get(&ip)
            .or_else(|| (table.len() >= MAX_ADDRESSES).then(|| table.get(&OVERFLOW)).flatten())?;
        let age = since.elapsed();
        (*n >= MAX_FAILURES && age < WINDOW).then(|| (WINDOW - age).max(Duration::from_secs(1)))
    }

    /// Counts a failure of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let Ok(mut table) = self.table.lock() else { return };
        if !table.contains_key(&ip) && table.len() >= MAX_ADDRESSES {
            table.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        let key = if table.contains_key(&ip) || table.len() < MAX_ADDRESSES { ip } else { OVERFLOW };
        let entry = table.entry(key).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets `ip`'s failures after a good login.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut table) = self.table.lock() {
            table.remove(&ip);
        }
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
        for i in 0..(MAX_ADDRESSES as u32 + 1000) {
            l.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(l.len() <= MAX_ADDRESSES + 1, "{}", l.len());
        // The overflow entry took the last 1000 failures: new addresses are slowed together.
        assert!(l.retry_after("203.0.113.9".parse().unwrap()).is_some());
        assert!(l.retry_after(IpAddr::from(1u32.to_be_bytes())).is_none(), "one failure is fine");
    }
}
