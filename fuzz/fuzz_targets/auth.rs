//! The auth layer's parsers, from bytes a client controls: htpasswd lines, scopes (which print
//! back as themselves), JWTs (never accepted unless signed by the key, donjon's own or another
//! token server's), JWK Sets and certificate bundles, the `Authorization` header and the token
//! endpoint's query and form, the `Host` header (a challenge's realm names one of the
//! registry's names, whatever it says). Every answer is one of the statuses the layer gives,
//! never a panic.
#![no_main]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use donjon_auth::issuer::TrustedIssuer;
use donjon_auth::rules::Rules;
use donjon_auth::scope::Scope;
use donjon_auth::token::{SigningKey, Tokens};
use donjon_auth::users::{Htpasswd, Users};
use donjon_auth::AuthLayer;
use donjon_core::{Body, ClientConn, RouteLayer};
use libfuzzer_sys::fuzz_target;
use tower::{Service, ServiceBuilder, ServiceExt};

struct World {
    rt: tokio::runtime::Runtime,
    tokens: Tokens,
    issuer: TrustedIssuer,
    layers: [AuthLayer; 2],
}

/// RFC 7517's example P-256 key.
const JWKS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "1",
  "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
  "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let pem = SigningKey::generate_pem().expect("a key");
        let key = SigningKey::from_pem(pem.as_bytes()).expect("a key");
        let tokens = Tokens::new(key, "donjon", "fuzz", Duration::from_secs(60));
        let users = Users::new(None, Some(("u", "p"))).expect("users");
        let layer = AuthLayer::new(users, Rules::authenticated_may_do_anything(), tokens.clone())
            .hosts(["reg.example", "reg.internal:5000"]);
        let issuer = TrustedIssuer::new("server", "fuzz").jwks(JWKS.as_bytes()).expect("the JWKS");
        let external = AuthLayer::external(issuer.clone(), "https://auth.example/token");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        World { rt, tokens, issuer, layers: [layer, external] }
    })
}

fuzz_target!(|s: &str| {
    let w = world();
    let _ = Htpasswd::parse(s, "fuzz");
    if let Ok(scope) = s.parse::<Scope>() {
        let again: Scope = scope.to_string().parse().expect("a scope prints as one");
        assert_eq!(again, scope);
    }
    assert!(w.tokens.verify(s).is_err(), "no token is valid that the key did not sign");
    assert!(w.tokens.verify_refresh(s).is_err());
    assert!(w.issuer.verify(s).is_err(), "nor one the other server's key did not sign");
    let _ = TrustedIssuer::new("i", "s").jwks(s.as_bytes());
    let _ = TrustedIssuer::new("i", "s").root_cert_bundle(s.as_bytes());

    let mut parts = s.splitn(3, '\n');
    let (auth, query, body) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // A new address each time, so the failed-login limiter does not answer everything.
    static N: AtomicU32 = AtomicU32::new(1);
    let peer = SocketAddr::from((N.fetch_add(1, Ordering::Relaxed).to_be_bytes(), 1));
    let requests = [
        ("GET", format!("/v2/token?{query}")),
        ("POST", "/v2/token".to_string()),
        ("GET", "/v2/a/manifests/latest".to_string()),
        ("PUT", "/v2/a/manifests/latest".to_string()),
        ("GET", "/v2/_catalog".to_string()),
    ];
    for ((method, uri), layer) in requests.iter().flat_map(|r| w.layers.iter().map(move |l| (r, l))) {
        let mut b = http::Request::builder().method(*method).uri(uri.as_str());
        if http::HeaderValue::from_str(auth).is_ok() {
            b = b.header("authorization", auth).header("host", auth);
        }
        let Ok(mut req) = b.body(Body::from(body.to_string())) else { continue };
        req.extensions_mut().insert(ClientConn { peer, tls: false, local: None });
        let mut svc = ServiceBuilder::new().layer(RouteLayer::new()).layer(layer.clone()).service(
            tower::service_fn(|_req: http::Request<Body>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
            }),
        );
        let resp = w.rt.block_on(async { svc.ready().await.expect("ready").call(req).await.expect("infallible") });
        assert!([200, 400, 401, 403, 405, 429].contains(&resp.status().as_u16()), "{}", resp.status());
        if let Some(c) = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()) {
            // The external layer's realm is the fixed https://auth.example/token.
            if c.starts_with("Bearer") && !c.starts_with("Bearer realm=\"https://auth.example/token\"") {
                let ok = ["reg.example/", "reg.example:", "reg.internal:5000/"]
                    .iter()
                    .any(|h| c.starts_with(&format!("Bearer realm=\"http://{h}")));
                assert!(ok, "a realm named a host that is not the registry's: {c}");
            }
        }
    }
});
