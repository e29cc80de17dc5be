//! The appliance's configuration: a TOML file overridden by command-line flags, checked once
//! at start so that a wrong key or value is an error that names it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::boot::{BootFile, BootMap};
use crate::store::SyncMode;
use crate::types::{AddrRange, MacAddr};

/// How the DHCP server behaves on the provisioning network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// No DHCP at all.
    Off,
    /// PXE proxy (RFC 4578): boot information only, never an address.
    #[default]
    Proxy,
    /// A full DHCP server with address pools.
    Full,
}

/// What the TOML file may say. Every table refuses keys it does not know.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub interfaces: Option<Vec<String>>,
    pub advertise: Option<Ipv4Addr>,
    pub http_listen: Option<SocketAddr>,
    /// The pages and the API over HTTPS too (off unless set).
    pub https_listen: Option<SocketAddr>,
    /// The HTTPS certificate chain and key (PEM); without them the appliance makes its own.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tftp_listen: Option<SocketAddr>,
    pub firmware_dir: Option<PathBuf>,
    /// Downloaded packages and apt state (default DATA_DIR/cache).
    pub cache_dir: Option<PathBuf>,
    /// Fetch nothing: missing firmware and images are imported by hand.
    pub offline: Option<bool>,
    #[serde(default)]
    pub discovery: DiscoveryFile,
    #[serde(default)]
    pub dhcp: DhcpFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub lifecycle: LifecycleFile,
    #[serde(default)]
    pub limits: Limits,
}

/// `[limits]`: what one client, and all of them together, may take of the appliance. The
/// provisioning network is shared with every node it boots, so each of these is a bound that
/// a hostile peer runs into instead of the appliance (`docs/security.md`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// HTTP connections open at once (HTTP and HTTPS together).
    pub http_connections: usize,
    /// HTTP connections one peer address may hold open.
    pub http_connections_per_peer: usize,
    /// The longest a client may take to send a request head, from its first byte or from the
    /// end of its previous request.
    #[serde(with = "humantime_serde_secs")]
    pub http_head_timeout: std::time::Duration,
    /// TFTP transfers at once; past this a transfer not yet acknowledged gives way to a new
    /// request, and with none such the request gets "busy".
    pub tftp_transfers: usize,
    /// TFTP transfers one client address may have at once.
    pub tftp_transfers_per_client: usize,
    /// The longest retransmission timeout (RFC 2349) a TFTP client may ask for, in seconds.
    pub tftp_max_timeout: u8,
    /// New nodes one peer address may bring into being per minute by asking for their boot
    /// scripts (HTTP or TFTP) when the network cannot say the peer is that node.
    pub new_nodes_per_peer_per_minute: u32,
    /// New nodes the whole site takes per minute.
    pub new_nodes_per_minute: u32,
    /// Boot events kept per node; older ones are forgotten.
    pub events_per_node: u32,
    /// Live page streams (`/events`) at once, of which `live_streams_for_operators` are kept
    /// for signed-in operators.
    pub live_streams: usize,
    pub live_streams_for_operators: usize,
    /// Live page streams one peer address may hold.
    pub live_streams_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            http_connections: 4096,
            http_connections_per_peer: 256,
            http_head_timeout: std::time::Duration::from_secs(10),
            tftp_transfers: 1024,
            tftp_transfers_per_client: 8,
            tftp_max_timeout: 5,
            new_nodes_per_peer_per_minute: 30,
            new_nodes_per_minute: 5000,
            events_per_node: 2000,
            live_streams: 256,
            live_streams_for_operators: 64,
            live_streams_per_peer: 8,
        }
    }
}

