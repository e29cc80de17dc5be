//! GRUB for an image file, without `grub-install` (which refuses anything but a block
//! device): `grub-mkimage` with the image's own modules makes the BIOS core and the UEFI
//! executable, each with a small embedded config that finds root by filesystem UUID; the BIOS
//! boot code in the protective MBR points at the core written into the BIOS boot partition.
//! The offsets below are those of GRUB 2.06 (`include/grub/i386/pc/boot.h`), Debian 12's;
//! [`patch_core`] checks the core it is given looks like one before changing it.

use super::recipe::{Arch, Firmware};

/// `GRUB_BOOT_MACHINE_KERNEL_SECTOR`: the LBA of core.img's first sector, in boot.img.
const KERNEL_SECTOR: usize = 0x5c;
/// `GRUB_BOOT_MACHINE_DRIVE_CHECK`: a jump over the floppy probe, made two NOPs on a disk as
/// `grub-bios-setup` does (BIOSes that pass a wrong boot drive).
const DRIVE_CHECK: usize = 0x66;
/// `GRUB_BOOT_MACHINE_BPB_START`..`BPB_END`: left as the disk has them.
const BPB: std::ops::Range<usize> = 0x03..0x5a;
/// `GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC`: boot code ends here, the partition table follows.
const CODE_END: usize = 0x1b8;
/// The block list at the end of core.img's first sector (diskboot.img): start LBA (u64),
/// sector count (u16), load segment (u16).
const BLOCKLIST: usize = 512 - 12;
const LOAD_SEGMENT: u16 = 0x820;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrubError {
    #[error("boot.img is {0} bytes, not one 512-byte sector")]
    BootImgSize(usize),
    #[error("core.img is {core} bytes and the BIOS boot partition {room}: raise bios_boot_mib")]
    CoreTooLarge { core: usize, room: u64 },
    #[error(
        "core.img's block list reads start {start}, {count} sectors, segment {segment:#x}: not GRUB 2.06's layout (this builder writes the core by hand)"
    )]
    UnknownCore {
        start: u64,
        count: u16,
        segment: u16,
    },
}

/// Sector 0 of the disk with GRUB's boot code: `mbr` as sfdisk wrote it (protective MBR)
/// with boot.img's code, pointing at the core at `core_lba`.
pub fn patch_mbr(mbr: &[u8; 512], boot_img: &[u8], core_lba: u64) -> Result<[u8; 512], GrubError> {
    if boot_img.len() != 512 {
        return Err(GrubError::BootImgSize(boot_img.len()));
    }
    let mut out = *mbr;
    for i in 0..CODE_END {
        if !BPB.contains(&i) {
            out[i] = boot_img[i];
        }
    }
    out[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    out[DRIVE_CHECK] = 0x90;
    out[DRIVE_CHECK + 1] = 0x90;
    Ok(out)
}

/// core.img as it must lie at `core_lba`: its block list names the sectors after its first.
pub fn patch_core(core: &[u8], core_lba: u64, room: u64) -> Result<Vec<u8>, GrubError> {
    if core.len() as u64 > room || core.len() < 1024 {
        return Err(GrubError::CoreTooLarge {
            core: core.len(),
            room,
        });
    }
    let field = |at: usize, n: usize| &core[BLOCKLIST + at..BLOCKLIST + at + n];
    let start = u64::from_le_bytes(field(0, 8).try_into().unwrap_or([0; 8]));
    let count = u16::from_le_bytes(field(8, 2).try_into().unwrap_or([0; 2]));
    let segment = u16::from_le_bytes(field(10, 2).try_into().unwrap_or([0; 2]));
    let sectors_after_first = (core.len() - 512).div_ceil(512);
    // grub-mkimage writes the list of a core at LBA 1: start 2, the sectors after the first.
    if start != 2 || count as usize != sectors_after_first || segment != LOAD_SEGMENT {
        return Err(GrubError::UnknownCore {
            start,
            count,
            segment,
        });
    }
    let mut out = core.to_vec();
    out[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    Ok(out)
}

/// The `grub-mkimage` target for a firmware on an architecture.
pub fn target(arch: Arch, firmware: Firmware) -> Option<&'static str> {
    match (arch, firmware) {
        (Arch::X86_64, Firmware::Bios) => Some("i386-pc"),
        (Arch::X86_64, Firmware::Uefi) => Some("x86_64-efi"),
        (Arch::Arm64, Firmware::Uefi) => Some("arm64-efi"),
        (Arch::Arm64, Firmware::Bios) => None,
    }
}

/// The removable-media path UEFI firmware boots with empty NVRAM.
pub fn efi_removable_name(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "BOOTX64.EFI",
        Arch::Arm64 => "BOOTAA64.EFI",
    }
}

