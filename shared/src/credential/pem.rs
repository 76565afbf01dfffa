//! RSA public keys in PEM, as jwt credentials carry them: either a SubjectPublicKeyInfo
//! (`-----BEGIN PUBLIC KEY-----`, algorithm rsaEncryption) or a bare PKCS#1 key
//! (`-----BEGIN RSA PUBLIC KEY-----`). Parsing yields the PKCS#1 `RSAPublicKey` DER, which is
//! what RSA signature verification (ring's `RSA_PKCS1_*`) takes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// DER tags used below.
const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const NULL: u8 = 0x05;

/// 1.2.840.113549.1.1.1 (rsaEncryption), DER-encoded contents.
const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The PKCS#1 `RSAPublicKey` DER of a PEM RSA public key, or `None` when `pem` is not one
/// (another PEM type, bad base64, a non-RSA key, malformed DER, trailing data).
pub fn rsa_public_key_der(pem: &str) -> Option<Vec<u8>> {
    if let Some(der) = pem_block(pem, "PUBLIC KEY") {
        let key = spki_rsa_key(&der)?;
        return rsa_public_key(key).then(|| key.to_vec());
    }
    let der = pem_block(pem, "RSA PUBLIC KEY")?;
    rsa_public_key(&der).then_some(der)
}

/// The base64 body between `-----BEGIN <label>-----` and `-----END <label>-----`, decoded;
/// only whitespace may surround the block.
fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = pem.trim().strip_prefix(&begin)?.strip_suffix(&end)?;
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD.decode(compact).ok().filter(|d| !d.is_empty())
}

/// Splits one DER element off `input`: (tag, contents, rest). Definite lengths only.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// One element that must have `tag` and be all of `input`.
fn only(input: &[u8], tag: u8) -> Option<&[u8]> {
    match element(input)? {
        (t, contents, []) if t == tag => Some(contents),
        _ => None,
    }
}

/// The RSAPublicKey inside a SubjectPublicKeyInfo whose algorithm is rsaEncryption.
fn spki_rsa_key(der: &[u8]) -> Option<&[u8]> {
    let spki = only(der, SEQUENCE)?;
    let (tag, algorithm, rest) = element(spki)?;
    if tag != SEQUENCE {
        return None;
    }
    let (oid_tag, oid, params) = element(algorithm)?;
    if oid_tag != OID || oid != RSA_ENCRYPTION {
        return None;
    }
    // The parameters are NULL, or absent in some encoders.
    if !params.is_empty() && !only(params, NULL)?.is_empty() {
        return None;
    }
    let bits = only(rest, BIT_STRING)?;
    match bits.split_first() {
        Some((0, key)) => Some(key),
        _ => None,
    }
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`, both positive.
fn rsa_public_key(der: &[u8]) -> bool {
    let Some(fields) = only(der, SEQUENCE) else { return false };
    let Some((INTEGER, modulus, rest)) = element(fields) else { return false };
    let Some(exponent) = only(rest, INTEGER) else { return false };
    positive(modulus) && positive(exponent)
}

fn positive(int: &[u8]) -> bool {
    match int {
        [] => false,
        [first, ..] if first & 0x80 != 0 => false,
        _ => int.iter().any(|b| *b != 0),
    }
}