/// A duration written as humantime text (`"10s"`, `"1m"`).
mod humantime_serde_secs {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("`{s}`: {e}")))
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("limits.http_connections", self.http_connections),
            (
                "limits.http_connections_per_peer",
                self.http_connections_per_peer,
            ),
            ("limits.tftp_transfers", self.tftp_transfers),
            (
                "limits.tftp_transfers_per_client",
                self.tftp_transfers_per_client,
            ),
            (
                "limits.tftp_max_timeout",
                usize::from(self.tftp_max_timeout),
            ),
            ("limits.events_per_node", self.events_per_node as usize),
            ("limits.live_streams", self.live_streams),
            ("limits.live_streams_per_peer", self.live_streams_per_peer),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(*key, "must be at least 1"));
        }
        if self.http_connections_per_peer > self.http_connections {
            return Err(invalid(
                "limits.http_connections_per_peer",
                "cannot be more than limits.http_connections",
            ));
        }
        if self.live_streams_for_operators >= self.live_streams {
            return Err(invalid(
                "limits.live_streams_for_operators",
                "must leave some of limits.live_streams to everyone else",
            ));
        }
        let head = self.http_head_timeout;
        if head < std::time::Duration::from_millis(100)
            || head > std::time::Duration::from_secs(300)
        {
            return Err(invalid(
                "limits.http_head_timeout",
                "must be between 100ms and 5m",
            ));
        }
        Ok(())
    }
}

/// `[lifecycle]`: the SKU definitions and how long each step may take.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleFile {
    /// A SKU definitions file replacing the shipped one.
    pub skus: Option<PathBuf>,
    /// A burn-in profiles file replacing the shipped one.
    pub burnin_profiles: Option<PathBuf>,
    /// A driver sets file replacing the shipped `drivers.toml`.
    pub drivers: Option<PathBuf>,
    /// Step name (`discovered`, `inspecting`, `installing`, `burning_in`) to a duration such
    /// as `"15m"`; a step not named keeps its default.
    #[serde(default)]
    pub timeouts: std::collections::BTreeMap<String, String>,
    /// How often the timeouts are checked (default `"5s"`): a step fails at most this long
    /// after its timeout.
    pub sweep_every: Option<String>,
    /// An inspected node whose slot names an OS image is installed without an operator
    /// (default true).
    pub auto_install: Option<bool>,
    /// `authorized_keys` lines for the installed systems' admin account.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Time servers for the installed systems (default: the appliance's address).
    #[serde(default)]
    pub ntp: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpFile {
    pub mode: Option<DhcpMode>,
    /// Shorthand for one pool on the provisioning interface's own subnet.
    pub range: Option<AddrRange>,
    /// Lease time in seconds for the `range` shorthand and the default for subnets.
    pub lease_time: Option<u32>,
    #[serde(default)]
    pub subnets: Vec<SubnetConfig>,
    #[serde(default)]
    pub reservations: Vec<Reservation>,
    /// Entries replace the default boot file for their architecture.
    #[serde(default)]
    pub boot_files: Vec<BootFileEntry>,
}

/// The discovery image every unknown node boots.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub sync: Option<SyncMode>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    pub cidr: Ipv4Net,
    pub range: AddrRange,
    pub router: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_time: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BootFileEntry {
    /// RFC 4578 client system architecture (option 93).
    pub arch: u16,
    /// File name, served by TFTP, or by HTTP when `http` is set.
    pub file: String,
    #[serde(default)]
    pub http: bool,
}

/// Flags from the command line; each one set wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub interfaces: Vec<String>,
    pub dhcp: Option<DhcpMode>,
    pub dhcp_range: Option<AddrRange>,
    pub advertise: Option<Ipv4Addr>,
    pub http_listen: Option<SocketAddr>,
    pub https_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tftp_listen: Option<SocketAddr>,
    pub firmware_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    /// `--offline`: set, it wins over the file.
    pub offline: bool,
    pub discovery_kernel: Option<PathBuf>,
    pub discovery_initrd: Option<PathBuf>,
    pub discovery_cmdline: Option<String>,
}

/// The configuration the appliance runs with, after the file and the flags are merged.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub interfaces: Vec<String>,
    pub advertise: Option<Ipv4Addr>,
    pub http_listen: SocketAddr,
    pub https_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tftp_listen: SocketAddr,
    pub firmware_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub offline: bool,
    pub discovery: DiscoveryFile,
    pub dhcp: DhcpConfig,
    pub store_sync: SyncMode,
    pub skus: Option<PathBuf>,
    pub burnin_profiles: Option<PathBuf>,
    pub drivers: Option<PathBuf>,
    pub timeouts: crate::lifecycle::Timeouts,
    pub sweep_every: std::time::Duration,
    pub install: crate::lifecycle::InstallSettings,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct DhcpConfig {
    pub mode: DhcpMode,
    pub range: Option<AddrRange>,
    pub lease_time: u32,
    pub subnets: Vec<SubnetConfig>,
    pub reservations: Vec<Reservation>,
    pub boot: BootMap,
}

