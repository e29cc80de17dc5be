#!/usr/bin/env python3
"""synthesize.py -- write the synthetic sysfs/procfs trees the fact-reader tests use:
hgx-h100/, trn1/ and graviton/, next to this script. Deterministic: running it again writes
the same bytes. README.md says where each value comes from.

The trees have the layout the kernel gives (symlinks relative, as sysfs has them) but only
the files the readers read, and the PCI paths are flattened: every function hangs directly
under its host bridge, without the root ports and PCIe switches between.
"""

import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class Tree:
    def __init__(self, name):
        self.root = os.path.join(HERE, name)
        if os.path.exists(self.root):
            shutil.rmtree(self.root)

    def write(self, rel, content):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(path, mode) as f:
            f.write(content)

    def link(self, rel, target):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)

    def dmi(self, **fields):
        for name, value in fields.items():
            self.write(f"sys/class/dmi/id/{name}", value + "\n")

    def pci(self, address, vendor, device, class_, driver=None, subsystem=None, link=None):
        """A PCI function under its host bridge; `link` is (speed, width, max speed, max width)."""
        host = "pci" + address[:7]
        rel = f"sys/devices/{host}/{address}"
        self.link(f"sys/bus/pci/devices/{address}", f"../../../devices/{host}/{address}")
        self.write(f"{rel}/vendor", f"0x{vendor:04x}\n")
        self.write(f"{rel}/device", f"0x{device:04x}\n")
        self.write(f"{rel}/class", f"0x{class_:06x}\n")
        sub_vendor, sub_device = subsystem or (0, 0)
        self.write(f"{rel}/subsystem_vendor", f"0x{sub_vendor:04x}\n")
        self.write(f"{rel}/subsystem_device", f"0x{sub_device:04x}\n")
        if driver:
            self.link(f"{rel}/driver", f"../../../bus/pci/drivers/{driver}")
        if link:
            speed, width, max_speed, max_width = link
            self.write(f"{rel}/current_link_speed", f"{speed} GT/s PCIe\n")
            self.write(f"{rel}/current_link_width", f"{width}\n")
            self.write(f"{rel}/max_link_speed", f"{max_speed} GT/s PCIe\n")
            self.write(f"{rel}/max_link_width", f"{max_width}\n")
        return rel

    def nic(self, name, pci_rel, mac, speed=None, carrier=None):
        """A network interface of a PCI function; None leaves the file out (a link that is
        down reads EINVAL, which a recording cannot hold)."""
        rel = f"{pci_rel}/net/{name}"
        self.link(f"sys/class/net/{name}", "../../" + rel[len("sys/"):])
        self.link(f"{rel}/device", "../../../" + os.path.basename(pci_rel))
        self.write(f"{rel}/address", mac + "\n")
        if speed is not None:
            self.write(f"{rel}/speed", f"{speed}\n")
        if carrier is not None:
            self.write(f"{rel}/carrier", f"{carrier}\n")

    def nvme(self, controller, pci_rel, sectors, model, serial):
        """An NVMe namespace `{controller}n1` (no native multipath: `device` is the controller)."""
        disk = f"{controller}n1"
        ctrl_rel = f"{pci_rel}/nvme/{controller}"
        rel = f"{ctrl_rel}/{disk}"
        self.link(f"sys/block/{disk}", "../" + rel[len("sys/"):])
        self.link(f"{rel}/device", f"../../{controller}")
        self.write(f"{rel}/size", f"{sectors}\n")
        self.write(f"{rel}/queue/rotational", "0\n")
        self.write(f"{ctrl_rel}/model", f"{model:<40}\n")
        self.write(f"{ctrl_rel}/serial", f"{serial:<20}\n")

    def loopback(self):
        self.link("sys/class/net/lo", "../../devices/virtual/net/lo")
        self.write("sys/devices/virtual/net/lo/address", "00:00:00:00:00:00\n")


def x86_cpuinfo(model, family, model_number, sockets, cores, threads_per_core):
    """Linux numbers every first thread, socket by socket, before the second threads."""
    entries = []
    siblings = cores * threads_per_core
    n = 0
    for thread in range(threads_per_core):
        for socket in range(sockets):
            for core in range(cores):
                apic = socket * 128 + core * 2 + thread
                entries.append(
                    f"processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: {family}\n"
                    f"model\t\t: {model_number}\nmodel name\t: {model}\nstepping\t: 8\n"
                    f"physical id\t: {socket}\nsiblings\t: {siblings}\ncore id\t\t: {core}\n"
                    f"cpu cores\t: {cores}\napicid\t\t: {apic}\n"
                )
                n += 1
    return "\n".join(entries) + "\n"


def meminfo(total_kib):
    return (
        f"MemTotal:       {total_kib} kB\nMemFree:        {total_kib - 4194304} kB\n"
        f"MemAvailable:   {total_kib - 3145728} kB\n"
    )


