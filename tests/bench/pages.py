#!/usr/bin/env python3
"""The site overview of 10,000 nodes: how long the appliance takes to render it, and how big
it is (issue 6: under 100 ms, under 1 MB). A benchmark, not a test: it prints, it asserts
nothing.

The appliance runs on loopback with its store on tmpfs; the site is made the way a real one
is: a rack plan of 139 racks x 72 slots imported with `provisioner plan import`, then every
node boots (GET /boot/MAC.ipxe) and reports its facts (POST /api/v1/agent/inspection), so
10,000 nodes are matched to their slots and 100 more, not in the plan, fail and head the
"needs a person" list.

    cargo build --release && python3 tests/bench/pages.py [--nodes 10000] [--keep DIR]

--keep DIR keeps the seeded site in DIR, and a later run with the same DIR measures it again
without seeding it anew (seeding is most of the run's 12 minutes).
"""

import contextlib

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BINARY = os.path.join(ROOT, "target", "release", "provisioner")


def mac(i, prefix=0x10):
    return "52:54:%02x:%02x:%02x:%02x" % (prefix, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF)


def call(url, data=None, token=None):
    req = urllib.request.Request(url, data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--keep", help="keep the seeded site here, and reuse it if it is there")
    args = ap.parse_args()
    if not os.path.exists(BINARY):
        sys.exit(f"build it first: cargo build --release ({BINARY} is missing)")
    base_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        place = contextlib.nullcontext(os.path.abspath(args.keep))
    else:
        place = tempfile.TemporaryDirectory(prefix="pv-bench-pages-", dir=base_dir)
    with place as work:
        data = os.path.join(work, "data")
        seeded_mark = os.path.join(work, "seeded")
        reuse = os.path.exists(seeded_mark)
        racks = (args.nodes + 71) // 72
        plan = os.path.join(work, "plan.csv")
        with open(plan, "w") as f:
            f.write("site,row,rack,u,serial,mac,sku\n")
            for i in range(args.nodes):
                rack, u = divmod(i, 72)
                f.write(f"dc1,r{rack // 10:02d},a{rack:03d},{u + 1},,{mac(i)},qemu-lab\n")
        if not reuse:
            subprocess.run([BINARY, "plan", "import", plan, "--data-dir", data], check=True,
                           stdout=subprocess.DEVNULL)
        for name, size in (("vmlinuz", 4096), ("initrd.img", 1024)):
            with open(os.path.join(work, name), "wb") as f:
                f.write(b"\0" * size)
        log = open(os.path.join(work, "appliance.log"), "w")
        # Every simulated node boots from loopback: let it bring in as many as the site has
        # (each node is its own address on a real network; docs/security.md).
        conf = os.path.join(work, "provisioner.toml")
        with open(conf, "w") as f:
            f.write(f"[limits]\nnew_nodes_per_peer_per_minute = {args.nodes}\n"
                    f"new_nodes_per_minute = {max(args.nodes, 5000)}\n")
        app = subprocess.Popen(
            [BINARY, "up", "--offline", "--config", conf, "--data-dir", data, "--http-listen", "127.0.0.1:0",
             "--tftp-listen", "127.0.0.1:0", "--firmware-dir", os.path.join(work, "fw"),
             "--discovery-kernel", os.path.join(work, "vmlinuz"),
             "--discovery-initrd", os.path.join(work, "initrd.img")],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            base = None
            for _ in range(200):
                text = open(os.path.join(work, "appliance.log")).read()
                m = re.search(r"HTTP listening addr=(\S+)", text)
                if m:
                    base = "http://" + m.group(1)
                    break
                time.sleep(0.1)
            if not base:
                sys.exit("the appliance did not start:\n" + open(os.path.join(work, "appliance.log")).read())
            facts = {"dmi": {}, "cpu": {"sockets": 1, "cores": 1, "threads": 1},
                     "memory": {"total_bytes": 2 << 30, "dimms": []}, "disks": [], "nics": [],
                     "pci": [], "gpus": [], "neuron_devices": [], "problems": []}
            t0 = time.time()
            strays = max(1, args.nodes // 100)
            for i in [] if reuse else list(range(args.nodes)) + [-(k + 1) for k in range(strays)]:
                m_ = mac(i) if i >= 0 else mac(-i, prefix=0x20)
                script = call(f"{base}/boot/{m_.replace(':', '-')}.ipxe").decode()
                token = re.search(r"provisioner\.token=(\S+)", script).group(1)
                f = dict(facts, nics=[{"name": "eth0", "mac": m_, "driver": None,
                                       "pci_address": None, "speed_mbps": None, "carrier": True}])
                call(f"{base}/api/v1/agent/inspection",
                     json.dumps({"mac": m_, "facts": f}).encode(), token)
            seeded = time.time() - t0
            open(seeded_mark, "w").close()
            # The appliance renders the overview when a node changes state and serves it from
            # memory until the next change: measured both ways. A node that boots for the
            # first time is a change (new, then inspecting).
            rendered, cached, size = [], [], 0
            for r in range(args.rounds):
                call(f"{base}/boot/{mac(int(time.time() * 1000) % 0xFFFFFF, prefix=0x30).replace(':', '-')}.ipxe")
                for times in (rendered, cached):
                    s = time.perf_counter()
                    body = call(base + "/")
                    times.append((time.perf_counter() - s) * 1000)
                    size = len(body)
            print(f"site: {args.nodes} nodes in {racks} racks, {strays} failed (seeded in {seeded:.0f} s)")
            for what, times in (("rendered after a change", rendered), ("unchanged (cached)", cached)):
                times.sort()
                print(f"overview GET /, {what}: p50 {statistics.median(times):.1f} ms, "
                      f"p95 {times[int(len(times) * 0.95) - 1]:.1f} ms, max {times[-1]:.1f} ms "
                      f"over {args.rounds} requests; {size / 1024:.0f} KiB "
                      f"(target: under 100 ms and 1 MB)")
            print(f"load average: {os.getloadavg()[0]:.2f} (2-core machine; noisy)")
        finally:
            app.terminate()
            try:
                app.wait(timeout=20)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()


if __name__ == "__main__":
    main()
