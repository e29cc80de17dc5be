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
use crate::boot::{Discovery, KernelArch};
use crate::burnin::profile::{Profiles, SHIPPED_PROFILES};
use crate::config::{Config, DhcpMode};
use crate::dhcp::leases::{LeaseTable, Subnet};
use crate::dhcp::pxe::BootServer;
use crate::dhcp::serve::Listener;
use crate::dhcp::{self, Interface, LocalBoot, Port, ReplyPorts, Server};
use crate::events::{Events, Neighbors};
use crate::firmware::FirmwareSet;
use crate::http::boot::BootContext;
use crate::lifecycle::Lifecycle;
use crate::lifecycle::machine::BootTarget;
use crate::lifecycle::plan::{SHIPPED_SKUS, Skus};
use crate::metrics::Metrics;
use crate::{http, net, store, tftp};

/// How often step timeouts are checked.
const TIMEOUT_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

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

/// Runs the appliance until `shutdown` is cancelled.
pub async fn up(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = store::open(&config.data_dir, config.store_sync).await?;
    info!(data_dir = %config.data_dir.display(), "store open");
    let metrics = Arc::new(Metrics::default());
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

    let firmware = FirmwareSet::load(&config.firmware_dir)?;
    if firmware.is_empty() {
        warn!(dir = %config.firmware_dir.display(), "no network-boot firmware to serve (fetch it with `just firmware`)");
    }
    let artifacts = ArtifactStore::open(&config.data_dir)?;
    let discovery = import_discovery(&config, &artifacts).await?;

    let skus = load_skus(config.skus.as_deref())?;
    let profiles = load_profiles(config.burnin_profiles.as_deref())?;
    let lifecycle = Lifecycle::open(pool.clone(), skus, profiles, config.timeouts.clone()).await?;
    info!(skus_version = lifecycle.skus().version, "lifecycle ready");
    tasks.spawn(
        lifecycle
            .clone()
            .run_timeouts(TIMEOUT_CHECK, shutdown.clone()),
    );

    let journal = store::open_journal(&config.data_dir).await?;
    let (events, event_writer) = Events::new(journal.clone(), Neighbors::default());
    let event_task = tokio::spawn(event_writer);

    let boots_locally = {
        let lifecycle = lifecycle.clone();
        LocalBoot::new(move |mac| lifecycle.boot_target(mac) == BootTarget::LocalDisk)
    };

    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http_listen))?;
    let http_addr = http_listener.local_addr()?;
    let boot = Arc::new(BootContext {
        firmware,
        artifacts,
        discovery,
        advertise,
        http_port: http_addr.port(),
        lifecycle,
        runtime: tokio::runtime::Handle::current(),
    });
    let (mut https, mut https_port) = (None, None);
    if let Some(addr) = config.https_listen {
        let names = http::tls::names(advertise, addr);
        let (tls, source) = http::tls::config(
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
            &config.data_dir,
            &names,
        )?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for HTTPS on {addr}"))?;
        let https_addr = listener.local_addr()?;
        https = Some((listener, tls));
        match source {
            http::tls::Source::Made(p) => info!(cert = %p.display(), names = ?names,
                "made a self-signed HTTPS certificate: trust it or replace it (tls_cert, tls_key)"),
            http::tls::Source::Kept(p) | http::tls::Source::Operator(p) => {
                info!(cert = %p.display(), "HTTPS certificate")
            }
        }
        https_port = Some(https_addr.port());
        info!(addr = %https_addr, "HTTPS listening");
    }
    let state = http::AppState {
        store: pool.clone(),
        metrics: metrics.clone(),
        events: events.clone(),
        journal: journal.clone(),
        boot: boot.clone(),
        checklists: Arc::new(crate::checklist::Templates::shipped()?),
        shutdown: shutdown.clone(),
        web: Arc::new(http::web::Guard::new(https_port)),
    };
    if let Some((listener, tls)) = https {
        let (state, token) = (state.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = http::tls::serve(listener, tls, state, token).await {
                tracing::error!(error = %e, "HTTPS server failed");
            }
        });
    }
    let token = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = http::serve(http_listener, state, token).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    info!(addr = %http_addr, "HTTP listening");

    let tftp_socket = std::net::UdpSocket::bind(config.tftp_listen).with_context(|| {
        format!(
            "cannot listen for TFTP on {} (port 69 needs root; --tftp-listen picks another)",
            config.tftp_listen
        )
    })?;
    let tftp_addr = tftp_socket.local_addr()?;
    let mtu = interfaces
        .iter()
        .filter_map(|i| net::interface_mtu(&i.name))
        .min()
        .unwrap_or(1500);
    tasks.spawn({
        let (boot, events, token) = (boot.clone(), events.clone(), shutdown.clone());
        async move {
            if let Err(e) =
                tftp::serve(tftp_socket, boot, events, tftp::blksize_for_mtu(mtu), token).await
            {
                tracing::error!(error = %e, "TFTP server failed");
            }
        }
    });
    info!(addr = %tftp_addr, "TFTP listening");

    if let Some((server, listeners)) = dhcp_server(
        &config,
        &pool,
        interfaces,
        advertise,
        http_addr.port(),
        boots_locally,
    )
    .await?
    {
        info!(
            mode = ?server.mode,
            interfaces = ?server.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            advertise = %server.boot_server.advertise,
            subnets = server.table.subnets().len(),
            "DHCP serving"
        );
        tasks.spawn(dhcp::serve(
            server,
            listeners,
            pool.clone(),
            metrics.clone(),
            events.clone(),
            shutdown.clone(),
        ));
    }
    drop(events);

    shutdown.cancelled().await;
    info!("shutting down");
    while tasks.join_next().await.is_some() {}
    // Every sender is gone with its server: the writer drains what is queued and ends.
    let _ = event_task.await;
    journal.close().await;
    pool.close().await;
    info!("stopped");
    Ok(())
}

