//! A disk's World Wide Name in the forms udev gives it (`ID_WWN`, `ID_WWN_WITH_EXTENSION`,
//! `ID_WWN_VENDOR_EXTENSION`), which is what Ironic's `wwn*` hints match: udev's
//! `60-persistent-storage.rules` takes an NVMe namespace's `wwid` as it is, `scsi_id` the NAA
//! designator of a SCSI disk's VPD page 0x83 (SPC-4 §7.8.6), `ata_id` the WWN of a SATA
//! disk's IDENTIFY data, which libata puts in page 0x83 as that same NAA designator.

use super::super::read::Tree;

/// SCSI VPD page 0x83, Device Identification.
const VPD_DEVICE_IDENTIFICATION: u8 = 0x83;
/// Designator type (SPC-4 table 459): a Network Address Authority name.
const DESIGNATOR_NAA: u8 = 0x3;
/// Code sets of a designator (SPC-4 table 458).
const CODE_SET_BINARY: u8 = 0x1;
const CODE_SET_ASCII: u8 = 0x2;
/// NAA formats (SPC-4 table 463): IEEE Registered Extended (16 bytes), IEEE Registered (8).
const NAA_REGISTERED_EXTENDED: u8 = 0x6;
const NAA_REGISTERED: u8 = 0x5;

/// `scsi_id`'s order of preference among NAA designators: the longest kind first, binary
/// before ASCII, then any NAA.
const NAA_PREFERENCE: [(Option<u8>, u8); 6] = [
    (Some(NAA_REGISTERED_EXTENDED), CODE_SET_BINARY),
    (Some(NAA_REGISTERED_EXTENDED), CODE_SET_ASCII),
    (Some(NAA_REGISTERED), CODE_SET_BINARY),
    (Some(NAA_REGISTERED), CODE_SET_ASCII),
    (None, CODE_SET_BINARY),
    (None, CODE_SET_ASCII),
];

/// udev's `ID_WWN*` of one disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wwn {
    pub wwn: String,
    pub with_extension: Option<String>,
    pub vendor_extension: Option<String>,
}

/// The WWN of the disk `name` at `dir` (`sys/block/sda`), whose SCSI vendor is `vendor`.
/// udev gives WWNs to NVMe namespaces and to SCSI disks (`sd*`), not to virtio-blk.
pub fn read(tree: &mut Tree, name: &str, dir: &str, vendor: Option<&str>) -> Option<Wwn> {
    if name.starts_with("nvme") {
        return tree.optional(&format!("{dir}/wwid")).map(|wwid| Wwn {
            wwn: wwid,
            with_extension: None,
            vendor_extension: None,
        });
    }
    if !name.starts_with("sd") {
        return None;
    }
    let naa = scsi_naa(tree, dir)?;
    // udev asks `ata_id` for SATA disks: it reports only an NAA 5 WWN, which has no
    // extension.
    if vendor == Some("ATA") && !(naa.len() == 16 && naa.starts_with('5')) {
        return None;
    }
    Some(from_naa(&naa))
}

/// The NAA of a SCSI disk as `scsi_id` renders it (hexadecimal, lowercase): from its VPD
/// page 0x83, or where that is not in sysfs, from the kernel's `wwid`, which holds the same
/// designator when it starts `naa.`.
fn scsi_naa(tree: &mut Tree, dir: &str) -> Option<String> {
    let page = format!("{dir}/device/vpd_pg83");
    if tree.has(&page) {
        let bytes = tree.bytes(&page)?;
        if bytes.get(1) != Some(&VPD_DEVICE_IDENTIFICATION) {
            tree.problem(&page, "not a Device Identification page");
            return None;
        }
        return device_identification_naa(&bytes);
    }
    let wwid = tree.optional(&format!("{dir}/device/wwid"))?;
    let naa = wwid.strip_prefix("naa.")?;
    naa.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| naa.to_ascii_lowercase())
}

