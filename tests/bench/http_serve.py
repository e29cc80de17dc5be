#!/usr/bin/env python3
"""HTTP benchmark: the appliance beside nginx (sendfile, one worker), in one run, on the same
namespace pair (a veth pair, MTU 1500). Each server is pinned to CPU 0, the clients to CPU 1.

For each server it measures
  (a) one client (curl -o /dev/null, curl's %{speed_download}) fetching a 1 GiB file,
  (b) 32 clients at once fetching the 1 GiB file: aggregate MB/s (all bytes / wall time),
  (c) 4 KiB requests a second with `wrk -t1 -c64 -d10s --latency`, and its p99 latency,
and prints each figure for both, the ratio appliance/nginx, and the appliance's peak RSS
(VmHWM) after start (it imports, hashes and copies the 1 GiB file), after (a), (b) and (c).
The appliance serves the files as imported artifacts (/artifacts/SHA256), nginx from a
directory; before measuring, each server's 4 KiB answer is checked against its sha256 and
every transfer's status and length are checked. MB = 10^6 bytes.

Usage: tests/bench/http_serve.py [--binary target/release/provisioner] [--big-mib 1024]
       [--small-kib 4] [--clients 32] [--seconds 10] [--connections 64] [--repeat 3]
       [--rounds 1]
Needs root, curl, wrk, nginx (nginx-light or nginx; Debian 12 ships 1.22).
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

SERVER_IP, CLIENT_IP = "10.216.0.1", "10.216.0.2"
MTU = 1500
NET = benchlib.NetnsPair("pvt", SERVER_IP, CLIENT_IP, prefixlen=24, mtu=MTU)
BIG, SMALL = "bench-big.bin", "bench-small.bin"


def appliance(binary, work, root, files, ready_s):
    fw = os.path.join(work, "firmware")
    os.makedirs(fw, exist_ok=True)
    open(os.path.join(fw, "manifest.toml"), "w").close()  # no firmware: only the artifacts
    data = os.path.join(work, "appliance-data")
    shutil.rmtree(data, ignore_errors=True)
    argv = [binary, "up", "--offline", "--data-dir", data, "--firmware-dir", fw,
            "--http-listen", f"{SERVER_IP}:8080", "--tftp-listen", f"{SERVER_IP}:69", "--dhcp", "off",
            "--discovery-kernel", os.path.join(root, BIG), "--discovery-initrd", os.path.join(root, SMALL)]
    server = benchlib.Server("appliance", argv, work, lambda s: "HTTP listening" in s.log_text(),
                             ns=NET.srv, ready_s=ready_s)
    base = f"http://{SERVER_IP}:8080/artifacts"
    server.urls = {BIG: f"{base}/{files[BIG]}", SMALL: f"{base}/{files[SMALL]}"}
    return server


def nginx(work, root):
    server = benchlib.nginx(NET, work, root)
    server.urls = {BIG: f"http://{SERVER_IP}/{BIG}", SMALL: f"http://{SERVER_IP}/{SMALL}"}
    return server


CURL_W = "%{http_code} %{size_download} %{speed_download}\\n"


def check_small(args, url, out_dir, sha):
    out = os.path.join(out_dir, "small.bin")
    rc, text, _ = benchlib.run_bounded(NET.client("curl", "-sS", "-o", out, url), args.timeout)
    got = benchlib.sha256_of(out) if os.path.exists(out) else None
    if os.path.exists(out):
        os.remove(out)
    if rc != 0 or got != sha:
        raise RuntimeError(f"{url}: curl exit {rc}, sha256 {'differs' if got else 'none'}: "
                           f"{(text or '').strip()[-200:]}")


def fetch_one(args, url, size):
    """One client, whole file to /dev/null; curl's average speed in MB/s."""
    rc, text, _ = benchlib.run_bounded(NET.client("curl", "-sS", "-o", "/dev/null", "-w", CURL_W, url),
                                       args.timeout)
    if rc is None:
        raise RuntimeError(f"{url}: curl still running after {args.timeout} s")
    m = re.search(r"^(\d+) (\d+) ([\d.]+)$", text or "", re.M)
    if rc != 0 or not m or m.group(1) != "200" or int(m.group(2)) != size:
        raise RuntimeError(f"{url}: curl exit {rc}: {(text or '').strip()[-200:]}")
    return float(m.group(3)) / 1e6


