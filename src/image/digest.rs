//! Content digests: the validated `sha256:<hex>` name of every blob, layer and image.
//!
//! A [`Digest`] can only hold `sha256:` followed by exactly 64 lowercase hex
//! digits, so it is safe to build a path from (`blobs/sha256/<hex>`): a
//! string such as `sha256:../../x`, an empty one or an unknown algorithm never
//! becomes a `Digest`. Error messages start with the wording of
//! `github.com/opencontainers/go-digest`, which Docker prints for the same
//! inputs.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The only digest algorithm kiln stores content under.
pub const SHA256: &str = "sha256";

/// Number of hex digits in a sha256 digest.
const SHA256_HEX_LEN: usize = 64;

/// Length of the short form shown to users (Docker's `docker images` column).
const SHORT_LEN: usize = 12;

/// Longest excerpt of a rejected input quoted in an error message.
const MAX_QUOTED: usize = 100;

/// A validated content digest: `sha256:` and 64 lowercase hex digits.
///
/// Ordering and equality are those of the string form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// `sha256:<64 lowercase hex>`; validated on construction.
    full: String,
}

/// Why a string is not a [`Digest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not `algorithm:encoded`, or the encoded part holds characters other
    /// than lowercase hex digits.
    #[error("invalid checksum digest format: expected sha256:<64 lowercase hex digits>, found {input:?}")]
    InvalidFormat {
        /// The rejected input (truncated).
        input: String,
    },
    /// A well-formed digest with an algorithm other than sha256.
    #[error("unsupported digest algorithm {algorithm:?} in {input:?}: kiln supports sha256 only")]
    UnsupportedAlgorithm {
        /// The algorithm named by the input (truncated).
        algorithm: String,
        /// The rejected input (truncated).
        input: String,
    },
    /// A sha256 digest whose hex part is not 64 digits long.
    #[error(
        "invalid checksum digest length: sha256 needs 64 hex digits, found {found} in {input:?}"
    )]
    InvalidLength {
        /// Number of characters after `sha256:`.
        found: usize,
        /// The rejected input (truncated).
        input: String,
    },
}