/// Imports the discovery kernel and initrd into the artifact store (hashing them).
async fn import_discovery(
    config: &Config,
    artifacts: &ArtifactStore,
) -> anyhow::Result<Option<Discovery>> {
    let (kernel, initrd) = match (
        config.discovery.kernel.clone(),
        config.discovery.initrd.clone(),
    ) {
        (Some(k), Some(i)) => (k, i),
        (None, None) => match crate::image::load_default(&config.data_dir)? {
            Some(built) => {
                info!(dir = %built.kernel.parent().unwrap_or(&config.data_dir).display(), "using the discovery image built by `provisioner image build-discovery`");
                (built.kernel, built.initrd)
            }
            None => {
                warn!(
                    "no discovery image: build one with `provisioner image build-discovery` or give --discovery-kernel and --discovery-initrd; nodes are told so and retry"
                );
                return Ok(None);
            }
        },
        _ => bail!("--discovery-kernel and --discovery-initrd go together"),
    };
    let store = artifacts.clone();
    let (kernel, initrd, arch) = tokio::task::spawn_blocking(move || {
        let arch = kernel_arch(&kernel)?;
        Ok::<_, anyhow::Error>((store.import(&kernel)?, store.import(&initrd)?, arch))
    })
    .await??;
    match arch {
        Some(arch) => {
            info!(kernel = %kernel.sha256, initrd = %initrd.sha256, arch = arch.name(), "discovery image imported")
        }
        None => warn!(
            kernel = %kernel.sha256,
            "discovery kernel's architecture is not in its header: every node is given it"
        ),
    }
    Ok(Some(Discovery {
        kernel,
        initrd,
        cmdline: config.discovery.cmdline.clone().unwrap_or_default(),
        arch,
    }))
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

/// Builds the DHCP server and binds its sockets, or says why DHCP stays off.
async fn dhcp_server(
    config: &Config,
    pool: &store::Pool,
    interfaces: Vec<Interface>,
    advertise: Option<Ipv4Addr>,
    http_port: u16,
    boots_locally: LocalBoot,
) -> anyhow::Result<Option<(Server, Vec<Listener>)>> {
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
