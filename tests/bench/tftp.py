#!/usr/bin/env python3
"""TFTP benchmark: the appliance beside tftpd-hpa and dnsmasq, in one run, on the same
namespace pair (a veth pair, MTU 1500). Each server is pinned to CPU 0, the clients to CPU 1.

For each server it measures
  (a) one client fetching a 64 MiB file at blksize 1468 (each block waits a round trip),
  (b) 50 clients at once, each fetching a 1 MiB file: wall time and aggregate MB/s; every
      client must succeed and its copy must match the file's sha256,
and for the appliance only
  (c) the 64 MiB file again with RFC 7440 windowsize 16 (tftpd-hpa and dnsmasq drop the
      option from their OACK), after checking with `atftp --trace` that the OACK carries it.
It prints MB/s (10^6 bytes a second) for each, the ratios appliance/tftpd-hpa, and the
appliance's peak RSS (VmHWM) after start, after (a), (b) and (c): it must not grow with the
file size or the number of clients.

Usage: tests/bench/tftp.py [--binary target/release/provisioner] [--big-mib 64]
       [--small-mib 1] [--clients 50] [--window 16] [--client atftp|curl]
       [--repeat 3] [--rounds 1]
Needs root, atftp (atftp), curl, in.tftpd (tftpd-hpa), dnsmasq (dnsmasq-base).
Traffic stays inside the two namespaces it creates; it removes them, its temporary files
and its processes (by PID) on exit.
"""

import argparse
import os
import re
import shlex
import shutil
import sys
import time

import benchlib
from benchlib import SRV_IF

SERVER_IP, CLIENT_IP = "10.215.0.1", "10.215.0.2"
MTU = 1500
NET = benchlib.NetnsPair("pvt", SERVER_IP, CLIENT_IP, prefixlen=24, mtu=MTU)
BLKSIZE = 1468  # what MTU 1500 carries: 1500 - 20 (IP) - 8 (UDP) - 4 (TFTP)
BIG, SMALL = "bench-big.bin", "bench-small.bin"


def appliance(binary, work, root, files):
    with open(os.path.join(root, "manifest.toml"), "w") as f:
        for name, sha in files.items():
            f.write(f'[[binary]]\nname = "{name}"\narch = "bench"\npackage = "bench"\n'
                    f'version = "1"\npath = "{name}"\nsha256 = "{sha}"\n\n')
    data = os.path.join(work, "appliance-data")
    shutil.rmtree(data, ignore_errors=True)
    # Every simulated client comes from the one client address: let it hold what 50 nodes
    # would (each node is its own address on a real network; docs/security.md).
    conf = os.path.join(work, "provisioner.toml")
    with open(conf, "w") as f:
        f.write("[limits]\ntftp_transfers_per_client = 1024\n")
    argv = [binary, "up", "--offline", "--config", conf, "--data-dir", data, "--firmware-dir", root,
            "--http-listen", f"{SERVER_IP}:8080", "--tftp-listen", f"{SERVER_IP}:69", "--dhcp", "off"]
    return benchlib.Server("appliance", argv, work, lambda s: "TFTP serving" in s.log_text(),
                           ns=NET.srv)


def tftpd_hpa(work, root):
    return benchlib.Server("tftpd-hpa", ["in.tftpd", "-L", "-s", root, "--address", f"{SERVER_IP}:69"],
                           work, lambda s: NET.port_open(69), ns=NET.srv)


def dnsmasq(work, root, clients):
    argv = ["dnsmasq", "--port=0", "--enable-tftp", f"--tftp-root={root}", "--keep-in-foreground",
            "--conf-file=/dev/null", "--user=root", f"--interface={SRV_IF}", "--bind-interfaces",
            "--pid-file=", f"--log-facility={os.path.join(work, 'dnsmasq-internal.log')}",
            # dnsmasq's default limit is 50 transfers at once; let every client in.
            f"--tftp-max={max(50, clients + 5)}"]
    return benchlib.Server("dnsmasq", argv, work, lambda s: NET.port_open(69), ns=NET.srv)


def client_argv(client, name, out, window=None):
    if client == "curl" and window is None:
        return ["curl", "-sS", "--tftp-blksize", str(BLKSIZE), "-o", out, f"tftp://{SERVER_IP}/{name}"]
    argv = ["atftp", "--option", f"blksize {BLKSIZE}"]
    if window:
        argv += ["--option", f"windowsize {window}"]
    return argv + ["-g", "-r", name, "-l", out, SERVER_IP]