def memory_device(handle, locator, bank, size_mib=None, speed=4800, manufacturer=None,
                  serial=None, part=None):
    """An SMBIOS 3.2 Memory Device (type 17, 0x54 bytes). Sizes of 32 GiB and more do not fit
    the 15-bit Size field: Size is 0x7FFF and Extended Size holds the MiB."""
    area = bytearray(0x54)
    area[0], area[1] = 17, 0x54
    struct.pack_into("<HHH", area, 0x02, handle, 0x1000, 0xFFFE)
    if size_mib:
        struct.pack_into("<HH", area, 0x08, 80, 64)  # ECC: 80 bits total, 64 data
        struct.pack_into("<H", area, 0x0C, 0x7FFF if size_mib >= 0x7FFF else size_mib)
        area[0x0E] = 0x09  # DIMM
        area[0x12] = 0x22  # DDR5
        struct.pack_into("<H", area, 0x13, 0x2080)  # synchronous, registered
        struct.pack_into("<H", area, 0x15, speed)
        area[0x1B] = 2  # rank
        struct.pack_into("<I", area, 0x1C, size_mib if size_mib >= 0x7FFF else 0)
        struct.pack_into("<HHHH", area, 0x20, speed, 1100, 1100, 1100)
        area[0x28] = 0x03  # DRAM
        struct.pack_into("<Q", area, 0x3C, size_mib << 20)
        strings = [locator, bank, manufacturer, serial, f"{locator}_AssetTag", part]
    else:
        area[0x0E] = 0x09
        area[0x12] = 0x02  # unknown
        strings = [locator, bank, "NO DIMM", "NO DIMM", "NO DIMM", "NO DIMM"]
    for i, offset in enumerate([0x10, 0x11, 0x17, 0x18, 0x19, 0x1A]):
        area[offset] = i + 1
    return bytes(area) + b"".join(s.encode() + b"\0" for s in strings) + b"\0"


def hgx_h100():
    t = Tree("hgx-h100")
    t.dmi(
        sys_vendor="Supermicro", product_name="SYS-821GE-TNHR",
        product_serial="S000000X4000001", board_vendor="Supermicro",
        board_name="X13DEG-OAD", board_serial="OM000000000001",
        bios_vendor="American Megatrends International, LLC.", bios_version="2.1",
        bios_date="02/22/2024",
    )
    t.write("proc/cpuinfo", x86_cpuinfo("Intel(R) Xeon(R) Platinum 8480+", 6, 143, 2, 56, 2))
    t.write("proc/meminfo", meminfo(1056335452))
    # 2 sockets x 8 channels x 2 slots; one 64 GiB DDR5-4800 RDIMM per channel.
    n = 0
    for socket in (1, 2):
        for channel in "ABCDEFGH":
            for slot in (1, 2):
                locator = f"P{socket}-DIMM{channel}{slot}"
                bank = f"P{socket - 1}_Node{socket - 1}_Channel{'ABCDEFGH'.index(channel)}_Dimm{slot - 1}"
                if slot == 1:
                    raw = memory_device(0x1100 + n, locator, bank, 65536, 4800, "SK Hynix",
                                        f"80AD0000{n:04X}", "HMCG94AEBRA123N")
                else:
                    raw = memory_device(0x1100 + n, locator, bank)
                t.write(f"sys/firmware/dmi/entries/17-{n}/raw", raw)
                n += 1
    gen5_x16 = ("32.0", 16, "32.0", 16)
    # The eight SXM5 GPUs, from nvidia-smi -q of a real H100 80GB HBM3 (device 0x2330,
    # subsystem 0x16c1, PCIe gen 5 x16); the one at ba:00.0 trained at x8 of x16.
    for address in ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
                    "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"]:
        link = ("32.0", 8, "32.0", 16) if address == "0000:ba:00.0" else gen5_x16
        t.pci(address, 0x10DE, 0x2330, 0x030200, "nvidia", (0x10DE, 0x16C1), link)
    # The four NVSwitches of the HGX baseboard: NVIDIA bridges, not GPUs.
    for address in ["0000:05:00.0", "0000:06:00.0", "0000:07:00.0", "0000:08:00.0"]:
        t.pci(address, 0x10DE, 0x22A3, 0x068000, "nvidia", (0x10DE, 0x1796),
              ("16.0", 2, "16.0", 2))
    # The BMC's VGA: a display controller, but not NVIDIA's.
    t.pci("0000:03:00.0", 0x1A03, 0x2000, 0x030000, "ast", (0x15D9, 0x1C48), ("5.0", 1, "5.0", 1))
    # Boot NICs (Intel X710 10GBASE-T, two ports) and two of the ConnectX-7 fabric NICs.
    x710 = [t.pci(f"0000:c1:00.{f}", 0x8086, 0x15FF, 0x020000, "i40e", (0x15D9, 0x1C4A),
                  ("8.0", 8, "8.0", 8)) for f in (0, 1)]
    cx7 = [t.pci(a, 0x15B3, 0x1021, 0x020000, "mlx5_core", (0x15B3, 0x0041), gen5_x16)
           for a in ("0000:19:00.0", "0000:9b:00.0")]
    # Without udev the kernel names them ethN.
    t.nic("eth0", x710[0], "3c:ec:ef:00:10:00", speed=10000, carrier=1)
    t.nic("eth1", x710[1], "3c:ec:ef:00:10:01", speed=-1, carrier=0)
    t.nic("eth2", cx7[0], "b8:3f:d2:00:20:00", speed=400000, carrier=1)
    t.nic("eth3", cx7[1], "b8:3f:d2:00:20:01")  # administratively down
    t.loopback()
    # Two 3.84 TB U.2 NVMe (Samsung PM9A3, PCIe gen 4 x4).
    for i, address in enumerate(["0000:c3:00.0", "0000:c4:00.0"]):
        rel = t.pci(address, 0x144D, 0xA80A, 0x010802, "nvme", (0x144D, 0xA813), ("16.0", 4, "16.0", 4))
        t.nvme(f"nvme{i}", rel, 7501476528, "SAMSUNG MZQL23T8HCLS-00A07", f"S64HNE0T00000{i}")


