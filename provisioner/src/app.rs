//! Start-up and shutdown: binds what the configuration names, spawns every server into one
//! `JoinSet` under one cancellation token, and drains them on shutdown.

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::artifacts::ArtifactStore;
use crate::boot::BootServer;
use crate::boot::{BootContext, Discovery, KernelArch};
use crate::burnin::profile::{Profiles, SHIPPED_PROFILES};
use crate::config::{Config, DhcpMode};
use crate::dhcp::leases::{LeaseTable, Subnet};
use crate::dhcp::serve::Listener;
use crate::dhcp::{self, Interface, LocalBoot, Port, ReplyPorts, Server};
use crate::events::{Events, Neighbors};
use crate::firmware::FirmwareSet;
use crate::lifecycle::Lifecycle;
use crate::lifecycle::admission::NewNodes;
use crate::lifecycle::plan::{SHIPPED_SKUS, Skus};
use crate::metrics::Metrics;
use crate::supervise::{Health, supervise};
use crate::{http, net, store, tftp};

/// The SKU definitions: the configured file, else the shipped ones.
pub fn load_skus(path: Option<&std::path::Path>) -> anyhow::Result<Skus> {
    let (text, from) = match path {
        Some(p) => (
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read SKU definitions {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (SHIPPED_SKUS.to_string(), "shipped skus.toml".to_string()),
    };
    Skus::parse(&text).map_err(|e| anyhow::anyhow!("SKU definitions {from}: {e}"))
}

/// The burn-in profiles: the configured file, else the shipped ones.
pub fn load_profiles(path: Option<&std::path::Path>) -> anyhow::Result<Profiles> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read burn-in profiles {}", p.display()))?,
        None => SHIPPED_PROFILES.to_string(),
    };
    Ok(Profiles::parse(&text)?)
}

