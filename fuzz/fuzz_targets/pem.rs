//! PEM the Admin API accepts from clients (a certificate and its key, a jwt RSA public key):
//! any text is accepted or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (cert, key) = text.split_once("\u{0}").unwrap_or((text, text));
    let _ = gatehouse_shared::entity::check_key_pair(cert, key);
    let _ = gatehouse_shared::credential::rsa_public_key_der(text);
});
