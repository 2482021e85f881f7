//! Tokens from another token server: Distribution's `auth.token` (`realm`, `service`, `issuer`,
//! `rootcertbundle`, `jwks`, `signingalgorithms`), so that donjon sits behind docker_auth,
//! Harbor's, GitLab's or any other Docker token server exactly where Distribution sat.
//!
//! A token is accepted when its signing key is trusted, its signature checks with an
//! algorithm that key is for, its `iss` is the issuer and its `aud` the service, and it is
//! within `nbf`..`exp` (60 s of leeway, as Distribution allows). The key is found the way
//! Distribution finds it, in this order:
//!
//! - `x5c` in the header: the leaf certificate of a chain that verifies up to a certificate of
//!   the bundle (or the leaf is a bundle certificate itself);
//! - `jwk` in the header: a key of the bundle or the JWKS, or one whose own `x5c` verifies;
//! - `kid` in the header: a JWKS key by its `kid`, or a bundle certificate's key by its RFC 7638
//!   thumbprint (Distribution 3) or its libtrust key ID (Distribution 2, docker_auth, GitLab).
//!
//! The algorithm comes from the key, never from the token alone: RSA keys verify `RS*`/`PS*`,
//! P-256 `ES256`, P-384 `ES384`, Ed25519 `EdDSA`. `alg: none` and HMAC tokens are refused
//! (there is no shared secret to check them with, and a public key must never act as one).
//!
//! ```
//! use donjon_auth::issuer::TrustedIssuer;
//!
//! let jwks = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
//!   "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
//!   "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
//! let issuer = TrustedIssuer::new("token-server", "registry.example").jwks(jwks.as_bytes()).unwrap();
//! assert_eq!(issuer.key_count(), 1);
//! assert!(issuer.verify("not.a.token").is_err());
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, EllipticCurveKeyType,
    Jwk, JwkSet, OctetKeyPairParameters, OctetKeyPairType, RSAKeyParameters, RSAKeyType,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_SIG_ED25519};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::token::{Access, Claims};

/// Distribution's leeway for `exp` and `nbf`.
const LEEWAY: u64 = 60;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The kinds of key a token may be signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Family {
    /// Whether `alg` is a signature this kind of key makes.
    fn signs(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
        }
    }
}

/// A public key tokens may be signed with.
#[derive(Clone)]
struct Key {
    decoding: DecodingKey,
    family: Family,
    /// RFC 7638 (SHA-256, base64url).
    thumbprint: String,
}

impl Key {
    fn from_jwk(jwk: &Jwk) -> Result<Self, String> {
        let (family, members) = match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                (Family::Rsa, format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, p.e, p.n))
            }
            AlgorithmParameters::EllipticCurve(p) => {
                let (family, crv) = match p.curve {
                    EllipticCurve::P256 => (Family::P256, "P-256"),
                    EllipticCurve::P384 => (Family::P384, "P-384"),
                    ref other => return Err(format!("an EC key on curve {other:?}: use P-256 or P-384")),
                };
                (family, format!(r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#, p.x, p.y))
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                (Family::Ed25519, format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, p.x))
            }
            AlgorithmParameters::OctetKeyPair(p) => {
                return Err(format!("an OKP key on curve {:?}: only Ed25519 signs", p.curve))
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err("a symmetric (oct) key: HMAC tokens are not accepted; the token server must \
                            sign with RSA, ECDSA or Ed25519"
                    .into())
            }
        };
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
        let thumbprint = B64URL.encode(Sha256::digest(members.as_bytes()));
        Ok(Self { decoding, family, thumbprint })
    }

    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, String> {
        Self::from_jwk(&jwk_of_spki(spki)?)
    }
}

/// The JWK of a certificate's public key.
fn jwk_of_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Jwk, String> {
    fn unsigned(b: &[u8]) -> String {
        let first = b.iter().position(|&x| x != 0).unwrap_or(b.len().saturating_sub(1));
        B64URL.encode(&b[first..])
    }
    let algorithm = if spki.algorithm.algorithm == OID_SIG_ED25519 {
        AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: B64URL.encode(&spki.subject_public_key.data),
        })
    } else {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: unsigned(rsa.modulus),
                e: unsigned(rsa.exponent),
            }),
            Ok(PublicKey::EC(point)) => {
                let curve_oid = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
                let (curve, len) = match curve_oid {
                    Some(o) if o == OID_EC_P256 => (EllipticCurve::P256, 32),
                    Some(o) if o == OID_NIST_EC_P384 => (EllipticCurve::P384, 48),
                    _ => return Err("an EC key on a curve other than P-256 or P-384".into()),
                };
                let data = point.data();
                if data.len() != 1 + 2 * len || data[0] != 4 {
                    return Err("an EC key that is not an uncompressed point".into());
                }
                AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve,
                    x: B64URL.encode(&data[1..=len]),
                    y: B64URL.encode(&data[1 + len..]),
                })
            }
            Ok(_) => return Err("a key that is neither RSA, ECDSA nor Ed25519".into()),
            Err(e) => return Err(format!("an unreadable public key: {e}")),
        }
    };
    Ok(Jwk { common: CommonParameters::default(), algorithm })
}