/// The appliance with everything but its sockets: the store, the lifecycle and its timeout
/// sweeper, the boot journal and its writer, what nodes boot, and the state the HTTP router
/// serves from. `up` binds the sockets and serves from it; tests drive its router in process.
pub struct Appliance {
    pub config: Config,
    /// The configured limits, kept within the open-file limit.
    pub limits: crate::config::Limits,
    pub pool: store::Pool,
    pub journal: store::Pool,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub boot: Arc<BootContext>,
    /// What the HTTP router serves from.
    pub state: http::AppState,
    pub interfaces: Vec<Interface>,
    pub advertise: Option<Ipv4Addr>,
    /// Whether a node boots from its own disk, as the lifecycle says: for DHCP.
    pub boots_locally: LocalBoot,
    tasks: JoinSet<()>,
    event_task: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Appliance {
    /// Opens what the appliance runs on: provides what nodes need and is missing (first
    /// start), opens the store, starts the lifecycle's timeout sweeper (stopped by `shutdown`).
    /// `http_port` and `https_port` are where the sockets `up` bound listen, for URLs.
    pub async fn open(
        config: Config,
        http_port: u16,
        https_port: Option<u16>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Appliance> {
        let pool = store::open(&config.data_dir, config.store_sync).await?;
        info!(data_dir = %config.data_dir.display(), "store open");
        let metrics = Arc::new(Metrics::default());
        let health = Health::new(metrics.clone());
        let limits = limits_for_open_files(&config.limits);
        let mut tasks = JoinSet::new();

        let interfaces = config
            .interfaces
            .iter()
            .map(|name| {
                Ok(Interface {
                    name: name.clone(),
                    net: net::interface_ipv4(name)?,
                })
            })
            .collect::<Result<Vec<_>, net::NetError>>()?;
        let advertise = config.advertise.or(interfaces.first().map(|i| i.addr()));

        // What nodes need and is missing: fetched or built now (first start), or said, with
        // how to import it, when it cannot be had.
        let needs = crate::provide::Needs {
            firmware_dir: config.firmware_dir.clone(),
            data_dir: config.data_dir.clone(),
            cache_dir: config.cache_dir.clone(),
            offline: config.offline,
            discovery_given: config.discovery.kernel.is_some(),
        };
        tokio::task::spawn_blocking(move || crate::provide::provide(&needs)).await?;
        let firmware = FirmwareSet::load(&config.firmware_dir)?;
        if firmware.is_empty() {
            warn!(dir = %config.firmware_dir.display(), "no network-boot firmware to serve (`provisioner firmware fetch`, or `provisioner firmware import DIR`)");
        }
        let artifacts = ArtifactStore::open(&config.data_dir)?;
        let discovery = import_discovery(&config, &artifacts).await?;

        let skus = load_skus(config.skus.as_deref())?;
        let profiles = load_profiles(config.burnin_profiles.as_deref())?;
        let new_nodes = NewNodes::new(
            limits.new_nodes_per_peer_per_minute,
            limits.new_nodes_per_minute,
            metrics.limits.clone(),
        );
        let mut install = config.install.clone();
        let drivers = crate::drivers::load(config.drivers.as_deref(), &skus)?;
        info!(sets = drivers.set.len(), "driver sets");
        install.drivers = Arc::new(drivers);
        install.archive_key =
            crate::repo::ArchiveKey::load_or_create(&config.data_dir)?.public_armored()?;
        let lifecycle = Lifecycle::open_with(
            pool.clone(),
            skus,
            profiles,
            config.timeouts.clone(),
            new_nodes,
            install,
        )
        .await?;
        info!(skus_version = lifecycle.skus().version, "lifecycle ready");
        let sweep_every = config.sweep_every;
        tasks.spawn(supervise("timeouts", health.clone(), shutdown.clone(), {
            let (lifecycle, token) = (lifecycle.clone(), shutdown.clone());
            move |ready| {
                let (lifecycle, token) = (lifecycle.clone(), token.clone());
                async move {
                    ready.serving();
                    lifecycle.run_timeouts(sweep_every, token).await;
                    Ok(())
                }
            }
        }));

        let journal = store::open_journal(&config.data_dir).await?;
        let (events, event_writer) = Events::new(
            journal.clone(),
            Neighbors::default(),
            limits.events_per_node,
        );
        let event_task = tokio::spawn(event_writer);

        let boot = Arc::new(BootContext {
            firmware,
            artifacts,
            discovery,
            advertise,
            http_port,
            lifecycle,
            runtime: tokio::runtime::Handle::current(),
            repo_dir: crate::repo::repo_dir(&config.data_dir),
            archive_key: crate::repo::ArchiveKey::public_path(&config.data_dir),
        });
        let boots_locally = {
            let boot = boot.clone();
            LocalBoot::new(move |mac| boot.boots_locally(mac))
        };
        let state = http::AppState {
            store: pool.clone(),
            metrics: metrics.clone(),
            events,
            journal: journal.clone(),
            boot: boot.clone(),
            checklists: Arc::new(crate::checklist::Templates::shipped()?),
            shutdown: shutdown.clone(),
            web: Arc::new(http::web::Guard::new(https_port, &limits)),
            conns: http::conns::Conns::new(&limits, metrics.clone()),
            health: health.clone(),
        };
        Ok(Appliance {
            config,
            limits,
            pool,
            journal,
            metrics,
            health,
            boot,
            state,
            interfaces,
            advertise,
            boots_locally,
            tasks,
            event_task,
            shutdown,
        })
    }

    /// The HTTP router, as the listeners serve it.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Waits, after `shutdown` was cancelled, for every task to end and the journal to take
    /// what is queued; then closes the store.
    pub async fn close(self) {
        let Appliance {
            mut tasks,
            event_task,
            state,
            boot,
            journal,
            pool,
            ..
        } = self;
        while tasks.join_next().await.is_some() {}
        // Every sender is gone with its server: the writer drains what is queued and ends.
        drop((state, boot));
        let _ = event_task.await;
        journal.close().await;
        pool.close().await;
    }
}

/// Runs the appliance until `shutdown` is cancelled. Each server is bound here first, so a
/// port that cannot be had stops start-up with its reason; from then on each runs under a
/// supervisor (`crate::supervise`) that starts it again if it stops.
pub async fn up(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http_listen))?;
    let http_addr = http_listener.local_addr()?;
    let mut https = None;
    if let Some(addr) = config.https_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for HTTPS on {addr}"))?;
        let https_addr = listener.local_addr()?;
        https = Some((listener, https_addr));
    }
    let tftp_socket = std::net::UdpSocket::bind(config.tftp_listen).with_context(|| {
        format!(
            "cannot listen for TFTP on {} (port 69 needs root; --tftp-listen picks another)",
            config.tftp_listen
        )
    })?;
    let tftp_addr = tftp_socket.local_addr()?;

    let mut app = Appliance::open(
        config,
        http_addr.port(),
        https.as_ref().map(|(_, a)| a.port()),
        shutdown.clone(),
    )
    .await?;
    let config = app.config.clone();
    let (health, metrics) = (app.health.clone(), app.metrics.clone());

    if let Some((listener, addr)) = https {
        let names = http::tls::names(app.advertise, addr);
        let (tls, source) = http::tls::config(
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
            &config.data_dir,
            &names,
        )?;
        match source {
            http::tls::Source::Made(p) => info!(cert = %p.display(), names = ?names,
                "made a self-signed HTTPS certificate: trust it or replace it (tls_cert, tls_key)"),
            http::tls::Source::Kept(p) | http::tls::Source::Operator(p) => {
                info!(cert = %p.display(), "HTTPS certificate")
            }
        }
        let (state, token) = (app.state.clone(), shutdown.clone());
        app.tasks.spawn(supervise_listener(
            "https",
            health.clone(),
            shutdown.clone(),
            listener,
            addr,
            move |l| http::tls::serve(l, tls.clone(), state.clone(), token.clone()),
        ));
        info!(addr = %addr, "HTTPS listening");
    }
    let (state, token) = (app.state.clone(), shutdown.clone());
    app.tasks.spawn(supervise_listener(
        "http",
        health.clone(),
        shutdown.clone(),
        http_listener,
        http_addr,
        move |l| http::serve(l, state.clone(), token.clone()),
    ));
    info!(addr = %http_addr, "HTTP listening");

    let mtu = app
        .interfaces
        .iter()
        .filter_map(|i| net::interface_mtu(&i.name))
        .min()
        .unwrap_or(1500);
    let tftp_limits =
        tftp::TftpLimits::new(tftp::blksize_for_mtu(mtu), &app.limits, metrics.clone());
    {
        let (boot, events, token) = (app.boot.clone(), app.state.events.clone(), shutdown.clone());
        let mut first = Some(tftp_socket);
        app.tasks.spawn(supervise(
            "tftp",
            health.clone(),
            shutdown.clone(),
            move |ready| {
                let socket = first.take();
                let (boot, events, token, limits) = (
                    boot.clone(),
                    events.clone(),
                    token.clone(),
                    tftp_limits.clone(),
                );
                async move {
                    let socket = match socket {
                        Some(s) => s,
                        None => std::net::UdpSocket::bind(tftp_addr)
                            .map_err(|e| format!("cannot listen for TFTP on {tftp_addr}: {e}"))?,
                    };
                    ready.serving();
                    tftp::serve(socket, boot, events, limits, token)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        ));
    }
    info!(addr = %tftp_addr, "TFTP listening");

    let dhcp_setup = DhcpSetup {
        config: config.clone(),
        pool: app.pool.clone(),
        interfaces: app.interfaces.clone(),
        advertise: app.advertise,
        http_port: http_addr.port(),
        boots_locally: app.boots_locally.clone(),
    };
    if let Some((server, listeners)) = dhcp_setup.server().await? {
        info!(
            mode = ?server.mode,
            interfaces = ?server.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            advertise = %server.boot_server.advertise,
            subnets = server.table.subnets().len(),
            "DHCP serving"
        );
        let (pool, events, token) = (app.pool.clone(), app.state.events.clone(), shutdown.clone());
        let setup = Arc::new(dhcp_setup);
        let mut first = Some((server, listeners));
        app.tasks.spawn(supervise(
            "dhcp",
            health.clone(),
            shutdown.clone(),
            move |ready| {
                let prepared = first.take();
                let (setup, pool, metrics, events, token) = (
                    setup.clone(),
                    pool.clone(),
                    metrics.clone(),
                    events.clone(),
                    token.clone(),
                );
                async move {
                    // A restart starts from the store: every lease an ACK promised is there.
                    let (server, listeners) = match prepared {
                        Some(p) => p,
                        None => setup
                            .server()
                            .await
                            .map_err(|e| format!("cannot start DHCP: {e:#}"))?
                            .ok_or("DHCP is no longer configured")?,
                    };
                    ready.serving();
                    dhcp::serve(server, listeners, pool, metrics, events, token).await;
                    Ok(())
                }
            },
        ));
    }

    app.shutdown.cancelled().await;
    info!("shutting down");
    app.close().await;
    info!("stopped");
    Ok(())
}

/// Runs `part`, serving on `listener` (bound at start, so a port that cannot be had stops
/// start-up), under its supervisor; each restart binds `addr` again.
async fn supervise_listener<S, F>(
    part: &'static str,
    health: Arc<Health>,
    shutdown: CancellationToken,
    listener: TcpListener,
    addr: std::net::SocketAddr,
    serve: S,
) where
    S: Fn(TcpListener) -> F + Send + Sync + 'static,
    F: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let serve = Arc::new(serve);
    let mut first = Some(listener);
    supervise(part, health, shutdown, move |ready| {
        let (listener, serve) = (first.take(), serve.clone());
        async move {
            let listener = match listener {
                Some(l) => l,
                None => TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
            };
            ready.serving();
            serve(listener)
                .await
                .map_err(|e| format!("{part} server failed: {e}"))
        }
    })
    .await
}