def fetch_one(args, out_dir, name, size, sha, window=None):
    """One client fetches `name`; returns MB/s. Raises if it fails or the copy differs."""
    out = os.path.join(out_dir, "one.bin")
    if os.path.exists(out):
        os.remove(out)
    argv = client_argv("atftp" if window else args.client, name, out, window)
    rc, text, secs = benchlib.run_bounded(NET.client(*argv), args.timeout)
    if rc is None:
        raise RuntimeError(f"{name}: client still running after {args.timeout} s")
    if rc != 0 or not os.path.exists(out):
        raise RuntimeError(f"{name}: client exited {rc}: {text.strip()[-300:]}")
    got = os.path.getsize(out)
    if got != size or benchlib.sha256_of(out) != sha:
        raise RuntimeError(f"{name}: got {got} bytes, sha256 {'ok' if got == size else 'differs'}")
    os.remove(out)
    return size / secs / 1e6


def fetch_many(args, out_dir, name, size, sha, n):
    """n clients at once, each fetching `name`; returns (wall s, aggregate MB/s, failures)."""
    outs = [os.path.join(out_dir, f"c{i}.bin") for i in range(n)]
    for o in outs:
        if os.path.exists(o):
            os.remove(o)
    lines = [f"({shlex.join(client_argv(args.client, name, o))} >{o}.log 2>&1; echo $? >{o}.rc) &"
             for o in outs]
    script = "\n".join(lines) + "\nwait\n"
    rc, text, secs = benchlib.run_bounded(NET.client("sh", "-c", script), args.timeout)
    failures = []
    if rc is None:
        failures.append(f"clients still running after {args.timeout} s")
    for i, o in enumerate(outs):
        try:
            with open(o + ".rc") as f:
                crc = f.read().strip()
        except OSError:
            crc = "none"
        if crc != "0":
            try:
                with open(o + ".log", errors="replace") as f:
                    why = f.read().strip()[-200:]
            except OSError:
                why = ""
            failures.append(f"client {i}: exit {crc}: {why}")
        elif not os.path.exists(o) or os.path.getsize(o) != size or benchlib.sha256_of(o) != sha:
            got = os.path.getsize(o) if os.path.exists(o) else 0
            failures.append(f"client {i}: copy differs ({got} bytes)")
        for p in (o, o + ".rc", o + ".log"):
            if os.path.exists(p):
                os.remove(p)
    return secs, n * size / secs / 1e6, failures


def check_window_oack(args, out_dir, name, window):
    """Asks for windowsize with --trace and returns what the server's OACK said."""
    out = os.path.join(out_dir, "trace.bin")
    argv = ["atftp", "--trace", "--option", f"blksize {BLKSIZE}", "--option", f"windowsize {window}",
            "-g", "-r", name, "-l", out, SERVER_IP]
    rc, text, _ = benchlib.run_bounded(NET.client(*argv), args.timeout)
    if os.path.exists(out):
        os.remove(out)
    m = re.search(r"received OACK <([^>]*)>", text or "")
    return m.group(1) if m else f"no OACK (exit {rc})"


