//! SMBIOS Memory Device structures (type 17, DMTF DSP0134 §7.18), as the kernel exports each
//! one raw in `/sys/firmware/dmi/entries/17-N/raw`: the formatted area, then its strings.

use provisioner_protocol::Dimm;

/// SMBIOS structure type of a Memory Device.
pub const MEMORY_DEVICE: u8 = 17;

// Offsets in the formatted area of a Memory Device.
const LENGTH: usize = 0x01;
const SIZE: usize = 0x0C;
const DEVICE_LOCATOR: usize = 0x10;
const SPEED: usize = 0x15;
const MANUFACTURER: usize = 0x17;
const SERIAL_NUMBER: usize = 0x18;
const PART_NUMBER: usize = 0x1A;
const EXTENDED_SIZE: usize = 0x1C;
const EXTENDED_SPEED: usize = 0x54;

/// `Size` values with a meaning of their own.
const SIZE_NOT_INSTALLED: u16 = 0;
const SIZE_UNKNOWN: u16 = 0xFFFF;
const SIZE_IN_EXTENDED_SIZE: u16 = 0x7FFF;
/// Bit 15 of `Size`: the value is in KiB, not MiB.
const SIZE_IN_KIB: u16 = 0x8000;
/// `Speed` 0xFFFF: the speed is in `Extended Speed` (SMBIOS 3.3).
const SPEED_IN_EXTENDED_SPEED: u16 = 0xFFFF;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SmbiosError {
    #[error("structure type {0}, not a Memory Device (17)")]
    NotMemoryDevice(u8),
    #[error("formatted area of {length} bytes is shorter than {needed}")]
    TooShort { length: usize, needed: usize },
    #[error("{have} bytes, shorter than the {length} of its formatted area")]
    Truncated { length: usize, have: usize },
    #[error("the string set is not terminated")]
    UnterminatedStrings,
}

