//! Request targets (RFC 9112 §3.2) and authorities (RFC 3986 §3.2): the target split into
//! path and query as indexes, never pointers, and the Host / authority grammar.

use super::chars::{REG_NAME, URI};
use super::error::ErrorKind;

/// Where a request's path comes from: a range of the target, or a fixed string the target
/// implies (absolute-form with an empty path means `/`). Never a pointer: a consumer can only
/// index the target with it, so nothing derived from it can point outside the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathPart {
    /// `target[start..end]`.
    Range(usize, usize),
    /// Absolute-form without a path: `/`.
    Root,
    /// Asterisk-form (`OPTIONS *`): `*`.
    Asterisk,
}

impl PathPart {
    /// The path as text, given the target it was split from.
    pub fn resolve<'t>(self, target: &'t str) -> &'t str {
        match self {
            PathPart::Range(start, end) => &target[start..end],
            PathPart::Root => "/",
            PathPart::Asterisk => "*",
        }
    }
}

/// A request target split by [`split_target`]: indexes into the target, never pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetParts {
    pub path: PathPart,
    /// `target[start..end]`: the query, without its `?`.
    pub query: Option<(usize, usize)>,
    /// Absolute-form: `target[start..end]` is the authority the Host header must match.
    pub authority: Option<(usize, usize)>,
}

impl TargetParts {
    pub fn path<'t>(&self, target: &'t str) -> &'t str {
        self.path.resolve(target)
    }

    pub fn query<'t>(&self, target: &'t str) -> Option<&'t str> {
        self.query.map(|(start, end)| &target[start..end])
    }
}

/// Splits a request target (RFC 9112 §3.2): origin-form (`/p?q`); absolute-form
/// (`http://host/p?q`, an empty path is `/`, the authority is returned to be checked against
/// Host); asterisk-form only for OPTIONS; authority-form only for CONNECT, which is not
/// implemented ([`ErrorKind::ConnectNotSupported`]). A fragment is not part of any form: 400.
pub fn split_target(method: &str, target: &str) -> Result<TargetParts, ErrorKind> {
    if method == "CONNECT" {
        return Err(if valid_authority(target.as_bytes()) && !target.is_empty() {
            ErrorKind::ConnectNotSupported
        } else {
            ErrorKind::BadTarget
        });
    }
    // Only URI characters (RFC 9112 §3: anything else SHOULD be 400; a backslash or raw
    // UTF-8 is read differently by different back ends), `%` only as `%HEXDIG HEXDIG`, and
    // never a fragment; one pass, which also finds the query.
    let bytes = target.as_bytes();
    let mut first_question = None;
    for (at, &byte) in bytes.iter().enumerate() {
        if !URI[usize::from(byte)] || byte == b'#' || (byte == b'%' && !escape_at(bytes, at)) {
            return Err(ErrorKind::BadTarget);
        }
        if byte == b'?' && first_question.is_none() {
            first_question = Some(at);
        }
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(TargetParts { path: PathPart::Asterisk, query: None, authority: None })
        } else {
            Err(ErrorKind::BadTarget)
        };
    }
    let (start, authority) = if target.starts_with('/') {
        let (path_len, query) = match first_question {
            Some(at) => (at, Some((at + 1, target.len()))),
            None => (target.len(), None),
        };
        let path = if path_len == 0 { PathPart::Root } else { PathPart::Range(0, path_len) };
        return Ok(TargetParts { path, query, authority: None });
    } else {
        let scheme_len = scheme_length(target).ok_or(ErrorKind::BadTarget)?;
        let rest = &target[scheme_len..];
        let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest.as_bytes()[..authority_len];
        if authority.is_empty() || !valid_authority(authority) {
            return Err(ErrorKind::BadTarget);
        }
        (scheme_len + authority_len, Some((scheme_len, scheme_len + authority_len)))
    };
    let rest = &target[start..];
    let (path_len, query) = match rest.find('?') {
        Some(at) => (at, Some((start + at + 1, target.len()))),
        None => (rest.len(), None),
    };
    let path =
        if path_len == 0 { PathPart::Root } else { PathPart::Range(start, start + path_len) };
    Ok(TargetParts { path, query, authority })
}

