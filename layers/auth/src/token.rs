//! The tokens of the Docker token flow: JWTs signed with ES256 (P-256), whose `access` claim
//! lists `{type, name, actions}`, and the refresh tokens docker and containerd keep after a
//! login. The key is a PKCS#8 PEM: a file ([`SigningKey::load`]), or the one the store keeps
//! ([`SigningKey::shared`], made on first start), so every replica and every restart on the
//! same storage accepts the same tokens.
//!
//! Verification accepts ES256 only, so `alg: none` and an HMAC token "signed" with the public
//! key (algorithm confusion) are refused, and checks the issuer, the audience (the service),
//! `exp` and `nbf`. A refresh token has its own audience and is never taken as an access
//! token, nor the reverse.
//!
//! ```
//! use std::time::Duration;
//! use donjon_auth::token::{Access, SigningKey, Tokens};
//!
//! let key = SigningKey::generate().unwrap();
//! let tokens = Tokens::new(key, "donjon", "registry.example", Duration::from_secs(300));
//! let access = vec![Access::repository("team/app", vec!["pull".into()])];
//! let issued = tokens.issue(Some("alice"), access.clone());
//! let claims = tokens.verify(&issued.token).unwrap();
//! assert_eq!((claims.sub.as_str(), claims.access), ("alice", access));
//! ```

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use donjon_core::Store;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// How far clocks of replicas and clients may disagree.
const LEEWAY: u64 = 30;

/// The key tokens are signed with, and the public half they are checked with.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// The public point, uncompressed (`04 || x || y`).
    public: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) holding a P-256 key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = match rustls_pemfile::private_key(&mut &pem[..]) {
            Ok(Some(rustls_pemfile_key)) => rustls_pemfile_key.secret_der().to_vec(),
            Ok(None) => return Err("no private key in the PEM".into()),
            Err(e) => return Err(format!("unreadable PEM: {e}")),
        };
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| format!("not a PKCS#8 P-256 key: {e}"))?;
        let public = pair.public_key().as_ref();
        let kid = hex::encode(&Sha256::digest(public)[..8]);
        Ok(Self {
            encoding: EncodingKey::from_ec_der(&der),
            decoding: DecodingKey::from_ec_der(public),
            kid,
            public: public.to_vec(),
        })
    }

    /// The public key as a JWK Set, for a registry that checks donjon's tokens (another
    /// donjon's `auth.token.jwks`, Distribution's too).
    pub fn jwks(&self) -> serde_json::Value {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (x, y) =
            self.public.get(1..).unwrap_or_default().split_at(self.public.len().saturating_sub(1) / 2);
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": b64.encode(x), "y": b64.encode(y),
        }]})
    }

    /// A new random key, as a PKCS#8 PEM.
    pub fn generate_pem() -> Result<String, String> {
        let rng = ring::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| format!("cannot generate a key: {e}"))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// A new random key.
    pub fn generate() -> Result<Self, String> {
        Self::from_pem(Self::generate_pem()?.as_bytes())
    }

    /// The key in `path` (a PKCS#8 PEM, as `openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256` writes).
    pub fn load(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The key the store keeps (`auth/token-signing-key.pem`: in the data directory, or in
    /// the bucket beside Distribution's tree), made on the first start. Every restart and
    /// every replica on the same storage signs with it.
    pub async fn shared(store: &dyn Store) -> Result<Self, String> {
        let made = Self::generate_pem()?;
        let kept = store
            .secret(KEY_NAME, made.clone().into())
            .await
            .map_err(|e| format!("cannot keep the token signing key in the store: {e}"))?;
        if kept == made.as_bytes() {
            tracing::info!(name = KEY_NAME, "generated a token signing key");
        }
        Self::from_pem(&kept).map_err(|e| format!("the store's {KEY_NAME}: {e}"))
    }
}

/// Where [`SigningKey::shared`] keeps the key.
pub const KEY_NAME: &str = "auth/token-signing-key.pem";

/// One entry of a token's `access` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository's name, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, or `*` for the catalog.
    pub actions: Vec<String>,
}

