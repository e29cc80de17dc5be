# Longer recipes; the README shows each as a plain command.

# Run the appliance on its embedded defaults.
run:
    cargo run --release -- up

# Every test (lab tests need root).
test:
    cargo test --workspace

# The virtual rack: N QEMU nodes booting from the appliance (root). Builds the test node image.
lab nodes="2" firmware="bios":
    cargo build --release
    target/release/provisioner firmware fetch
    bash tests/lab/node-image.sh target/lab-image
    target/release/provisioner lab --nodes {{nodes}} --firmware {{firmware}} --discovery-kernel target/lab-image/vmlinuz --discovery-initrd target/lab-image/initrd.img

# The lab tests alone, with their output (root).
lab-test:
    cargo test --test lab_dhcp --test lab_boot --test lab_inspect --test lab_arm64 --test lab_install --test lab_install_faults -- --nocapture

# The node agent, as the discovery image carries it.
agent:
    cargo build --release -p provisioner-agent

# The discovery image into ./var/images/discovery, imported as artifacts (`up` then uses it).
discovery:
    cargo build --release --workspace
    target/release/provisioner image build-discovery

# A hardened OS image (images/RECIPE.toml) for ARCH, graded, signed and imported (root).
image recipe="debian12-hardened" arch="x86_64":
    cargo build --release --workspace
    target/release/provisioner image build {{recipe}} --arch {{arch}}

# The OpenSCAP and Lynis grade of an image in the library (root).
grade-image name:
    cargo build --release
    target/release/provisioner image grade {{name}}

# Three lab nodes inspected against tests/lab/plan.csv (root): two match, one is not in the plan.
inspect-lab:
    cargo build --release --workspace
    target/release/provisioner firmware fetch
    target/release/provisioner image build-discovery --out target/discovery --data-dir target/discovery-data
    target/release/provisioner lab --discovery-kernel target/discovery/vmlinuz --discovery-initrd target/discovery/initrd.img --plan tests/lab/plan.csv --node mem=1024,cpus=1,disk=2048 --node mem=1536,cpus=2,disk=3072,nvme=1024,serial=LAB-SN-1 --node mem=1024,disk=1024,serial=LAB-SN-9

# Fetch the network-boot binaries of firmware/manifest.toml from Debian's ipxe package.
firmware:
    cargo run --release -- firmware fetch

# perfdhcp against the appliance, Kea and dnsmasq, plain and with PXE options (root).
bench-dhcp:
    cargo build --release
    python3 tests/bench/dhcp.py
    python3 tests/bench/dhcp.py --pxe

# TFTP against tftpd-hpa and dnsmasq; HTTP against nginx (root).
bench-tftp:
    cargo build --release
    python3 tests/bench/tftp.py

bench-http:
    cargo build --release
    python3 tests/bench/http_serve.py

# The agent's install writer against `bmaptool copy`, same image, same nginx (root; BUILD is an
# `image build --out` folder).
bench-install BUILD:
    cargo build --release
    python3 tests/bench/install.py {{BUILD}}

# The overview page of a 10,000-node site: render time and size.
bench-repo:
    cargo build --release
    python3 tests/bench/repo.py

bench-pages:
    cargo build --release
    python3 tests/bench/pages.py

# The pictures of docs/screenshots, from a seeded site in headless chromium.
screenshots:
    cargo test -p provisioner --test pages_browser -- --ignored screenshots_for_docs

# Fuzz the DHCP, TFTP and HTTP-head paths for five minutes each.
fuzz:
    cd fuzz && for t in dhcp_packet tftp_request http_head; do mkdir -p corpus/$t && RUSTC_BOOTSTRAP=1 cargo fuzz run $t corpus/$t seeds/$t -- -max_total_time=300 || exit 1; done

# Recapture the fuzz seeds from real clients (root).
seeds:
    cargo build --release
    bash fuzz/capture-seeds.sh

# The arm64 discovery image (GB200 Grace trays) into ./var/images/discovery-arm64, with the
# agent cross-built (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, the rustup target).
discovery-arm64:
    cargo build --release -p provisioner
    cargo build --release -p provisioner-agent --target aarch64-unknown-linux-gnu
    target/release/provisioner image build-discovery --arch arm64
