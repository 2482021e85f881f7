//! The proxy layer's parsers, from bytes an upstream or a client controls: `WWW-Authenticate`
//! challenges, the `registry_proxies` section, pull-through names built from `f/<host>/…`
//! and `?ns=<host>`, and the choice of upstream for them. None may panic; a name made from
//! them is always a valid repository name under `f/`; no client-named host resolves to a
//! private IP literal, and an upstream without an entry trusts no URL (a redirect or realm
//! from it is always held to public addresses).
#![no_main]

use donjon_core::mirror::{cached_name, split, Mirrors};
use donjon_core::Name;
use donjon_proxy::client::{parse_challenge, Challenge};
use donjon_proxy::upstream::{is_public, Upstreams};
use donjon_proxy::ProxyConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Some(Challenge::Bearer { realm, .. }) = parse_challenge(s) {
        assert!(!realm.is_empty());
    }
    if let Ok(c) = serde_yaml::from_str::<ProxyConfig>(s) {
        let _ = c.upstreams();
    }
    let (host, repo) = s.split_once('/').unwrap_or((s, "x"));
    if let Ok(name) = cached_name(host, repo) {
        let (h, _) = split(&name).expect("a cached name splits");
        assert!(name.as_str().starts_with("f/"));
        if let Ok(up) = Upstreams::default().resolve(h, repo) {
            if let Ok(ip) = up.base.host().unwrap_or("").trim_matches(['[', ']']).parse() {
                assert!(is_public(ip), "{ip} reached without configuration");
            }
            if let Ok(uri) = s.parse::<http::Uri>() {
                assert!(!up.trusts(&uri), "an upstream without an entry trusts {uri}");
            }
        }
    }
    if let Ok(name) = repo.parse::<Name>() {
        if let Some(n) = Mirrors::any().rewrite(host, &name) {
            assert!(split(&n).is_some());
        }
    }
});