impl Access {
    /// Actions on a repository.
    pub fn repository(name: &str, actions: Vec<String>) -> Self {
        Self { kind: "repository".into(), name: name.into(), actions }
    }

    /// The catalog.
    pub fn catalog() -> Self {
        Self { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] }
    }
}

/// An access token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user, or empty for anonymous.
    pub sub: String,
    /// Audience: the service.
    pub aud: String,
    /// Expiry, in seconds since the epoch.
    pub exp: u64,
    /// Not before.
    pub nbf: u64,
    /// Issued at.
    pub iat: u64,
    /// A unique id.
    pub jti: String,
    /// What the token grants.
    #[serde(default)]
    pub access: Vec<Access>,
}

/// A refresh token's claims: who, and the fingerprint of their password entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RefreshClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    fp: String,
}

/// A token as the token endpoint answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The JWT.
    pub token: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// When it was issued (RFC 3339).
    pub issued_at: String,
}

/// Issues and checks tokens.
#[derive(Clone, Debug)]
pub struct Tokens {
    key: SigningKey,
    issuer: String,
    service: String,
    ttl: Duration,
    refresh_ttl: Duration,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// Tokens signed by `key`, from `issuer` for `service`, living `ttl`; refresh tokens live
    /// 30 days.
    pub fn new(key: SigningKey, issuer: &str, service: &str, ttl: Duration) -> Self {
        let refresh_ttl = Duration::from_secs(30 * 24 * 3600);
        Self { key, issuer: issuer.into(), service: service.into(), ttl, refresh_ttl }
    }

    /// The same, with refresh tokens living `ttl`.
    pub fn refresh_lifetime(mut self, ttl: Duration) -> Self {
        self.refresh_ttl = ttl;
        self
    }

    /// The service (the tokens' audience).
    pub fn service(&self) -> &str {
        &self.service
    }

