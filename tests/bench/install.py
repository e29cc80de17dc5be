#!/usr/bin/env python3
"""Install benchmark: the agent's disk writer beside Debian's `bmaptool copy`, in one run, writing
the same OS image from the same nginx over a veth pair (MTU 1500) to the same kind of target
(a file of the image's size on the same filesystem). nginx is pinned to CPU 0, the writers to
CPU 1.

For each writer it measures the wall seconds of a whole install (block map and image fetched,
mapped ranges written and, for both, checked: the agent reads every range back, bmaptool
checks each range's sha256 as it writes), and prints the mapped MB/s (mapped bytes / seconds),
the bytes received over the network, and the ratio agent/bmaptool. Before the figures count,
the two targets must be byte-identical. MB = 10^6 bytes.

Usage: tests/bench/install.py BUILD_DIR [--agent target/release/provisioner-agent]
       [--repeat 2] [--timeout 1800]
BUILD_DIR is an image build folder (`provisioner image build ... --out BUILD_DIR`): its
image.json names the compressed image and the block map.
Needs root, nginx, bmaptool (bmap-tools), taskset. Traffic stays inside the two namespaces it
creates; it removes them, its files and its processes (by PID) on exit.
"""

import argparse
import json
import os
import shutil
import sys
import time

import benchlib

SERVER_IP, CLIENT_IP = "10.217.0.1", "10.217.0.2"
NET = benchlib.NetnsPair("pvi", SERVER_IP, CLIENT_IP, prefixlen=24, mtu=1500)


def target(path, size):
    if os.path.exists(path):
        os.remove(path)
    with open(path, "wb") as f:
        f.truncate(size)


def run_agent(args, plan, dest):
    rc, out, secs = benchlib.run_bounded(
        NET.client(args.agent, "--write-image", plan, "--to", dest),
        args.timeout)
    if rc != 0:
        raise RuntimeError(f"agent exit {rc}: {(out or '')[-800:]}")
    start = out.index("{")
    summary = json.loads(out[start:out.index("\n}", start) + 2])
    return secs, summary["received_bytes"]


def run_bmaptool(args, url, bmap_url, dest):
    rc, out, secs = benchlib.run_bounded(
        NET.client("bmaptool", "copy", "--bmap", bmap_url, url, dest),
        args.timeout)
    if rc != 0:
        raise RuntimeError(f"bmaptool exit {rc}: {(out or '')[-800:]}")
    return secs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    p.add_argument("--agent", default="target/release/provisioner-agent")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--timeout", type=int, default=1800)
    args = p.parse_args()
    args.agent = os.path.abspath(args.agent)
    benchlib.preflight(("nginx", "bmaptool", "taskset"), "nginx-light bmap-tools")
    if not os.access(args.agent, os.X_OK):
        sys.exit(f"install.py: no agent at {args.agent} (cargo build --release -p provisioner-agent)")
    m = json.load(open(os.path.join(args.build, "image.json")))
    zst, bmap = m["compressed"]["file"], m["bmap"]["file"]
    raw_bytes, mapped = m["raw"]["size"], m["mapped_bytes"]
    work = benchlib.work_dir("bench-install-")
    load0 = benchlib.load_average()
    server = None
    try:
        NET.setup()
        server = benchlib.nginx(NET, work, os.path.abspath(args.build), worker_connections=64)
        server.start()
        url, bmap_url = f"http://{SERVER_IP}/{zst}", f"http://{SERVER_IP}/{bmap}"
        plan = os.path.join(work, "plan.json")
        with open(plan, "w") as f:
            json.dump({"image": m["name"], "url": url, "sha256": m["compressed"]["sha256"],
                       "raw_sha256": m["raw"]["sha256"], "raw_bytes": raw_bytes,
                       "bmap_url": bmap_url, "bmap_sha256": m["bmap"]["sha256"],
                       "disk": {"name": "bench", "size_bytes": raw_bytes, "serial": None,
                                "hints": ""},
                       "first_boot": {"hostname": "bench", "ssh_authorized_keys": [], "ntp": [],
                                      "apt_sources": [], "credential": ""}}, f)
        a_dest, b_dest = os.path.join(work, "agent.img"), os.path.join(work, "bmaptool.img")
        results = {"agent": [], "bmaptool": []}
        received = None
        for i in range(args.repeat):
            order = ["agent", "bmaptool"] if i % 2 == 0 else ["bmaptool", "agent"]
            for who in order:
                if who == "agent":
                    target(a_dest, raw_bytes)
                    secs, received = run_agent(args, plan, a_dest)
                else:
                    target(b_dest, raw_bytes)
                    secs = run_bmaptool(args, url, bmap_url, b_dest)
                results[who].append(secs)
                print(f"round {i + 1}: {who} {secs:.1f} s", file=sys.stderr)
        same = benchlib.sha256_of(a_dest) == benchlib.sha256_of(b_dest)
        if not same:
            raise RuntimeError("the agent's disk and bmaptool's differ")
        a, b = benchlib.median(results["agent"]), benchlib.median(results["bmaptool"])
        print(f"image {m['name']}: raw {raw_bytes / 1e6:.0f} MB, mapped {mapped / 1e6:.0f} MB, "
              f"zstd {m['compressed']['size'] / 1e6:.0f} MB; targets identical: {same}")
        print("| figure | agent | bmaptool copy | agent/bmaptool |")
        print("|---|---|---|---|")
        print(f"| whole install, median of {args.repeat} (s) | {a:.1f} | {b:.1f} | |")
        print(f"| mapped MB/s | {mapped / a / 1e6:.1f} | {mapped / b / 1e6:.1f} | {b / a:.2f} |")
        print(f"| bytes received | {received} | | |")
        print(benchlib.load_note(load0))
    finally:
        if server:
            server.stop()
        NET.teardown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