/// Modules put into the core so that it needs nothing from disk but grub.cfg; those of them
/// the target lacks are left out by the caller.
pub fn modules(target: &str) -> Vec<&'static str> {
    let mut m = vec![
        "part_gpt",
        "ext2",
        "search",
        "search_fs_uuid",
        "normal",
        "configfile",
        "linux",
        "echo",
        "test",
        "gzio",
        "serial",
        "terminal",
        "sleep",
    ];
    if target == "i386-pc" {
        m.push("biosdisk");
    } else {
        m.extend(["fat", "all_video", "efi_gop"]);
    }
    m
}

/// The config built into the core: find the filesystem holding /boot by its UUID and read
/// grub.cfg there (`boot_dir` is where /boot is inside it: `/boot`, or `` for its own).
pub fn embedded_config(boot_fs_uuid: &str, boot_dir: &str) -> String {
    format!(
        "search --no-floppy --fs-uuid --set=root {boot_fs_uuid}\n\
         set prefix=($root){boot_dir}/grub\n"
    )
}

/// `/boot/grub/grub.cfg`: boots the kernel the `/boot/vmlinuz` link names (kept current by
/// kernel updates on the node: `link_in_boot`), on the serial console and the screen.
/// `boot_dir` is where /boot is inside the filesystem GRUB reads.
pub fn grub_cfg(title: &str, cmdline: &str, serial: bool, boot_dir: &str) -> String {
    let mut s =
        String::from("# Written by provisioner image build.\nset timeout=1\nset default=0\n");
    if serial {
        s += "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n";
    }
    s += &format!(
        "menuentry '{title}' {{\n  linux {boot_dir}/vmlinuz {cmdline}\n  initrd {boot_dir}/initrd.img\n}}\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_core(sectors_after_first: u16) -> Vec<u8> {
        let mut core = vec![0xAB; 512 + sectors_after_first as usize * 512 - 100];
        core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&2u64.to_le_bytes());
        core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&sectors_after_first.to_le_bytes());
        core[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&LOAD_SEGMENT.to_le_bytes());
        core
    }

    #[test]
    fn the_core_is_pointed_at_where_it_lies() {
        let core = fake_core(60);
        let out = patch_core(&core, 2048, 1 << 20).unwrap();
        assert_eq!(
            u64::from_le_bytes(out[BLOCKLIST..BLOCKLIST + 8].try_into().unwrap()),
            2049
        );
        assert_eq!(out.len(), core.len());
        assert_eq!(out[..BLOCKLIST], core[..BLOCKLIST]);
    }

    #[test]
    fn an_unknown_core_or_one_too_large_is_refused() {
        let mut core = fake_core(60);
        core[BLOCKLIST] = 7;
        assert!(matches!(
            patch_core(&core, 2048, 1 << 20),
            Err(GrubError::UnknownCore { start: 7, .. })
        ));
        assert!(matches!(
            patch_core(&fake_core(60), 2048, 4096),
            Err(GrubError::CoreTooLarge { .. })
        ));
    }

    #[test]
    fn the_mbr_keeps_its_partition_table_and_bpb() {
        let mut mbr = [0u8; 512];
        mbr[0x1be..0x1ce].copy_from_slice(&[0xEE; 16]);
        mbr[0x1fe] = 0x55;
        mbr[0x1ff] = 0xAA;
        let boot = [0x11u8; 512];
        let out = patch_mbr(&mbr, &boot, 2048).unwrap();
        assert_eq!(out[0], 0x11);
        assert_eq!(out[0x10], 0, "BPB left as on disk");
        assert_eq!(out[0x1be..], mbr[0x1be..]);
        assert_eq!(
            u64::from_le_bytes(out[0x5c..0x64].try_into().unwrap()),
            2048
        );
        assert_eq!(out[0x66..0x68], [0x90, 0x90]);
        assert!(patch_mbr(&mbr, &boot[..100], 2048).is_err());
    }

    #[test]
    fn grub_cfg_boots_the_debian_links_with_the_command_line() {
        let cfg = grub_cfg("debian12-hardened", "root=PARTUUID=x ro", true, "");
        assert!(cfg.contains("linux /vmlinuz root=PARTUUID=x ro\n"));
        assert!(cfg.contains("initrd /initrd.img"));
        assert!(cfg.contains("terminal_output serial console"));
        let cfg = grub_cfg("d", "ro", false, "/boot");
        assert!(cfg.contains("linux /boot/vmlinuz ro\n") && !cfg.contains("serial"));
        assert!(embedded_config("u", "").contains("set prefix=($root)/grub\n"));
        assert_eq!(target(Arch::Arm64, Firmware::Bios), None);
    }
}
