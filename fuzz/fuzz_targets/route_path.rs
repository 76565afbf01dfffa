//! A route path as a client may store it (prefix or regex): the Admin API's check and the data
//! plane's compile agree on what they accept, and neither panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if gatehouse_shared::validate::check_route_path(path).is_ok() {
        if let Err(e) = gatehouse_data_plane::router::PathRule::parse(path) {
            panic!("the Admin API stores {path:?}, the data plane cannot compile it: {e}");
        }
    }
});
