//! The validation layer's parsers: `AdmissionReview` bodies and the objects in them, image
//! references and policy prefixes. Nothing panics; an image that does not parse is never
//! allowed; normal forms parse back to themselves; a mutated reference is allowed through
//! the same checks and a second mutation leaves it alone.
#![no_main]

use std::sync::OnceLock;

use donjon_core::image_ref::ImageRef;
use donjon_validate::policy::normal_prefix;
use donjon_validate::review::{images, Review};
use donjon_validate::{MutateConfig, Mutator, Policy, ValidationConfig};
use libfuzzer_sys::fuzz_target;

fn policy() -> &'static (Policy, Mutator) {
    static P: OnceLock<(Policy, Mutator)> = OnceLock::new();
    P.get_or_init(|| {
        let local = vec!["registry.example".to_string()];
        let config = ValidationConfig {
            allow: vec!["registry.example/".into(), "quay.io/".into()],
            deny: vec!["docker.io/library/nginx".into()],
            ..Default::default()
        };
        let mutate = MutateConfig { hosts: vec!["docker.io".into(), "quay.io".into()], ..Default::default() };
        (Policy::new(&config, &local).expect("policy"), Mutator::new(&mutate, &local).expect("mutator"))
    })
}

fn check_image(s: &str) {
    let (policy, mutator) = policy();
    let parsed = s.parse::<ImageRef>();
    let d = policy.decide(s);
    match &parsed {
        Ok(r) => {
            let normal = r.to_string();
            let again: ImageRef = normal.parse().expect("a normal form parses");
            assert_eq!(again.to_string(), normal, "normal forms are fixed points");
        }
        Err(_) => assert!(!d.allowed, "{s:?} does not parse yet was allowed"),
    }
    if let Some(m) = mutator.rewrite(s) {
        assert!(m.parse::<ImageRef>().is_ok(), "{m:?} from {s:?} does not parse");
        assert_eq!(mutator.rewrite(&m), None, "{m:?} mutated twice");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(review) = Review::parse(data) {
        if let Some(object) = &review.object {
            if let Ok(found) = images(&review.kind, object) {
                for at in &found {
                    check_image(&at.image);
                }
                let _ = policy().1.patch(&found);
            }
        }
        let _ = review.answer(false, Some((403, "x")), None);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        check_image(s);
        if let Ok(p) = normal_prefix(s) {
            assert_eq!(normal_prefix(&p).as_deref(), Ok(p.as_str()), "{s:?}: prefixes normalise once");
        }
    }
});