/// File descriptors a connection limit must leave for the store, TFTP and the rest.
const SPARE_FILES: u64 = 512;

/// Raises this process's open-file limit to its hard limit, and keeps the HTTP connection
/// limits within it: a limit the kernel would refuse first is no limit at all.
fn limits_for_open_files(limits: &crate::config::Limits) -> crate::config::Limits {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let mut out = limits.clone();
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return out;
    };
    let files = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let room = usize::try_from(files.saturating_sub(SPARE_FILES))
        .unwrap_or(usize::MAX)
        .max(64);
    if out.http_connections > room {
        warn!(
            configured = out.http_connections,
            open_files = files,
            using = room,
            "limits.http_connections is more than this process may open files for; raise its open-file limit (LimitNOFILE=)"
        );
        out.http_connections = room;
        out.http_connections_per_peer = out.http_connections_per_peer.min(room);
    }
    out
}

/// Imports the discovery images into the artifact store (hashing them): the one named by
/// `--discovery-kernel`/`--discovery-initrd`, for its kernel's architecture, and the one
/// `build-discovery` left for each other architecture. Each node boots its own.
async fn import_discovery(
    config: &Config,
    artifacts: &ArtifactStore,
) -> anyhow::Result<Vec<Discovery>> {
    let mut files: Vec<(std::path::PathBuf, std::path::PathBuf, Option<KernelArch>)> = Vec::new();
    match (
        config.discovery.kernel.clone(),
        config.discovery.initrd.clone(),
    ) {
        (Some(k), Some(i)) => files.push((k, i, None)),
        (None, None) => {}
        _ => bail!("--discovery-kernel and --discovery-initrd go together"),
    }
    for arch in KernelArch::ALL {
        if let Some(built) = crate::image::load_arch(&config.data_dir, arch)? {
            info!(%arch, dir = %built.kernel.parent().unwrap_or(&config.data_dir).display(), "using the discovery image built by `provisioner image build-discovery`");
            files.push((built.kernel, built.initrd, Some(arch)));
        }
    }
    let mut images: Vec<Discovery> = Vec::new();
    for (kernel, initrd, built_for) in files {
        let store = artifacts.clone();
        let (kernel, initrd, arch) = tokio::task::spawn_blocking(move || {
            let arch = kernel_arch(&kernel)?;
            if let Some(want) = built_for
                && arch.is_some_and(|a| a != want)
            {
                bail!(
                    "{}: its manifest says {want}, its kernel's header does not: rebuild it",
                    kernel.display()
                );
            }
            Ok::<_, anyhow::Error>((
                store.import(&kernel)?,
                store.import(&initrd)?,
                arch.or(built_for),
            ))
        })
        .await??;
        // The operator's image comes first and wins over a built one of its architecture.
        if images.iter().any(|d| d.arch == arch) {
            info!(arch = arch.map(KernelArch::name).unwrap_or("unknown"), kernel = %kernel.sha256, "a discovery image named on the command line replaces the built one");
            continue;
        }
        match arch {
            Some(arch) => {
                info!(kernel = %kernel.sha256, initrd = %initrd.sha256, arch = arch.name(), "discovery image imported")
            }
            None => warn!(
                kernel = %kernel.sha256,
                "discovery kernel's architecture is not in its header: nodes of an architecture with no image of its own are given it"
            ),
        }
        images.push(Discovery {
            kernel,
            initrd,
            cmdline: config.discovery.cmdline.clone().unwrap_or_default(),
            arch,
        });
    }
    if images.is_empty() {
        warn!(
            "no discovery image: build one with `provisioner image build-discovery [--arch arm64]` or give --discovery-kernel and --discovery-initrd; nodes are told so and retry"
        );
    }
    Ok(images)
}

