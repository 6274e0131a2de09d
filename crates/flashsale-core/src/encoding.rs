//! How bytes are written out for people and HTTP: lower-case hex, as digests and seeds are shown
//! (ETags, the draw's seed and its commitment, request fingerprints, asset versions).

use std::fmt::Write;

/// `bytes` as lower-case hex, two digits per byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        write!(out, "{byte:02x}").expect("writing to a String cannot fail");
    }
    out
}

/// The bytes `text` spells in hex (either case, two digits per byte), or `None` if it is not
/// hex: how a verifier reads back what [`hex`] wrote.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(digits, 16).ok().filter(|_| pair.iter().all(u8::is_ascii_hexdigit))
        })
        .collect()
}

/// The 32 bytes (a SHA-256 digest, a key) that `text` spells in hex, or `None` if it is not
/// exactly 64 hex digits.
pub fn unhex32(text: &str) -> Option<[u8; 32]> {
    unhex(text).and_then(|bytes| bytes.try_into().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_become_two_lower_case_digits_each() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn hex_reads_back_and_refuses_what_is_not_hex() {
        assert_eq!(unhex("000fABff"), Some(vec![0x00, 0x0f, 0xab, 0xff]));
        assert_eq!(unhex(""), Some(vec![]));
        assert_eq!(unhex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(unhex32(&"ab".repeat(31)), None);
        for bad in ["0", "0g", "+1", " 1", "0x"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }
}
