#!/usr/bin/env python3
"""Package repository benchmark, in one run on this machine:

 (a) `provisioner repo import` of a signed vendor bundle holding one 1 GiB package (DCGM's
     core package is about that size): wall time, MB/s over the bundle's bytes, and the
     suite's index-and-sign time (the import's own figure);
 (b) stock apt (`apt-get download`, private configuration: the suite's InRelease checked with
     the appliance's archive key by gpgv, the package's SHA256 by apt) fetching that package
     from the appliance's /repo/ and from nginx (one worker, sendfile) serving the same
     DATA_DIR/repo tree under /repo/, over a veth pair between two namespaces (MTU 1500);
     median seconds and MB/s of --repeat fetches each, and the ratio appliance/nginx.

The bundle is built as vendors build theirs, by GnuPG (ed25519 key), dpkg-deb (-Znone, so
the 1 GiB of random bytes is written once), dpkg-scanpackages and apt-ftparchive. Every
fetched file's sha256 is checked. MB = 10^6 bytes.

Usage: tests/bench/repo.py [--binary target/release/provisioner] [--big-mib 1024]
       [--repeat 3] [--timeout 600]
Needs root, gpg, dpkg-deb, dpkg-scanpackages (dpkg-dev), apt-ftparchive (apt-utils), apt-get,
nginx (nginx-light). Traffic stays inside the two namespaces it creates; it removes them, its
temporary files and its processes (by PID) on exit.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import benchlib

SERVER_IP, CLIENT_IP = "10.217.0.1", "10.217.0.2"
NET = benchlib.NetnsPair("prp", SERVER_IP, CLIENT_IP, prefixlen=24, mtu=1500)
PACKAGE, VERSION = "datacenter-gpu-manager-4-core", "1:4.4.1-1"


def run(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({p.returncode}): {p.stdout[-500:]}{p.stderr[-500:]}")
    return p.stdout


def vendor_bundle(work, big_bytes):
    """A flat vendor repository (CUDA's layout) holding one package of big_bytes, signed."""
    home = os.path.join(work, "gnupg")
    os.makedirs(home, mode=0o700)
    gpg = ["gpg", "--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback",
           "--passphrase", ""]
    run(gpg + ["--quick-gen-key", "bench vendor <vendor@bench.test>", "ed25519", "sign", "1y"])
    key = os.path.join(work, "vendor.gpg")
    run(gpg + ["--export", "-o", key])
    tree = os.path.join(work, "tree")
    payload = os.path.join(tree, "usr/share/dcgm")
    os.makedirs(os.path.join(tree, "DEBIAN"))
    os.makedirs(payload)
    with open(os.path.join(tree, "DEBIAN/control"), "w") as f:
        f.write(f"Package: {PACKAGE}\nVersion: {VERSION}\nArchitecture: amd64\n"
                "Maintainer: bench <vendor@bench.test>\nDescription: a DCGM-sized package\n")
    benchlib.make_file(os.path.join(payload, "blob"), big_bytes)
    bundle = os.path.join(work, "bundle")
    os.makedirs(bundle)
    deb = os.path.join(bundle, f"{PACKAGE}_4.4.1-1_amd64.deb")
    run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", tree, deb])
    shutil.rmtree(tree)
    packages = run(["dpkg-scanpackages", ".", "/dev/null"], cwd=bundle)
    with open(os.path.join(bundle, "Packages"), "w") as f:
        f.write(packages)
    release = run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=bench",
                   "release", "."], cwd=bundle)
    with open(os.path.join(bundle, "Release"), "w") as f:
        f.write(release)
    run(gpg + ["--digest-algo", "SHA512", "--clearsign", "-o",
               os.path.join(bundle, "InRelease"), os.path.join(bundle, "Release")])
    return bundle, key, deb


def apt_config(work, name, source, keyring):
    root = os.path.join(work, f"apt-{name}")
    for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
              "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg",
              "download"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
    with open(os.path.join(root, "etc/apt/sources.list"), "w") as f:
        f.write(f"deb [signed-by={keyring}] {source}\n")
    conf = os.path.join(root, "apt.conf")
    with open(conf, "w") as f:
        f.write(f'Dir "{root}/";\nDir::State::status "{root}/var/lib/dpkg/status";\n'
                'APT::Architecture "amd64";\nAcquire::Languages "none";\n'
                'APT::Sandbox::User "root";\nDebug::NoLocking "true";\nAcquire::Retries "0";\n')
    return root, conf


def apt(conf, cwd, *args, timeout):
    argv = NET.client("sh", "-c", f"cd {cwd} && APT_CONFIG={conf} LC_ALL=C apt-get -q -y "
                      + " ".join(args))
    return benchlib.run_bounded(argv, timeout)


