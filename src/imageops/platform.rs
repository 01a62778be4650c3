//! Whether a stored image (its platform: [`ImageRecord::platform`]) suits a platform asked for
//! (`build --platform`, `run --platform`).
//!
//! A name holds one image, whose platform is checked here, or an index of several platforms,
//! whose entry for a platform the store picks (`Store::resolve_platform`).

use crate::common::platform::Platform;
use crate::store::ImageRecord;

/// Whether the image suits `wanted`: an image that names no platform suits any, and one that
/// names no variant suits every variant of its architecture.
pub fn suits(rec: &ImageRecord, wanted: &Platform) -> bool {
    let Some(found) = rec.platform() else {
        return true;
    };
    // `linux/arm` with no variant recorded normalizes to v7; only a recorded one counts.
    let variant = rec.config.variant().as_ref().and(found.variant.as_deref());
    wanted
        .normalized()
        .matches(&found.os, &found.architecture, variant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn stored(store: &Store, name: &str, platform: &str) -> ImageRecord {
        let opts = crate::imageops::import::ImportOptions {
            platform: Platform::parse(platform).unwrap(),
            tag: Some(crate::image::Reference::parse_normalized_named(name).unwrap()),
            ..Default::default()
        };
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        crate::imageops::import::import_rootfs(store, std::io::Cursor::new(tar), &opts)
            .unwrap()
            .image
    }

    #[test]
    fn images_suit_their_platform_only() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().join("root")).unwrap();
        let p = |s: &str| Platform::parse(s).unwrap();
        let arm64 = stored(&store, "a:1", "linux/arm64/v8");
        assert_eq!(arm64.platform(), Some(p("linux/arm64")));
        assert!(suits(&arm64, &p("linux/arm64")));
        assert!(!suits(&arm64, &p("linux/amd64")));
        let arm = stored(&store, "b:1", "linux/arm");
        assert!(suits(&arm, &p("linux/arm/v7")));
        assert!(
            suits(&arm, &p("linux/arm/v6")),
            "no variant recorded suits any"
        );
        let v7 = stored(&store, "c:1", "linux/arm/v7");
        assert!(!suits(&v7, &p("linux/arm/v6")));
        assert!(suits(&v7, &p("linux/arm")));
    }
}
