//! The rack plan (which server goes in which slot) and the SKU definitions (what a server of
//! each kind must have), and the matching of an inspected node against both. Pure: the plan,
//! the SKUs and the facts come in, a slot or a reason naming what differs comes out.

use std::collections::BTreeMap;
use std::path::Path;

use provisioner_protocol::Facts;
use serde::{Deserialize, Serialize};

use crate::install::hints::RootDeviceHints;
use crate::types::MacAddr;

/// The SKU definitions shipped with the appliance; `[lifecycle] skus = PATH` replaces them.
pub const SHIPPED_SKUS: &str = include_str!("../../skus.toml");

/// One slot of the rack plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    pub site: String,
    pub row: String,
    pub rack: String,
    /// Lowest rack unit the server occupies.
    pub u: u16,
    /// The server's serial number (DMI system or board serial), when the plan knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// One of the server's MACs, when the plan knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    pub sku: String,
    /// How many NICs the slot is cabled for at `nic_mbps` (default 1 when a speed is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<u32>,
    /// The link speed those NICs must train at, in Mb/s (e.g. 400000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_mbps: Option<u32>,
    /// The OS image installed in this slot (a name in the image library); none: the SKU's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Which disk the image goes on (Ironic's root device hints); none: the SKU's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<RootDeviceHints>,
}

