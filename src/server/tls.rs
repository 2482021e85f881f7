//! The server's certificate, read again when its files change.
//!
//! A handshake looks at the files' modification times at most every [`CHECK_EVERY`]; when
//! either changed, the pair is loaded again, and new handshakes present it. Connections already
//! made keep theirs. A pair that does not load (a renewal caught half-written, a key that does
//! not match) is logged and the last good pair stays in use, to be tried again at the next
//! check.
//!
//! ```no_run
//! # fn f() -> std::io::Result<()> {
//! let acceptor = donjon::server::tls_acceptor("tls.crt".as_ref(), "tls.key".as_ref())?;
//! # Ok(()) }
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often a handshake looks at the files.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(10);

/// The certified key in use, and how its files stood when it was read.
#[derive(Debug)]
pub(crate) struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    stamps: Stamps,
    checked: Instant,
}

type Stamps = (Option<SystemTime>, Option<SystemTime>);

impl Reloading {
    /// Reads the pair; an error names the file and what is wrong with it.
    pub(crate) fn new(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> io::Result<Self> {
        Self::with_interval(cert, key, provider, CHECK_EVERY)
    }

    pub(crate) fn with_interval(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        every: Duration,
    ) -> io::Result<Self> {
        let stamps = stamps(cert, key);
        let current = Arc::new(load(cert, key, &provider)?);
        let state = Mutex::new(State { current, stamps, checked: Instant::now() });
        Ok(Self { cert: cert.to_path_buf(), key: key.to_path_buf(), provider, every, state })
    }

    /// The pair to present now, read again first if the files changed.
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut st = self.state.lock().ok()?;
        if st.checked.elapsed() >= self.every {
            st.checked = Instant::now();
            let now = stamps(&self.cert, &self.key);
            if now != st.stamps {
                match load(&self.cert, &self.key, &self.provider) {
                    Ok(k) => {
                        st.current = Arc::new(k);
                        st.stamps = now;
                        tracing::info!(cert = %self.cert.display(), "TLS certificate read again (its files changed)");
                    }
                    Err(e) => tracing::warn!(
                        "TLS certificate changed but does not load; the previous one stays: {e}"
                    ),
                }
            }
        }
        Some(st.current.clone())
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// The modification times of both files (following symbolic links, as a Kubernetes Secret
/// volume's `..data` swap needs).
fn stamps(cert: &Path, key: &Path) -> Stamps {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(cert), m(key))
}

/// A PEM chain and key as one certified key, the key checked against the certificate.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> io::Result<CertifiedKey> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display())))
    };
    let bad = |p: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
    };
    let certs = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no certificate found"));
    }
    let key_der = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|e| bad(key, &e))?
        .ok_or_else(|| bad(key, &"no private key found"))?;
    CertifiedKey::from_der(certs, key_der, provider)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS certificate/key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair from openssl, written to `dir/NAME.{crt,key}`.
    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "1", "-subj", &format!("/CN={name}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is needed for this test");
        assert!(ok.success());
        (cert, key)
    }

    fn leaf(k: &CertifiedKey) -> Vec<u8> {
        k.cert[0].to_vec()
    }

    /// Two pairs `a` and `b`, and `tls.crt`/`tls.key` holding `a`, watched every `every`.
    struct Fixture {
        _dir: tempfile::TempDir,
        a: (PathBuf, PathBuf),
        b: (PathBuf, PathBuf),
        cert: PathBuf,
        key: PathBuf,
        r: Reloading,
    }

    fn fixture(every: Duration) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (pair(dir.path(), "a"), pair(dir.path(), "b"));
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::copy(&a.0, &cert).unwrap();
        std::fs::copy(&a.1, &key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let r = Reloading::with_interval(&cert, &key, provider, every).unwrap();
        Fixture { _dir: dir, a, b, cert, key, r }
    }

    #[test]
    fn a_renewed_pair_is_presented_and_a_broken_one_is_not() {
        let Fixture { _dir: _keep, a: (a_cert, a_key), b: (b_cert, b_key), cert, key, r } =
            fixture(Duration::ZERO);
        let first = leaf(&r.current().unwrap());
        assert_eq!(first, leaf(&load(&a_cert, &a_key, &r.provider).unwrap()));

        // Renewed: another pair, with later times.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::copy(&b_cert, &cert).unwrap();
        std::fs::copy(&b_key, &key).unwrap();
        let second = leaf(&r.current().unwrap());
        assert_ne!(second, first, "the renewed certificate is presented");

        // Caught half-way: the new certificate beside the old key. The last good pair stays.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::copy(&a_cert, &cert).unwrap();
        assert_eq!(leaf(&r.current().unwrap()), second, "a mismatched pair is not presented");
        // And when the key follows, it is.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::copy(&a_key, &key).unwrap();
        assert_eq!(leaf(&r.current().unwrap()), first);
    }

    #[test]
    fn the_files_are_looked_at_no_more_than_every_interval() {
        let Fixture { _dir: _keep, b: (b_cert, b_key), cert, key, r, .. } =
            fixture(Duration::from_secs(3600));
        let first = leaf(&r.current().unwrap());
        std::fs::copy(&b_cert, &cert).unwrap();
        std::fs::copy(&b_key, &key).unwrap();
        assert_eq!(leaf(&r.current().unwrap()), first, "not before the interval");
    }

    #[test]
    fn a_bad_pair_at_start_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair(dir.path(), "a");
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "").unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let e = Reloading::new(&cert, &empty, provider).unwrap_err().to_string();
        assert!(e.contains("empty.key") && e.contains("no private key"), "{e}");
    }
}
