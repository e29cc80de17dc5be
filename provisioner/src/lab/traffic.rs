//! What the lab's nodes send, counted where it enters the bridge (nftables, bridge family,
//! before any forwarding), per node:
//!
//! - to the appliance: its address, and the broadcasts only it answers (DHCP);
//! - link-local: ARP, IPv4 224.0.0.0/24, IPv6 ff02::/16 and fe80::/10 (neighbour discovery,
//!   multicast listener reports, a firmware's DHCPv6 solicit), which never leave the segment;
//! - elsewhere: any other destination. A sovereign node has none; the destinations are kept
//!   (at most [`KEPT`] per node and family) so that one can see what was tried.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Stdio;

use anyhow::{Context, bail};
use serde::Serialize;

/// The table the lab adds to its own namespace.
const TABLE: &str = "provisioner_lab";

/// Destinations kept per node and address family.
pub const KEPT: usize = 64;

/// One node's packets, by where they went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    pub to_appliance: u64,
    pub link_local: u64,
    pub elsewhere: u64,
    /// Where the `elsewhere` packets went (IPv4, then IPv6).
    pub elsewhere_destinations: Vec<String>,
}

/// The counters in namespace `ns`, for `nodes` taps (`tap0`...).
pub struct Watch {
    ns: String,
    nodes: usize,
}

