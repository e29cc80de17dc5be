//! What the boot plane serves from, and the one call each of DHCP, TFTP and HTTP makes to
//! learn what a node boots: `BootContext`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use tracing::warn;

use super::decision::{self, Available, BootTarget};
use super::first_stage::BootServer;
use super::script::{self, Discovery};
use crate::artifacts::ArtifactStore;
use crate::firmware::FirmwareSet;
use crate::lifecycle::Lifecycle;
use crate::lifecycle::admission::Requester;
use crate::types::MacAddr;

/// What the boot plane serves from.
#[derive(Debug)]
pub struct BootContext {
    pub firmware: FirmwareSet,
    pub artifacts: ArtifactStore,
    /// The discovery images, at most one per architecture; each node boots its own.
    pub discovery: Vec<Discovery>,
    /// The address nodes reach the appliance at; without one, the request's `Host`.
    pub advertise: Option<Ipv4Addr>,
    pub http_port: u16,
    /// Each node's state: what the decision is made from.
    pub lifecycle: Arc<Lifecycle>,
    /// The appliance's main runtime, for callers on other threads (TFTP).
    pub runtime: tokio::runtime::Handle,
    /// The package repository served at `/repo/` (`DATA_DIR/repo`), and the archive key's
    /// public half served beside it.
    pub repo_dir: std::path::PathBuf,
    pub archive_key: std::path::PathBuf,
}

pub type Boot = Arc<BootContext>;

impl BootContext {
    /// What the appliance has to give nodes now.
    pub fn available(&self) -> Available {
        Available {
            discovery: !self.discovery.is_empty(),
        }
    }

    /// Whether `mac` boots from its own disk now (DHCP then gives it no boot file).
    pub fn boots_locally(&self, mac: MacAddr) -> bool {
        decision::boot_target(self.lifecycle.state(mac).as_ref(), self.available())
            == BootTarget::LocalDisk
    }

    /// The address and port boot URLs are built from: the configured one, else `host` (the
    /// request's own), else loopback.
    pub fn server(&self, host: Option<Ipv4Addr>) -> BootServer {
        BootServer {
            advertise: self.advertise.or(host).unwrap_or(Ipv4Addr::LOCALHOST),
            http_port: self.http_port,
        }
    }

    /// The script `mac` boots now, asked for by `who`: the lifecycle decides, the script says
    /// it. A failure is a script too, one that prints why and asks again.
    pub async fn script_for(&self, mac: MacAddr, who: &Requester, server: &BootServer) -> String {
        let decision = match self
            .lifecycle
            .boot_requested(mac, who, self.available())
            .await
        {
            Ok(d) => d,
            Err(e) => {
                warn!(%mac, error = %e, "cannot decide what the node boots");
                return script::error_script(
                    &format!("the appliance cannot decide what this node boots: {e}"),
                    &server.script_url(mac),
                );
            }
        };
        match script::script(&decision, &self.discovery, server, mac) {
            Ok(body) => body,
            Err(e) => {
                warn!(%mac, error = %e, "no boot script");
                script::error_script(&e.to_string(), &server.script_url(mac))
            }
        }
    }
}
