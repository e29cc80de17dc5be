//! Images the appliance builds for nodes to boot. Today the discovery image: the kernel and
//! initramfs every new node boots for inspection (`provisioner image build-discovery`).

pub mod debs;
mod discovery;
pub mod grade;
pub mod hardening;
pub mod initramfs;
pub mod ldd;
mod manifest;
pub mod modules;
pub mod os;

pub use discovery::{AGENT_LIMIT, AGENT_NAME, BuildError, BuildOptions, Built, build_discovery};
pub use manifest::{
    DiscoveryImage, DiscoveryManifest, MANIFEST, ManifestError, default_dir, load, load_default,
};

#[cfg(test)]
pub(crate) use manifest::sample as manifest_for_tests;