/// The `%` at `at` starts `%HEXDIG HEXDIG` (RFC 3986 §2.1).
fn escape_at(bytes: &[u8], at: usize) -> bool {
    matches!(bytes.get(at + 1..at + 3), Some([high, low])
        if high.is_ascii_hexdigit() && low.is_ascii_hexdigit())
}

/// IPvFuture (RFC 3986 §3.2.2): `v` HEXDIG+ `.` ( unreserved / sub-delims / `:` )+.
fn ip_future(literal: &[u8]) -> bool {
    let Some((b'v' | b'V', rest)) = literal.split_first() else { return false };
    let Some(dot) = rest.iter().position(|&b| b == b'.') else { return false };
    let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
    !version.is_empty()
        && version.iter().all(u8::is_ascii_hexdigit)
        && !tail.is_empty()
        && tail.iter().all(|&b| b != b'%' && (REG_NAME[usize::from(b)] || b == b':'))
}

/// Length of a leading `http://` or `https://` (any case).
fn scheme_length(target: &str) -> Option<usize> {
    ["http://", "https://"].into_iter().find_map(|scheme| {
        let prefix = target.get(..scheme.len())?;
        prefix.eq_ignore_ascii_case(scheme).then_some(scheme.len())
    })
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2; userinfo is not accepted). Empty is valid: HTTP/1.1
/// requires an empty Host when the target has no authority.
pub fn valid_authority(value: &[u8]) -> bool {
    let port = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else { return false };
        let literal = &value[1..close];
        let ipv6 = literal.iter().all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        let literal_ok = !literal.is_empty() && (ipv6 || ip_future(literal));
        if !literal_ok {
            return false;
        }
        &value[close + 1..]
    } else {
        // One pass: reg-name bytes up to the first `:`, each `%` an escape (its two hex digits
        // are never a `:`, so they lie in the host).
        let mut colon = value.len();
        for (at, &byte) in value.iter().enumerate() {
            if byte == b':' {
                colon = at;
                break;
            }
            if !REG_NAME[usize::from(byte)] || (byte == b'%' && !escape_at(value, at)) {
                return false;
            }
        }
        &value[colon..]
    };
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_indexes_of_the_target() {
        let split = |method, target| {
            split_target(method, target).map(|p| (p.path(target), p.query(target)))
        };
        assert_eq!(split("GET", "/a?b=1"), Ok(("/a", Some("b=1"))));
        assert_eq!(split("GET", "http://h/x"), Ok(("/x", None)));
        assert_eq!(split("GET", "http://h"), Ok(("/", None)));
        assert_eq!(split("GET", "http://h?/p"), Ok(("/", Some("/p"))));
        assert_eq!(split("GET", "HTTPS://h:1/?"), Ok(("/", Some(""))));
        assert_eq!(split("OPTIONS", "*"), Ok(("*", None)));
        assert_eq!(split("GET", "*"), Err(ErrorKind::BadTarget));
        assert_eq!(split("GET", "/a#b"), Err(ErrorKind::BadTarget));
        assert_eq!(split("GET", "/caf\u{e9}"), Err(ErrorKind::BadTarget));
        assert_eq!(split("GET", "/a\\b"), Err(ErrorKind::BadTarget));
        assert_eq!(split("GET", "/a%2"), Err(ErrorKind::BadTarget));
        assert_eq!(split("GET", "/a%2F?q=%41"), Ok(("/a%2F", Some("q=%41"))));
        assert_eq!(split("GET", "http://"), Err(ErrorKind::BadTarget));
        assert_eq!(split("GET", "h:443"), Err(ErrorKind::BadTarget));
        assert_eq!(split("CONNECT", "h:443"), Err(ErrorKind::ConnectNotSupported));
        assert_eq!(split("CONNECT", "/"), Err(ErrorKind::BadTarget));
        let parts = split_target("GET", "http://h:8/p").unwrap();
        assert_eq!(parts.authority, Some((7, 10)));
    }

    #[test]
    fn authorities() {
        for good in [
            "",
            "a",
            "a.b:80",
            "[::1]",
            "[::1]:8080",
            "1.2.3.4:1",
            "a%20b",
            "[v1.x]",
            "[V1f.a:b]:1",
        ] {
            assert!(valid_authority(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b", "a/b", "a:1:2", "a:b", "[::1", "[]", "u@h", "[::1]x", "h\x00", "a%zz", "a%2",
            "[v.x]", "[v1.]",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad:?}");
        }
    }
}