/// Shortens untrusted input before it is quoted in an error message.
fn quoted(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        return s.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// OCI `algorithm ::= algorithm-component (algorithm-separator algorithm-component)*`.
fn is_oci_algorithm(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// OCI `encoded ::= [a-zA-Z0-9=_-]+`.
fn is_oci_encoded(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`; anything else is an error.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, encoded)) = s.split_once(':') else {
            return Err(DigestError::InvalidFormat { input: quoted(s) });
        };
        if algorithm != SHA256 {
            if is_oci_algorithm(algorithm) && is_oci_encoded(encoded) {
                return Err(DigestError::UnsupportedAlgorithm {
                    algorithm: quoted(algorithm),
                    input: quoted(s),
                });
            }
            return Err(DigestError::InvalidFormat { input: quoted(s) });
        }
        Digest::from_sha256_hex(encoded).map_err(|e| match e {
            // Report the whole input, not only the hex part.
            DigestError::InvalidLength { found, .. } => DigestError::InvalidLength {
                found,
                input: quoted(s),
            },
            _ => DigestError::InvalidFormat { input: quoted(s) },
        })
    }

    /// Builds a digest from the 64 lowercase hex digits of a sha256 sum
    /// (the form used for image IDs and blob file names).
    pub fn from_sha256_hex(hex: &str) -> Result<Digest, DigestError> {
        if !is_lower_hex(hex) {
            return Err(DigestError::InvalidFormat { input: quoted(hex) });
        }
        if hex.len() != SHA256_HEX_LEN {
            return Err(DigestError::InvalidLength {
                found: hex.len(),
                input: quoted(hex),
            });
        }
        Ok(Digest {
            full: format!("{SHA256}:{hex}"),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// Hashes everything `reader` yields; returns the digest and the byte count.
    pub fn of_reader<R: Read>(mut reader: R) -> io::Result<(Digest, u64)> {
        let mut w = Sha256Writer::sink();
        io::copy(&mut reader, &mut w)?;
        let (_, digest, size) = w.finish();
        Ok((digest, size))
    }

    /// Finishes a sha256 hasher into a digest.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            full: format!(
                "{SHA256}:{}",
                crate::common::hex::encode(&hasher.finalize())
            ),
        }
    }

    /// The algorithm, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        SHA256
    }

    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> &str {
        &self.full[SHA256.len() + 1..]
    }

    /// The first 12 hex digits, as Docker shows image IDs.
    pub fn short(&self) -> &str {
        &self.hex()[..SHORT_LEN]
    }

    /// The full `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The same digest as oci-spec's type, for descriptors.
    pub fn to_oci(&self) -> oci_spec::image::Digest {
        let hex = oci_spec::image::Sha256Digest::from_str(self.hex())
            .expect("a validated sha256 hex string is a valid oci-spec Sha256Digest");
        oci_spec::image::Digest::from(hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.full)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;

    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        Digest::parse(d.as_ref())
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        d.to_oci()
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes (sha256) and counts every byte it passes on to `inner`.
pub struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W> Sha256Writer<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Sha256Writer {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Returns the wrapped writer, the digest and the number of bytes written.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.written)
    }
}

impl Sha256Writer<io::Sink> {
    /// A hasher that keeps no bytes.
    pub fn sink() -> Self {
        Sha256Writer::new(io::sink())
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Hash only what the inner writer accepted, so the digest always
        // describes the bytes that were actually written.
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_valid_sha256() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(
            d.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of_bytes(b""));
    }

    #[test]
    fn rejects_invalid_digests() {
        enum Kind {
            Format,
            Algorithm,
            Length,
        }
        let hex64 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let upper = format!("sha256:{}", hex64.to_uppercase());
        let long = format!("sha256:{hex64}0");
        let sha512 = format!("sha512:{hex64}{hex64}");
        let cases: Vec<(&str, Kind)> = vec![
            ("", Kind::Format),
            (":", Kind::Format),
            ("sha256", Kind::Format),
            ("sha256:", Kind::Length),
            (hex64, Kind::Format),
            ("sha256:../../x", Kind::Format),
            ("sha256:../../../../etc/passwd", Kind::Format),
            ("sha256:abc", Kind::Length),
            (&long, Kind::Length),
            (&upper, Kind::Format),
            ("SHA256:abc", Kind::Format),
            (&sha512, Kind::Algorithm),
            ("md5:d41d8cd98f00b204e9800998ecf8427e", Kind::Algorithm),
            ("sha256 :abc", Kind::Format),
            ("../x:abc", Kind::Format),
        ];
        for (input, kind) in cases {
            let err = Digest::parse(input).unwrap_err();
            let ok = matches!(
                (&err, kind),
                (DigestError::InvalidFormat { .. }, Kind::Format)
                    | (DigestError::UnsupportedAlgorithm { .. }, Kind::Algorithm)
                    | (DigestError::InvalidLength { .. }, Kind::Length)
            );
            assert!(ok, "{input:?} gave {err:?}");
        }
    }

    #[test]
    fn error_messages_use_go_digest_wording() {
        let e = Digest::parse("sha256:abc").unwrap_err().to_string();
        assert!(e.starts_with("invalid checksum digest length"), "{e}");
        let e = Digest::parse("nonsense").unwrap_err().to_string();
        assert!(e.starts_with("invalid checksum digest format"), "{e}");
        let e = Digest::parse("sha384:abcd").unwrap_err().to_string();
        assert!(e.starts_with("unsupported digest algorithm"), "{e}");
    }

    #[test]
    fn huge_input_is_truncated_in_errors() {
        let input = format!("sha256:{}", "z".repeat(10_000));
        let e = Digest::parse(&input).unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let d = Digest::of_bytes(b"hello");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:../../x\"").is_err());
    }

    #[test]
    fn oci_spec_conversion_round_trips() {
        let d = Digest::of_bytes(b"hello");
        let oci = d.to_oci();
        assert_eq!(oci.to_string(), d.to_string());
        assert_eq!(Digest::try_from(&oci).unwrap(), d);
        let foreign = oci_spec::image::Digest::from_str("foo:bar").unwrap();
        assert!(Digest::try_from(&foreign).is_err());
    }

    #[test]
    fn writer_hashes_what_it_writes() {
        let mut w = Sha256Writer::new(Vec::new());
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        assert_eq!(w.bytes_written(), 5);
        assert_eq!(w.digest(), Digest::of_bytes(b"hello"));
        let (inner, digest, n) = w.finish();
        assert_eq!(inner, b"hello");
        assert_eq!(n, 5);
        assert_eq!(digest, Digest::of_bytes(b"hello"));
        let (d, n) = Digest::of_reader(&b"hello"[..]).unwrap();
        assert_eq!((d, n), (Digest::of_bytes(b"hello"), 5));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(d) = Digest::parse(&s) {
                proptest::prop_assert_eq!(d.to_string(), s);
            }
        }

        #[test]
        fn any_hex_digest_round_trips(hex in "[0-9a-f]{64}") {
            let d = Digest::from_sha256_hex(&hex).unwrap();
            proptest::prop_assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        }
    }
}
