# Longer recipes; the README shows each as a plain command.

# Run the appliance on its embedded defaults.
run:
    cargo run --release -- up

# Every test (lab tests need root).
test:
    cargo test --workspace

# The lab tests alone, with their output.
lab:
    cargo test --test lab_dhcp -- --nocapture

# perfdhcp against the appliance, Kea and dnsmasq, plain and with PXE options (root).
bench-dhcp:
    cargo build --release
    python3 tests/bench/dhcp.py
    python3 tests/bench/dhcp.py --pxe

# Fuzz the DHCP packet path for five minutes.
fuzz:
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run dhcp_packet corpus/dhcp_packet seeds/dhcp_packet -- -max_total_time=300

# Recapture the fuzz seeds from real clients (root).
seeds:
    cargo build --release
    bash fuzz/capture-seeds.sh
