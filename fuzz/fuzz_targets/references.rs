//! Names, tags, digests and references: whatever parses prints back as itself, and parses again.
#![no_main]

use donjon_core::{Digest, Name, Reference, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(n) = s.parse::<Name>() {
        assert_eq!(n.as_str(), s);
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.as_str(), s);
        assert!(t.as_str().len() <= 128);
    }
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.as_str(), s);
        assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d.clone()));
        assert_eq!(format!("{}:{}", d.algorithm().as_str(), d.hex()), s);
    }
    if let Ok(r) = s.parse::<Reference>() {
        let again: Reference = r.to_string().parse().expect("a reference prints as one");
        assert_eq!(again.to_string(), r.to_string());
    }
    let _ = s.parse::<donjon_core::manifest::Platform>();
});