/// The architecture of the kernel image at `path`, from its first bytes.
fn kernel_arch(path: &std::path::Path) -> anyhow::Result<Option<KernelArch>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(KernelArch::HEADER_LEN);
    std::fs::File::open(path)
        .with_context(|| format!("cannot read discovery kernel {}", path.display()))?
        .take(KernelArch::HEADER_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(KernelArch::of_image(&head))
}

/// What the DHCP server is built from, kept so that its supervisor can build it again.
struct DhcpSetup {
    config: Config,
    pool: store::Pool,
    interfaces: Vec<Interface>,
    advertise: Option<Ipv4Addr>,
    http_port: u16,
    boots_locally: LocalBoot,
}

impl DhcpSetup {
    /// Builds the DHCP server (its leases read from the store) and binds its sockets, or says
    /// why DHCP stays off.
    async fn server(&self) -> anyhow::Result<Option<(Server, Vec<Listener>)>> {
        let Self {
            config,
            pool,
            advertise,
            http_port,
            ..
        } = self;
        let (advertise, http_port, interfaces) = (*advertise, *http_port, self.interfaces.clone());
        let boots_locally = self.boots_locally.clone();
        let d = &config.dhcp;
        if d.mode == DhcpMode::Off {
            info!("DHCP is off (--dhcp off)");
            return Ok(None);
        }
        if interfaces.is_empty() {
            warn!(
                "DHCP stays off: no provisioning interface is named (--interface NAME); \
             HTTP and TFTP still run"
            );
            return Ok(None);
        }
        let advertise = advertise.unwrap_or_else(|| interfaces[0].addr());
        let subnets = if d.mode == DhcpMode::Full {
            subnets(config, &interfaces)?
        } else {
            Vec::new()
        };
        let leases = if d.mode == DhcpMode::Full {
            store::leases::all(pool).await?
        } else {
            Vec::new()
        };
        info!(leases = leases.len(), "leases loaded from the store");
        let own: Vec<Ipv4Addr> = interfaces
            .iter()
            .map(|i| i.addr())
            .chain([advertise])
            .collect();
        let table = LeaseTable::new(subnets, &d.reservations, leases, own);
        let mut listeners = Vec::new();
        for (i, iface) in interfaces.iter().enumerate() {
            let mut ports = vec![(dhcp::SERVER_PORT, Port::Dhcp)];
            if d.mode == DhcpMode::Proxy {
                ports.push((dhcp::PXE_PORT, Port::Pxe));
            }
            for (port, kind) in ports {
                let socket = UdpSocket::from_std(net::bind_udp_on_interface(&iface.name, port)?)?;
                listeners.push(Listener {
                    socket: Arc::new(socket),
                    iface: i,
                    port: kind,
                });
            }
        }
        let server = Server {
            mode: d.mode,
            interfaces,
            table,
            boot: d.boot.clone(),
            boot_server: BootServer {
                advertise,
                http_port,
            },
            ports: ReplyPorts::default(),
            boots_locally,
        };
        Ok(Some((server, listeners)))
    }
}

