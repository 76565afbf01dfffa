//! Any JSON value as any enabled plugin's `config` is accepted (and then accepted again as a
//! patch to itself) or refused with field errors — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [which, json @ ..] = data else { return };
    let names = gatehouse_shared::schema::enabled_names();
    let Some(schema) = gatehouse_shared::schema::enabled_plugin(names[usize::from(*which) % names.len()]) else {
        return;
    };
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(json) else { return };
    if let Ok(stored) = schema.validate_create(Some(&config)) {
        let _ = schema.validate_update(&stored, Some(&config));
    }
});
