#!/usr/bin/env python3
"""DHCP benchmark: the appliance beside Kea (memfile) and dnsmasq, in one run, on the same
namespace pair, with perfdhcp. Each server is pinned to CPU 0, perfdhcp to CPU 1.

For each server it finds the highest rate of full DORA exchanges with under 1% drops
(ramp x1.5, then bisect), then reruns that rate to read the median and p99 latency of
DISCOVER->OFFER and REQUEST->ACK, and prints the ratio to Kea. It also reports the
appliance's peak memory (VmHWM) while it holds 50,000 leases.

Usage: tests/bench/dhcp.py [--binary target/release/provisioner] [--seconds 5] [--pxe]
Needs root, perfdhcp (kea-admin), kea-dhcp4 (kea-dhcp4-server), dnsmasq (dnsmasq-base).
Traffic stays inside the two namespaces it creates; it removes them and its processes
(by PID) on exit.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
from benchlib import SRV_IF

SERVER_IP, CLIENT_IP = "10.214.0.1", "10.214.0.2"
NET = benchlib.NetnsPair("pvb", SERVER_IP, CLIENT_IP, prefixlen=16)
POOL = ("10.214.1.0", "10.214.255.254")
CLIENTS = 50_000
PXE_OPTS = ["-o", "60,505845436c69656e74", "-o", "93,0000"]  # "PXEClient", BIOS


def dhcp_server(name, argv, work):
    """Ready once something listens on port 67. Kea writes its PID and lock files where
    KEA_PIDFILE_DIR and KEA_LOCKFILE_DIR say, not under /run."""
    return benchlib.Server(name, argv, work, lambda s: NET.port_open(67), ns=NET.srv, ready_s=20,
                           env={"KEA_PIDFILE_DIR": work, "KEA_LOCKFILE_DIR": work})


def appliance(binary, work, pxe):
    conf = os.path.join(work, "provisioner.toml")
    with open(conf, "w") as f:
        f.write(f'interfaces = ["{SRV_IF}"]\nhttp_listen = "127.0.0.1:8080"\n'
                f'[dhcp]\nmode = "full"\n[[dhcp.subnets]]\ncidr = "10.214.0.0/16"\n'
                f'range = "{POOL[0]}-{POOL[1]}"\nlease_time = 3600\n')
    data = os.path.join(work, "appliance-data")
    shutil.rmtree(data, ignore_errors=True)
    return dhcp_server("appliance", [binary, "up", "--offline", "--config", conf, "--data-dir", data], work)


def kea(work, pxe):
    leases = os.path.join(work, "kea-leases.csv")
    if os.path.exists(leases):
        os.remove(leases)
    subnet = {"id": 1, "subnet": "10.214.0.0/16", "pools": [{"pool": f"{POOL[0]} - {POOL[1]}"}]}
    conf = {"Dhcp4": {
        "interfaces-config": {"interfaces": [SRV_IF], "dhcp-socket-type": "udp"},
        "lease-database": {"type": "memfile", "persist": True, "name": leases, "lfc-interval": 0},
        "valid-lifetime": 3600,
        "subnet4": [subnet],
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                     "output_options": [{"output": os.path.join(work, "kea-internal.log")}]}],
    }}
    if pxe:
        conf["Dhcp4"]["client-classes"] = [{
            "name": "bios", "test": "option[93].hex == 0x0000",
            "next-server": SERVER_IP, "boot-file-name": "undionly.kpxe"}]
    path = os.path.join(work, "kea.json")
    with open(path, "w") as f:
        json.dump(conf, f)
    return dhcp_server("kea", ["kea-dhcp4", "-c", path], work)


def dnsmasq(work, pxe):
    leases = os.path.join(work, "dnsmasq.leases")
    if os.path.exists(leases):
        os.remove(leases)
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--user=root",
            f"--interface={SRV_IF}", "--bind-interfaces", f"--dhcp-leasefile={leases}",
            f"--dhcp-range={POOL[0]},{POOL[1]},255.255.0.0,1h", f"--dhcp-lease-max={CLIENTS * 2}",
            "--pid-file=", "--log-facility=/dev/null",
            # dnsmasq pings every address before offering it (3 s, blocking); the appliance
            # and Kea do not, so the comparison turns it off.
            "--no-ping"]
    if pxe:
        argv += ["--dhcp-match=set:bios,option:client-arch,0", "--dhcp-boot=tag:bios,undionly.kpxe"]
    return dhcp_server("dnsmasq", argv, work)


def perfdhcp(rate, seconds, pxe, timers=False):
    argv = ["perfdhcp", "-4", "-r", str(int(rate)), "-p", str(seconds),
            "-R", str(CLIENTS), "-d", "1"]
    if pxe:
        argv += PXE_OPTS
    if timers:
        argv += ["-x", "t"]
    out = subprocess.run(NET.client(*argv, SERVER_IP), capture_output=True, text=True).stdout
    return out


def parse(out):
    """sent and drops of both exchanges, and the achieved rate."""
    sections = re.split(r"\*\*\*Statistics for: ", out)[1:]
    sent = drops = 0
    for s in sections:
        sent += int(re.search(r"sent packets: (\d+)", s).group(1))
        drops += int(re.search(r"drops: (\d+)", s).group(1))
    m = re.search(r"Rate: ([\d.]+)", out)
    return sent, drops, float(m.group(1)) if m else 0.0


def latencies(out):
    """Median and p99 (ms) of each exchange, from perfdhcp's per-packet timers."""
    result = {}
    for name, body in re.findall(r"\*\*\*Timestamps for packets: (\S+)\*\*\*\n(.*?)(?=\n\*\*\*|\Z)", out, re.S):
        d = sorted((float(b) - float(a)) * 1000
                   for a, b in re.findall(r"sent / received: ([\d.]+) / ([\d.]+)", body))
        if d:
            result[name] = (statistics.median(d), d[min(len(d) - 1, int(len(d) * 0.99))])
    return result