def fetch(args, name, url_base, suite, keyring, work, want_sha, size):
    root, conf = apt_config(work, name, f"{url_base}/repo {suite} main", keyring)
    rc, out, _ = apt(conf, root, "update", timeout=args.timeout)
    if rc != 0 or "W:" in out or "E:" in out:
        raise RuntimeError(f"apt-get update: {out.strip()[-300:]}")
    times = []
    down = os.path.join(root, "download")
    for _ in range(args.repeat):
        for f in os.listdir(down):
            os.remove(os.path.join(down, f))
        rc, out, secs = apt(conf, down, "download", PACKAGE, timeout=args.timeout)
        got = [f for f in os.listdir(down) if f.endswith(".deb")]
        if rc != 0 or len(got) != 1:
            raise RuntimeError(f"apt-get download: exit {rc}: {out.strip()[-300:]}")
        if benchlib.sha256_of(os.path.join(down, got[0])) != want_sha:
            raise RuntimeError("the fetched package's sha256 differs")
        times.append(secs)
    med = benchlib.median(times)
    return {"seconds": med, "mbs": size / med / 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/provisioner")
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args()
    binary = benchlib.preflight(
        ["gpg", "dpkg-deb", "dpkg-scanpackages", "apt-ftparchive", "apt-get", "nginx"],
        "gnupg dpkg-dev apt-utils nginx-light", args.binary)
    t_start = time.monotonic()
    load0 = benchlib.load_average()
    work = benchlib.work_dir("bench-repo-")
    notes, results = [], {}
    try:
        copy, built, _, _, _ = benchlib.stage(work, binary, {})
        print(f"building a signed vendor bundle with one {args.big_mib} MiB package ...", flush=True)
        bundle, vendor_key, deb = vendor_bundle(work, args.big_mib << 20)
        size = os.path.getsize(deb)
        deb_sha = benchlib.sha256_of(deb)
        data = os.path.join(work, "data")
        run([copy, "repo", "trust", vendor_key, "--data-dir", data])
        t0 = time.monotonic()
        out = run([copy, "repo", "import", bundle, "--name", "dcgm", "--data-dir", data])
        import_s = time.monotonic() - t0
        index_s = float(re.search(r"indexed and signed in ([0-9.]+) s", out).group(1))
        suite = re.search(r"imported suite (\S+):", out).group(1)
        bundle_bytes = sum(os.path.getsize(os.path.join(bundle, f)) for f in os.listdir(bundle))
        results["import"] = {"seconds": import_s, "mbs": bundle_bytes / import_s / 1e6,
                             "index": index_s, "bytes": bundle_bytes}
        keyring = os.path.join(data, "keys", "archive.asc")

        NET.setup()
        fw = os.path.join(work, "firmware")
        os.makedirs(fw)
        open(os.path.join(fw, "manifest.toml"), "w").close()
        appliance = benchlib.Server(
            "appliance",
            [copy, "up", "--offline", "--data-dir", data, "--firmware-dir", fw, "--dhcp", "off",
             "--http-listen", f"{SERVER_IP}:8080", "--tftp-listen", f"{SERVER_IP}:69"],
            work, lambda s: "HTTP listening" in s.log_text(), ns=NET.srv, ready_s=60)
        nginx_root = os.path.join(work, "nginx-root")
        os.makedirs(nginx_root)
        os.symlink(os.path.join(data, "repo"), os.path.join(nginx_root, "repo"))
        nginx = benchlib.nginx(NET, work, nginx_root)
        for name, server, base in (("appliance", appliance, f"http://{SERVER_IP}:8080"),
                                   ("nginx", nginx, f"http://{SERVER_IP}")):
            r = results.setdefault(name, {})
            with benchlib.ServerRound(name, server, r, notes) as rnd:
                server.start()
                rnd.step = "apt download"
                r.update(fetch(args, name, base, suite, keyring, work, deb_sha, size))
                rnd.peak("peak_kib")
    finally:
        NET.teardown()
        shutil.rmtree(work, ignore_errors=True)

    imp = results["import"]
    print(f"\nimport of a {imp['bytes'] / 1e6:.0f} MB bundle (one {args.big_mib} MiB package): "
          f"{imp['seconds']:.1f} s, {imp['mbs']:.0f} MB/s; indexed and signed in {imp['index']:.3f} s")
    a, n = results.get("appliance", {}), results.get("nginx", {})
    print(f"\n{'apt-get download, one package':<34} {'appliance':>12} {'nginx':>12} {'ratio':>8}")
    if "mbs" in a and "mbs" in n:
        print(f"{'seconds (median of ' + str(args.repeat) + ')':<34} {a['seconds']:>12.2f} {n['seconds']:>12.2f}"
              f" {n['seconds'] / a['seconds']:>8.2f}")
        print(f"{'MB/s':<34} {a['mbs']:>12.0f} {n['mbs']:>12.0f} {a['mbs'] / n['mbs']:>8.2f}")
    if "peak_kib" in a:
        notes.append(f"appliance peak RSS {a['peak_kib'] / 1024:.0f} MiB")
    notes.append(benchlib.load_note(load0))
    return benchlib.finish(binary, built, notes, t_start, results)


if __name__ == "__main__":
    sys.exit(main())
