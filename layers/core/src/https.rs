//! One way to build an HTTPS client, for every part of donjon that makes requests: the
//! pull-through cache's upstream client, the command line's registry client, notifications
//! and the benchmark harness.
//!
//! - [`roots`]: the roots a client trusts: Mozilla's (webpki-roots), the system's, and a
//!   `ca_file`'s.
//! - [`tls_config`]: those roots, and one more thing for a self-signed registry: a certificate
//!   of `ca_file` that the server presents as it is, is trusted even where the WebPKI rules
//!   refuse it (`openssl req -x509` makes a CA certificate, which they refuse as a server's
//!   own). The handshake's signatures are checked all the same, so only the holder of its key
//!   can present it. [`pinned_only`] trusts one certificate and nothing else (a health probe
//!   of the registry's own listener).
//! - [`ClientBuilder`]: the connector (TCP with `TCP_NODELAY`, a connect timeout, TLS or plain
//!   HTTP as the URL says, HTTP/1.1 and optionally HTTP/2) and the pooled hyper client.
//!
//! ```
//! use std::time::Duration;
//! use donjon_core::https::{tls_config, ClientBuilder};
//!
//! let tls = tls_config(None).unwrap();
//! let client: donjon_core::https::Client<http_body_util::Full<bytes::Bytes>> =
//!     ClientBuilder::new().connect_timeout(Duration::from_secs(5)).http2(true).build(tls);
//! # let _ = client;
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A pooled hyper client over [`ClientBuilder`]'s connector, resolving names with `R`.
pub type Client<B, R = GaiResolver> =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector<R>>, B>;

/// The roots a TLS client trusts: Mozilla's (webpki-roots), the system's, and `ca_file`'s
/// (an error when it holds no certificate).
pub fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Unreadable or unparsable system certificates are skipped, as browsers and curl do.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(f) = ca_file {
        for cert in pem_certs(f)? {
            roots.add(cert).map_err(|e| format!("{}: {e}", f.display()))?;
        }
    }
    Ok(roots)
}

/// The certificates of a PEM file (other PEM items are skipped); an error if there are none.
fn pem_certs(f: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", f.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", f.display()));
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting [`roots`], and `ca_file`'s certificates as they are (see
/// the module docs).
pub fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_file)?), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let pinned = match ca_file {
        Some(f) => pem_certs(f)?,
        None => Vec::new(),
    };
    with_verifier(Verifier { webpki: Some(webpki), pinned, provider })
}

/// A configuration that trusts `leaf` exactly, and nothing else: no roots, no names.
pub fn pinned_only(leaf: CertificateDer<'static>) -> Result<rustls::ClientConfig, String> {
    with_verifier(Verifier { webpki: None, pinned: vec![leaf], provider: provider() })
}

fn with_verifier(v: Verifier) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(v.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(v))
        .with_no_client_auth())
}

/// How a [`Client`] connects and pools: consumed by [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    connect_timeout: Option<Duration>,
    http2: bool,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: Option<usize>,
    read_buf_exact_size: Option<usize>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientBuilder {
    /// HTTP/1.1 only, no connect timeout, hyper's pool defaults.
    pub fn new() -> Self {
        Self {
            connect_timeout: None,
            http2: false,
            pool_idle_timeout: None,
            pool_max_idle_per_host: None,
            read_buf_exact_size: None,
        }
    }

    /// How long a connection (TCP and TLS) may take.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    /// Whether HTTP/2 is offered (ALPN) beside HTTP/1.1.
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    /// How long an idle pooled connection is kept.
    pub fn pool_idle_timeout(mut self, d: Duration) -> Self {
        self.pool_idle_timeout = Some(d);
        self
    }

    /// How many idle connections are kept for one host.
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = Some(n);
        self
    }

    /// The exact size of each connection's read buffer (HTTP/1.1).
    pub fn read_buf_exact_size(mut self, n: usize) -> Self {
        self.read_buf_exact_size = Some(n);
        self
    }

    /// The client, trusting what `tls` trusts, resolving names as the system does.
    pub fn build<B>(self, tls: rustls::ClientConfig) -> Client<B>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        self.build_with_resolver(tls, GaiResolver::new())
    }

    /// The client, resolving names with `resolver` (one that refuses some addresses, say).
    pub fn build_with_resolver<B, R>(self, tls: rustls::ClientConfig, resolver: R) -> Client<B, R>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        R: tower_service::Service<Name> + Clone + Send + Sync + 'static,
        R::Response: Iterator<Item = std::net::SocketAddr>,
        R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        R::Future: Send,
    {
        let mut tcp = HttpConnector::new_with_resolver(resolver);
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(self.connect_timeout);
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let https = if self.http2 {
            https.enable_http1().enable_http2().wrap_connector(tcp)
        } else {
            https.enable_http1().wrap_connector(tcp)
        };
        let mut b = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        if let Some(d) = self.pool_idle_timeout {
            b.pool_idle_timeout(d);
        }
        if let Some(n) = self.pool_max_idle_per_host {
            b.pool_max_idle_per_host(n);
        }
        if let Some(n) = self.read_buf_exact_size {
            b.http1_read_buf_exact_size(n);
        }
        b.build(https)
    }
}

/// WebPKI (when there is one), or one of the pinned certificates exactly.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let webpki = match &self.webpki {
            Some(w) => w.verify_server_cert(end_entity, intermediates, name, ocsp, now),
            None => Err(rustls::Error::General("the server's certificate is not the configured one".into())),
        };
        match webpki {
            Ok(v) => Ok(v),
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("empty.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        assert!(roots(Some(&f)).unwrap_err().contains("no certificate"));
        assert!(roots(Some(&dir.path().join("absent.pem"))).unwrap_err().contains("cannot read"));
        assert!(tls_config(Some(&f)).is_err());
        assert!(!roots(None).unwrap().is_empty(), "Mozilla's roots at least");
    }
}
