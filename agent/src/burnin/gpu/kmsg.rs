//! XID errors from the kernel log: the NVIDIA driver logs each fault it sees on a GPU as
//! `NVRM: Xid (PCI:0000:18:00): 79, pid=..., GPU has fallen off the bus.` The burn-in reads the
//! lines logged while it ran from `/dev/kmsg` and reports each GPU's XIDs.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

const XID_MARK: &str = "NVRM: Xid (";

/// The XIDs in kernel log text, by GPU PCI address (`0000:18:00.0`). Takes `dmesg` output
/// (`[   12.3] NVRM: ...`), `/dev/kmsg` records (`4,1234,5678,-;NVRM: ...`) or bare lines.
pub fn xids_from_kmsg(text: &str) -> BTreeMap<String, Vec<u32>> {
    let mut xids: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for line in text.lines() {
        if let Some((address, xid)) = parse_xid(line) {
            xids.entry(address).or_default().push(xid);
        }
    }
    xids
}

fn parse_xid(line: &str) -> Option<(String, u32)> {
    let rest = &line[line.find(XID_MARK)? + XID_MARK.len()..];
    // Older drivers leave out the `PCI:`.
    let rest = rest.strip_prefix("PCI:").unwrap_or(rest);
    let (address, rest) = rest.split_once(')')?;
    let rest = rest.trim_start_matches([':', ' ']);
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let xid = rest[..digits].parse().ok()?;
    Some((pci_address(address)?, xid))
}

/// `0000:18:00`, `18:00`, `0000:18:00.0` or `00000000:18:00.0` (NVML's form) as the facts
/// write a PCI function: `0000:18:00.0`. The driver's XID lines leave out the function: a
/// GPU is function 0.
pub fn pci_address(text: &str) -> Option<String> {
    let text = text.trim();
    let (rest, function) = match text.rsplit_once('.') {
        Some((rest, f)) => (rest, u8::from_str_radix(f, 16).ok()?),
        None => (text, 0),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (domain, bus, device) = match parts.as_slice() {
        [domain, bus, device] => (*domain, *bus, *device),
        [bus, device] => ("0", *bus, *device),
        _ => return None,
    };
    let domain = u32::from_str_radix(domain, 16).ok()?;
    let bus = u8::from_str_radix(bus, 16).ok()?;
    let device = u8::from_str_radix(device, 16).ok()?;
    (domain <= 0xffff && device < 32 && function < 8)
        .then(|| format!("{domain:04x}:{bus:02x}:{device:02x}.{function:x}"))
}

/// The kernel log from now on: `/dev/kmsg` opened at its end, read without blocking.
pub struct KernelLog {
    file: File,
}

impl KernelLog {
    /// Needs CAP_SYSLOG where `kernel.dmesg_restrict` is set (the agent runs as root).
    pub fn open_at_end() -> io::Result<KernelLog> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        file.seek(SeekFrom::End(0))?;
        Ok(KernelLog { file })
    }

    /// Every record logged since the log was opened (or last read), one per line.
    pub fn read_new(&mut self) -> io::Result<String> {
        let mut text = String::new();
        // One read returns one record; records are at most about 8 KiB.
        let mut record = vec![0u8; 16 * 1024];
        loop {
            match self.file.read(&mut record) {
                Ok(0) => break,
                Ok(n) => {
                    text.push_str(&String::from_utf8_lossy(&record[..n]));
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // EPIPE: records were overwritten before we read them; the next read goes on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(card: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/nvidia")
            .join(card)
            .join("nvidia-smi-topo-and-misc.txt");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn the_fixtures_driver_lines_hold_no_xid() {
        for card in ["h100-sxm5-80gb", "h200-sxm5-141gb"] {
            let text = fixture(card);
            assert!(
                text.contains("NVRM: "),
                "{card}: the fixture has NVRM lines"
            );
            assert!(xids_from_kmsg(&text).is_empty(), "{card}");
        }
    }

    #[test]
    fn injected_xids_in_every_log_form() {
        let mut text = fixture("h100-sxm5-80gb");
        text.push_str(
            "[ 8812.402153] NVRM: Xid (PCI:0000:18:00): 79, pid=2213, name=provisioner-age, \
             GPU has fallen off the bus.\n\
             3,4567,8812402153,-;NVRM: Xid (PCI:0000:2A:00): 13, pid=2213, name=provisioner-age, \
             Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0): Out Of Range Address\n \
             SUBSYSTEM=pci\n\
             NVRM: Xid (0000:18:00): 48, An uncorrectable double bit error (DBE) has been detected.\n\
             NVRM: GPU at PCI:0000:18:00: GPU-39e21a0a-c2c9-8596-b6d4-69177c6eb1b5\n",
        );
        let xids = xids_from_kmsg(&text);
        assert_eq!(xids.len(), 2, "{xids:?}");
        assert_eq!(xids["0000:18:00.0"], vec![79, 48]);
        assert_eq!(xids["0000:2a:00.0"], vec![13]);
    }

    #[test]
    fn malformed_xid_lines_are_skipped() {
        let text = "NVRM: Xid (PCI:0000:18:00): , no number\n\
                    NVRM: Xid (PCI:zz:18:00): 79, bad address\n\
                    NVRM: Xid (PCI:0000:18:00 79 no paren\n";
        assert!(xids_from_kmsg(text).is_empty());
    }

    #[test]
    fn pci_addresses_in_the_facts_form() {
        assert_eq!(pci_address("0000:18:00").as_deref(), Some("0000:18:00.0"));
        assert_eq!(pci_address("18:00").as_deref(), Some("0000:18:00.0"));
        assert_eq!(pci_address("0000:2A:00.0").as_deref(), Some("0000:2a:00.0"));
        assert_eq!(
            pci_address("00000000:00:06.0").as_deref(),
            Some("0000:00:06.0")
        );
        assert_eq!(pci_address("0000:18:00.1").as_deref(), Some("0000:18:00.1"));
        assert_eq!(pci_address("0000:18:20.0"), None);
        assert_eq!(pci_address("garbage"), None);
    }
}
