//! Compression of blobs and archives: the kinds kiln reads, how to tell them by their first
//! bytes, the OCI media types of the layer kinds, and a writer for each layer kind.

/// How a blob or an archive is compressed.
///
/// Layers are plain, gzip or zstd (the kinds with an OCI media type); bzip2 and xz are only
/// read, from archives `ADD` unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip, one or more members (the default for push).
    Gzip,
    /// zstd, one or more frames.
    Zstd,
    /// bzip2: read only, and only when asked for (`archive::ExtractOptions::bzip2_xz`).
    Bzip2,
    /// xz: read only, and only when asked for (`archive::ExtractOptions::bzip2_xz`).
    Xz,
}

impl Compression {
    /// The compression a stream starting with `head` uses, by its magic bytes.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else {
            Compression::None
        }
    }

    /// Parses `gzip`, `zstd` or `none` (`uncompressed`).
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "none" | "uncompressed" => Some(Compression::None),
            _ => None,
        }
    }

    /// Its name: what `parse` takes for the layer kinds.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        }
    }

    /// The OCI layer media type of this compression; bzip2 and xz have none, and asking for
    /// one is an `Unsupported` error.
    pub fn oci_layer_type(self) -> std::io::Result<&'static str> {
        match self {
            Compression::None => Ok("application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => Ok("application/vnd.oci.image.layer.v1.tar+gzip"),
            Compression::Zstd => Ok("application/vnd.oci.image.layer.v1.tar+zstd"),
            Compression::Bzip2 | Compression::Xz => Err(self.not_a_layer()),
        }
    }

    fn not_a_layer(self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("{} is not a layer compression", self.name()),
        )
    }

    /// The compression a layer media type declares, or `None` (the
    /// Option) when it is not a layer type kiln can read.
    pub fn of_layer_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// A writer compressing into `w`; `finish` it with [`Compressor::finish`]. Only the layer
    /// kinds are written: bzip2 and xz are an `Unsupported` error.
    pub fn writer<W: std::io::Write>(self, w: W) -> std::io::Result<Compressor<W>> {
        Ok(match self {
            Compression::Bzip2 | Compression::Xz => return Err(self.not_a_layer()),
            Compression::None => Compressor::None(w),
            // Level 6 (flate2's default) always gives the same bytes for the
            // same input: re-pushing the same layer gives the same digest.
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
        })
    }
}

/// A compressing writer of one of the [`Compression`]s.
pub enum Compressor<W: std::io::Write> {
    /// Copies through.
    None(W),
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: std::io::Write> std::io::Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}

impl<W: std::io::Write> Compressor<W> {
    /// Writes the end of the compressed stream and returns the inner writer.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(w) => w.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic_bytes() {
        let cases: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b, 8], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (b"BZh9", Compression::Bzip2),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0], Compression::Xz),
            (b"ustar", Compression::None),
            (&[], Compression::None),
        ];
        for (head, want) in cases {
            assert_eq!(Compression::detect(head), *want, "{head:?}");
        }
    }

    #[test]
    fn only_layer_kinds_have_a_media_type_and_a_writer() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let t = c.oci_layer_type().unwrap();
            assert_eq!(Compression::of_layer_type(t), Some(c));
            assert_eq!(Compression::parse(c.name()), Some(c));
            assert!(c.writer(Vec::new()).is_ok());
        }
        for c in [Compression::Bzip2, Compression::Xz] {
            let e = c.oci_layer_type().unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
            assert!(c.writer(Vec::new()).is_err());
            assert_eq!(Compression::parse(c.name()), None);
        }
    }
}
