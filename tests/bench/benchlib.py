"""Plumbing shared by the benchmarks in tests/bench (dhcp.py, tftp.py, http_serve.py).

Not a benchmark itself: the scripts import it (`python3 tests/bench/NAME.py` puts this
folder on sys.path). It holds what every benchmark needs the same way:
  - NetnsPair: a server and a client network namespace joined by a veth pair, set up and
    torn down by the script; all traffic stays inside them,
  - Server: a process started in the server namespace pinned to CPU 0, waited on with a
    bound, and stopped by its PID (and the PIDs of the children it started, e.g. nginx's
    workers); never by name,
  - run_bounded: a client command in its own process group, killed as a group on timeout,
  - ServerRound: one round of measurements on one server, which turns a failure into a
    note instead of ending the run and always stops the server,
  - the checks before a run, the working directory, test files with their sha256, and the
    lines every report ends with.
What differs between the benchmarks (namespace prefix, addresses, MTU, environment of the
servers, the protocol a port is checked for) is a parameter.
"""

import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

SRV_IF, CLI_IF = "bench0", "bench1"
SERVER_CPU, CLIENT_CPU = "0", "1"


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def netns_exec(ns, *args):
    return ["ip", "netns", "exec", ns, *args]


class NetnsPair:
    """Namespaces PREFIX<pid>s (server, SRV_IF) and PREFIX<pid>c (client, CLI_IF), a veth pair
    between them, addresses server_ip and client_ip with /prefixlen, and the MTU if given."""

    def __init__(self, prefix, server_ip, client_ip, prefixlen=24, mtu=None):
        self.srv, self.cli = f"{prefix}{os.getpid()}s", f"{prefix}{os.getpid()}c"
        self.server_ip, self.client_ip = server_ip, client_ip
        self.prefixlen, self.mtu = prefixlen, mtu
        self.added = []

    def setup(self):
        try:
            for ns in (self.srv, self.cli):
                sh("ip", "netns", "add", ns)
                self.added.append(ns)
            sh("ip", "link", "add", SRV_IF, "netns", self.srv, "type", "veth",
               "peer", "name", CLI_IF, "netns", self.cli)
            sh("ip", "-n", self.srv, "addr", "add", f"{self.server_ip}/{self.prefixlen}", "dev", SRV_IF)
            sh("ip", "-n", self.cli, "addr", "add", f"{self.client_ip}/{self.prefixlen}", "dev", CLI_IF)
            mtu = ["mtu", str(self.mtu)] if self.mtu else []
            for ns, dev in ((self.srv, SRV_IF), (self.cli, CLI_IF)):
                sh("ip", "-n", ns, "link", "set", dev, *mtu, "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.teardown()  # only the namespaces this call added
            raise

    def teardown(self):
        for ns in self.added:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        self.added = []

    def client(self, *argv):
        """argv in the client namespace, pinned to the client CPU."""
        return netns_exec(self.cli, "taskset", "-c", CLIENT_CPU, *argv)

    def port_open(self, port, proto="udp"):
        """Whether something listens on port (proto "udp" or "tcp") in the server namespace."""
        flags = {"udp": "-lunH", "tcp": "-ltnH"}[proto]
        out = subprocess.run(netns_exec(self.srv, "ss", flags, f"sport = :{port}"),
                             capture_output=True, text=True, timeout=10).stdout
        return bool(out.strip())


def children(pid):
    """PIDs of pid's children (nginx's workers), to be stopped with it."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Server:
    """argv in namespace ns, pinned to the server CPU, output to WORK/NAME.log. start() waits
    at most ready_s seconds for ready(server) to say yes and raises RuntimeError if it does
    not or the process exits first (the process is stopped then). env: variables added to
    this process's environment for it."""

    def __init__(self, name, argv, work, ready, *, ns, ready_s=30, env=None):
        self.name, self.argv, self.work, self.ready, self.ready_s = name, argv, work, ready, ready_s
        self.ns, self.env = ns, dict(os.environ, **env) if env else None
        self.proc = None
        self.kids = set()
        self.log = os.path.join(work, f"{name}.log")

    def start(self):
        log = open(self.log, "w")
        self.proc = subprocess.Popen(netns_exec(self.ns, "taskset", "-c", SERVER_CPU, *self.argv),
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        try:
            deadline = time.time() + self.ready_s
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited early (status {self.proc.returncode})")
                if self.ready(self):
                    self.kids.update(children(self.proc.pid))
                    return
                time.sleep(0.2)
            raise RuntimeError(f"{self.name} not ready after {self.ready_s} s")
        except BaseException:
            self.stop()
            raise

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def peak_kib(self):
        """VmHWM in KiB, None where it cannot be read (the process is gone)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.kids.update(children(self.proc.pid))
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # A worker its master left behind: only the PIDs recorded as this server's children.
        for pid in self.kids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid in (1, self.proc.pid):
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        self.kids = set()

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def nginx(net, work, root, worker_connections=4096):
    """nginx (one worker, sendfile) serving root on net's server address, port 80, in its
    server namespace; its temporary files and logs under work. Not started."""
    tmp = os.path.join(work, "nginx-tmp")
    os.makedirs(tmp, exist_ok=True)
    conf = os.path.join(work, "nginx.conf")
    temps = "".join(f"    {k}_temp_path {tmp}/{k};\n"
                    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    with open(conf, "w") as f:
        f.write(f"""user root;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    sendfile on;
    access_log off;
    default_type application/octet-stream;
{temps}    server {{
        listen {net.server_ip}:80;
        root {root};
    }}
}}
""")
    argv = ["nginx", "-p", work, "-e", os.path.join(work, "nginx-error.log"), "-c", conf,
            "-g", "daemon off;"]
    return Server("nginx", argv, work, lambda s: net.port_open(80, "tcp"), ns=net.srv)


def run_bounded(argv, timeout):
    """Runs argv in its own process group; on timeout kills that group. (rc, output, seconds)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return None, out, time.monotonic() - t0
    return p.returncode, out, time.monotonic() - t0


