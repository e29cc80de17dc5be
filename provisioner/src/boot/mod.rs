//! What a node boots, in one place. A node's network boot has three answers, each made here
//! and asked for by the servers, none of which imports another's internals:
//!
//! - `first_stage`: which network-boot binary (or URL) DHCP names for a client's architecture
//!   (RFC 4578 option 93, the iPXE user class);
//! - `decision`: what the node boots now, from its lifecycle state and what the appliance has
//!   (the discovery image, an installer, its own disk, or wait and say why);
//! - `script`: that decision written as the iPXE script HTTP and TFTP serve.
//!
//! `BootContext` (in `context`) is what the three servers hold to ask.

mod context;
pub mod decision;
pub mod first_stage;
pub mod script;

pub use context::{Boot, BootContext};
pub use decision::{Available, BootDecision, BootTarget, boot_target};
pub use first_stage::{BootFile, BootMap, BootServer, FirstStage, NoBoot, PxeRequest};
pub use script::{
    Discovery, KernelArch, UnknownArch, error_script, image_for, ipxe_safe, kernel_cmdline,
};
