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
    /// The rack plan: which server goes in which slot.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Admin API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Rack installation checklists, for a technician at a terminal.
    #[command(subcommand)]
    Checklist(ChecklistCommand),
    /// Burn-in without an appliance: the plan a SKU runs, and a report judged by its profile.
    #[command(subcommand)]
    Burnin(BurninCommand),
    /// Build and import the images nodes boot.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The network-boot binaries of firmware/manifest.toml.
    #[command(subcommand)]
    Firmware(FirmwareCommand),
    /// The appliance's signing key, and the keys of other appliances it trusts.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The appliance's package repository: vendor driver bundles carried in, checked and
    /// published as signed apt suites at /repo/.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Driver sets (drivers.toml): which packages, at which versions, each SKU's nodes get.
    #[command(subcommand)]
    Drivers(DriversCommand),
}

#[derive(clap::Subcommand)]
enum DriversCommand {
    /// Each set, and whether it resolves against its suite.
    List {
        #[command(flatten)]
        store: DriversArgs,
    },
    /// Resolve sets (or SET) against their suites: each pin to exactly one version there,
    /// with its sha256; fails if any does not.
    Check {
        set: Option<String>,
        #[command(flatten)]
        store: DriversArgs,
    },
    /// The apt preferences that hold a node to SET (priority 1001, every package exact).
    Pins {
        set: String,
        #[command(flatten)]
        store: DriversArgs,
    },
    /// SET resolved against its suite, as JSON: what a node's agent checks
    /// (`provisioner-agent --verify-drivers FILE`).
    Show {
        set: String,
        #[command(flatten)]
        store: DriversArgs,
    },
}