def make_file(path, size):
    """Random bytes (nothing compresses or dedups them); returns the sha256 hex."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    os.chmod(path, 0o644)
    return h.hexdigest()


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def preflight(tools, install, binary=None):
    """Exits unless root and every tool is on PATH (install: what to apt-get install) and,
    where binary is given, it is executable. Returns binary's absolute path."""
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    for tool in tools:
        if not shutil.which(tool):
            raise SystemExit(f"missing {tool}: apt-get install {install}")
    if binary is None:
        return None
    binary = os.path.abspath(binary)
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"no appliance binary at {binary}: cargo build --release")
    return binary


def load_average():
    return os.getloadavg()[0]


def load_note(load0):
    return f"1-min load average {load0:.1f} at start, {load_average():.1f} at end"


def work_dir(prefix):
    """A fresh temporary directory, readable by all: tftpd-hpa drops to an unprivileged user
    after chroot, so the tree it serves must be readable."""
    work = tempfile.mkdtemp(prefix=prefix)
    os.chmod(work, 0o755)
    return work


def stage(work, binary, files):
    """Copies binary into work (a rebuild during the run must not change the binary under
    test) and writes files {name: size} into WORK/root. Returns (the copy, its build time,
    the root, an empty WORK/out for clients, {name: sha256})."""
    copy = os.path.join(work, "provisioner")
    shutil.copy2(binary, copy)
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(copy)))
    root = os.path.join(work, "root")
    out_dir = os.path.join(work, "out")
    os.mkdir(root, 0o755)
    os.mkdir(out_dir)
    shas = {name: make_file(os.path.join(root, name), size) for name, size in files.items()}
    return copy, built, root, out_dir, shas


class ServerRound:
    """One round of measurements on one server, as `with ServerRound(...) as rnd:`. The body
    starts the server and sets rnd.step before each step. A RuntimeError (or the server gone
    by the end) ends the round: r["error"] says where, notes get the error and the end of the
    server's log, and it prints FAILED; the run goes on. Whatever happens, the server is
    stopped, and for the appliance the log's panics and ERROR lines go to notes."""

    def __init__(self, name, server, r, notes):
        self.name, self.server, self.r, self.notes = name, server, r, notes
        self.step = "start"

    def peak(self, key):
        """Keeps the largest VmHWM seen under r[key]."""
        v = self.server.peak_kib()
        if v is not None:
            self.r[key] = max(self.r.get(key, 0), v)

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        server = self.server
        try:
            if kind is None and not server.alive():
                kind = RuntimeError
                e = RuntimeError(f"exited during the run (status {server.proc.returncode})")
            if kind is None or not issubclass(kind, RuntimeError):
                return False
            self.r["error"] = f"{self.step}: {e}"
            # The log goes with the temporary directory: keep its end in the report.
            tail = " | ".join(server.log_text().strip().splitlines()[-3:])[-400:]
            self.notes.append(f"{self.name} {self.step}: {e}" + (f"; log ends: {tail}" if tail else ""))
            print(f"  FAILED: {e}", flush=True)
            return True
        finally:
            server.stop()
            if self.name == "appliance":
                bad = [l for l in server.log_text().splitlines()
                       if "panic" in l.lower() or " ERROR " in l]
                for l in bad[:5]:
                    self.notes.append(f"appliance log: {l.strip()[:300]}")


def median(xs):
    return statistics.median(xs) if xs else None


def finish(binary, built, notes, t_start, results):
    """Prints the lines every report ends with; returns the exit status (1 if a server failed)."""
    print(f"\nAppliance binary: {binary}, built {built}")
    for n in notes:
        print(f"- {n}")
    print(f"\n(took {time.monotonic() - t_start:.0f} s)")
    return 1 if any("error" in r for r in results.values()) else 0
