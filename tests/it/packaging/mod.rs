//! The release artefacts as operators get them: the .deb installed, upgraded, removed and purged
//! with dpkg in a copy-on-write sandbox of this machine, the container image run from its layer,
//! and the offline bundle installed with its own script. Built from the binary under test with
//! the same scripts a release uses. These tests need root.

mod bundle;
mod deb;
mod image;
