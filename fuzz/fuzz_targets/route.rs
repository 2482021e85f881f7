//! The path parser: any path parses to a route, to "not a registry path", or to an OCI error;
//! never a panic. A parsed route's names, tags and digests satisfy the spec's grammar again.
#![no_main]

use donjon_core::route::{parse, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    if let Ok(Some(route)) = parse(path) {
        let names = match &route {
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => vec![name],
            _ => vec![],
        };
        for n in names {
            assert!(n.as_str().parse::<donjon_core::Name>().is_ok(), "{n:?} from {path:?}");
        }
    }
});