impl Slot {
    /// `site/row/rack/U12`: unique in a plan, and how people name the place.
    pub fn id(&self) -> String {
        format!("{}/{}/{}/U{}", self.site, self.row, self.rack, self.u)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanToml {
    #[serde(default)]
    slot: Vec<Slot>,
}

/// Reads a rack plan from a `.toml` (`[[slot]]` tables) or `.csv` file (header
/// `site,row,rack,u,serial,mac,sku`), and checks it against the SKU definitions: every slot
/// names a known SKU and a serial or a MAC, no slot or serial or MAC appears twice.
pub fn parse_plan(path: &Path, text: &str, skus: &Skus) -> Result<Vec<Slot>, PlanError> {
    let invalid = |reason: String| PlanError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let mut slots = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => {
            toml::from_str::<PlanToml>(text)
                .map_err(|e| invalid(e.to_string()))?
                .slot
        }
        Some("csv") => parse_csv(text).map_err(invalid)?,
        _ => return Err(invalid("a rack plan is a .csv or a .toml file".into())),
    };
    if slots.is_empty() {
        return Err(invalid("the plan has no slots".into()));
    }
    // A blank serial is no serial, whichever format said it.
    for s in &mut slots {
        s.serial = s
            .serial
            .take()
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty());
    }
    let mut ids = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for (i, s) in slots.iter().enumerate() {
        let at = format!("slot {} ({})", i + 1, s.id());
        for (field, value) in [("site", &s.site), ("row", &s.row), ("rack", &s.rack)] {
            if !crate::types::RackId::part_ok(value) {
                return Err(invalid(format!(
                    "{at}: {field} must be a name of 1 to 64 characters without '/' or control characters"
                )));
            }
        }
        if !skus.sku.contains_key(&s.sku) {
            return Err(invalid(format!(
                "{at}: unknown SKU `{}` (known: {})",
                s.sku,
                skus.sku.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if s.serial.is_none() && s.mac.is_none() {
            return Err(invalid(format!("{at}: needs a serial or a MAC")));
        }
        if let Some(image) = &s.image
            && !crate::image::os::recipe::is_image_name(image)
        {
            return Err(invalid(format!(
                "{at}: image `{image}` is not an image name"
            )));
        }
        if s.nics.is_some() && s.nic_mbps.is_none() {
            return Err(invalid(format!("{at}: nics needs nic_mbps")));
        }
        if let Some(prev) = ids.insert(s.id(), i) {
            return Err(invalid(format!("{at}: same place as slot {}", prev + 1)));
        }
        for key in [
            s.serial.clone().map(|x| format!("serial {x}")),
            s.mac.map(|m| format!("MAC {m}")),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(prev) = keys.insert(key.clone(), i) {
                return Err(invalid(format!(
                    "{at}: {key} is already in slot {}",
                    prev + 1
                )));
            }
        }
    }
    Ok(slots)
}

fn parse_csv(text: &str) -> Result<Vec<Slot>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
    let want = ["site", "row", "rack", "u", "serial", "mac", "sku"];
    let optional = ["nics", "nic_mbps", "image", "root_device"];
    for w in want {
        if !cols.iter().any(|c| c == w) {
            return Err(format!(
                "CSV header lacks column `{w}` (wants {})",
                want.join(",")
            ));
        }
    }
    if let Some(extra) = cols
        .iter()
        .find(|c| !want.contains(&c.as_str()) && !optional.contains(&c.as_str()))
    {
        return Err(format!("CSV header has unknown column `{extra}`"));
    }
    let mut slots = Vec::new();
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != cols.len() {
            return Err(format!(
                "line {}: {} fields, the header has {}",
                n + 1,
                fields.len(),
                cols.len()
            ));
        }
        let get = |name: &str| {
            cols.iter()
                .position(|c| c == name)
                .map(|i| fields[i])
                .unwrap_or("")
        };
        let u = get("u")
            .trim_start_matches(['U', 'u'])
            .parse::<u16>()
            .map_err(|_| format!("line {}: U position `{}` is not a number", n + 1, get("u")))?;
        let mac = match get("mac") {
            "" => None,
            m => Some(
                m.parse::<MacAddr>()
                    .map_err(|_| format!("line {}: `{m}` is not a MAC address", n + 1))?,
            ),
        };
        let number = |name: &str| match get(name) {
            "" => Ok(None),
            v => v
                .parse::<u32>()
                .map(Some)
                .map_err(|_| format!("line {}: {name} `{v}` is not a number", n + 1)),
        };
        let (nics, nic_mbps) = (number("nics")?, number("nic_mbps")?);
        let root_device = match get("root_device") {
            "" => None,
            h => Some(
                h.parse::<RootDeviceHints>()
                    .map_err(|e| format!("line {}: root_device `{h}`: {e}", n + 1))?,
            ),
        };
        slots.push(Slot {
            site: get("site").into(),
            row: get("row").into(),
            rack: get("rack").into(),
            u,
            serial: Some(get("serial").to_string()).filter(|s| !s.is_empty()),
            mac,
            sku: get("sku").into(),
            nics,
            nic_mbps,
            image: Some(get("image").to_string()).filter(|s| !s.is_empty()),
            root_device,
        });
    }
    Ok(slots)
}

/// The SKU definitions: a versioned file, so a plan and a judgement can say which they used.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skus {
    pub version: u32,
    pub sku: BTreeMap<String, Sku>,
}

/// What a server of one kind must have.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sku {
    pub description: String,
    /// NVIDIA GPUs it must have, exactly.
    #[serde(default)]
    pub gpus: u32,
    /// PCI device ids its GPUs may have, as inclusive ranges (a chip family); empty: any.
    #[serde(default)]
    pub gpu_device_ids: Vec<[u16; 2]>,
    /// What to call that GPU model in a reason.
    #[serde(default)]
    pub gpu_model: Option<String>,
    /// Neuron devices it must have, exactly.
    #[serde(default)]
    pub neuron_devices: u32,
    /// Memory it must have at least, in MiB, counted from its DIMMs when readable, else from
    /// what the kernel sees (which is a little less than what is fitted).
    pub memory_min_mib: u64,
    /// The OS image its nodes install unless their plan row names another.
    #[serde(default)]
    pub image: Option<String>,
    /// Which disk the image goes on unless the plan row says (Ironic's root device hints,
    /// e.g. `root_device = { model = "SAMSUNG MZ1L2960", size = ">= 800" }`).
    #[serde(default)]
    pub root_device: Option<RootDeviceHints>,
}

impl Sku {
    /// The accelerators it has: its GPUs, or its Neuron devices (0 for neither).
    pub fn devices(&self) -> u32 {
        self.gpus.max(self.neuron_devices)
    }
}

impl Skus {
    pub fn parse(text: &str) -> Result<Skus, String> {
        let skus: Skus = toml::from_str(text).map_err(|e| e.to_string())?;
        if skus.sku.is_empty() {
            return Err("no SKUs defined".into());
        }
        for (name, s) in &skus.sku {
            if s.gpu_device_ids.iter().any(|[lo, hi]| lo > hi) {
                return Err(format!("SKU {name}: a gpu_device_ids range runs backwards"));
            }
        }
        Ok(skus)
    }
}

/// Why a new rack plan cannot replace the one in use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplaceError {
    #[error(
        "slot {slot} is held by node {mac} and is not in the new plan: reprovision or retire the node first"
    )]
    SlotHeld { slot: String, mac: MacAddr },
}