def ok(rate, seconds, pxe):
    sent, drops, achieved = parse(perfdhcp(rate, seconds, pxe))
    ratio = drops / sent if sent else 1.0
    passed = sent > 0 and ratio < 0.01 and achieved >= rate * 0.97
    print(f"    {int(rate):>6}/s: achieved {achieved:8.0f}/s, drops {ratio * 100:6.3f}%"
          f" {'ok' if passed else 'FAIL'}", flush=True)
    return passed, achieved


def highest_rate(start, seconds, pxe):
    good, bad, rate = 0, None, start
    while bad is None:
        passed, achieved = ok(rate, seconds, pxe)
        if passed:
            good = achieved
            rate *= 1.5
            if rate > 60_000:
                break
        else:
            bad = rate
    lo, hi = rate / 1.5 if good else 0, bad
    for _ in range(3):
        if hi is None or lo == 0:
            break
        mid = (lo + hi) / 2
        passed, achieved = ok(mid, seconds, pxe)
        if passed:
            lo, good = mid, achieved
        else:
            hi = mid
    return good


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/provisioner")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--pxe", action="store_true", help="clients send options 60 and 93; servers give a boot file")
    args = ap.parse_args()
    benchlib.preflight(("perfdhcp", "kea-dhcp4", "dnsmasq", "taskset", "ss"),
                       "kea-admin kea-dhcp4-server dnsmasq-base")
    binary = os.path.abspath(args.binary)
    work = tempfile.mkdtemp(prefix="bench-dhcp-")
    results = {}
    NET.setup()
    try:
        for name, make, start in (("appliance", lambda: appliance(binary, work, args.pxe), 2000),
                                  ("kea", lambda: kea(work, args.pxe), 2000),
                                  ("dnsmasq", lambda: dnsmasq(work, args.pxe), 50)):
            server = make()
            print(f"{name}:", flush=True)
            try:
                try:
                    server.start()
                except RuntimeError as e:
                    raise SystemExit(f"{e}; see {server.log}") from None
                rate = highest_rate(start, args.seconds, args.pxe)
                lat = latencies(perfdhcp(rate * 0.97, args.seconds, args.pxe, timers=True)) if rate else {}
                peak = server.peak_kib() or 0
                leases = None
                if name == "appliance":
                    # Hold 50,000 leases: every simulated client completes at least one DORA.
                    perfdhcp(min(rate, 5000) * 0.9, max(args.seconds, CLIENTS // 4000 + 2), args.pxe)
                    peak = server.peak_kib() or 0
                    time.sleep(6)  # the lease gauge is refreshed every 5 s
                    leases = active_leases()
                results[name] = (rate, lat, peak, leases)
            finally:
                server.stop()
    finally:
        NET.teardown()
    kea_rate = results.get("kea", (0,))[0] or 1
    mode = "PXE options 60 + 93" if args.pxe else "plain"
    print(f"\nDHCP benchmark ({mode}; perfdhcp, {CLIENTS} clients, {args.seconds} s a step, "
          f"server on CPU 0, perfdhcp on CPU 1)\n")
    print("| server | DORA/s (<1% drops) | ratio to Kea | DISCOVER->OFFER p50 / p99 ms | "
          "REQUEST->ACK p50 / p99 ms | peak RSS |")
    print("|---|---|---|---|---|---|")
    for name, (rate, lat, peak, leases) in results.items():
        fmt = lambda k: "%.3f / %.3f" % lat[k] if k in lat else "-"
        mem = f"{peak / 1024:.1f} MiB" + (f" ({leases} leases)" if leases is not None else "")
        print(f"| {name} | {rate:.0f} | {rate / kea_rate:.2f} | {fmt('DISCOVER-OFFER')} | "
              f"{fmt('REQUEST-ACK')} | {mem} |")
    shutil.rmtree(work, ignore_errors=True)


def active_leases():
    out = subprocess.run(benchlib.netns_exec(NET.srv, "curl", "-s", "http://127.0.0.1:8080/metrics"),
                         capture_output=True, text=True).stdout
    m = re.search(r"^dhcp_active_leases (\d+)", out, re.M)
    return int(m.group(1)) if m else None


if __name__ == "__main__":
    sys.exit(main())
