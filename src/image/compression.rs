//! Layer compression: the kinds kiln reads and writes, their OCI media
//! types, and a writer for each (push and compressed archives).

/// How a layer's blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (the default for push).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Parses `gzip`, `zstd` or `none` (`uncompressed`).
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "none" | "uncompressed" => Some(Compression::None),
            _ => None,
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The OCI layer media type of this compression.
    pub fn oci_layer_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
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

    /// A writer compressing into `w`; `finish` it with [`Compressor::finish`].
    pub fn writer<W: std::io::Write>(self, w: W) -> std::io::Result<Compressor<W>> {
        Ok(match self {
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