/// libtrust's key ID of a public key (its SubjectPublicKeyInfo, DER): what Distribution 2,
/// docker_auth and GitLab put in `kid`. The first 240 bits of its SHA-256 in base32, in
/// twelve groups of four joined by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let b32 = data_encoding::BASE32_NOPAD.encode(&digest[..30]);
    let groups: Vec<&str> =
        b32.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    groups.join(":")
}

/// Accepts any extended key usage: a token server's certificate signs tokens, which no EKU
/// names (Distribution verifies with `ExtKeyUsageAny` too).
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// The signature algorithms certificate chains are checked with.
static CHAIN_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// The claims of another server's token. Only `exp`, `iss` and `aud` are required; `aud` may
/// be a list (jsonwebtoken checks it either way).
#[derive(Deserialize)]
struct ForeignClaims {
    #[serde(default)]
    sub: String,
    exp: u64,
    #[serde(default)]
    access: Vec<Access>,
}

/// Another token server, trusted: its issuer name, the service its tokens are for, and the
/// keys it signs with.
#[derive(Clone)]
pub struct TrustedIssuer {
    issuer: String,
    service: String,
    /// The bundle's certificates, as roots of `x5c` chains.
    anchors: Vec<TrustAnchor<'static>>,
    /// Trusted keys by every name a token may call them: `kid`s, thumbprints, libtrust IDs.
    keys: HashMap<String, Arc<Key>>,
    /// The bundle's and the JWKS's keys, once each.
    count: usize,
    /// `signingalgorithms`: when set, the only algorithms accepted.
    algorithms: Option<Vec<Algorithm>>,
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIssuer")
            .field("issuer", &self.issuer)
            .field("service", &self.service)
            .field("keys", &self.count)
            .finish_non_exhaustive()
    }
}

