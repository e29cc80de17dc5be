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
    /// The virtual rack: boot QEMU nodes from the appliance on a private network (root).
    Lab(LabArgs),
}

#[derive(clap::Args)]
struct LabArgs {
    /// How many nodes to boot.
    #[arg(long, default_value_t = 1)]
    nodes: u8,
    /// The nodes' firmware.
    #[arg(long, value_enum, default_value = "bios")]
    firmware: provisioner::lab::Firmware,
    /// Where consoles, logs, the appliance's data and summary.json go.
    #[arg(long, value_name = "DIR", default_value = "./var/lab")]
    dir: PathBuf,
    /// Network-boot binaries and their manifest.toml.
    #[arg(long, value_name = "DIR", default_value = "./firmware")]
    firmware_dir: PathBuf,
    /// Kernel the nodes boot.
    #[arg(long, value_name = "PATH")]
    discovery_kernel: PathBuf,
    /// Initramfs the nodes boot.
    #[arg(long, value_name = "PATH")]
    discovery_initrd: PathBuf,
    /// The operator's part of the kernel command line.
    #[arg(long, value_name = "STR", default_value = "console=ttyS0")]
    discovery_cmdline: String,
    /// Memory of each node, MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Stop after this many seconds even if nodes still run.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// A node is also done once its serial console shows this text (e.g. `login:`), not
    /// only when it powers off.
    #[arg(long, value_name = "TEXT")]
    until: Option<String>,
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
        Command::Lab(args) => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let opts = provisioner::lab::LabOptions {
                nodes: args.nodes,
                firmware: args.firmware,
                dir: args.dir,
                firmware_dir: args.firmware_dir,
                discovery_kernel: args.discovery_kernel,
                discovery_initrd: args.discovery_initrd,
                discovery_cmdline: args.discovery_cmdline,
                memory_mib: args.memory,
                timeout: std::time::Duration::from_secs(args.timeout),
                until: args.until,
            };
            let dir = opts.dir.clone();
            let summary = runtime.block_on(provisioner::lab::run(opts))?;
            for n in &summary {
                let events = n.api["events"].as_array().map_or(0, Vec::len);
                println!(
                    "node {} ({}): {} boot events, {}; console {}",
                    n.mac,
                    n.firmware.as_str(),
                    events,
                    if n.exited {
                        "powered off"
                    } else if n.until_seen {
                        "its console showed --until"
                    } else {
                        "still running at the end"
                    },
                    n.console.display()
                );
            }
            println!("summary: {}", dir.join("summary.json").display());
            Ok(())
        }
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
