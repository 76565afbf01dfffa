//! The proxy's chunked-body scanner: never panics, and gives the same end and the same data
//! however the bytes are split across reads (the first byte picks the split).
#![no_main]

use gatehouse_data_plane::codec::chunked::ChunkedEnd;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else { return };
    let split = usize::from(split).min(body.len());

    let mut whole = ChunkedEnd::default();
    let mut whole_data = Vec::new();
    let whole_end = whole.decode(body, &mut whole_data);

    let mut parts = ChunkedEnd::default();
    let mut parts_data = Vec::new();
    let (a, b) = body.split_at(split);
    let parts_end = match parts.decode(a, &mut parts_data) {
        Ok(Some(n)) => Ok(Some(n)),
        Ok(None) => parts.decode(b, &mut parts_data).map(|end| end.map(|n| n + a.len())),
        Err(e) => Err(e),
    };
    assert_eq!(whole_end, parts_end, "end differs with the split at {split}");
    if whole_end.is_ok() {
        assert_eq!(whole_data, parts_data, "data differs with the split at {split}");
    }
});