def fetch_many(args, url, size, n, out_dir):
    """n clients at once; returns (aggregate MB/s, wall s, failures)."""
    outs = [os.path.join(out_dir, f"c{i}") for i in range(n)]
    lines = [f"(curl -sS -o /dev/null -w {shlex.quote(CURL_W)} {shlex.quote(url)} >{o}.out 2>&1;"
             f" echo $? >{o}.rc) &" for o in outs]
    rc, _, secs = benchlib.run_bounded(NET.client("sh", "-c", "\n".join(lines) + "\nwait\n"),
                                       args.timeout)
    failures = [] if rc is not None else [f"clients still running after {args.timeout} s"]
    total = 0
    for i, o in enumerate(outs):
        try:
            crc = open(o + ".rc").read().strip()
            text = open(o + ".out", errors="replace").read()
        except OSError:
            crc, text = "none", ""
        m = re.search(r"^(\d+) (\d+) ([\d.]+)$", text, re.M)
        if m:
            total += int(m.group(2))
        if crc != "0" or not m or m.group(1) != "200" or int(m.group(2)) != size:
            failures.append(f"client {i}: exit {crc}: {text.strip()[-200:]}")
        for p in (o + ".rc", o + ".out"):
            if os.path.exists(p):
                os.remove(p)
    return total / secs / 1e6, secs, failures


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(args, url):
    """(requests/s, p99 ms, problems) from wrk --latency."""
    argv = NET.client("wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.seconds}s",
                  "--latency", url)
    rc, text, _ = benchlib.run_bounded(argv, args.seconds + 60)
    text = text or ""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if rc != 0 or not rps or not p99:
        raise RuntimeError(f"wrk exit {rc}: {text.strip()[-300:]}")
    problems = []
    for pat in (r"Non-2xx or 3xx responses: \d+", r"Socket errors: [^\n]+"):
        m = re.search(pat, text)
        if m:
            problems.append(m.group(0))
    return float(rps.group(1)), to_ms(*p99.groups()), problems


