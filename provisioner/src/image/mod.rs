//! Images the appliance builds for nodes to boot. Today the discovery image: the kernel and
//! initramfs every new node boots for inspection (`provisioner image build-discovery`), one
//! per architecture.

pub mod debs;
mod discovery;
pub mod grade;
pub mod hardening;
pub mod initramfs;
pub mod ldd;
mod manifest;
pub mod modules;
pub mod needed;
pub mod os;
mod target;

pub use discovery::{
    AGENT_LIMIT, AGENT_NAME, BuildError, BuildOptions, Built, build_discovery, default_agent,
};
pub use manifest::{
    DiscoveryImage, DiscoveryManifest, MANIFEST, ManifestError, default_dir, dir_for, load,
    load_arch, load_default,
};
pub use target::Target;

#[cfg(test)]
pub(crate) use manifest::sample as manifest_for_tests;