/// The DIMM a Memory Device structure describes; `None` for an empty slot.
pub fn parse_memory_device(raw: &[u8]) -> Result<Option<Dimm>, SmbiosError> {
    let (&kind, &length) = raw
        .first()
        .zip(raw.get(LENGTH))
        .ok_or(SmbiosError::TooShort {
            length: raw.len(),
            needed: 2,
        })?;
    if kind != MEMORY_DEVICE {
        return Err(SmbiosError::NotMemoryDevice(kind));
    }
    let length = usize::from(length);
    // SMBIOS 2.3 is the first with part numbers; everything read here is in its 0x1B bytes.
    let needed = PART_NUMBER + 1;
    if length < needed {
        return Err(SmbiosError::TooShort { length, needed });
    }
    if raw.len() < length {
        return Err(SmbiosError::Truncated {
            length,
            have: raw.len(),
        });
    }
    let area = &raw[..length];
    let strings = strings(&raw[length..])?;
    let Some(size_bytes) = size_bytes(area) else {
        return Ok(None);
    };
    let string = |offset: usize| {
        let index = usize::from(area[offset]);
        index
            .checked_sub(1)
            .and_then(|i| strings.get(i))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    Ok(Some(Dimm {
        locator: string(DEVICE_LOCATOR).unwrap_or_default(),
        size_bytes,
        speed_mts: speed(area),
        manufacturer: string(MANUFACTURER),
        part_number: string(PART_NUMBER),
        serial: string(SERIAL_NUMBER),
    }))
}

/// The module's size; `None` for an empty slot or one the firmware does not know.
fn size_bytes(area: &[u8]) -> Option<u64> {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    match word(area, SIZE)? {
        SIZE_NOT_INSTALLED | SIZE_UNKNOWN => None,
        SIZE_IN_EXTENDED_SIZE => {
            // Bits 30:0, in MiB; bit 31 is reserved.
            let mib = dword(area, EXTENDED_SIZE)? & 0x7FFF_FFFF;
            (mib > 0).then_some(u64::from(mib) * MIB)
        }
        size if size & SIZE_IN_KIB != 0 => Some(u64::from(size & !SIZE_IN_KIB) * KIB),
        size => Some(u64::from(size) * MIB),
    }
}

/// The module's rated speed in MT/s (MHz before SMBIOS 3.1, the same number for DDR).
fn speed(area: &[u8]) -> Option<u32> {
    match word(area, SPEED)? {
        0 => None,
        SPEED_IN_EXTENDED_SPEED => dword(area, EXTENDED_SPEED).filter(|&s| s > 0),
        speed => Some(u32::from(speed)),
    }
}

fn word(area: &[u8], offset: usize) -> Option<u16> {
    let bytes = area.get(offset..offset + 2)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn dword(area: &[u8], offset: usize) -> Option<u32> {
    let bytes = area.get(offset..offset + 4)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// The string set after the formatted area: NUL-terminated strings, ended by an empty one
/// (a structure with no strings has just two NULs).
fn strings(set: &[u8]) -> Result<Vec<String>, SmbiosError> {
    let end = set
        .windows(2)
        .position(|pair| pair == [0, 0])
        .ok_or(SmbiosError::UnterminatedStrings)?;
    if end == 0 {
        return Ok(Vec::new());
    }
    Ok(set[..end]
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Memory Device of SMBIOS 2.8 (0x28 bytes) with the strings locator, bank locator,
    /// manufacturer, serial, asset tag and part number.
    fn device(size: u16, extended_mib: u32, speed: u16, strings: &[&str]) -> Vec<u8> {
        let mut raw = vec![0u8; 0x28];
        raw[0] = MEMORY_DEVICE;
        raw[1] = 0x28;
        raw[SIZE..SIZE + 2].copy_from_slice(&size.to_le_bytes());
        raw[DEVICE_LOCATOR] = 1;
        raw[0x11] = 2;
        raw[SPEED..SPEED + 2].copy_from_slice(&speed.to_le_bytes());
        raw[MANUFACTURER] = 3;
        raw[SERIAL_NUMBER] = 4;
        raw[0x19] = 5;
        raw[PART_NUMBER] = 6;
        raw[EXTENDED_SIZE..EXTENDED_SIZE + 4].copy_from_slice(&extended_mib.to_le_bytes());
        for s in strings {
            raw.extend_from_slice(s.as_bytes());
            raw.push(0);
        }
        raw.push(0);
        raw
    }

    const STRINGS: [&str; 6] = [
        "DIMM_A1",
        "BANK 0",
        "Samsung",
        "0x1234ABCD ",
        "Asset",
        "M393A4K40DB3-CWE",
    ];

    #[test]
    fn size_in_mib() {
        let dimm = parse_memory_device(&device(32768 - 2, 0, 3200, &STRINGS))
            .unwrap()
            .unwrap();
        assert_eq!(dimm.size_bytes, 32766 * 1024 * 1024);
        assert_eq!(dimm.speed_mts, Some(3200));
        assert_eq!(dimm.locator, "DIMM_A1");
        assert_eq!(dimm.manufacturer.as_deref(), Some("Samsung"));
        assert_eq!(dimm.serial.as_deref(), Some("0x1234ABCD"));
        assert_eq!(dimm.part_number.as_deref(), Some("M393A4K40DB3-CWE"));
    }

    #[test]
    fn size_in_extended_size_for_64_gib() {
        let dimm = parse_memory_device(&device(0x7FFF, 65536, 4800, &STRINGS))
            .unwrap()
            .unwrap();
        assert_eq!(dimm.size_bytes, 64 << 30);
    }

    #[test]
    fn size_in_kib_when_bit_15_is_set() {
        let dimm = parse_memory_device(&device(0x8000 | 512, 0, 0, &STRINGS))
            .unwrap()
            .unwrap();
        assert_eq!(dimm.size_bytes, 512 * 1024);
        assert_eq!(dimm.speed_mts, None);
    }

    #[test]
    fn empty_and_unknown_slots_are_skipped() {
        let empty = [
            "DIMM_B1", "BANK 1", "NO DIMM", "NO DIMM", "NO DIMM", "NO DIMM",
        ];
        assert_eq!(parse_memory_device(&device(0, 0, 0, &empty)), Ok(None));
        assert_eq!(parse_memory_device(&device(0xFFFF, 0, 0, &empty)), Ok(None));
    }

    #[test]
    fn a_string_index_of_zero_is_no_string() {
        let mut raw = device(1024, 0, 2666, &STRINGS);
        raw[SERIAL_NUMBER] = 0;
        raw[PART_NUMBER] = 9; // past the last string
        let dimm = parse_memory_device(&raw).unwrap().unwrap();
        assert_eq!(dimm.serial, None);
        assert_eq!(dimm.part_number, None);
    }

    #[test]
    fn broken_structures_are_errors() {
        let mut other = device(1024, 0, 0, &STRINGS);
        other[0] = 4;
        assert_eq!(
            parse_memory_device(&other),
            Err(SmbiosError::NotMemoryDevice(4))
        );
        let full = device(1024, 0, 0, &STRINGS);
        assert_eq!(
            parse_memory_device(&full[..0x20]),
            Err(SmbiosError::Truncated {
                length: 0x28,
                have: 0x20
            })
        );
        let mut short = full.clone();
        short[1] = 0x1A;
        assert_eq!(
            parse_memory_device(&short),
            Err(SmbiosError::TooShort {
                length: 0x1A,
                needed: 0x1B
            })
        );
        assert_eq!(
            parse_memory_device(&full[..full.len() - 1]),
            Err(SmbiosError::UnterminatedStrings)
        );
    }
}