/// The subnets of full mode: those of the file, and the `--dhcp-range` shorthand on the
/// network of the interface that holds it.
fn subnets(config: &Config, interfaces: &[Interface]) -> anyhow::Result<Vec<Subnet>> {
    let d = &config.dhcp;
    let mut out: Vec<Subnet> = d
        .subnets
        .iter()
        .map(|s| Subnet {
            cidr: s.cidr.trunc(),
            range: s.range,
            router: s.router,
            dns: s.dns.clone(),
            domain: s.domain.clone(),
            lease_time: s.lease_time.unwrap_or(d.lease_time),
        })
        .collect();
    if let Some(range) = d.range {
        let Some(iface) = interfaces
            .iter()
            .find(|i| i.net.contains(&range.first) && i.net.contains(&range.last))
        else {
            bail!(
                "`dhcp.range` {range} is on none of the named interfaces' networks ({})",
                interfaces
                    .iter()
                    .map(|i| format!("{} {}", i.name, i.net))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let cidr = iface.net.trunc();
        if out.iter().any(|s| s.cidr == cidr) {
            bail!("`dhcp.range` {range}: subnet {cidr} is also configured in [[dhcp.subnets]]");
        }
        out.push(Subnet {
            cidr,
            range,
            router: None,
            dns: Vec::new(),
            domain: None,
            lease_time: d.lease_time,
        });
    }
    Ok(out)
}
