//! The node agent: runs on a node (discovery initramfs or installed OS), reports what the
//! node is to the provisioning appliance and does what the appliance says next. The binary
//! (`main.rs`) wires these parts; each part is tested on its own here.

pub mod appliance;
pub mod args;
pub mod backoff;
pub mod burnin;
pub mod cmdline;
pub mod drivers;
pub mod facts;
pub mod install;
pub mod installing;
pub mod netup;
pub mod power;
pub mod progress;
pub mod session;
