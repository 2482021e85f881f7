//! The server's connection options: timeouts, limits and the graceful drain, with defaults in
//! the manner of nginx, Envoy and Go's `net/http`.
//!
//! ```
//! use std::time::Duration;
//! use donjon::server::Options;
//!
//! let o = Options { idle_timeout: Duration::from_secs(10), ..Options::default() };
//! assert_eq!(o.header_read_timeout, Duration::from_secs(30));
//! ```

use std::time::Duration;

use donjon_core::config::{duration, ConfigError};
use serde::{Deserialize, Serialize};

/// How the server treats connections. Every field has a default (see [`Options::default`]);
/// the YAML section `connections` sets them by name, durations as `30s`, `2m`, `500ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// HTTP/1.1: the longest a client may take to send a request's headers, counted from the
    /// moment the server waits for them (so it also ends keep-alive connections idle this long).
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long: before the protocol
    /// is known, between requests, and HTTP/2 connections without streams.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// A request body that delivers nothing for this long ends its request (the upload keeps
    /// what arrived). A slow body that keeps moving is never cut.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// A connection whose client reads nothing of a response for this long is closed.
    #[serde(with = "duration")]
    pub send_timeout: Duration,
    /// The TLS handshake's time limit.
    #[serde(with = "duration")]
    pub tls_handshake_timeout: Duration,
    /// The most connections at once; at the limit the longest-idle connection is closed to
    /// make room, and when none is idle new connections wait in the listen backlog. `0`: from
    /// the file descriptor limit (half of what is left after 64 kept for files).
    pub max_connections: usize,
    /// HTTP/1.1: the most request header fields (more → 431).
    pub max_headers: usize,
    /// HTTP/1.1: the read buffer, which bounds a request head (more → 431).
    pub max_header_bytes: usize,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: the largest header list, in bytes.
    pub h2_max_header_list_size: u32,
    /// HTTP/2: streams a client may reset before the server accepts them (the guard against
    /// rapid reset, CVE-2023-44487).
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2: how often an idle peer is pinged, to find dead connections.
    #[serde(with = "duration")]
    pub h2_keep_alive_interval: Duration,
    /// HTTP/2: how long a ping may go unanswered.
    #[serde(with = "duration")]
    pub h2_keep_alive_timeout: Duration,
    /// On SIGINT/SIGTERM, how long transfers in flight may take to finish.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 0,
            max_headers: 100,
            max_header_bytes: 400 * 1024,
            h2_max_concurrent_streams: 128,
            h2_max_header_list_size: 64 * 1024,
            h2_max_pending_accept_reset_streams: 20,
            h2_keep_alive_interval: Duration::from_secs(20),
            h2_keep_alive_timeout: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Descriptors kept for files (blob reads, uploads) when the connection limit comes from the
/// descriptor limit.
const RESERVED_DESCRIPTORS: u64 = 64;

impl Options {
    /// The connection limit in force: [`Options::max_connections`], or when that is 0, half of
    /// the soft `RLIMIT_NOFILE` above 64 (every connection may hold a file open too).
    pub fn connection_limit(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 20);
        let n = soft.saturating_sub(RESERVED_DESCRIPTORS) / 2;
        usize::try_from(n.clamp(16, 1 << 20)).unwrap_or(1 << 20)
    }

    /// Checks the values, naming the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_timeout", self.body_timeout),
            ("send_timeout", self.send_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
            ("h2_keep_alive_interval", self.h2_keep_alive_interval),
            ("h2_keep_alive_timeout", self.h2_keep_alive_timeout),
        ];
        if let Some((k, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::new(format!("connections.{k}"), "must be above zero"));
        }
        if self.max_header_bytes < 8192 {
            return Err(ConfigError::new("connections.max_header_bytes", "must be at least 8192"));
        }
        if self.max_headers == 0 || self.h2_max_concurrent_streams == 0 {
            let key = if self.max_headers == 0 { "max_headers" } else { "h2_max_concurrent_streams" };
            return Err(ConfigError::new(format!("connections.{key}"), "must be above zero"));
        }
        Ok(())
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go programs do at start-up: the
/// default soft limit (often 1024) is far below what a registry with many clients needs.
/// Returns the soft limit now in force.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            return getrlimit(Resource::Nofile).current;
        }
    }
    limit.current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_names_and_durations() {
        let o: Options =
            serde_yaml::from_str("idle_timeout: 5s\nmax_connections: 10\nbody_timeout: 1m").unwrap();
        assert_eq!(o.idle_timeout, Duration::from_secs(5));
        assert_eq!(o.body_timeout, Duration::from_secs(60));
        assert_eq!(o.connection_limit(), 10);
        assert_eq!(o.send_timeout, Options::default().send_timeout);
        assert!(serde_yaml::from_str::<Options>("idle_timeout: soon").is_err());
        let zero = Options { body_timeout: Duration::ZERO, ..Options::default() };
        assert!(zero.validate().unwrap_err().to_string().contains("body_timeout"));
        assert!(Options::default().connection_limit() >= 16);
    }
}
