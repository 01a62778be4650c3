//! Lossless context paths: file names and symlink targets kept as `String`s, with every
//! byte that is not UTF-8 escaped, so a name Linux allows but UTF-8 does not is copied, not
//! dropped.
//!
//! The escape is NUL followed by the byte as the character of the same value (U+0080 to
//! U+00FF: a byte that is not valid UTF-8 is always 0x80 or above). NUL cannot occur in a
//! Unix file name or symlink target, so the encoding is one-to-one, and a name that is
//! valid UTF-8 is its own encoding: the cache keys of UTF-8 names do not change.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

const ESC: char = '\0';

/// The encoding of raw name bytes.
pub fn encode(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(ESC);
            out.push(char::from(b));
        }
    }
    Cow::Owned(out)
}

/// The raw bytes of an encoded name.
pub fn decode(s: &str) -> Cow<'_, [u8]> {
    if !s.contains(ESC) {
        return Cow::Borrowed(s.as_bytes());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == ESC {
            // Only `encode` writes NUL, always followed by a byte below 256.
            if let Some(b) = chars.next() {
                out.push(u32::from(b) as u8);
            }
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    Cow::Owned(out)
}

/// An encoded name as an `OsStr` path component or path.
pub fn to_os(s: &str) -> Cow<'_, OsStr> {
    match decode(s) {
        Cow::Borrowed(b) => Cow::Borrowed(OsStr::from_bytes(b)),
        Cow::Owned(v) => Cow::Owned(std::os::unix::ffi::OsStringExt::from_vec(v)),
    }
}

/// An encoded name for messages (bytes that are not UTF-8 shown as U+FFFD).
pub fn display(s: &str) -> Cow<'_, str> {
    match decode(s) {
        Cow::Borrowed(b) => String::from_utf8_lossy(b),
        Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
    }
}

/// The units a pattern matches against: a character, or a raw byte (above every character)
/// for an escaped one, so that `?` and `*` treat a byte that is not UTF-8 as one character,
/// as Go's regexp (and so Docker's matcher) does.
pub(crate) fn units(s: &str) -> Vec<u32> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == ESC {
            if let Some(b) = chars.next() {
                out.push(RAW_BASE + u32::from(b));
            }
        } else {
            out.push(u32::from(c));
        }
    }
    out
}

/// The first unit value used for raw bytes (one past the last Unicode scalar value).
pub(crate) const RAW_BASE: u32 = 0x11_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_utf8_is_unchanged() {
        for raw in [
            &b"plain.txt"[..],
            "\u{e9}t\u{e9}".as_bytes(),
            b"n\xffame",
            b"\xc3",
            b"a\xc3\xa9\xfe\x80z",
        ] {
            let enc = encode(raw);
            assert_eq!(&*decode(&enc), raw, "{raw:?}");
            if let Ok(s) = std::str::from_utf8(raw) {
                assert_eq!(enc, s);
            } else {
                assert!(enc.contains('\0'));
            }
        }
        assert_ne!(encode(b"\xff"), encode("\u{ff}".as_bytes()));
        assert_eq!(units(&encode(b"a\xff")), [97, RAW_BASE + 0xff]);
        assert_eq!(display(&encode(b"a\xff")), "a\u{fffd}");
    }
}
