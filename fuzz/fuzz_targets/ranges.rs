//! `Range` and `Content-Range`: a resolved range lies inside the blob and is not empty; a
//! content range's length never wraps.
#![no_main]

use donjon_core::response::parse_content_range;
use donjon_core::store::RangeSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64)| {
    let (value, size) = input;
    if let Some(spec) = RangeSpec::parse(value) {
        if let Some(r) = spec.resolve(size) {
            assert!(r.start <= r.end && r.end <= size, "{value:?} on {size}: {r:?}");
            assert!(r.start < r.end || size == 0, "{value:?} on {size}: empty range {r:?}");
        }
    }
    if let Some((a, b)) = parse_content_range(value) {
        assert!(a <= b);
        assert!(b.checked_sub(a).and_then(|n| n.checked_add(1)).is_some(), "{value:?}");
    }
});
