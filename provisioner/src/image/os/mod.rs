//! Hardened OS images: recipes in `images/*.toml`, built into raw GPT disk images that boot
//! on BIOS and UEFI (`provisioner image build`), compressed, block-mapped, described by a
//! signed manifest with an SBOM and a hardening grade, and kept in the appliance's image
//! library (`image import`, `list`, `show`, `remove`), served as artifacts.

pub mod build;
pub mod disk;
pub mod drivers;
pub mod extract;
pub mod grub;
pub mod layout;
pub mod library;
pub mod manifest;
pub mod recipe;
pub mod sbom;
pub mod steps;
pub mod tree;

pub use build::{OsBuildError, OsBuildOptions, OsBuilt, build};
pub use manifest::ImageManifest;
pub use recipe::{Arch, Recipe};