def trn1():
    t = Tree("trn1")
    # EC2 writes no board name and no board serial.
    t.dmi(
        sys_vendor="Amazon EC2", product_name="trn1.32xlarge",
        product_serial="ec2f0000-0000-0000-0000-000000000001", board_vendor="Amazon EC2",
        bios_vendor="Amazon EC2", bios_version="1.0", bios_date="10/16/2017",
    )
    t.write("proc/cpuinfo",
            x86_cpuinfo("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", 6, 106, 2, 32, 2))
    t.write("proc/meminfo", meminfo(527938228))
    # Nitro's VGA; EBS NVMe; ENA; EFA; and two of the sixteen Trainium devices.
    t.pci("0000:00:03.0", 0x1D0F, 0x1111, 0x030000)
    ebs = t.pci("0000:00:04.0", 0x1D0F, 0x8061, 0x010802, "nvme", (0x1D0F, 0x8061))
    ena = t.pci("0000:00:05.0", 0x1D0F, 0xEC20, 0x020000, "ena", (0x1D0F, 0xEC20))
    t.pci("0000:10:1e.0", 0x1D0F, 0xEFA1, 0x020000, "efa", (0x1D0F, 0xEFA1))
    for address in ("0000:10:1c.0", "0000:10:1d.0"):
        t.pci(address, 0x1D0F, 0x7164, 0x088000, "neuron", (0x1D0F, 0x0000),
              ("16.0", 16, "16.0", 16))
    t.nic("eth0", ena, "0a:00:00:00:00:01", carrier=1)  # ENA reports no speed
    t.loopback()
    t.nvme("nvme0", ebs, 1073741824, "Amazon Elastic Block Store", "vol0000000000000001")


def graviton():
    t = Tree("graviton")
    t.dmi(
        sys_vendor="Amazon EC2", product_name="c7g.xlarge",
        product_serial="ec2f0000-0000-0000-0000-000000000002", board_vendor="Amazon EC2",
        bios_vendor="Amazon EC2", bios_version="1.0", bios_date="11/1/2018",
    )
    # arm64: no model name, no physical id, no core id; the topology is in sysfs.
    entries = []
    for n in range(4):
        entries.append(
            f"processor\t: {n}\nBogoMIPS\t: 2100.00\n"
            "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
            "asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat "
            "ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng\n"
            "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\n"
            "CPU part\t: 0xd40\nCPU revision\t: 1\n"
        )
        t.write(f"sys/devices/system/cpu/cpu{n}/topology/physical_package_id", "0\n")
        t.write(f"sys/devices/system/cpu/cpu{n}/topology/core_id", f"{n}\n")
    t.write("proc/cpuinfo", "\n".join(entries) + "\n")
    t.write("proc/meminfo", meminfo(7888368))
    # Nitro's host bridge and serial port are Amazon's too, and are not Neuron devices.
    t.pci("0000:00:00.0", 0x1D0F, 0x0200, 0x060000)
    t.pci("0000:00:01.0", 0x1D0F, 0x8250, 0x070003, "serial")
    ebs = t.pci("0000:00:04.0", 0x1D0F, 0x0061, 0x010802, "nvme", (0x1D0F, 0x0061))
    ena = t.pci("0000:00:05.0", 0x1D0F, 0xEC20, 0x020000, "ena", (0x1D0F, 0xEC20))
    t.nic("eth0", ena, "0a:00:00:00:00:02", carrier=1)
    t.loopback()
    t.nvme("nvme0", ebs, 16777216, "Amazon Elastic Block Store", "vol0000000000000002")


if __name__ == "__main__":
    if len(sys.argv) != 1:
        sys.exit("usage: synthesize.py  (writes hgx-h100/, trn1/, graviton/ next to itself)")
    hgx_h100()
    trn1()
    graviton()
