#!/usr/bin/env bash
# Captures real DHCP client packets (dhclient, udhcpc as BIOS/UEFI/HTTP/iPXE PXE clients,
# perfdhcp) sent to the appliance, as the fuzz seed corpus in fuzz/seeds/dhcp_packet/.
# Needs root, tcpdump, dhclient, udhcpc, perfdhcp; uses its own two namespaces only.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/provisioner}
S=pvseed$$s C=pvseed$$c
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$S" 2>/dev/null || true; ip netns del "$C" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$S"; ip netns add "$C"
ip link add seed0 netns "$S" type veth peer name eth0 netns "$C"
ip -n "$S" addr add 10.216.0.1/24 dev seed0
ip -n "$S" link set seed0 up; ip -n "$C" link set eth0 up
ip netns exec "$S" "$bin" up --offline --data-dir "$work/data" --interface seed0 --dhcp full \
  --dhcp-range 10.216.0.100-10.216.0.200 --http-listen 127.0.0.1:8080 >"$work/app.log" 2>&1 &
pids+=($!)
ip netns exec "$S" timeout 60 tcpdump -i seed0 -U -w "$work/cap.pcap" 'udp dst port 67 or udp dst port 4011' 2>/dev/null &
pids+=($!)
sleep 1
printf '#!/bin/sh\nexit 0\n' >"$work/noop.sh"; chmod +x "$work/noop.sh"
ip netns exec "$C" timeout 15 dhclient -d -1 -sf "$work/noop.sh" -lf "$work/lf" -pf "$work/pf" eth0 || true
u() { ip netns exec "$C" timeout 15 udhcpc -i eth0 -f -q -n -t 3 -T 1 -s "$work/noop.sh" "$@" >/dev/null 2>&1 || true; }
u
u -V PXEClient:Arch:00000:UNDI:002001 -x 0x5d:0000 -x 0x61:00112233445566778899aabbccddeeff00
u -V PXEClient:Arch:00007:UNDI:003016 -x 0x5d:0007
u -V HTTPClient:Arch:00016:UNDI:003001 -x 0x5d:0010
u -V PXEClient:Arch:00007:UNDI:003016 -x 0x5d:0007 -x 0x4d:69505845
u -R  # with a RELEASE at exit
ip -n "$C" addr add 10.216.0.2/24 dev eth0
ip netns exec "$C" timeout 10 perfdhcp -4 -r 5 -p 2 -R 5 10.216.0.1 >/dev/null 2>&1 || true
sleep 1
kill "${pids[1]}" 2>/dev/null || true; sleep 1
rm -f fuzz/seeds/dhcp_packet/*
python3 - "$work/cap.pcap" fuzz/seeds/dhcp_packet <<'PY'
import hashlib, struct, sys
data = open(sys.argv[1], "rb").read()
off, n = 24, 0
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack("<IIII", data[off:off + 16])
    frame = data[off + 16: off + 16 + incl]
    off += 16 + incl
    if len(frame) < 42 or frame[12:14] != b"\x08\x00":
        continue
    ihl = (frame[14] & 0x0F) * 4
    payload = frame[14 + ihl + 8:]
    name = hashlib.sha256(payload).hexdigest()[:16]
    open(f"{sys.argv[2]}/{name}", "wb").write(payload)
    n += 1
print(f"{n} packets captured")
PY
ls fuzz/seeds/dhcp_packet | wc -l

# TFTP and HTTP seeds: what real clients send first, caught by a listener on loopback that
# answers nothing (a TFTP request, then each client's retry) or only records (an HTTP head).
mkdir -p fuzz/seeds/tftp_request fuzz/seeds/http_head
rm -f fuzz/seeds/tftp_request/* fuzz/seeds/http_head/*
python3 - "$work" <<'PY' &
import hashlib, os, socket, sys, threading
work = sys.argv[1]
def keep(kind, data):
    name = hashlib.sha256(data).hexdigest()[:16]
    open(f"fuzz/seeds/{kind}/{name}", "wb").write(data)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 16969)); u.settimeout(20)
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 18080)); t.listen(16); t.settimeout(20)
def udp():
    try:
        while True:
            keep("tftp_request", u.recvfrom(2048)[0])
    except OSError:
        pass
threading.Thread(target=udp, daemon=True).start()
try:
    while True:
        c, _ = t.accept(); c.settimeout(2)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk: break
                data += chunk
        except OSError:
            pass
        keep("http_head", data)
        c.close()
except OSError:
    pass
PY
pids+=($!)
sleep 1
q() { timeout 4 "$@" >/dev/null 2>&1 || true; }
q tftp 127.0.0.1 16969 -m binary -c get undionly.kpxe "$work/x"
q atftp --get -r ipxe.efi -l "$work/x" --option "blksize 1468" --option "tsize 0" --option "windowsize 16" 127.0.0.1 16969
q atftp --get -r 52-54-00-12-34-56.ipxe -l "$work/x" --option "timeout 3" 127.0.0.1 16969
q curl --tftp-blksize 1468 -o "$work/x" tftp://127.0.0.1:16969/snponly.efi
q curl -o "$work/x" http://127.0.0.1:18080/firmware/undionly.kpxe
q curl -I http://127.0.0.1:18080/firmware/ipxe.efi
q curl -r 0-1023,4096- -H 'If-Range: "abc"' -o "$work/x" "http://127.0.0.1:18080/artifacts/$(printf 'ab%.0s' $(seq 32))/vmlinuz"
q curl -0 -H 'If-None-Match: W/"x", "y"' -o "$work/x" "http://127.0.0.1:18080/artifacts/$(printf 'cd%.0s' $(seq 32))"
q wget -q -O "$work/x" --header 'Range: bytes=-500' http://127.0.0.1:18080/firmware/ipxe-arm64.efi
kill "${pids[-1]}" 2>/dev/null || true
ls fuzz/seeds/tftp_request | wc -l
ls fuzz/seeds/http_head | wc -l