    fn sign<T: Serialize>(&self, claims: &T) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key.kid.clone());
        // Signing with a valid key cannot fail; an empty token would simply be refused.
        jsonwebtoken::encode(&header, claims, &self.key.encoding).unwrap_or_default()
    }

    /// An access token for `subject` (`None`: anonymous) granting `access`.
    pub fn issue(&self, subject: Option<&str>, access: Vec<Access>) -> Issued {
        let iat = now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.unwrap_or("").into(),
            aud: self.service.clone(),
            exp: iat + self.ttl.as_secs(),
            nbf: iat.saturating_sub(1),
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
        };
        Issued {
            token: self.sign(&claims),
            expires_in: self.ttl.as_secs(),
            issued_at: donjon_core::time::rfc3339(UNIX_EPOCH + Duration::from_secs(iat)),
        }
    }

    /// A refresh token for `subject` whose password entry has fingerprint `fp`.
    pub fn issue_refresh(&self, subject: &str, fp: &str) -> String {
        let iat = now();
        self.sign(&RefreshClaims {
            iss: self.issuer.clone(),
            sub: subject.into(),
            aud: self.refresh_audience(),
            exp: iat + self.refresh_ttl.as_secs(),
            nbf: iat.saturating_sub(1),
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            fp: fp.into(),
        })
    }

    fn refresh_audience(&self) -> String {
        format!("{}#refresh", self.service)
    }

    fn validation(&self, audience: &str) -> Validation {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = LEEWAY;
        v
    }

    /// The claims of a valid access token; why not, otherwise.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        jsonwebtoken::decode::<Claims>(token, &self.key.decoding, &self.validation(&self.service))
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }

    /// The subject and fingerprint of a valid refresh token.
    pub fn verify_refresh(&self, token: &str) -> Result<(String, String), String> {
        jsonwebtoken::decode::<RefreshClaims>(
            token,
            &self.key.decoding,
            &self.validation(&self.refresh_audience()),
        )
        .map(|d| (d.claims.sub, d.claims.fp))
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let key = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
        Tokens::new(key, "donjon", "svc", Duration::from_secs(60))
    }

    fn b64(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn forged_and_stale_tokens_are_refused() {
        let t = tokens();
        let good = t.issue(Some("alice"), vec![Access::repository("a", vec!["pull".into()])]);
        assert!(t.verify(&good.token).is_ok());
        let body = good.token.split('.').nth(1).unwrap();
        // alg: none
        let none = format!("{}.{body}.", b64(&serde_json::json!({"alg": "none", "typ": "JWT"})));
        assert!(t.verify(&none).is_err());
        // HS256 with the public key as the secret: algorithm confusion
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &t.verify(&good.token).unwrap(),
            &EncodingKey::from_secret(b"public"),
        )
        .unwrap();
        assert!(t.verify(&hs).is_err());
        // another key
        assert!(tokens().verify(&good.token).is_err());
        // a changed claim under the old signature
        let mut parts: Vec<&str> = good.token.split('.').collect();
        let escalated = b64(
            &serde_json::json!({"iss":"donjon","sub":"alice","aud":"svc","exp": now()+60,"nbf": 0,"iat": 0,"jti":"x","access":[{"type":"repository","name":"b","actions":["push"]}]}),
        );
        parts[1] = &escalated;
        assert!(t.verify(&parts.join(".")).is_err());
        // wrong audience or issuer, expired, not yet valid
        let sign = |c: serde_json::Value| t.sign(&c);
        let c = |iss: &str, aud: &str, exp: u64, nbf: u64| serde_json::json!({"iss": iss, "sub": "a", "aud": aud, "exp": exp, "nbf": nbf, "iat": 0, "jti": "j"});
        let n = now();
        assert!(t.verify(&sign(c("donjon", "svc", n + 60, n - 1))).is_ok());
        assert!(t.verify(&sign(c("donjon", "other", n + 60, n - 1))).is_err());
        assert!(t.verify(&sign(c("evil", "svc", n + 60, n - 1))).is_err());
        assert!(t.verify(&sign(c("donjon", "svc", n - 120, n - 200))).is_err());
        assert!(t.verify(&sign(c("donjon", "svc", n + 600, n + 300))).is_err());
    }

    #[test]
    fn refresh_and_access_tokens_do_not_stand_in_for_each_other() {
        let t = tokens();
        let r = t.issue_refresh("alice", "fp1");
        assert_eq!(t.verify_refresh(&r).unwrap(), ("alice".into(), "fp1".into()));
        assert!(t.verify(&r).is_err());
        let a = t.issue(Some("alice"), vec![]);
        assert!(t.verify_refresh(&a.token).is_err());
    }

    #[tokio::test]
    async fn the_stores_key_is_made_once_and_shared() {
        let store = donjon_core::memory::MemoryStore::default();
        let k1 = SigningKey::shared(&store).await.unwrap();
        let k2 = SigningKey::shared(&store).await.unwrap();
        assert_eq!(k1.kid, k2.kid, "a restart or a replica reads the same key");
        let a = Tokens::new(k1, "i", "s", Duration::from_secs(60));
        let b = Tokens::new(k2, "i", "s", Duration::from_secs(60));
        assert!(b.verify(&a.issue(None, vec![]).token).is_ok(), "and accepts the same tokens");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        std::fs::write(&p, SigningKey::generate_pem().unwrap()).unwrap();
        assert!(SigningKey::load(&p).is_ok());
        std::fs::write(&p, "garbage").unwrap();
        assert!(SigningKey::load(&p).unwrap_err().contains("key.pem"));
        assert!(SigningKey::load(&dir.path().join("none.pem")).unwrap_err().contains("none.pem"));
    }

    #[test]
    fn the_jwks_verifies_the_keys_tokens() {
        let key = SigningKey::generate().unwrap();
        let jwks = key.jwks().to_string();
        let issuer = crate::issuer::TrustedIssuer::new("donjon", "s").jwks(jwks.as_bytes()).unwrap();
        let t = Tokens::new(key, "donjon", "s", Duration::from_secs(60));
        let access = vec![Access::repository("a", vec!["pull".into()])];
        assert_eq!(issuer.verify(&t.issue(Some("u"), access.clone()).token).unwrap().access, access);
    }
}