/// The NAA designator `scsi_id` takes from a VPD page 0x83: one associated with the logical
/// unit (not a target port), in [`NAA_PREFERENCE`] order. Binary designators are written in
/// hexadecimal, ASCII ones as they are. None for a page without one, and for the SCSI-2 form
/// of the page that some old arrays send (no descriptors; `scsi_id` takes no WWN from it).
pub fn device_identification_naa(page: &[u8]) -> Option<String> {
    let header = page.get(..4)?;
    if header[1] != VPD_DEVICE_IDENTIFICATION {
        return None;
    }
    // Byte 2 of the first descriptor is reserved in SPC-2 and later.
    if page.get(6).is_some_and(|&b| b != 0) {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let body = &page[4..page.len().min(4 + length)];
    let descriptors = descriptors(body);
    NAA_PREFERENCE.into_iter().find_map(|(format, code_set)| {
        descriptors
            .iter()
            .find(|d| is_wanted_naa(d, format, code_set))
            .map(|d| render(d))
    })
}

/// The designation descriptors of a page body, each with its 4-byte header; a truncated one
/// ends the list.
fn descriptors(mut body: &[u8]) -> Vec<&[u8]> {
    let mut found = Vec::new();
    while let Some(&length) = body.get(3) {
        let Some(descriptor) = body.get(..4 + usize::from(length)) else {
            break;
        };
        found.push(descriptor);
        body = &body[descriptor.len()..];
    }
    found
}

fn is_wanted_naa(descriptor: &[u8], format: Option<u8>, code_set: u8) -> bool {
    let association = (descriptor[1] >> 4) & 0x3;
    association == 0
        && descriptor[1] & 0xf == DESIGNATOR_NAA
        && descriptor[0] & 0xf == code_set
        && descriptor
            .get(4)
            .is_some_and(|&b| format.is_none_or(|f| b >> 4 == f))
}

fn render(descriptor: &[u8]) -> String {
    let designator = &descriptor[4..];
    if descriptor[0] & 0xf == CODE_SET_ASCII {
        String::from_utf8_lossy(designator).into_owned()
    } else {
        hex::encode(designator)
    }
}

/// `scsi_id`'s split: the first 16 digits are the WWN, the next 16 (of a 16-byte NAA) the
/// vendor extension.
fn from_naa(naa: &str) -> Wwn {
    let (wwn, extension) = naa.split_at(naa.len().min(16));
    let extension = &extension[..extension.len().min(16)];
    Wwn {
        wwn: format!("0x{wwn}"),
        with_extension: Some(format!("0x{wwn}{extension}")),
        vendor_extension: (!extension.is_empty()).then(|| format!("0x{extension}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor: code set, association and type, designator.
    fn descriptor(code_set: u8, association: u8, kind: u8, designator: &[u8]) -> Vec<u8> {
        let mut d = vec![
            code_set,
            (association << 4) | kind,
            0,
            designator.len() as u8,
        ];
        d.extend_from_slice(designator);
        d
    }

    fn page(descriptors: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = descriptors.concat();
        let mut page = vec![0x00, 0x83];
        page.extend_from_slice(&(body.len() as u16).to_be_bytes());
        page.extend(body);
        page
    }

    const NAA5: [u8; 8] = [0x50, 0x00, 0xc5, 0x00, 0xa1, 0xb2, 0xc3, 0xd4];
    const NAA6: [u8; 16] = [
        0x6d, 0x09, 0x46, 0x60, 0x6a, 0x8b, 0x1c, 0x00, 0x2d, 0x6b, 0x1e, 0x0f, 0x12, 0x34, 0x56,
        0x78,
    ];

    #[test]
    fn a_sata_disks_page_as_libata_writes_it() {
        // libata: the T10 vendor id designator ("ATA", model, serial), then the NAA.
        let t10 = descriptor(2, 0, 1, b"ATA     ST8000NM000A-2KE101 WKD3ABCD");
        let naa = descriptor(1, 0, 3, &NAA5);
        let naa = device_identification_naa(&page(&[t10, naa])).unwrap();
        assert_eq!(naa, "5000c500a1b2c3d4");
        assert_eq!(
            from_naa(&naa),
            Wwn {
                wwn: "0x5000c500a1b2c3d4".into(),
                with_extension: Some("0x5000c500a1b2c3d4".into()),
                vendor_extension: None,
            }
        );
    }

    #[test]
    fn a_16_byte_naa_is_preferred_and_split() {
        // A SAS disk's target port NAA comes first but is not the logical unit's.
        let port = descriptor(0x61, 1, 3, &[0x50, 0, 0, 0, 0, 0, 0, 1]);
        let short = descriptor(1, 0, 3, &NAA5);
        let long = descriptor(1, 0, 3, &NAA6);
        let naa = device_identification_naa(&page(&[port, short, long])).unwrap();
        assert_eq!(
            from_naa(&naa),
            Wwn {
                wwn: "0x6d0946606a8b1c00".into(),
                with_extension: Some("0x6d0946606a8b1c002d6b1e0f12345678".into()),
                vendor_extension: Some("0x2d6b1e0f12345678".into()),
            }
        );
    }

    #[test]
    fn pages_without_a_logical_unit_naa_have_none() {
        let eui = descriptor(1, 0, 2, &NAA5);
        let port = descriptor(1, 1, 3, &NAA5);
        assert_eq!(device_identification_naa(&page(&[eui, port])), None);
        assert_eq!(device_identification_naa(&page(&[])), None);
        // The SCSI-2 form: a bare identifier after the header.
        let mut scsi2 = vec![0x00, 0x83, 0x00, 0x10];
        scsi2.extend_from_slice(&NAA6);
        assert_eq!(device_identification_naa(&scsi2), None);
        // Another page, a short one, a truncated descriptor.
        assert_eq!(device_identification_naa(&[0x00, 0x80, 0x00, 0x00]), None);
        assert_eq!(device_identification_naa(&[0x00, 0x83]), None);
        let mut cut = page(&[descriptor(1, 0, 3, &NAA5)]);
        cut.truncate(cut.len() - 1);
        assert_eq!(device_identification_naa(&cut), None);
    }
}
