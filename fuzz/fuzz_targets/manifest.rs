//! Manifest and index validation: any bytes with any Content-Type are accepted or refused with
//! MANIFEST_INVALID, never a panic; what is accepted nests no deeper than clients decode.
#![no_main]

use donjon_core::manifest::{self, json_depth, MAX_JSON_DEPTH};
use libfuzzer_sys::fuzz_target;

const TYPES: [Option<&str>; 5] = [
    None,
    Some(manifest::OCI_MANIFEST),
    Some(manifest::OCI_INDEX),
    Some(manifest::DOCKER_MANIFEST),
    Some("application/json"),
];

fuzz_target!(|input: (u8, &[u8])| {
    let (t, bytes) = input;
    let content_type = TYPES[usize::from(t) % TYPES.len()];
    if let Ok(m) = manifest::parse(bytes, content_type) {
        assert!(json_depth(bytes, MAX_JSON_DEPTH) <= MAX_JSON_DEPTH);
        assert!(manifest::is_manifest_media_type(&m.media_type), "{:?}", m.media_type);
        let _ = manifest::media_type_of(bytes);
        let _ = manifest::subject_of(bytes);
    }
});
