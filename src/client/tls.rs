//! The client's TLS: Mozilla's roots, the system's and `--ca-file`'s (as the pull-through cache
//! trusts them, [`donjon_proxy::client::roots`]), and one more thing for a self-signed registry:
//! a certificate of `--ca-file` that the server presents as it is, is trusted even where the
//! WebPKI rules refuse it (`openssl req -x509` makes a CA certificate, which they refuse as a
//! server's own). The handshake's signatures are checked all the same, so only the holder of
//! its key can present it. `donjon healthcheck` uses the pinning alone ([`pinned_only`]).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The client configuration: HTTP/1.1, the roots, `ca_file`'s certificates pinned as well.
pub fn config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = donjon_proxy::client::roots(ca_file)?;
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let pinned = match ca_file {
        Some(f) => {
            let pem = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            rustls_pemfile::certs(&mut &pem[..])
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", f.display()))?
        }
        None => Vec::new(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { webpki: Some(webpki), pinned, provider }))
        .with_no_client_auth())
}

/// A configuration that trusts `leaf` exactly, and nothing else: no roots, no names.
pub(crate) fn pinned_only(leaf: CertificateDer<'static>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { webpki: None, pinned: vec![leaf], provider }))
        .with_no_client_auth())
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