def measure(args, name, server, r, notes, rnd, out_dir, files, big_size):
    """One round on one server: check, (a), (b), (c). Appends to r."""
    print(f"{name} (round {rnd + 1}/{args.rounds}):", flush=True)
    with benchlib.ServerRound(name, server, r, notes) as at:
        t0 = time.monotonic()
        server.start()
        r["ready_s"].append(time.monotonic() - t0)
        at.peak("rss0")
        print(f"  ready in {r['ready_s'][-1]:.1f} s", flush=True)
        at.step = "check"
        check_small(args, server.urls[SMALL], out_dir, files[SMALL])
        at.step = "(a)"
        for _ in range(args.repeat):
            r["a"].append(fetch_one(args, server.urls[BIG], big_size))
        at.peak("rss_a")
        print(f"  (a) 1 client: {' '.join(f'{x:.0f}' for x in r['a'][-args.repeat:])} MB/s",
              flush=True)
        at.step = "(b)"
        rate, secs, failures = fetch_many(args, server.urls[BIG], big_size, args.clients, out_dir)
        r["b"].append(rate)
        r["b_ok"] = min(r["b_ok"], args.clients - len(failures))
        at.peak("rss_b")
        print(f"  (b) {args.clients} clients: {rate:.0f} MB/s in all ({secs:.1f} s), "
              f"{len(failures)} failed", flush=True)
        for f in failures[:10]:
            print(f"      {f}", flush=True)
        if failures:
            notes.append(f"{name} (b): {len(failures)} fetches failed; first: {failures[0]}")
        at.step = "(c)"
        rps, p99, problems = wrk(args, server.urls[SMALL])
        r["rps"].append(rps)
        r["p99"].append(p99)
        at.peak("rss_c")
        print(f"  (c) {rps:.0f} requests/s, p99 {p99:.2f} ms"
              + (f"; {', '.join(problems)}" if problems else ""), flush=True)
        for p in problems:
            notes.append(f"{name} (c): {p}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/provisioner")
    ap.add_argument("--big-mib", type=int, default=1024, help="size of the large file")
    ap.add_argument("--small-kib", type=int, default=4, help="size of the file wrk asks for")
    ap.add_argument("--clients", type=int, default=32, help="clients at once in (b)")
    ap.add_argument("--seconds", type=int, default=10, help="wrk duration")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--repeat", type=int, default=3, help="runs of (a) a round")
    ap.add_argument("--rounds", type=int, default=1,
                    help="times the whole server sequence runs (spreads a busy machine's noise "
                         "over both servers); medians over every run are shown")
    ap.add_argument("--timeout", type=int, default=180, help="seconds any one transfer step may take")
    args = ap.parse_args()
    binary = benchlib.preflight(("curl", "wrk", "nginx", "taskset", "ss"), "curl wrk nginx-light",
                                args.binary)
    big_size, small_size = args.big_mib << 20, args.small_kib << 10
    t_start, load0 = time.monotonic(), benchlib.load_average()
    work = benchlib.work_dir("bench-http-")
    results, notes, built = {}, [], "?"
    try:
        binary, built, root, out_dir, files = benchlib.stage(
            work, binary, {BIG: big_size, SMALL: small_size})
        NET.setup()
        servers = (("appliance", lambda: appliance(binary, work, root, files,
                                                   max(60, args.big_mib // 10))),
                   ("nginx", lambda: nginx(work, root)))
        results = {name: {"a": [], "b": [], "rps": [], "p99": [], "ready_s": [],
                          "b_ok": args.clients} for name, _ in servers}
        for rnd in range(args.rounds):
            for name, make in servers:
                if "error" in results[name]:
                    continue
                measure(args, name, make(), results[name], notes, rnd, out_dir, files,
                        big_size)
    finally:
        NET.teardown()
        shutil.rmtree(work, ignore_errors=True)

    med = benchlib.median
    summary = {name: {k: med(r[k]) for k in ("a", "b", "rps", "p99", "ready_s")}
               for name, r in results.items()}
    app, ngx = summary.get("appliance", {}), summary.get("nginx", {})

    def cell(r, k, f):
        return f % r[k] if r.get(k) is not None else "-"

    def ratio(k):
        return f"{app[k] / ngx[k]:.2f}" if app.get(k) and ngx.get(k) else "-"

    print(f"\nHTTP benchmark (veth, MTU {MTU}; server on CPU 0, clients on CPU 1; MB = 10^6 "
          f"bytes; medians over {args.rounds} rounds: (a) {args.repeat} runs a round, (b) and (c) "
          f"one; {benchlib.load_note(load0)})\n")
    print("| figure | appliance | nginx | appliance/nginx |")
    print("|---|---|---|---|")
    rows = (("a", f"(a) 1 client, {args.big_mib} MiB, MB/s", "%.0f"),
            ("b", f"(b) {args.clients} clients x {args.big_mib} MiB, aggregate MB/s", "%.0f"),
            ("rps", f"(c) {args.small_kib} KiB requests/s (wrk -t{args.threads} -c{args.connections} "
                    f"-d{args.seconds}s)", "%.0f"),
            ("p99", "(c) p99 latency, ms", "%.2f"))
    for k, label, f in rows:
        print(f"| {label} | {cell(app, k, f)} | {cell(ngx, k, f)} | {ratio(k)} |")
    ok = lambda n: f"{results[n]['b_ok']}/{args.clients}" if results.get(n, {}).get("b") else "-"
    print(f"| (b) clients ok (worst run) | {ok('appliance')} | {ok('nginx')} | |")
    print("\nEvery run:")
    for name, r in results.items():
        print(f"- {name}: (a) {' '.join(f'{x:.0f}' for x in r['a']) or '-'} MB/s; "
              f"(b) {' '.join(f'{x:.0f}' for x in r['b']) or '-'} MB/s; "
              f"(c) {' '.join(f'{x:.0f}' for x in r['rps']) or '-'} requests/s, p99 "
              f"{' '.join(f'{x:.2f}' for x in r['p99']) or '-'} ms")
    a = results.get("appliance", {})
    mib = lambda k: f"{a[k] / 1024:.1f} MiB" if a.get(k) else "-"
    print(f"\nAppliance: ready in {cell(app, 'ready_s', '%.1f')} s (imports the {args.big_mib} MiB "
          f"file); peak RSS (VmHWM, largest over rounds) after start {mib('rss0')}, after (a) "
          f"{mib('rss_a')}, after (b) {mib('rss_b')}, after (c) {mib('rss_c')}")
    return benchlib.finish(args.binary, built, notes, t_start, results)


if __name__ == "__main__":
    sys.exit(main())
