//! A declarative file (YAML or JSON, any bytes) is either refused with an error or turned into
//! a configuration set — never a panic. Each input that parses is checked entity by entity by
//! the Admin API's rules against a scratch store, as `gatehouse-dp --declarative-config` does.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(doc) = gatehouse_control_plane::declarative::parse(text) else { return };
    let _ = runtime().block_on(gatehouse_control_plane::declarative::config_set(&doc, 1));
});
