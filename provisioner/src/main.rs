//! The `provisioner` command line.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

use provisioner::config::{Config, DhcpMode, FileConfig, Overrides};
use provisioner::types::AddrRange;

#[derive(Parser)]
#[command(
    name = "provisioner",
    version,
    about = "Turns racks of new GPU servers into validated AI-factory nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance.
    Up(UpArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// TOML configuration file (default: ./provisioner.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the store and generated files live (default ./var).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A provisioning interface DHCP serves; repeat for several. None: DHCP stays off.
    #[arg(long = "interface", value_name = "NAME")]
    interfaces: Vec<String>,
    /// DHCP mode (default proxy).
    #[arg(long, value_enum)]
    dhcp: Option<DhcpMode>,
    /// Full mode's pool on the interface's own subnet.
    #[arg(long, value_name = "FIRST-LAST")]
    dhcp_range: Option<AddrRange>,
    /// The address nodes use to reach the appliance (default: the interface's).
    #[arg(long, value_name = "IP")]
    advertise: Option<Ipv4Addr>,
    /// HTTP listen address (default 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR:PORT")]
    http_listen: Option<SocketAddr>,
    /// TFTP listen address (default 0.0.0.0:69).
    #[arg(long, value_name = "ADDR:PORT")]
    tftp_listen: Option<SocketAddr>,
    /// Network-boot binaries and their manifest.toml (default ./firmware).
    #[arg(long, value_name = "DIR")]
    firmware_dir: Option<PathBuf>,
    /// Kernel of the discovery image every new node boots.
    #[arg(long, value_name = "PATH")]
    discovery_kernel: Option<PathBuf>,
    /// Initramfs of the discovery image.
    #[arg(long, value_name = "PATH")]
    discovery_initrd: Option<PathBuf>,
    /// The operator's part of the discovery kernel command line (e.g. console=ttyS0).
    #[arg(long, value_name = "STR")]
    discovery_cmdline: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only for a person at a terminal; log files and journals get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match cli.command {
        Command::Up(args) => {
            let file = FileConfig::load(args.config.as_deref())?;
            let config = Config::merge(
                file,
                Overrides {
                    data_dir: args.data_dir,
                    interfaces: args.interfaces,
                    dhcp: args.dhcp,
                    dhcp_range: args.dhcp_range,
                    advertise: args.advertise,
                    http_listen: args.http_listen,
                    tftp_listen: args.tftp_listen,
                    firmware_dir: args.firmware_dir,
                    discovery_kernel: args.discovery_kernel,
                    discovery_initrd: args.discovery_initrd,
                    discovery_cmdline: args.discovery_cmdline,
                },
            )?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                let token = shutdown.clone();
                let mut term = signal(SignalKind::terminate())?;
                let mut int = signal(SignalKind::interrupt())?;
                tokio::spawn(async move {
                    tokio::select! {
                        _ = term.recv() => info!("SIGTERM"),
                        _ = int.recv() => info!("SIGINT"),
                    }
                    token.cancel();
                });
                provisioner::app::up(config, shutdown).await
            })
        }
    }
}
