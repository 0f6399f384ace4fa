//! Byte classes of the HTTP and URI grammars, as lookup tables built at compile time.

/// A 256-entry table: `true` for the alphanumerics and the listed punctuation bytes.
const fn alphanumeric_and(punctuation: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = (byte as u8).is_ascii_alphanumeric();
        byte += 1;
    }
    let mut index = 0;
    while index < punctuation.len() {
        table[punctuation[index] as usize] = true;
        index += 1;
    }
    table
}

/// Bytes of a token (RFC 9110 `tchar`).
pub const TCHAR: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");

/// Bytes of a reg-name: unreserved, sub-delims and `%` (pct-encoded, RFC 3986 §3.2.2; the
/// two hex digits after `%` are checked by the caller).
pub const REG_NAME: [bool; 256] = alphanumeric_and(b"-._~%!$&'()*+,;=");

/// Bytes that may appear in a request target (RFC 3986 §2: unreserved, reserved and `%`).
/// Not: controls, space, bytes above 0x7F, and `"<>\^`{|}`.
pub const URI: [bool; 256] = alphanumeric_and(b"-._~:/?#[]@!$&'()*+,;=%");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_hold_exactly_their_grammar() {
        assert_eq!(TCHAR.iter().filter(|&&b| b).count(), 62 + 15);
        assert_eq!(REG_NAME.iter().filter(|&&b| b).count(), 62 + 16);
        assert!(!TCHAR[usize::from(b' ')] && !TCHAR[usize::from(b':')] && !TCHAR[0x80]);
        assert!(!REG_NAME[usize::from(b'/')] && !REG_NAME[usize::from(b'@')]);
        assert_eq!(URI.iter().filter(|&&b| b).count(), 62 + 23);
        assert!(!URI[usize::from(b'\\')] && !URI[usize::from(b'<')] && !URI[0xc3]);
    }
}