pub const DEFAULT_LEASE_TIME: u32 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("`{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

impl FileConfig {
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Reads `path`; an explicit path must exist, the default one may be absent.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("provisioner.toml"), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_toml(&text, &path),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

/// The longest a step may be given.
const MAX_STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

fn timeouts(
    given: &std::collections::BTreeMap<String, String>,
) -> Result<crate::lifecycle::Timeouts, ConfigError> {
    use crate::lifecycle::machine::Step;
    let mut t = crate::lifecycle::Timeouts::default();
    for (name, value) in given {
        let key = format!("lifecycle.timeouts.{name}");
        let step = Step::parse(name).ok_or_else(|| {
            invalid(
                &key,
                "not a step (discovered, inspecting, installing, burning_in)",
            )
        })?;
        let d = humantime::parse_duration(value)
            .map_err(|e| invalid(&key, format!("`{value}`: {e}")))?;
        if d.is_zero() || d > MAX_STEP_TIMEOUT {
            return Err(invalid(
                &key,
                "must be longer than zero and at most 365 days",
            ));
        }
        t.0.insert(step, d);
    }
    Ok(t)
}

/// The timeout sweeper's interval: 5 s unless the file says, between 100 ms and an hour.
fn sweep_every(given: Option<&str>) -> Result<std::time::Duration, ConfigError> {
    let Some(text) = given else {
        return Ok(std::time::Duration::from_secs(5));
    };
    let key = "lifecycle.sweep_every";
    let d = humantime::parse_duration(text).map_err(|e| invalid(key, format!("`{text}`: {e}")))?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(3600) {
        return Err(invalid(key, "must be between 100ms and 1h"));
    }
    Ok(d)
}

impl Config {
    pub fn merge(file: FileConfig, flags: Overrides) -> Result<Config, ConfigError> {
        let interfaces = if flags.interfaces.is_empty() {
            file.interfaces.unwrap_or_default()
        } else {
            flags.interfaces
        };
        let dhcp = DhcpConfig {
            mode: flags.dhcp.or(file.dhcp.mode).unwrap_or_default(),
            range: flags.dhcp_range.or(file.dhcp.range),
            lease_time: file.dhcp.lease_time.unwrap_or(DEFAULT_LEASE_TIME),
            subnets: file.dhcp.subnets,
            reservations: file.dhcp.reservations,
            boot: BootMap::with_overrides(file.dhcp.boot_files.iter().map(|e| {
                (
                    e.arch,
                    BootFile {
                        file: e.file.clone(),
                        http: e.http,
                    },
                )
            })),
        };
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./var"));
        let config = Config {
            cache_dir: flags
                .cache_dir
                .or(file.cache_dir)
                .unwrap_or_else(|| data_dir.join("cache")),
            offline: flags.offline || file.offline.unwrap_or(false),
            data_dir: data_dir.clone(),
            interfaces,
            advertise: flags.advertise.or(file.advertise),
            http_listen: flags
                .http_listen
                .or(file.http_listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
            https_listen: flags.https_listen.or(file.https_listen),
            tls_cert: flags.tls_cert.or(file.tls_cert),
            tls_key: flags.tls_key.or(file.tls_key),
            tftp_listen: flags
                .tftp_listen
                .or(file.tftp_listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 69))),
            firmware_dir: flags
                .firmware_dir
                .or(file.firmware_dir)
                .unwrap_or_else(|| PathBuf::from("./firmware")),
            discovery: DiscoveryFile {
                kernel: flags.discovery_kernel.or(file.discovery.kernel),
                initrd: flags.discovery_initrd.or(file.discovery.initrd),
                cmdline: flags.discovery_cmdline.or(file.discovery.cmdline),
            },
            dhcp,
            store_sync: file.store.sync.unwrap_or_default(),
            skus: file.lifecycle.skus,
            burnin_profiles: file.lifecycle.burnin_profiles,
            drivers: file.lifecycle.drivers,
            timeouts: timeouts(&file.lifecycle.timeouts)?,
            sweep_every: sweep_every(file.lifecycle.sweep_every.as_deref())?,
            install: crate::lifecycle::InstallSettings {
                auto: file.lifecycle.auto_install.unwrap_or(true),
                data_dir: Some(data_dir.clone()),
                ssh_authorized_keys: file.lifecycle.ssh_authorized_keys,
                ntp: file.lifecycle.ntp,
                // Read with the SKUs when the appliance starts (`app`).
                drivers: Default::default(),
                archive_key: String::new(),
            },
            limits: file.limits,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "tls_cert",
                "tls_cert and tls_key go together: name both or neither",
            ));
        }
        match (&self.discovery.kernel, &self.discovery.initrd) {
            (Some(_), None) => {
                return Err(invalid(
                    "discovery.initrd",
                    "a discovery kernel needs its initrd",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "discovery.kernel",
                    "a discovery initrd needs its kernel",
                ));
            }
            _ => {}
        }
        let d = &self.dhcp;
        if d.lease_time < 60 {
            return Err(invalid("dhcp.lease_time", "must be at least 60 seconds"));
        }
        for (i, s) in d.subnets.iter().enumerate() {
            let key = |k: &str| format!("dhcp.subnets[{i}].{k}");
            if !s.cidr.contains(&s.range.first) || !s.cidr.contains(&s.range.last) {
                return Err(invalid(
                    key("range"),
                    format!("{} is not inside {}", s.range, s.cidr),
                ));
            }
            if s.range.contains(s.cidr.network()) || s.range.contains(s.cidr.broadcast()) {
                return Err(invalid(
                    key("range"),
                    format!(
                        "{} includes the network or broadcast address of {}",
                        s.range, s.cidr
                    ),
                ));
            }
            if let Some(r) = s.router
                && !s.cidr.contains(&r)
            {
                return Err(invalid(
                    key("router"),
                    format!("{r} is not inside {}", s.cidr),
                ));
            }
            if s.lease_time.is_some_and(|t| t < 60) {
                return Err(invalid(key("lease_time"), "must be at least 60 seconds"));
            }
            if let Some(j) = d.subnets[..i].iter().position(|o| {
                o.cidr.contains(&s.cidr.network()) || s.cidr.contains(&o.cidr.network())
            }) {
                return Err(invalid(
                    key("cidr"),
                    format!(
                        "{} overlaps dhcp.subnets[{j}] ({})",
                        s.cidr, d.subnets[j].cidr
                    ),
                ));
            }
        }
        let mut macs = HashSet::new();
        let mut ips = HashSet::new();
        for (i, r) in d.reservations.iter().enumerate() {
            if !macs.insert(r.mac) {
                return Err(invalid(
                    format!("dhcp.reservations[{i}].mac"),
                    format!("{} is reserved twice", r.mac),
                ));
            }
            if !ips.insert(r.ip) {
                return Err(invalid(
                    format!("dhcp.reservations[{i}].ip"),
                    format!("{} is reserved twice", r.ip),
                ));
            }
            if !d.subnets.is_empty() && !d.subnets.iter().any(|s| s.cidr.contains(&r.ip)) {
                return Err(invalid(
                    format!("dhcp.reservations[{i}].ip"),
                    format!("{} is in none of the configured subnets", r.ip),
                ));
            }
        }
        if d.mode == DhcpMode::Full && d.subnets.is_empty() && d.range.is_none() {
            return Err(invalid(
                "dhcp.mode",
                "full mode needs --dhcp-range or at least one [[dhcp.subnets]]",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let file = FileConfig::from_toml(text, Path::new("test.toml"))?;
        Config::merge(file, Overrides::default())
    }

    #[test]
    fn defaults_are_proxy_on_8080_with_no_interface() {
        let c = parse("").unwrap();
        assert_eq!(c.dhcp.mode, DhcpMode::Proxy);
        assert_eq!(c.http_listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.tftp_listen, "0.0.0.0:69".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./var"));
        assert!(c.interfaces.is_empty());
    }

    #[test]
    fn limits_have_defaults_and_refuse_nonsense() {
        let c = parse("").unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(
            c.limits.http_head_timeout,
            std::time::Duration::from_secs(10)
        );
        let c = parse("[limits]\nhttp_head_timeout = \"2s\"\nnew_nodes_per_peer_per_minute = 0\n")
            .unwrap();
        assert_eq!(
            c.limits.http_head_timeout,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(
            c.limits.new_nodes_per_peer_per_minute, 0,
            "0: no new nodes from unknown peers"
        );
        assert_eq!(
            c.limits.http_connections, 4096,
            "the rest keep their defaults"
        );
        for (text, key) in [
            ("[limits]\nhttp_connections = 0", "limits.http_connections"),
            (
                "[limits]\nhttp_connections = 10\nhttp_connections_per_peer = 11",
                "limits.http_connections_per_peer",
            ),
            (
                "[limits]\nhttp_head_timeout = \"1h\"",
                "limits.http_head_timeout",
            ),
            (
                "[limits]\nlive_streams = 4\nlive_streams_for_operators = 4",
                "limits.live_streams_for_operators",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            parse("[limits]\nhttp_head_timeout = \"soon\""),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            parse("[limits]\nno_such_limit = 1"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn full_mode_file_with_subnets_and_reservations() {
        let c = parse(
            r#"
            interfaces = ["prov0"]
            [dhcp]
            mode = "full"
            [[dhcp.subnets]]
            cidr = "10.1.0.0/24"
            range = "10.1.0.100-10.1.0.200"
            router = "10.1.0.1"
            dns = ["10.1.0.2", "10.1.0.3"]
            domain = "rack.example"
            lease_time = 600
            [[dhcp.subnets]]
            cidr = "10.2.0.0/24"
            range = "10.2.0.10-10.2.0.20"
            [[dhcp.reservations]]
            mac = "52:54:00:00:00:01"
            ip = "10.1.0.50"
            hostname = "gpu-a01"
            [[dhcp.boot_files]]
            arch = 7
            file = "snponly.efi"
            "#,
        )
        .unwrap();
        assert_eq!(c.dhcp.subnets.len(), 2);
        assert_eq!(c.dhcp.subnets[0].dns.len(), 2);
        assert_eq!(c.dhcp.reservations[0].hostname.as_deref(), Some("gpu-a01"));
        assert_eq!(c.dhcp.boot.get(7).unwrap().file, "snponly.efi");
        assert_eq!(c.dhcp.boot.get(9).unwrap().file, "ipxe.efi");
    }

    #[test]
    fn step_timeouts_come_from_the_file_and_bad_ones_are_named() {
        use crate::lifecycle::machine::Step;
        use std::time::Duration;
        let c = parse("[lifecycle.timeouts]\ninspecting = \"5m\"\n").unwrap();
        assert_eq!(c.timeouts.0[&Step::Inspecting], Duration::from_secs(300));
        assert_eq!(c.timeouts.0[&Step::BurningIn], Duration::from_secs(86400));
        let e = parse("[lifecycle.timeouts]\ninspectin = \"5m\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lifecycle.timeouts.inspectin"), "{e}");
        let e = parse("[lifecycle.timeouts]\ninspecting = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`soon`"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[dhcp]\nlese_time = 30\n").unwrap_err().to_string();
        assert!(e.contains("lese_time"), "{e}");
        let e = parse("[[dhcp.subnets]]\ncidr = \"10.0.0.0/24\"\nrange = \"10.0.0.5-10.0.0.9\"\nroutr = \"10.0.0.1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("routr"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse("[dhcp]\nmode = \"fool\"\n").unwrap_err().to_string();
        assert!(e.contains("mode") || e.contains("fool"), "{e}");
        let e = parse("[dhcp]\nrange = \"10.0.0.9-10.0.0.1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ends before it starts"), "{e}");
        let e = parse("[[dhcp.subnets]]\ncidr = \"10.0.0.0/24\"\nrange = \"10.0.1.5-10.0.1.9\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dhcp.subnets[0].range"), "{e}");
        let e = parse("[dhcp]\nmode = \"full\"\n").unwrap_err().to_string();
        assert!(e.contains("dhcp.mode"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = FileConfig::from_toml(
            "interfaces = [\"a\"]\nhttp_listen = \"127.0.0.1:1\"\n[dhcp]\nmode = \"off\"\n",
            Path::new("t"),
        )
        .unwrap();
        let c = Config::merge(
            file,
            Overrides {
                interfaces: vec!["b".into(), "c".into()],
                dhcp: Some(DhcpMode::Full),
                dhcp_range: Some("10.0.0.10-10.0.0.20".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.interfaces, ["b", "c"]);
        assert_eq!(c.dhcp.mode, DhcpMode::Full);
        assert_eq!(c.http_listen, "127.0.0.1:1".parse().unwrap());
    }
}