/// A new plan may replace the old only if every slot a node holds is in it: a node's slot
/// never vanishes under it.
pub fn may_replace(slots: &[Slot], taken: &[Taken]) -> Result<(), ReplaceError> {
    match taken
        .iter()
        .find(|t| !slots.iter().any(|s| s.id() == t.slot))
    {
        Some(t) => Err(ReplaceError::SlotHeld {
            slot: t.slot.clone(),
            mac: t.by,
        }),
        None => Ok(()),
    }
}

/// A slot that is taken, and by which node.
#[derive(Clone, Debug)]
pub struct Taken {
    pub slot: String,
    pub by: MacAddr,
}

impl From<crate::store::nodes::TakenSlot> for Taken {
    fn from(t: crate::store::nodes::TakenSlot) -> Self {
        Taken {
            slot: t.slot,
            by: t.mac,
        }
    }
}

/// What an inspection report comes to against the rack plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The node is this slot's.
    Matched(String),
    /// The facts do not fit the plan: why, naming the slot and what differs.
    Mismatch(String),
    /// The node claims a slot another node holds, or one the plan gives to a MAC it did not
    /// boot from. Nothing decides this first come, first served: the node fails with the
    /// reason, and `hold` names the holder to stop until an operator decides which is genuine
    /// (none when the holder's claim is the plan's own MAC).
    Conflict {
        reason: String,
        hold: Option<MacAddr>,
    },
}