def measure(args, name, server, r, notes, rnd, out_dir, files, big_size, small_size):
    """One round on one server: (a), (b), and for the appliance (c). Appends to r."""
    print(f"{name} (round {rnd + 1}/{args.rounds}):", flush=True)
    with benchlib.ServerRound(name, server, r, notes) as at:
        server.start()
        at.peak("rss0")
        at.step = "(a)"
        for _ in range(args.repeat):
            r["a"].append(fetch_one(args, out_dir, BIG, big_size, files[BIG]))
        at.peak("rss_a")
        print(f"  (a) 1 client, {args.big_mib} MiB: "
              f"{' '.join(f'{x:.1f}' for x in r['a'][-args.repeat:])} MB/s", flush=True)
        at.step = "(b)"
        for _ in range(args.repeat):
            secs, rate, failures = fetch_many(args, out_dir, SMALL, small_size, files[SMALL],
                                              args.clients)
            r["b"].append(secs)
            bad = len([f for f in failures if f.startswith("client ")])
            r["b_ok"] = min(r["b_ok"], args.clients - bad)
            print(f"  (b) {args.clients} clients: {secs:.2f} s, {rate:.1f} MB/s, "
                  f"{len(failures)} failed", flush=True)
            for f in failures[:10]:
                print(f"      {f}", flush=True)
            if failures:
                notes.append(f"{name} (b): {len(failures)} of {args.clients} failed; "
                             f"first: {failures[0]}")
        at.peak("rss_b")
        if name == "appliance":
            at.step = "(c)"
            if rnd == 0:
                oack = check_window_oack(args, out_dir, SMALL, args.window)
                print(f"  OACK to windowsize {args.window}: {oack}", flush=True)
                if f"windowsize:{args.window}," not in oack.replace(" ", "").replace("=", ":") + ",":
                    notes.append(f"appliance: OACK did not grant windowsize {args.window}: {oack}")
            for _ in range(args.repeat):
                r["c"].append(fetch_one(args, out_dir, BIG, big_size, files[BIG], window=args.window))
            at.peak("rss_c")
            print(f"  (c) windowsize {args.window}: "
                  f"{' '.join(f'{x:.1f}' for x in r['c'][-args.repeat:])} MB/s", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/provisioner")
    ap.add_argument("--big-mib", type=int, default=64, help="size of the single-client file")
    ap.add_argument("--small-mib", type=float, default=1, help="size each of the many clients fetches")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--window", type=int, default=16, help="RFC 7440 windowsize for (c)")
    ap.add_argument("--client", choices=("atftp", "curl"), default="atftp",
                    help="client for (a) and (b); (c) always uses atftp")
    ap.add_argument("--repeat", type=int, default=3, help="runs of (a), (b) and (c) a round")
    ap.add_argument("--rounds", type=int, default=1,
                    help="times the whole server sequence runs (spreads a busy machine's noise "
                         "over all servers); the median of every run is shown")
    ap.add_argument("--timeout", type=int, default=120, help="seconds any one transfer step may take")
    args = ap.parse_args()
    binary = benchlib.preflight(("atftp", "curl", "in.tftpd", "dnsmasq", "taskset", "ss"),
                                "atftp curl tftpd-hpa dnsmasq-base", args.binary)
    big_size, small_size = args.big_mib << 20, int(args.small_mib * (1 << 20))
    t_start, load0 = time.monotonic(), benchlib.load_average()
    work = benchlib.work_dir("bench-tftp-")
    results, notes, built = {}, [], "?"
    try:
        binary, built, root, out_dir, files = benchlib.stage(
            work, binary, {BIG: big_size, SMALL: small_size})
        NET.setup()
        servers = (("appliance", lambda: appliance(binary, work, root, files)),
                   ("tftpd-hpa", lambda: tftpd_hpa(work, root)),
                   ("dnsmasq", lambda: dnsmasq(work, root, args.clients)))
        results = {name: {"a": [], "b": [], "c": [], "b_ok": args.clients} for name, _ in servers}
        for rnd in range(args.rounds):
            for name, make in servers:
                if "error" in results[name]:
                    continue
                measure(args, name, make(), results[name], notes, rnd, out_dir, files,
                        big_size, small_size)
    finally:
        NET.teardown()
        shutil.rmtree(work, ignore_errors=True)

    def fmt(v, f="%.1f"):
        return f % v if v is not None else "-"

    med = benchlib.median
    summary = {}
    for name, r in results.items():
        b_secs = med(r["b"])
        summary[name] = {"a": med(r["a"]), "c": med(r["c"]), "b_secs": b_secs,
                         "b": args.clients * small_size / b_secs / 1e6 if b_secs else None}
    base = summary.get("tftpd-hpa", {})
    ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
    runs = args.rounds * args.repeat
    print(f"\nTFTP benchmark (veth, MTU {MTU}, blksize {BLKSIZE}, client {args.client}; server on "
          f"CPU 0, clients on CPU 1; MB = 10^6 bytes; median of {runs} runs ({args.rounds} rounds "
          f"x {args.repeat}); {benchlib.load_note(load0)})\n")
    print(f"| server | (a) 1 client, {args.big_mib} MiB, MB/s | (a) ratio to tftpd-hpa | "
          f"(b) {args.clients} clients x {args.small_mib:g} MiB: wall s | (b) aggregate MB/s | "
          f"(b) ratio to tftpd-hpa | (b) clients ok (worst run) | (c) windowsize {args.window}, MB/s | "
          f"(c) ratio to tftpd-hpa (a) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in summary.items():
        r = results[name]
        print(f"| {name} | {fmt(m['a'])} | {ratio(m['a'], base.get('a'))} | "
              f"{fmt(m['b_secs'], '%.2f')} | {fmt(m['b'])} | {ratio(m['b'], base.get('b'))} | "
              f"{r['b_ok'] if r['b'] else '-'}/{args.clients} | {fmt(m['c'])} | "
              f"{ratio(m['c'], base.get('a'))} |")
    print("\nEvery run, MB/s:")
    for name, r in results.items():
        b = [args.clients * small_size / x / 1e6 for x in r["b"]]
        print(f"- {name}: (a) {' '.join(f'{x:.1f}' for x in r['a']) or '-'}; "
              f"(b) {' '.join(f'{x:.1f}' for x in b) or '-'}"
              + (f"; (c) {' '.join(f'{x:.1f}' for x in r['c'])}" if r["c"] else ""))
    app = results.get("appliance", {})
    mib = lambda k: f"{app[k] / 1024:.1f} MiB" if app.get(k) else "-"
    print(f"\nAppliance peak RSS (VmHWM, largest over rounds): after start {mib('rss0')}, "
          f"after (a) {mib('rss_a')}, after (b) {mib('rss_b')}, after (c) {mib('rss_c')}")
    return benchlib.finish(args.binary, built, notes, t_start, results)


if __name__ == "__main__":
    sys.exit(main())