/// The ruleset for `nodes` taps on a bridge whose address is `appliance`/24.
pub fn ruleset(nodes: usize, appliance: Ipv4Addr) -> String {
    let [a, b, c, _] = appliance.octets();
    let broadcast = Ipv4Addr::new(a, b, c, 255);
    let mut s = format!("table bridge {TABLE} {{\n");
    for i in 0..nodes {
        s.push_str(&format!(
            "  counter n{i}_appliance {{ }}\n  counter n{i}_link {{ }}\n  counter n{i}_elsewhere {{ }}\n  \
             set n{i}_dst4 {{ type ipv4_addr; flags dynamic; size {KEPT}; }}\n  \
             set n{i}_dst6 {{ type ipv6_addr; flags dynamic; size {KEPT}; }}\n"
        ));
    }
    s.push_str("  chain watch {\n    type filter hook prerouting priority -200; policy accept;\n");
    for i in 0..nodes {
        s.push_str(&format!("    iifname \"tap{i}\" jump n{i}\n"));
    }
    s.push_str("  }\n");
    for i in 0..nodes {
        s.push_str(&format!(
            "  chain n{i} {{\n    \
             ip daddr {{ {appliance}, {broadcast}, 255.255.255.255 }} counter name \"n{i}_appliance\" return\n    \
             ether type arp counter name \"n{i}_link\" return\n    \
             ip daddr 224.0.0.0/24 counter name \"n{i}_link\" return\n    \
             ip6 daddr {{ ff02::/16, fe80::/10 }} counter name \"n{i}_link\" return\n    \
             ether type ip add @n{i}_dst4 {{ ip daddr }}\n    \
             ether type ip6 add @n{i}_dst6 {{ ip6 daddr }}\n    \
             counter name \"n{i}_elsewhere\"\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

/// Adds the counters to namespace `ns` (needs `nft`, package nftables).
pub fn start(ns: &str, nodes: usize, appliance: Ipv4Addr) -> anyhow::Result<Watch> {
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft (apt-get install nftables)")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(ruleset(nodes, appliance).as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft refused the lab's counters: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Watch {
        ns: ns.to_string(),
        nodes,
    })
}

impl Watch {
    /// Each node's counts so far.
    pub fn read(&self) -> anyhow::Result<Vec<Traffic>> {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "nft", "-j", "list", "table", "bridge",
            ])
            .arg(TABLE)
            .output()
            .context("cannot run nft")?;
        if !out.status.success() {
            bail!(
                "nft cannot list the lab's counters: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse(&out.stdout, self.nodes)
    }
}

/// Each node's counts from `nft -j list table bridge provisioner_lab`.
pub fn parse(json: &[u8], nodes: usize) -> anyhow::Result<Vec<Traffic>> {
    let v: serde_json::Value = serde_json::from_slice(json).context("nft's JSON")?;
    let items = v["nftables"]
        .as_array()
        .context("nft's JSON has no `nftables` list")?;
    let mut all = vec![Traffic::default(); nodes];
    let node_of = |name: &str| -> Option<(usize, String)> {
        let (n, what) = name.strip_prefix('n')?.split_once('_')?;
        let i: usize = n.parse().ok()?;
        (i < nodes).then(|| (i, what.to_string()))
    };
    for item in items {
        if let Some(c) = item.get("counter") {
            let Some((i, what)) = c["name"].as_str().and_then(node_of) else {
                continue;
            };
            let packets = c["packets"].as_u64().context("a counter without packets")?;
            match what.as_str() {
                "appliance" => all[i].to_appliance = packets,
                "link" => all[i].link_local = packets,
                "elsewhere" => all[i].elsewhere = packets,
                _ => {}
            }
        } else if let Some(s) = item.get("set") {
            let Some((i, _)) = s["name"].as_str().and_then(node_of) else {
                continue;
            };
            for e in s["elem"].as_array().into_iter().flatten() {
                // Plain sets list addresses; a set with timeouts would list objects.
                let addr = e
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| e["elem"]["val"].as_str().map(str::to_string))
                    .unwrap_or_else(|| e.to_string());
                all[i].elsewhere_destinations.push(addr);
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tap_has_its_chain_and_the_appliance_its_addresses() {
        let r = ruleset(2, Ipv4Addr::new(10, 99, 0, 1));
        assert!(r.contains("iifname \"tap0\" jump n0"), "{r}");
        assert!(r.contains("iifname \"tap1\" jump n1"), "{r}");
        assert!(
            r.contains(
                "ip daddr { 10.99.0.1, 10.99.0.255, 255.255.255.255 } counter name \"n1_appliance\""
            ),
            "{r}"
        );
        assert!(!r.contains("tap2"), "{r}");
    }

    /// As nft 1.0.6 printed it, after one node sent a datagram to the appliance and three to
    /// two addresses outside.
    const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "bridge", "name": "provisioner_lab", "handle": 1}},
        {"counter": {"family": "bridge", "name": "n0_appliance", "table": "provisioner_lab", "handle": 3, "packets": 1, "bytes": 31}},
        {"counter": {"family": "bridge", "name": "n0_link", "table": "provisioner_lab", "handle": 4, "packets": 3, "bytes": 176}},
        {"counter": {"family": "bridge", "name": "n0_elsewhere", "table": "provisioner_lab", "handle": 5, "packets": 3, "bytes": 93}},
        {"set": {"family": "bridge", "name": "n0_dst4", "table": "provisioner_lab", "type": "ipv4_addr", "handle": 6, "size": 64, "elem": ["1.1.1.1", "8.8.8.8"]}},
        {"set": {"family": "bridge", "name": "n0_dst6", "table": "provisioner_lab", "type": "ipv6_addr", "handle": 7, "size": 64}},
        {"counter": {"family": "bridge", "name": "n1_appliance", "table": "provisioner_lab", "handle": 8, "packets": 7, "bytes": 700}},
        {"counter": {"family": "bridge", "name": "n1_link", "table": "provisioner_lab", "handle": 9, "packets": 0, "bytes": 0}},
        {"counter": {"family": "bridge", "name": "n1_elsewhere", "table": "provisioner_lab", "handle": 10, "packets": 0, "bytes": 0}},
        {"counter": {"family": "bridge", "name": "n9_elsewhere", "table": "provisioner_lab", "handle": 11, "packets": 5, "bytes": 0}}]}"#;

    #[test]
    fn counts_and_destinations_are_read_per_node() {
        let t = parse(LISTED.as_bytes(), 2).unwrap();
        assert_eq!(
            t[0],
            Traffic {
                to_appliance: 1,
                link_local: 3,
                elsewhere: 3,
                elsewhere_destinations: vec!["1.1.1.1".into(), "8.8.8.8".into()],
            }
        );
        assert_eq!(t[1].to_appliance, 7);
        assert_eq!(t[1].elsewhere, 0);
        assert!(t[1].elsewhere_destinations.is_empty());
    }

    #[test]
    fn what_is_not_nft_json_is_an_error() {
        assert!(parse(b"table bridge x {}", 1).is_err());
        assert!(parse(b"{}", 1).is_err());
    }
}