/// Where the store is, and which architecture's packages a set is resolved for.
#[derive(clap::Args, Clone)]
struct DriversArgs {
    /// The Debian architecture (amd64, arm64; default: the suite's one, else amd64).
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(clap::Subcommand)]
enum RepoCommand {
    /// Trust the vendor OpenPGP key(s) in KEYFILE (armored or binary; a keyring adds each):
    /// bundles whose Release they signed can be imported.
    Trust {
        keyfile: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Import a vendor bundle (a folder or .tar/.tar.gz/.tar.zst with the vendor's signed
    /// InRelease or Release + Release.gpg, its Packages and .deb files), checked against the
    /// trusted keys down to each package's sha256, as a new suite NAME-N.
    Import {
        bundle: PathBuf,
        /// The suite's name, before its number (default: the bundle's file name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The published suites.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// One suite: its packages, their versions and where each came from.
    Show {
        suite: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a suite (refused while a driver set or an image built from it names it), and
    /// the packages only it held.
    Remove {
        suite: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the appliance's archive key (OpenPGP, armored; made on first use): what apt
    /// is given as `signed-by` for /repo/.
    Key {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Subcommand)]
enum KeyCommand {
    /// Print the appliance's public key (minisign format; made on first use). Check a
    /// manifest with `minisign -Vm image.json -p appliance.pub`.
    Show {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Trust the minisign public key in FILE (another appliance's `key show`): images it
    /// signed can be imported.
    Trust {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Subcommand)]
enum FirmwareCommand {
    /// Fetch what is missing from the Debian packages the manifest names (each file checked
    /// against its sha256 pin; packages kept in the cache).
    Fetch {
        #[command(flatten)]
        dirs: FirmwareDirs,
    },
    /// Import the manifest's files from a folder carried in (offline): each must match its
    /// pin, or nothing is imported.
    Import {
        from: PathBuf,
        #[command(flatten)]
        dirs: FirmwareDirs,
    },
}

#[derive(clap::Args)]
struct FirmwareDirs {
    /// Network-boot binaries and their manifest.toml, as `up` finds them (default ./firmware).
    #[arg(long, value_name = "DIR", env = "PROVISIONER_FIRMWARE_DIR")]
    firmware_dir: Option<PathBuf>,
    /// Where downloaded packages are kept (default DATA_DIR/cache).
    #[arg(long, value_name = "DIR", env = "PROVISIONER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

impl FirmwareDirs {
    fn config(self) -> anyhow::Result<Config> {
        let file = FileConfig::load(self.store.config.as_deref())?;
        Ok(Config::merge(
            file,
            Overrides {
                data_dir: self.store.data_dir,
                firmware_dir: self.firmware_dir,
                cache_dir: self.cache_dir,
                ..Overrides::default()
            },
        )?)
    }
}

#[derive(clap::Subcommand)]
enum ImageCommand {
    /// The kernel and initramfs every new node boots for inspection, from Debian packages
    /// (apt-get download) and the node agent; imported into the artifact store.
    BuildDiscovery(BuildDiscoveryArgs),
    /// Import an image built elsewhere, carried in: an OS image (a folder or tarball with
    /// image.json, its signature, the .raw.zst, .bmap and .spdx.json, as `image build`
    /// writes them), checked against the trusted keys and every sha256; or a discovery image
    /// (a folder with vmlinuz, initrd.img and discovery.json), which becomes the one `up`
    /// serves.
    Import {
        from: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Build an OS image from a recipe (images/NAME.toml): a raw GPT disk image that boots on
    /// BIOS and UEFI, zstd, block map, SBOM, grade and signed manifest; then imported.
    Build(BuildArgs),
    /// The OS images in the library.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// One OS image: its manifest, grade and where its SBOM is.
    Show {
        name: String,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Grade an OS image of the library again (OpenSCAP ANSSI BP-028, Lynis), on its root
    /// tree read back from its disk image.
    Grade {
        name: String,
        /// The graders' downloaded content, kept between runs (default DATA_DIR/cache).
        #[arg(long, value_name = "DIR", env = "PROVISIONER_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an OS image from the library (refused while a plan row or SKU names it).
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// A recipe name in images/ (e.g. debian12-hardened) or a path to its .toml.
    recipe: String,
    /// The architecture (default: this machine's).
    #[arg(long, value_name = "ARCH")]
    arch: Option<provisioner::image::os::Arch>,
    /// The Debian mirror to build from (default: the recipe's).
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// The build folder (default DATA_DIR/builds/NAME).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The agent binary for the image's architecture.
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// Leave out the OpenSCAP and Lynis grade (faster; the manifest says it was not graded).
    #[arg(long)]
    no_grade: bool,
    /// Build only: do not import the image into the library.
    #[arg(long)]
    no_import: bool,
    /// Keep OUT/work, the root tree and its split into filesystems (about a gigabyte), to
    /// look at or to compare two builds file by file.
    #[arg(long)]
    keep_work: bool,
    /// Downloaded packages, kept between builds (default DATA_DIR/cache).
    #[arg(long, value_name = "DIR", env = "PROVISIONER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Build driver SET (drivers.toml) into the image from the appliance's repository: its
    /// packages at their versions, held, DKMS modules built and signed for the image's
    /// kernel, checked by the agent. The image is named RECIPE-VERSION-SET-ARCH.
    #[arg(long, value_name = "SET")]
    drivers: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(clap::Args)]
struct BuildDiscoveryArgs {
    /// The nodes' architecture: x86_64 (amd64) or arm64 (aarch64, e.g. GB200 Grace trays).
    #[arg(long, value_name = "ARCH", default_value = "x86_64")]
    arch: provisioner::boot::KernelArch,
    /// Where vmlinuz, initrd.img and discovery.json go (default DATA_DIR/images/discovery,
    /// DATA_DIR/images/discovery-arm64 for arm64).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The appliance's data (the artifact store and the download cache), as `up` finds it.
    #[command(flatten)]
    store: StoreArgs,
    /// The agent binary (default: provisioner-agent beside this program; for arm64
    /// provisioner-agent-arm64 there, else cargo's target/aarch64-unknown-linux-gnu build).
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// The Debian kernel package (default: what linux-image-amd64, or -arm64, depends on).
    #[arg(long, value_name = "NAME")]
    kernel_package: Option<String>,
    /// Where downloaded .debs are kept (default DATA_DIR/cache/debs).
    #[arg(long, value_name = "DIR")]
    deb_cache: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum BurninCommand {
    /// Print the burn-in plan a node of SKU runs, as JSON (for `provisioner-agent --burn-in`).
    Plan {
        sku: String,
        /// Burn-in profiles file (default: the shipped ones).
        #[arg(long)]
        profiles: Option<PathBuf>,
    },
    /// Judge a burn-in report (JSON, as `provisioner-agent --burn-in` prints it) as a node of
    /// SKU's, without a cohort. Exits 1 when the node fails.
    Judge {
        #[arg(long)]
        sku: String,
        report: PathBuf,
        /// Burn-in profiles file (default: the shipped ones).
        #[arg(long)]
        profiles: Option<PathBuf>,
        /// SKU definitions file (default: the shipped ones).
        #[arg(long)]
        skus: Option<PathBuf>,
        /// Print the judgement as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
enum PlanCommand {
    /// Check a rack plan (.csv or .toml) against the SKU definitions and make it the plan.
    Import {
        /// CSV with header site,row,rack,u,serial,mac,sku; or TOML with [[slot]] tables.
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Subcommand)]
enum ChecklistCommand {
    /// The rack types there are checklists for.
    Types,
    /// Start a rack's checklist (RACK is site/row/rack).
    Start {
        rack: provisioner::types::RackId,
        #[arg(long = "type", value_name = "RACK_TYPE")]
        rack_type: String,
        /// Who starts it.
        #[arg(long)]
        by: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show a rack's checklist: where every step stands.
    Show {
        rack: provisioner::types::RackId,
        #[arg(long, value_enum, default_value = "text")]
        format: ChecklistFormat,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Tick a physical step (per-slot steps name the slot, e.g. dc1/r1/a01/U10).
    Tick {
        rack: provisioner::types::RackId,
        step: String,
        #[arg(long)]
        slot: Option<String>,
        /// Who did it.
        #[arg(long)]
        by: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Undo a tick; it stays in the audit trail with the reason.
    Untick {
        rack: provisioner::types::RackId,
        step: String,
        #[arg(long)]
        slot: Option<String>,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ChecklistFormat {
    Text,
    Json,
    Csv,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Create an admin token; it is printed once and stored hashed.
    Create {
        /// Who or what uses it: actions taken with it are recorded under this name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete an admin token: calls and signed-in pages that use it stop working at once.
    Delete {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the store is, as `up` finds it.
#[derive(clap::Args, Clone)]
struct StoreArgs {
    /// TOML configuration file (default: ./provisioner.toml if present).
    #[arg(long, env = "PROVISIONER_CONFIG")]
    config: Option<PathBuf>,
    /// Where the store lives (default ./var).
    #[arg(long, value_name = "DIR", env = "PROVISIONER_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn config(self) -> anyhow::Result<Config> {
        let file = FileConfig::load(self.config.as_deref())?;
        Ok(Config::merge(
            file,
            Overrides {
                data_dir: self.data_dir,
                ..Overrides::default()
            },
        )?)
    }
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
    /// One node's hardware, e.g. `mem=1024,cpus=2,disk=2048,nvme=1024,serial=SN1` (MiB),
    /// `firmware=uefi` for one that differs from --firmware; repeat for each node. Replaces
    /// --nodes and --memory. Disks and UEFI variables stay in DIR: a second lab in the same
    /// DIR powers the same nodes on again.
    #[arg(long = "node", value_name = "SPEC")]
    node_specs: Vec<provisioner::lab::NodeSpec>,
    /// A rack plan (.csv or .toml) imported into the lab's appliance before it starts.
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
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
    #[arg(long, env = "PROVISIONER_CONFIG")]
    config: Option<PathBuf>,
    /// Where the store and generated files live (default ./var).
    #[arg(long, value_name = "DIR", env = "PROVISIONER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Downloaded packages and apt state, kept between starts (default DATA_DIR/cache).
    #[arg(long, value_name = "DIR", env = "PROVISIONER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Fetch nothing: a missing part is said, with how to import it, and left out.
    #[arg(long)]
    offline: bool,
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
    #[arg(long, value_name = "ADDR:PORT", env = "PROVISIONER_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Serve the pages and the API over HTTPS too, on this address (off by default). Browsers
    /// keep the login cookie over plain HTTP only for localhost.
    #[arg(long, value_name = "ADDR:PORT")]
    https_listen: Option<SocketAddr>,
    /// HTTPS certificate chain (PEM); without it and --tls-key the appliance makes its own
    /// in DATA_DIR/tls.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// HTTPS private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// TFTP listen address (default 0.0.0.0:69).
    #[arg(long, value_name = "ADDR:PORT", env = "PROVISIONER_TFTP_LISTEN")]
    tftp_listen: Option<SocketAddr>,
    /// Network-boot binaries and their manifest.toml (default ./firmware).
    #[arg(long, value_name = "DIR", env = "PROVISIONER_FIRMWARE_DIR")]
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
        Command::Firmware(FirmwareCommand::Fetch { dirs }) => {
            let config = dirs.config()?;
            let missing = provisioner::firmware::missing(&config.firmware_dir)?;
            if missing.is_empty() {
                println!(
                    "firmware: every file of the manifest is in {}",
                    config.firmware_dir.display()
                );
                return Ok(());
            }
            provisioner::provide::fetch_firmware(
                &config.firmware_dir,
                &config.cache_dir,
                &missing,
                &std::env::var("DEBIAN_MIRROR")
                    .unwrap_or_else(|_| provisioner::provide::DEFAULT_MIRROR.to_string()),
            )?;
            for e in &missing {
                println!("firmware: {} ok ({} {})", e.name, e.package, e.version);
            }
            Ok(())
        }
        Command::Firmware(FirmwareCommand::Import { from, dirs }) => {
            let config = dirs.config()?;
            for name in provisioner::provide::import_firmware(&from, &config.firmware_dir)? {
                println!(
                    "firmware: {name} imported into {}",
                    config.firmware_dir.display()
                );
            }
            Ok(())
        }
        Command::Image(ImageCommand::Import { from, store }) if !is_discovery(&from) => {
            let config = store.config()?;
            let entry = provisioner::image::os::library::import(&config.data_dir, &from)?;
            let m = &entry.manifest;
            println!(
                "image {} imported into {}: {} {} bytes sha256 {}",
                m.name,
                entry.dir.display(),
                m.compressed.file,
                m.compressed.size,
                m.compressed.sha256
            );
            Ok(())
        }
        Command::Image(ImageCommand::Build(args)) => image_build(args),
        Command::Image(ImageCommand::List { store }) => {
            let config = store.config()?;
            let images = provisioner::image::os::library::list(&config.data_dir)?;
            if images.is_empty() {
                println!("no OS images (build one: provisioner image build debian12-hardened)");
            }
            for e in images {
                println!("{}", image_line(&e.manifest));
            }
            Ok(())
        }
        Command::Image(ImageCommand::Show { name, json, store }) => {
            let config = store.config()?;
            let e = provisioner::image::os::library::find(&config.data_dir, &name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e.manifest)?);
            } else {
                print!("{}", image_details(&e));
            }
            Ok(())
        }
        Command::Image(ImageCommand::Grade {
            name,
            cache_dir,
            store,
        }) => {
            let config = store.config()?;
            let cache = cache_dir.unwrap_or(config.cache_dir.clone());
            let grade = provisioner::image::os::extract::regrade(&config.data_dir, &cache, &name)?;
            println!(
                "{name}: {}",
                provisioner::image::os::manifest::grade_summary(&grade)
            );
            Ok(())
        }
        Command::Image(ImageCommand::Remove { name, store }) => {
            let config = store.config()?;
            let users = image_users(&config, &name)?;
            let e = provisioner::image::os::library::remove(&config.data_dir, &name, &users)?;
            println!("image {} removed", e.manifest.name);
            Ok(())
        }
        Command::Key(KeyCommand::Show { store }) => {
            let config = store.config()?;
            let key = provisioner::keys::ApplianceKey::load_or_create(&config.data_dir)?;
            print!("{}", key.public.to_minisign());
            eprintln!(
                "(in {})",
                provisioner::keys::ApplianceKey::public_path(&config.data_dir).display()
            );
            Ok(())
        }
        Command::Repo(cmd) => repo(cmd),
        Command::Drivers(cmd) => drivers(cmd),
        Command::Key(KeyCommand::Trust { file, store }) => {
            let config = store.config()?;
            let key = provisioner::keys::trust(&config.data_dir, &file)?;
            println!("trusted key {} from {}", key.id_hex(), file.display());
            Ok(())
        }
        Command::Image(ImageCommand::Import { from, store }) => {
            let config = store.config()?;
            let img = provisioner::provide::import_discovery(&from, &config.data_dir)?;
            let store = provisioner::artifacts::ArtifactStore::open(&config.data_dir)?;
            let (kernel, initrd) = (store.import(&img.kernel)?, store.import(&img.initrd)?);
            println!(
                "discovery image imported into {}: kernel {} ({} {}), initrd {}",
                img.kernel.parent().unwrap_or(&config.data_dir).display(),
                kernel.sha256,
                img.manifest.kernel.package,
                img.manifest.kernel.version,
                initrd.sha256
            );
            Ok(())
        }
        Command::Image(ImageCommand::BuildDiscovery(args)) => {
            let built = provisioner::image::build_discovery(&provisioner::image::BuildOptions {
                arch: args.arch,
                mirror: provisioner::provide::mirror(),
                out: args.out,
                data_dir: args.store.config()?.data_dir,
                agent: args.agent,
                kernel_package: args.kernel_package,
                deb_cache: args.deb_cache,
            })?;
            print!("{}", built.summary());
            Ok(())
        }
        Command::Lab(args) => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let opts = provisioner::lab::LabOptions {
                nodes: if args.node_specs.is_empty() {
                    vec![provisioner::lab::NodeSpec::with_memory(args.memory); args.nodes as usize]
                } else {
                    args.node_specs
                },
                plan: args.plan,
                firmware: args.firmware,
                dir: args.dir,
                firmware_dir: args.firmware_dir,
                discovery_kernel: args.discovery_kernel,
                discovery_initrd: args.discovery_initrd,
                discovery_cmdline: args.discovery_cmdline,
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
        Command::Plan(PlanCommand::Import { file, store }) => {
            let config = store.config()?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let n = runtime.block_on(provisioner::admin::import_plan(&config, &file))?;
            println!("rack plan {}: {n} slots imported", file.display());
            Ok(())
        }
        Command::Checklist(cmd) => checklist(cmd),
        Command::Burnin(cmd) => burnin(cmd),
        Command::Token(TokenCommand::Create { name, store }) => {
            let config = store.config()?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let token = runtime.block_on(provisioner::admin::create_token(&config, &name))?;
            eprintln!("admin token `{name}` created; it is shown once, keep it:");
            println!("{token}");
            Ok(())
        }
        Command::Token(TokenCommand::Delete { name, store }) => {
            let config = store.config()?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(provisioner::admin::delete_token(&config, &name))?;
            println!("admin token `{name}` deleted");
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
                    https_listen: args.https_listen,
                    tls_cert: args.tls_cert,
                    tls_key: args.tls_key,
                    tftp_listen: args.tftp_listen,
                    firmware_dir: args.firmware_dir,
                    cache_dir: args.cache_dir,
                    offline: args.offline,
                    discovery_kernel: args.discovery_kernel,
                    discovery_initrd: args.discovery_initrd,
                    discovery_cmdline: args.discovery_cmdline,
                },
            )?;
            // The key that signs image manifests is made on first start.
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
            let key = provisioner::keys::ApplianceKey::load_or_create(&config.data_dir)?;
            info!(
                key = %key.public.id_hex(),
                public = %provisioner::keys::ApplianceKey::public_path(&config.data_dir).display(),
                "appliance signing key"
            );
            // And the OpenPGP key that signs the repository's suites (/repo/archive.asc).
            let archive = provisioner::repo::ArchiveKey::load_or_create(&config.data_dir)?;
            info!(key = %archive.fingerprint(), "repository archive key");
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

/// `provisioner checklist ...`: the same checklists as the API, on the store directly.
fn repo(cmd: RepoCommand) -> anyhow::Result<()> {
    use provisioner::repo;
    match cmd {
        RepoCommand::Trust { keyfile, store } => {
            let config = store.config()?;
            for k in repo::trust(&config.data_dir, &keyfile)? {
                println!("trusted {} {}", k.fingerprint(), k.user());
            }
        }
        RepoCommand::Import {
            bundle,
            name,
            store,
        } => {
            let config = store.config()?;
            let started = std::time::Instant::now();
            let mut say = |line: &str| eprintln!("{line}");
            let done = repo::import(&config.data_dir, &bundle, name.as_deref(), &mut say)?;
            println!(
                "imported suite {}: {} packages, {} in {:.1} s{}",
                done.suite,
                done.packages,
                mib(done.bytes),
                started.elapsed().as_secs_f64(),
                if done.not_carried > 0 {
                    format!(
                        " ({} more listed by the vendor's indexes, not carried)",
                        done.not_carried
                    )
                } else {
                    String::new()
                }
            );
            for s in &done.signers {
                println!("  signed by {} {} ({})", s.key, s.user, s.hash);
            }
            println!(
                "  indexed and signed in {:.3} s; apt source: deb [signed-by=KEYRING] http://APPLIANCE/repo {} main",
                done.index_seconds, done.suite
            );
        }
        RepoCommand::List { store } => {
            let config = store.config()?;
            let suites = repo::list(&config.data_dir)?;
            if suites.is_empty() {
                println!("no suites (import a vendor bundle: `provisioner repo import BUNDLE`)");
            }
            for s in suites {
                println!(
                    "{:<32} {:>5} packages {:>10}  {}  from {}",
                    s.suite,
                    s.packages.len(),
                    mib(s.bytes()),
                    provisioner::repo::release::format_date(s.created),
                    s.bundle
                );
            }
        }
        RepoCommand::Show { suite, json, store } => {
            let config = store.config()?;
            let s = repo::show(&config.data_dir, &suite)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            println!("suite {} ({})", s.suite, s.architectures().join(" "));
            println!(
                "imported {} from {}",
                provisioner::repo::release::format_date(s.created),
                s.bundle
            );
            for signer in &s.signers {
                println!("vendor signature: {signer}");
            }
            for p in &s.packages {
                println!(
                    "{:<36} {:<28} {:<6} {:>10}  sha256 {}  from {} ({})",
                    p.package,
                    p.version,
                    p.architecture,
                    mib(p.size),
                    p.sha256,
                    p.from,
                    p.release
                );
            }
        }
        RepoCommand::Remove { suite, store } => {
            let config = store.config()?;
            let users = suite_users(&config, &suite)?;
            let freed = repo::remove(&config.data_dir, &suite, &users)?;
            println!("removed suite {suite}; {} of packages freed", mib(freed));
        }
        RepoCommand::Key { store } => {
            let config = store.config()?;
            let key = repo::ArchiveKey::load_or_create(&config.data_dir)?;
            eprintln!(
                "archive key {} ({}; served at /repo/{})",
                key.fingerprint(),
                repo::ArchiveKey::public_path(&config.data_dir).display(),
                repo::openpgp::PUBLIC_FILE
            );
            print!("{}", key.public_armored()?);
        }
    }
    Ok(())
}

/// What names `suite` (driver sets), so that it is not removed under them.
fn suite_users(config: &Config, suite: &str) -> anyhow::Result<Vec<String>> {
    let skus = provisioner::app::load_skus(config.skus.as_deref())?;
    let sets = provisioner::drivers::load(config.drivers.as_deref(), &skus)?;
    let mut users = sets.users_of(suite);
    for e in provisioner::image::os::library::list(&config.data_dir)? {
        if e.manifest
            .drivers
            .as_ref()
            .is_some_and(|d| d.suite == suite)
        {
            users.push(format!("image {}", e.manifest.name));
        }
    }
    Ok(users)
}

fn drivers(cmd: DriversCommand) -> anyhow::Result<()> {
    let (store, which) = match &cmd {
        DriversCommand::List { store } => (store, None),
        DriversCommand::Check { store, set } => (store, set.clone()),
        DriversCommand::Pins { store, set } | DriversCommand::Show { store, set } => {
            (store, Some(set.clone()))
        }
    };
    let arch = store.arch.clone();
    let config = store.store.clone().config()?;
    let skus = provisioner::app::load_skus(config.skus.as_deref())?;
    let sets = provisioner::drivers::load(config.drivers.as_deref(), &skus)?;
    if let Some(name) = &which
        && !sets.set.contains_key(name)
    {
        anyhow::bail!("no driver set {name} (see `provisioner drivers list`)");
    }
    let suites = provisioner::repo::list(&config.data_dir)?;
    let mut failed = false;
    for (name, def) in &sets.set {
        if which.as_deref().is_some_and(|w| w != name) {
            continue;
        }
        let devices = def
            .skus
            .first()
            .and_then(|s| skus.sku.get(s))
            .map(|s| s.devices())
            .unwrap_or(0);
        let resolved = match suites.iter().find(|s| s.suite == def.suite) {
            None => Err(vec![format!(
                "suite {} is not in the repository (import the vendor's bundle: `provisioner repo import BUNDLE`)",
                def.suite
            )]),
            // The architecture the suite is for, when it publishes one (an arm64 suite for
            // Grace trays); else amd64, or the one named.
            Some(suite) => {
                let archs = suite.architectures();
                let arch = match (&arch, archs.as_slice()) {
                    (Some(a), _) => a.as_str(),
                    (None, [one]) => one.as_str(),
                    (None, _) => "amd64",
                };
                def.resolve(name, suite, arch, devices)
            }
        };
        match (&cmd, resolved) {
            (DriversCommand::Pins { .. }, Ok(set)) => {
                print!("{}", provisioner::drivers::apt_preferences(&set));
            }
            (DriversCommand::Show { .. }, Ok(set)) => {
                println!("{}", serde_json::to_string_pretty(&set)?);
            }
            (DriversCommand::Pins { .. } | DriversCommand::Show { .. }, Err(errs)) => {
                anyhow::bail!("driver set {name} does not resolve: {}", errs.join("; "));
            }
            (_, Ok(set)) => {
                println!(
                    "{name:<28} ready     suite {:<20} for {}: {}",
                    set.suite,
                    def.skus.join(", "),
                    def.description
                );
                if matches!(cmd, DriversCommand::Check { .. }) {
                    for (p, v) in &set.packages {
                        println!("  {p:<36} {v:<28} sha256 {}", set.sha256[p]);
                    }
                }
            }
            (_, Err(errs)) => {
                failed = matches!(cmd, DriversCommand::Check { .. });
                println!(
                    "{name:<28} not ready suite {:<20} for {}: {}",
                    def.suite,
                    def.skus.join(", "),
                    errs.join("; ")
                );
            }
        }
    }
    if failed {
        anyhow::bail!("a driver set does not resolve against its suite");
    }
    Ok(())
}

fn burnin(cmd: BurninCommand) -> anyhow::Result<()> {
    use provisioner::burnin::{judge::Level, offline};
    match cmd {
        BurninCommand::Plan { sku, profiles } => {
            let profiles = provisioner::app::load_profiles(profiles.as_deref())?;
            let plan = offline::plan(&profiles, &sku)?;
            println!("{}", serde_json::to_string_pretty(&plan)?);
            Ok(())
        }
        BurninCommand::Judge {
            sku,
            report,
            profiles,
            skus,
            json,
        } => {
            let profiles = provisioner::app::load_profiles(profiles.as_deref())?;
            let skus = provisioner::app::load_skus(skus.as_deref())?;
            let text = std::fs::read_to_string(&report)
                .with_context(|| format!("cannot read the report {}", report.display()))?;
            let parsed: provisioner_protocol::burnin::BurnInReport = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a burn-in report", report.display()))?;
            let judgement = offline::judge_report(&profiles, &skus, &sku, &parsed)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&judgement)?);
            } else {
                print!("{}", offline::render(&judgement, &parsed));
            }
            if judgement.level == Level::Fail {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn checklist(cmd: ChecklistCommand) -> anyhow::Result<()> {
    use provisioner::checklist::{self as cl, Templates};
    let templates = Templates::shipped()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let open = |store: StoreArgs| -> anyhow::Result<provisioner::store::Pool> {
        let config = store.config()?;
        Ok(runtime.block_on(provisioner::store::open(
            &config.data_dir,
            provisioner::store::SyncMode::Full,
        ))?)
    };
    match cmd {
        ChecklistCommand::Types => {
            for t in &templates.0 {
                println!(
                    "{} (v{}): {}; SKUs {}",
                    t.rack_type,
                    t.version,
                    t.title,
                    t.skus.join(", ")
                );
            }
        }
        ChecklistCommand::Start {
            rack,
            rack_type,
            by,
            store,
        } => {
            let pool = open(store)?;
            runtime.block_on(cl::start(&pool, &templates, &rack, &rack_type, &by))?;
            println!("checklist {rack_type} started for rack {rack}");
        }
        ChecklistCommand::Show {
            rack,
            format,
            store,
        } => {
            let pool = open(store)?;
            let v = runtime.block_on(cl::view(&pool, &templates, &rack))?;
            match format {
                ChecklistFormat::Text => print!("{}", cl::to_text(&v)),
                ChecklistFormat::Json => println!("{}", serde_json::to_string_pretty(&v)?),
                ChecklistFormat::Csv => print!("{}", cl::to_csv(&v)),
            }
        }
        ChecklistCommand::Tick {
            rack,
            step,
            slot,
            by,
            store,
        } => {
            let pool = open(store)?;
            let c = cl::StepChange {
                step: step.clone(),
                slot,
                by,
                mark: cl::Mark::Tick,
            };
            runtime.block_on(cl::change(&pool, &templates, &rack, &c))?;
            println!("ticked {step} on {rack}");
        }
        ChecklistCommand::Untick {
            rack,
            step,
            slot,
            by,
            reason,
            store,
        } => {
            let pool = open(store)?;
            let c = cl::StepChange {
                step: step.clone(),
                slot,
                by,
                mark: cl::Mark::Untick { reason },
            };
            runtime.block_on(cl::change(&pool, &templates, &rack, &c))?;
            println!("unticked {step} on {rack}");
        }
    }
    Ok(())
}

/// A folder holding a discovery image (its manifest), as opposed to an OS image.
fn is_discovery(from: &std::path::Path) -> bool {
    from.join(provisioner::image::MANIFEST).is_file()
}

fn image_build(args: BuildArgs) -> anyhow::Result<()> {
    use provisioner::image::os::{self, library, recipe};
    let config = args.store.config()?;
    let arch = match args.arch {
        Some(a) => a,
        None => os::Arch::ALL
            .into_iter()
            .find(|a| provisioner::image::Target::of(*a).is_host())
            .context("this machine's architecture builds no image: name one with --arch")?,
    };
    let recipe_path = recipe::find(&args.recipe)?;
    let loaded = os::Recipe::load(&recipe_path)?;
    let drivers = match &args.drivers {
        Some(set) => {
            let skus = provisioner::app::load_skus(config.skus.as_deref())?;
            let sets = provisioner::drivers::load(config.drivers.as_deref(), &skus)?;
            let debian_arch = loaded.arch(arch)?.debian.clone();
            Some(
                os::drivers::prepare(&config.data_dir, &sets, set, &debian_arch)
                    .map_err(anyhow::Error::msg)?,
            )
        }
        None => None,
    };
    let name = match &drivers {
        Some(d) => loaded.image_name_with(arch, &d.set.name),
        None => loaded.image_name(arch),
    };
    let out = args
        .out
        .unwrap_or_else(|| config.data_dir.join("builds").join(&name));
    let built = os::build(&os::OsBuildOptions {
        recipe: recipe_path,
        arch,
        mirror: args.mirror,
        out: out.clone(),
        data_dir: config.data_dir.clone(),
        cache_dir: args.cache_dir.unwrap_or(config.cache_dir.clone()),
        agent: args.agent,
        grade: !args.no_grade,
        keep_work: args.keep_work,
        quiet: false,
        drivers,
    })?;
    let m = &built.manifest;
    println!(
        "image {} built in {:.0} s in {}",
        m.name,
        built.seconds,
        out.display()
    );
    println!("{}", image_line(m));
    if !args.no_import {
        let entry = library::import(&config.data_dir, &out)?;
        println!("imported into {}", entry.dir.display());
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn grade_words(m: &provisioner::image::os::ImageManifest) -> String {
    match &m.grade {
        Some(g) => provisioner::image::os::manifest::grade_summary(g),
        None => "not graded".to_string(),
    }
}

/// One line per image for `image list`.
fn image_line(m: &provisioner::image::os::ImageManifest) -> String {
    format!(
        "{:<36} {:<7} raw {:>9}  zstd {:>8}  mapped {:>9}  kernel {}  {}",
        m.name,
        m.architecture.name(),
        mib(m.raw.size),
        mib(m.compressed.size),
        mib(m.mapped_bytes),
        m.kernel.release,
        grade_words(m)
    )
}

/// `image show NAME`.
fn image_details(e: &provisioner::image::os::library::Entry) -> String {
    let m = &e.manifest;
    let mut s = format!(
        "name         {}\nrecipe       {} {}\narchitecture {} (boots on {:?})\n\
         raw          {} bytes  sha256 {}\ncompressed   {} {} bytes  sha256 {}\n\
         block map    {} ({} mapped)  sha256 {}\nSBOM         {} ({} packages, SPDX 2.3)  sha256 {}\n\
         kernel       {} {} ({})\ncommand line {}\nhardening    {}\ngrade        {}\n\
         built        in {:.0} s, SOURCE_DATE_EPOCH {}\nfolder       {}\npartitions:\n",
        m.name,
        m.recipe,
        m.recipe_version,
        m.architecture,
        m.firmware,
        m.raw.size,
        m.raw.sha256,
        m.compressed.file,
        m.compressed.size,
        m.compressed.sha256,
        m.bmap.file,
        mib(m.mapped_bytes),
        m.bmap.sha256,
        m.sbom.file,
        m.packages,
        m.sbom.sha256,
        m.kernel.package,
        m.kernel.version,
        m.kernel.release,
        m.kernel.cmdline,
        m.hardening.as_deref().unwrap_or("none"),
        grade_words(m),
        m.build_seconds,
        m.source_date_epoch,
        e.dir.display(),
    );
    for p in &m.partitions {
        s += &format!(
            "  {:>2} {:<14} {:>9}  {:<10} {}\n",
            p.number,
            p.name,
            mib(p.bytes()),
            p.mount.as_deref().unwrap_or("-"),
            p.options.as_deref().unwrap_or("")
        );
    }
    s
}

/// Who names an image: `image remove` is refused while any does.
fn image_users(config: &Config, name: &str) -> anyhow::Result<Vec<String>> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(provisioner::admin::image_users(config, name))
}