/// Matches an inspected node (booted from `boot_mac`) to its slot. The boot MAC is the one
/// thing the appliance saw on the wire; the serials and the other NICs' MACs are what the node
/// says of itself. So: a slot the plan gives to the boot MAC is the node's; a slot found by a
/// reported NIC MAC or serial is the node's only if the plan names no other MAC for it; and
/// a slot another node holds is never taken over. The facts must fit the slot's SKU.
pub fn match_slot(
    boot_mac: MacAddr,
    facts: &Facts,
    plan: &[Slot],
    skus: &Skus,
    taken: &[Taken],
) -> Claim {
    let serials: Vec<&str> = [&facts.dmi.product_serial, &facts.dmi.board_serial]
        .into_iter()
        .flatten()
        .map(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .collect();
    let reported: Vec<MacAddr> = facts
        .nics
        .iter()
        .filter_map(|n| n.mac.parse().ok())
        .collect();
    let by_boot_mac = plan.iter().find(|s| s.mac == Some(boot_mac));
    let by_report = || {
        plan.iter()
            .find(|s| s.mac.is_some_and(|m| reported.contains(&m)))
            .or_else(|| {
                plan.iter().find(|s| {
                    s.serial
                        .as_deref()
                        .is_some_and(|want| serials.contains(&want))
                })
            })
    };
    let Some(slot) = by_boot_mac.or_else(by_report) else {
        return Claim::Mismatch(format!(
            "not in the rack plan: no slot lists serial {} or MAC {}",
            if serials.is_empty() {
                "(none reported)".to_string()
            } else {
                serials.join(" / ")
            },
            boot_mac
        ));
    };
    let id = slot.id();
    let what = |s: &Slot| match &s.serial {
        Some(serial) if serials.contains(&serial.as_str()) => format!("serial {serial}"),
        _ => format!(
            "NIC MAC {}",
            s.mac.map(|m| m.to_string()).unwrap_or_default()
        ),
    };
    if let Some(planned) = slot.mac
        && planned != boot_mac
        && !reported.contains(&planned)
    {
        return Claim::Conflict {
            reason: format!(
                "this node booted from {boot_mac} and reports {} of slot {id}, which the plan gives to MAC {planned}: an operator decides (correct the plan, or retire this node)",
                what(slot)
            ),
            hold: None,
        };
    }
    if let Some(t) = taken.iter().find(|t| t.slot == id && t.by != boot_mac) {
        // A holder that booted from the MAC the plan names for the slot has the stronger
        // claim and keeps going; otherwise both claims are the nodes' own word.
        let holder_is_planned = slot.mac == Some(t.by);
        return Claim::Conflict {
            reason: format!(
                "slot {id} is held by node {} and claimed by this node ({boot_mac}, {}): an operator decides which is genuine (retire the other, then retry this one)",
                t.by,
                what(slot)
            ),
            hold: (!holder_is_planned).then_some(t.by),
        };
    }
    let Some(sku) = skus.sku.get(&slot.sku) else {
        return Claim::Mismatch(format!(
            "slot {id} names SKU {}, which is not defined",
            slot.sku
        ));
    };
    let differs = sku_differences(facts, sku);
    if !differs.is_empty() {
        return Claim::Mismatch(format!(
            "slot {id} expects {} ({}); node has {}",
            slot.sku,
            sku.description,
            differs.join(", ")
        ));
    }
    Claim::Matched(id)
}

/// How the facts contradict the SKU, each as "what the node has (wanted …)".
fn sku_differences(facts: &Facts, sku: &Sku) -> Vec<String> {
    let mut out = Vec::new();
    let gpus = facts.gpus.len() as u32;
    if gpus != sku.gpus {
        out.push(format!("{gpus} GPUs (wanted {})", sku.gpus));
    }
    if !sku.gpu_device_ids.is_empty() {
        let wrong: Vec<String> = facts
            .pci
            .iter()
            .filter(|d| facts.gpus.contains(&d.address))
            .filter(|d| {
                !sku.gpu_device_ids
                    .iter()
                    .any(|[lo, hi]| (*lo..=*hi).contains(&d.device))
            })
            .map(|d| format!("{} is 10de:{:04x}", d.address, d.device))
            .collect();
        if !wrong.is_empty() {
            out.push(format!(
                "GPU model {} (wanted {})",
                wrong.join(", "),
                sku.gpu_model.as_deref().unwrap_or("the SKU's GPU")
            ));
        }
    }
    let neuron = facts.neuron_devices.len() as u32;
    if neuron != sku.neuron_devices {
        out.push(format!(
            "{neuron} Neuron devices (wanted {})",
            sku.neuron_devices
        ));
    }
    let dimms: u64 = facts.memory.dimms.iter().map(|d| d.size_bytes).sum();
    let mib = if dimms > 0 {
        dimms
    } else {
        facts.memory.total_bytes
    } >> 20;
    if mib < sku.memory_min_mib {
        out.push(format!(
            "{mib} MiB memory (wanted at least {})",
            sku.memory_min_mib
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_protocol::{Nic, PciDevice};

    fn skus() -> Skus {
        Skus::parse(SHIPPED_SKUS).expect("the shipped SKUs parse")
    }

    const CSV: &str = "\
# site,row,rack,u,serial,mac,sku
site,row,rack,u,serial,mac,sku
dc1,r1,a01,U10,SN-B200-1,,hgx-b200
dc1,r1,a01,14,,52:54:00:99:00:01,qemu-lab
";

    fn plan() -> Vec<Slot> {
        parse_plan(Path::new("plan.csv"), CSV, &skus()).unwrap()
    }

    fn b200_facts(gpus: usize, device: u16, mem_gib: u64) -> Facts {
        let mut f = Facts::default();
        f.dmi.product_serial = Some("SN-B200-1".into());
        for i in 0..gpus {
            let address = format!("0000:{:02x}:00.0", 0x18 + i);
            f.pci.push(PciDevice {
                address: address.clone(),
                vendor: 0x10de,
                device,
                class: 0x030200,
                ..Default::default()
            });
            f.gpus.push(address);
        }
        f.memory.total_bytes = mem_gib << 30;
        f
    }

    const BOOT: MacAddr = MacAddr([0x52, 0x54, 0, 0x99, 0, 0]);

    #[test]
    fn csv_and_toml_plans_read_the_same() {
        let toml = r#"
[[slot]]
site = "dc1"
row = "r1"
rack = "a01"
u = 10
serial = "SN-B200-1"
sku = "hgx-b200"

[[slot]]
site = "dc1"
row = "r1"
rack = "a01"
u = 14
mac = "52:54:00:99:00:01"
sku = "qemu-lab"
"#;
        assert_eq!(
            parse_plan(Path::new("plan.toml"), toml, &skus()).unwrap(),
            plan()
        );
        assert_eq!(plan()[0].id(), "dc1/r1/a01/U10");
    }

    #[test]
    fn bad_plans_are_refused_with_the_line_or_slot() {
        let s = skus();
        let cases = [
            (
                "plan.csv",
                "site,row,rack,u,serial,mac\n",
                "lacks column `sku`",
            ),
            (
                "plan.csv",
                "site,row,rack,u,serial,mac,sku\ndc1,r1,a01,X,S,,qemu-lab\n",
                "line 2: U position `X`",
            ),
            (
                "plan.csv",
                "site,row,rack,u,serial,mac,sku\ndc1,r1,a01,1,S,,dgx-z9\n",
                "unknown SKU `dgx-z9`",
            ),
            (
                "plan.csv",
                "site,row,rack,u,serial,mac,sku\ndc1,r1,a01,1,S,,qemu-lab\ndc1,r1,a01,2,S,,qemu-lab\n",
                "serial S is already in slot 1",
            ),
            (
                "plan.csv",
                "site,row,rack,u,serial,mac,sku\ndc1,r1,a01,1,A,,qemu-lab\ndc1,r1,a01,1,B,,qemu-lab\n",
                "same place as slot 1",
            ),
            (
                "plan.csv",
                "site,row,rack,u,serial,mac,sku\ndc1,r1,a01,1,,,qemu-lab\n",
                "needs a serial or a MAC",
            ),
            ("plan.json", "{}", ".csv or a .toml"),
            (
                "plan.toml",
                "[[slot]]\nsite = \"a\"\nrow = \"r\"\nrack = \"k\"\nu = 1\nserial = \" \"\nsku = \"qemu-lab\"\n",
                "needs a serial or a MAC",
            ),
            ("plan.toml", "[[slot]]\nsite = 1\n", "invalid type"),
        ];
        for (name, text, want) in cases {
            let err = parse_plan(Path::new(name), text, &s)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn a_slot_may_say_how_its_nics_are_cabled() {
        let csv = "site,row,rack,u,serial,mac,sku,nics,nic_mbps\n\
                   dc1,r1,a01,10,SN-1,,hgx-b200,8,400000\n\
                   dc1,r1,a01,14,SN-2,,hgx-b200,,\n";
        let slots = parse_plan(Path::new("p.csv"), csv, &skus()).unwrap();
        assert_eq!((slots[0].nics, slots[0].nic_mbps), (Some(8), Some(400_000)));
        assert_eq!((slots[1].nics, slots[1].nic_mbps), (None, None));
        let bad = "site,row,rack,u,serial,mac,sku,nics\ndc1,r1,a01,10,SN-1,,hgx-b200,8\n";
        let err = parse_plan(Path::new("p.csv"), bad, &skus()).unwrap_err();
        assert!(err.to_string().contains("nics needs nic_mbps"), "{err}");
    }

    #[test]
    fn a_slot_may_say_which_disk_its_image_goes_on() {
        let csv = "site,row,rack,u,serial,mac,sku,root_device\n\
                   dc1,r1,a01,10,SN-1,,qemu-lab,serial=S1;size=>=800;size=<=4000\n\
                   dc1,r1,a01,14,SN-2,,qemu-lab,\n";
        let slots = parse_plan(Path::new("p.csv"), csv, &skus()).unwrap();
        let hints = slots[0].root_device.as_ref().unwrap();
        assert_eq!(hints.to_string(), "serial=S1;size=>=800;size=<=4000");
        assert!(slots[1].root_device.is_none());
        let toml = "[[slot]]\nsite = \"a\"\nrow = \"r\"\nrack = \"k\"\nu = 1\nserial = \"S\"\n\
                    sku = \"qemu-lab\"\nroot_device = { model = \"X\", size = \">= 800\" }\n";
        let slots = parse_plan(Path::new("p.toml"), toml, &skus()).unwrap();
        assert_eq!(
            slots[0].root_device.as_ref().unwrap().to_string(),
            "model=X;size=>=800"
        );
        for (cell, says) in [("serail=S1", "serail"), ("size=lots", "lots")] {
            let bad = format!(
                "site,row,rack,u,serial,mac,sku,root_device\ndc1,r1,a01,10,SN-1,,qemu-lab,{cell}\n"
            );
            let err = parse_plan(Path::new("p.csv"), &bad, &skus())
                .unwrap_err()
                .to_string();
            assert!(err.contains("line 2") && err.contains(says), "{err}");
        }
    }

    #[test]
    fn a_node_is_matched_by_serial_or_by_mac() {
        let got = match_slot(BOOT, &b200_facts(8, 0x2901, 2048), &plan(), &skus(), &[]);
        assert_eq!(got, Claim::Matched("dc1/r1/a01/U10".into()));

        let mut lab = Facts::default();
        lab.memory.total_bytes = 2 << 30;
        lab.nics.push(Nic {
            name: "ens3".into(),
            mac: "52:54:00:99:00:01".into(),
            ..Default::default()
        });
        let got = match_slot(BOOT, &lab, &plan(), &skus(), &[]);
        assert_eq!(got, Claim::Matched("dc1/r1/a01/U14".into()));
        let got = match_slot(
            "52:54:00:99:00:01".parse().unwrap(),
            &Facts {
                memory: lab.memory.clone(),
                ..Facts::default()
            },
            &plan(),
            &skus(),
            &[],
        );
        assert_eq!(
            got,
            Claim::Matched("dc1/r1/a01/U14".into()),
            "by the boot MAC"
        );
    }

    #[test]
    fn a_serial_of_a_slot_planned_for_another_mac_goes_to_an_operator() {
        let csv =
            "site,row,rack,u,serial,mac,sku\ndc1,r1,a01,10,SN-B200-1,52:54:00:aa:00:01,hgx-b200\n";
        let plan = parse_plan(Path::new("p.csv"), csv, &skus()).unwrap();
        let facts = b200_facts(8, 0x2901, 2048);
        let Claim::Conflict { reason, hold } = match_slot(BOOT, &facts, &plan, &skus(), &[]) else {
            panic!("a serial alone does not win a slot planned for a MAC")
        };
        assert!(reason.contains("booted from 52:54:00:99:00:00"), "{reason}");
        assert!(reason.contains("serial SN-B200-1"), "{reason}");
        assert!(
            reason.contains("the plan gives to MAC 52:54:00:aa:00:01"),
            "{reason}"
        );
        assert_eq!(hold, None, "nobody else is stopped for it");
        // The planned node itself, booting from its MAC, is matched.
        let planned: MacAddr = "52:54:00:aa:00:01".parse().unwrap();
        assert_eq!(
            match_slot(planned, &facts, &plan, &skus(), &[]),
            Claim::Matched("dc1/r1/a01/U10".into())
        );
        // And a claimant of its held slot does not stop it.
        let held = [Taken {
            slot: "dc1/r1/a01/U10".into(),
            by: planned,
        }];
        let mut forged = facts.clone();
        forged.nics.push(Nic {
            name: "eth9".into(),
            mac: planned.to_string(),
            ..Default::default()
        });
        let Claim::Conflict { hold, .. } = match_slot(BOOT, &forged, &plan, &skus(), &held) else {
            panic!()
        };
        assert_eq!(hold, None, "the holder booted from the planned MAC");
    }

    #[test]
    fn a_node_not_in_the_plan_is_told_so() {
        let mut f = Facts::default();
        f.dmi.product_serial = Some("SN-OTHER".into());
        assert_eq!(
            match_slot(BOOT, &f, &plan(), &skus(), &[]),
            Claim::Mismatch(
                "not in the rack plan: no slot lists serial SN-OTHER or MAC 52:54:00:99:00:00"
                    .into()
            )
        );
    }

    #[test]
    fn a_taken_slot_is_refused_but_its_own_node_may_come_back() {
        let other = MacAddr([2, 0, 0, 0, 0, 9]);
        let taken = [Taken {
            slot: "dc1/r1/a01/U10".into(),
            by: other,
        }];
        let facts = b200_facts(8, 0x2901, 2048);
        let Claim::Conflict { reason, hold } = match_slot(BOOT, &facts, &plan(), &skus(), &taken)
        else {
            panic!("a second claim is not decided first come, first served")
        };
        assert!(
            reason.starts_with(
                "slot dc1/r1/a01/U10 is held by node 02:00:00:00:00:09 and claimed by this node (52:54:00:99:00:00, serial SN-B200-1)"
            ),
            "{reason}"
        );
        assert_eq!(
            hold,
            Some(other),
            "both claims are the nodes' word: the holder stops too"
        );
        let own = [Taken {
            slot: "dc1/r1/a01/U10".into(),
            by: BOOT,
        }];
        assert_eq!(
            match_slot(BOOT, &facts, &plan(), &skus(), &own),
            Claim::Matched("dc1/r1/a01/U10".into())
        );
    }

    #[test]
    fn facts_that_contradict_the_sku_name_each_difference() {
        let Claim::Mismatch(err) =
            match_slot(BOOT, &b200_facts(7, 0x2330, 512), &plan(), &skus(), &[])
        else {
            panic!()
        };
        assert!(
            err.starts_with("slot dc1/r1/a01/U10 expects hgx-b200"),
            "{err}"
        );
        assert!(err.contains("7 GPUs (wanted 8)"), "{err}");
        assert!(err.contains("0000:18:00.0 is 10de:2330"), "{err}");
        assert!(err.contains("524288 MiB memory (wanted at least"), "{err}");
    }
}