impl TrustedIssuer {
    /// Tokens whose `iss` is `issuer` and whose `aud` is `service`; add keys with
    /// [`root_cert_bundle`](Self::root_cert_bundle) and [`jwks`](Self::jwks).
    pub fn new(issuer: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            service: service.into(),
            anchors: vec![],
            keys: HashMap::new(),
            count: 0,
            algorithms: None,
        }
    }

    /// The service tokens must be for.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// How many keys are trusted.
    pub fn key_count(&self) -> usize {
        self.count
    }

    /// Trusts the certificates of a PEM bundle (`rootcertbundle`): their keys sign tokens, and
    /// they are the roots `x5c` chains must verify up to.
    pub fn root_cert_bundle(mut self, pem: &[u8]) -> Result<Self, String> {
        let mut found = 0;
        for (i, der) in rustls_pemfile::certs(&mut &pem[..]).enumerate() {
            let der = der.map_err(|e| format!("certificate {}: unreadable PEM: {e}", i + 1))?;
            let (_, cert) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| format!("certificate {}: not an X.509 certificate: {e}", i + 1))?;
            let spki = cert.public_key();
            let key = Arc::new(
                Key::from_spki(spki)
                    .map_err(|e| format!("certificate {} ({}): {e}", i + 1, cert.subject()))?,
            );
            self.keys.insert(libtrust_key_id(spki.raw), key.clone());
            self.keys.insert(key.thumbprint.clone(), key);
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| format!("certificate {}: not usable as a root: {e:?}", i + 1))?;
            self.anchors.push(anchor.to_owned());
            found += 1;
        }
        if found == 0 {
            return Err("no certificate in the bundle".into());
        }
        self.count += found;
        Ok(self)
    }

    /// Trusts the keys of a JWK Set (`jwks`), by their `kid` and their thumbprint.
    pub fn jwks(mut self, json: &[u8]) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWK Set: {e}"))?;
        if set.keys.is_empty() {
            return Err("the JWK Set has no keys".into());
        }
        for (i, jwk) in set.keys.iter().enumerate() {
            let name = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{}", i + 1));
            let key = Arc::new(Key::from_jwk(jwk).map_err(|e| format!("key {name}: {e}"))?);
            if let Some(kid) = &jwk.common.key_id {
                self.keys.insert(kid.clone(), key.clone());
            }
            self.keys.insert(key.thumbprint.clone(), key);
        }
        self.count += set.keys.len();
        Ok(self)
    }

    /// Accepts only these algorithms (Distribution's `signingalgorithms`: `RS256`, `ES256`,
    /// `EdDSA`…); HMAC ones are refused.
    pub fn signing_algorithms(mut self, names: &[String]) -> Result<Self, String> {
        let mut algs = vec![];
        for n in names {
            let alg: Algorithm = n.parse().map_err(|_| format!("{n:?} is not a JWS algorithm"))?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(format!("{n}: HMAC tokens are not accepted"));
            }
            algs.push(alg);
        }
        self.algorithms = Some(algs);
        Ok(self)
    }

    /// The key that signed a token, from its header.
    fn key_of(&self, header: &jsonwebtoken::Header) -> Result<Arc<Key>, String> {
        if let Some(x5c) = header.x5c.as_deref().filter(|c| !c.is_empty()) {
            return self.chain_key(x5c);
        }
        if let Some(jwk) = &header.jwk {
            let key = Key::from_jwk(jwk)?;
            if let Some(trusted) = self.keys.get(&key.thumbprint) {
                return Ok(trusted.clone());
            }
            let Some(chain) = jwk.common.x509_chain.as_deref().filter(|c| !c.is_empty()) else {
                return Err("signed by an untrusted JWK with no certificate chain".into());
            };
            let leaf = self.chain_key(chain)?;
            if leaf.thumbprint != key.thumbprint {
                return Err("the JWK is not the key of its certificate chain's leaf".into());
            }
            return Ok(leaf);
        }
        match &header.kid {
            Some(kid) => {
                self.keys.get(kid).cloned().ok_or_else(|| format!("signed by an untrusted key {kid:?}"))
            }
            None => Err("no x5c, jwk or kid names the signing key".into()),
        }
    }

    /// The leaf key of an `x5c` chain that verifies up to the bundle.
    fn chain_key(&self, x5c: &[String]) -> Result<Arc<Key>, String> {
        let std = base64::engine::general_purpose::STANDARD;
        let ders = x5c
            .iter()
            .map(|c| std.decode(c).map(CertificateDer::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("x5c: not base64: {e}"))?;
        let (_, leaf) =
            x509_parser::parse_x509_certificate(&ders[0]).map_err(|e| format!("x5c: leaf: {e}"))?;
        let key = Key::from_spki(leaf.public_key())?;
        // A certificate of the bundle itself (a self-signed token server) is trusted as it is.
        if let Some(trusted) = self.keys.get(&key.thumbprint) {
            return Ok(trusted.clone());
        }
        let ee = webpki::EndEntityCert::try_from(&ders[0]).map_err(|e| format!("x5c: leaf: {e:?}"))?;
        ee.verify_for_usage(CHAIN_ALGS, &self.anchors, &ders[1..], UnixTime::now(), AnyUsage, None, None)
            .map_err(|e| format!("x5c: the chain does not verify up to the bundle: {e:?}"))?;
        Ok(Arc::new(key))
    }

    /// The claims of a token this issuer signed for this service; why not, otherwise.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let key = self.key_of(&header)?;
        if !key.family.signs(header.alg) {
            return Err(format!(
                "{:?} is not an algorithm of the signing key ({:?})",
                header.alg, key.family
            ));
        }
        if self.algorithms.as_ref().is_some_and(|a| !a.contains(&header.alg)) {
            return Err(format!("{:?} is not among auth.token.signingalgorithms", header.alg));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = LEEWAY;
        let data =
            jsonwebtoken::decode::<ForeignClaims>(token, &key.decoding, &v).map_err(|e| e.to_string())?;
        let c = data.claims;
        Ok(Claims {
            iss: self.issuer.clone(),
            sub: c.sub,
            aud: self.service.clone(),
            exp: c.exp,
            nbf: 0,
            iat: 0,
            jti: String::new(),
            access: c.access,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn claims(iss: &str, aud: serde_json::Value, exp: u64, nbf: u64) -> serde_json::Value {
        serde_json::json!({"iss": iss, "sub": "alice", "aud": aud, "exp": exp, "nbf": nbf,
            "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]})
    }

    fn good() -> serde_json::Value {
        claims("auth-server", "registry".into(), now() + 300, now() - 1)
    }

    fn sign(header: Header, key: &KeyPair, claims: &serde_json::Value) -> String {
        let pem = key.serialize_pem();
        let enc = match header.alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        jsonwebtoken::encode(&header, claims, &enc).unwrap()
    }

    fn with_kid(alg: Algorithm, kid: &str) -> Header {
        Header { kid: Some(kid.into()), ..Header::new(alg) }
    }

    fn with_x5c(alg: Algorithm, chain: &[&CertificateDer<'_>]) -> Header {
        let std = base64::engine::general_purpose::STANDARD;
        Header { x5c: Some(chain.iter().map(|c| std.encode(c.as_ref())).collect()), ..Header::new(alg) }
    }

    fn spki_of(der: &CertificateDer<'_>) -> Vec<u8> {
        x509_parser::parse_x509_certificate(der).unwrap().1.public_key().raw.to_vec()
    }

    /// A self-signed certificate, as docker_auth and GitLab use.
    fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> (KeyPair, rcgen::Certificate) {
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = CertificateParams::new(vec!["auth.example".into()]).unwrap().self_signed(&key).unwrap();
        (key, cert)
    }

    #[test]
    fn a_bundle_certificate_is_found_by_libtrust_id_thumbprint_or_x5c() {
        let (key, cert) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let issuer =
            TrustedIssuer::new("auth-server", "registry").root_cert_bundle(cert.pem().as_bytes()).unwrap();
        let libtrust = libtrust_key_id(&spki_of(cert.der()));
        let c = issuer.verify(&sign(with_kid(Algorithm::ES256, &libtrust), &key, &good())).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.access, vec![Access::repository("team/app", vec!["pull".into(), "push".into()])]);
        let jwk =
            jwk_of_spki(x509_parser::parse_x509_certificate(cert.der()).unwrap().1.public_key()).unwrap();
        let thumb = Key::from_jwk(&jwk).unwrap().thumbprint;
        assert!(issuer.verify(&sign(with_kid(Algorithm::ES256, &thumb), &key, &good())).is_ok());
        assert!(issuer.verify(&sign(with_x5c(Algorithm::ES256, &[cert.der()]), &key, &good())).is_ok());
        let jwk_header = Header { jwk: Some(jwk), ..Header::new(Algorithm::ES256) };
        assert!(issuer.verify(&sign(jwk_header, &key, &good())).is_ok());

        let e = issuer.verify(&sign(with_kid(Algorithm::ES256, "other"), &key, &good())).unwrap_err();
        assert!(e.contains("untrusted key"), "{e}");
        let e = issuer.verify(&sign(Header::new(Algorithm::ES256), &key, &good())).unwrap_err();
        assert!(e.contains("names the signing key"), "{e}");
        // Another key under a trusted kid: the signature does not check.
        let (other, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(issuer.verify(&sign(with_kid(Algorithm::ES256, &libtrust), &other, &good())).is_err());
    }

    #[test]
    fn x5c_chains_verify_up_to_the_bundle() {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let leaf =
            CertificateParams::new(vec!["token-signer".into()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
        let issuer =
            TrustedIssuer::new("auth-server", "registry").root_cert_bundle(ca_cert.pem().as_bytes()).unwrap();
        assert!(issuer.verify(&sign(with_x5c(Algorithm::ES384, &[leaf.der()]), &leaf_key, &good())).is_ok());
        assert!(issuer
            .verify(&sign(with_x5c(Algorithm::ES384, &[leaf.der(), ca_cert.der()]), &leaf_key, &good()))
            .is_ok());
        // The leaf's key by kid alone is not in the bundle.
        let kid = libtrust_key_id(&spki_of(leaf.der()));
        assert!(issuer.verify(&sign(with_kid(Algorithm::ES384, &kid), &leaf_key, &good())).is_err());
        // A chain to another root.
        let (evil_key, evil) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let e =
            issuer.verify(&sign(with_x5c(Algorithm::ES256, &[evil.der()]), &evil_key, &good())).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        // A P-384 key does not make ES256 signatures: the header's claim is refused first.
        let es384 = sign(with_x5c(Algorithm::ES384, &[leaf.der()]), &leaf_key, &good());
        let (head, rest) = es384.split_once('.').unwrap();
        let mut h: serde_json::Value = serde_json::from_slice(&B64URL.decode(head).unwrap()).unwrap();
        h["alg"] = "ES256".into();
        let relabelled = format!("{}.{rest}", B64URL.encode(h.to_string()));
        assert!(issuer.verify(&relabelled).unwrap_err().contains("not an algorithm of the signing key"));
    }

    #[test]
    fn jwks_keys_by_kid() {
        let (key, cert) = self_signed(&rcgen::PKCS_ED25519);
        let mut jwk =
            jwk_of_spki(x509_parser::parse_x509_certificate(cert.der()).unwrap().1.public_key()).unwrap();
        jwk.common.key_id = Some("ed-1".into());
        let set = serde_json::json!({ "keys": [jwk] }).to_string();
        let issuer = TrustedIssuer::new("auth-server", "registry").jwks(set.as_bytes()).unwrap();
        assert_eq!(issuer.key_count(), 1);
        assert!(issuer.verify(&sign(with_kid(Algorithm::EdDSA, "ed-1"), &key, &good())).is_ok());
        // A list audience holding the service.
        let listed = claims("auth-server", serde_json::json!(["other", "registry"]), now() + 60, 0);
        assert!(issuer.verify(&sign(with_kid(Algorithm::EdDSA, "ed-1"), &key, &listed)).is_ok());

        let hmac = r#"{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}"#;
        let e = TrustedIssuer::new("i", "s").jwks(hmac.as_bytes()).unwrap_err();
        assert!(e.contains("HMAC"), "{e}");
        assert!(TrustedIssuer::new("i", "s").jwks(br#"{"keys": []}"#).is_err());
        assert!(TrustedIssuer::new("i", "s").root_cert_bundle(b"no pem here").is_err());
    }

    #[test]
    fn wrong_claims_algorithms_and_forgeries_are_refused() {
        let (key, cert) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let issuer =
            TrustedIssuer::new("auth-server", "registry").root_cert_bundle(cert.pem().as_bytes()).unwrap();
        let kid = libtrust_key_id(&spki_of(cert.der()));
        let es = |c: &serde_json::Value| sign(with_kid(Algorithm::ES256, &kid), &key, c);
        let n = now();
        assert!(issuer.verify(&es(&claims("auth-server", "registry".into(), n + 60, n))).is_ok());
        for bad in [
            claims("someone-else", "registry".into(), n + 60, n),
            claims("auth-server", "another-registry".into(), n + 60, n),
            claims("auth-server", "registry".into(), n - 120, n - 200),
            claims("auth-server", "registry".into(), n + 600, n + 300),
        ] {
            assert!(issuer.verify(&es(&bad)).is_err(), "{bad}");
        }
        // HMAC with the certificate's public key as the secret (algorithm confusion).
        let hs = jsonwebtoken::encode(
            &with_kid(Algorithm::HS256, &kid),
            &good(),
            &EncodingKey::from_secret(&spki_of(cert.der())),
        )
        .unwrap();
        assert!(issuer.verify(&hs).unwrap_err().contains("not an algorithm of the signing key"));
        // alg: none
        let b64 = |v: serde_json::Value| B64URL.encode(v.to_string());
        let none = format!("{}.{}.", b64(serde_json::json!({"alg": "none", "kid": kid})), b64(good()));
        assert!(issuer.verify(&none).is_err());
        // signingalgorithms leaves ES256 out.
        let rs_only = issuer.clone().signing_algorithms(&["RS256".into()]).unwrap();
        assert!(rs_only.verify(&es(&good())).unwrap_err().contains("signingalgorithms"));
        assert!(issuer.clone().signing_algorithms(&["HS256".into()]).is_err());
    }

    #[test]
    fn libtrust_ids_are_twelve_groups_of_base32() {
        // Computed apart: python3 -c 'import hashlib, base64; print(base64.b32encode(
        // hashlib.sha256(b"abc").digest()[:30]))', in groups of four.
        let id = libtrust_key_id(b"abc");
        assert_eq!(id.len(), 12 * 4 + 11);
        assert_eq!(id.split(':').count(), 12);
        assert!(id.chars().all(|c| c == ':' || c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        assert_eq!(id, "XJ4B:NP4P:AHH6:UQKB:IDPF:3LRC:EOYA:GYND:SYLX:VHFU:CD7W:D4QA");
    }
}
