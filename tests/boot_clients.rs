//! The boot plane's TFTP and HTTP sides with real clients (tftp-hpa, atftp, curl) on
//! loopback: firmware from the manifest, per-node iPXE scripts, artifacts with ranges and
//! ETags, and everything outside the served set refused. No root needed.

mod common;

use std::process::Command;

use common::{ON_LOOPBACK, Running, manifest_entry, require_tools, sha256};

struct Fixture {
    dir: tempfile::TempDir,
    _app: Running,
    http: std::net::SocketAddr,
    tftp: std::net::SocketAddr,
    kernel_sha: String,
}

/// Deterministic bytes (not all zero, so a wrong offset shows).
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let fw = dir.path().join("firmware");
    std::fs::create_dir(&fw).unwrap();
    std::fs::write(fw.join("ipxe.efi"), pattern(3 * 1024 * 1024 + 17, 7)).unwrap();
    std::fs::write(fw.join("tampered.efi"), b"not what the manifest says").unwrap();
    std::fs::write(dir.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), fw.join("escape.efi")).unwrap();
    let good = sha256(&fw.join("ipxe.efi"));
    let secret = sha256(&dir.path().join("secret"));
    std::fs::write(
        fw.join("manifest.toml"),
        manifest_entry("ipxe.efi", &good)
            + &manifest_entry("tampered.efi", &good)
            + &manifest_entry("escape.efi", &secret),
    )
    .unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, pattern(1024 * 1024 + 3, 11)).unwrap();
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&initrd, pattern(2048, 13)).unwrap();
    let kernel_sha = sha256(&kernel);
    let data = dir.path().join("data");
    let mut app = Running::start(
        &[
            &ON_LOOPBACK[..],
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--firmware-dir",
                fw.to_str().unwrap(),
                "--discovery-kernel",
                kernel.to_str().unwrap(),
                "--discovery-initrd",
                initrd.to_str().unwrap(),
                "--discovery-cmdline",
                "console=ttyS0",
            ],
        ]
        .concat(),
    );
    let http = app.addr("HTTP listening");
    let tftp = app.addr("TFTP listening");
    Fixture {
        dir,
        _app: app,
        http,
        tftp,
        kernel_sha,
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn curl(args: &[&str]) -> (bool, String) {
    run(Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .args(args))
}

#[test]
#[cfg_attr(
    not(all(tool = "curl", tool = "tftp", tool = "atftp")),
    ignore = "needs curl, tftp, atftp (the packages .ci/run installs)"
)]
fn tftp_clients_get_firmware_and_scripts_and_nothing_else() {
    require_tools(&[("curl", "curl"), ("tftp", "tftp-hpa"), ("atftp", "atftp")]);
    let f = start();
    let (host, port) = (f.tftp.ip().to_string(), f.tftp.port().to_string());
    let want = std::fs::read(f.dir.path().join("firmware/ipxe.efi")).unwrap();

    // curl at blksize 1468.
    let out = f.dir.path().join("curl.efi");
    let url = format!("tftp://{}/ipxe.efi", f.tftp);
    let (ok, text) = curl(&["--tftp-blksize", "1468", "-o", out.to_str().unwrap(), &url]);
    assert!(ok, "{text}");
    assert_eq!(std::fs::read(&out).unwrap(), want);

    // tftp-hpa at the default 512-byte blocks.
    let out = f.dir.path().join("hpa.efi");
    let (_, text) = run(Command::new("tftp").args([
        &host,
        &port,
        "-m",
        "binary",
        "-c",
        "get",
        "ipxe.efi",
        out.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read(&out).unwrap_or_default(), want, "{text}");

    // atftp with RFC 7440 windows: the OACK carries the window size.
    let out = f.dir.path().join("atftp.efi");
    let (ok, text) = run(Command::new("atftp").args([
        "--option",
        "windowsize 16",
        "--option",
        "blksize 1468",
        "--option",
        "tsize 0",
        "--trace",
        "-g",
        "-r",
        "ipxe.efi",
        "-l",
        out.to_str().unwrap(),
        &host,
        &port,
    ]));
    assert!(ok, "{text}");
    let oack = text
        .lines()
        .find(|l| l.contains("received OACK"))
        .unwrap_or_else(|| panic!("no OACK: {text}"));
    assert!(oack.contains("windowsize: 16"), "{oack}");
    assert!(oack.contains("blksize: 1468"), "{oack}");
    assert!(oack.contains(&format!("tsize: {}", want.len())), "{oack}");
    assert_eq!(std::fs::read(&out).unwrap(), want);

    // The per-node script over TFTP.
    let out = f.dir.path().join("node.ipxe");
    let (_, text) = run(Command::new("tftp").args([
        &host,
        &port,
        "-m",
        "binary",
        "-c",
        "get",
        "52-54-00-12-34-56.ipxe",
        out.to_str().unwrap(),
    ]));
    let script = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        script.starts_with("#!ipxe\n") && script.contains("provisioner.mac=52:54:00:12:34:56"),
        "{text}{script}"
    );

    // Outside the served set: refused or not found, never served.
    for name in [
        "../secret",
        "../../../../etc/passwd",
        "/etc/passwd",
        "boot\\x64\\ipxe.efi",
        "tampered.efi",
        "escape.efi",
        "nothere.efi",
    ] {
        let out = f.dir.path().join("refused");
        let _ = std::fs::remove_file(&out);
        let (_, text) = run(Command::new("tftp").args([
            &host,
            &port,
            "-m",
            "binary",
            "-c",
            "get",
            name,
            out.to_str().unwrap(),
        ]));
        let got = std::fs::read(&out).unwrap_or_default();
        assert!(got.is_empty(), "{name} was served: {text}");
        assert!(
            text.contains("Error code 1") || text.contains("Error code 2"),
            "{name}: {text}"
        );
    }
    // curl with its path taken as it is (no dot-segment squashing).
    let (ok, _) = curl(&[
        "--path-as-is",
        "-o",
        "/dev/null",
        &format!("tftp://{}/../secret", f.tftp),
    ]);
    assert!(!ok);
    // A write is refused.
    let src = f.dir.path().join("upload");
    std::fs::write(&src, b"x").unwrap();
    let (_, text) = run(Command::new("tftp").args([
        &host,
        &port,
        "-c",
        "put",
        src.to_str().unwrap(),
        "upload",
    ]));
    assert!(text.contains("Error code 2"), "{text}");
    assert!(!f.dir.path().join("firmware/upload").exists());
}

#[test]
#[cfg_attr(
    not(tool = "curl"),
    ignore = "needs curl (the packages .ci/run installs)"
)]
fn http_boot_scripts_firmware_and_artifacts_with_ranges() {
    require_tools(&[("curl", "curl")]);
    let f = start();
    let base = format!("http://{}", f.http);

    let (ok, script) = curl(&[&format!("{base}/boot/52-54-00-12-34-56.ipxe")]);
    assert!(ok);
    let k = &f.kernel_sha;
    assert!(script.contains(&format!("kernel {base}/artifacts/{k}/vmlinuz initrd=initrd console=ttyS0 provisioner.url={base} provisioner.mac=52:54:00:12:34:56")), "{script}");
    // A name that is no MAC still gets a script: it says why and retries with iPXE's own MAC.
    let (ok, script) = curl(&["-w", "%{http_code}", &format!("{base}/boot/not-a-mac.ipxe")]);
    assert!(ok && script.ends_with("200"), "{script}");
    assert!(
        script.contains("echo Provisioner:") && script.contains("/boot/${net0/mac}.ipxe"),
        "{script}"
    );

    // The artifact: whole, HEAD, a range, a resumed tail, conditional, unsatisfiable.
    let url = format!("{base}/artifacts/{k}/vmlinuz");
    let want = std::fs::read(f.dir.path().join("vmlinuz")).unwrap();
    let out = f.dir.path().join("k");
    let (ok, _) = curl(&["-o", out.to_str().unwrap(), &url]);
    assert!(ok);
    assert_eq!(std::fs::read(&out).unwrap(), want);
    let (_, head) = curl(&["-I", &url]);
    let head = head.to_ascii_lowercase();
    assert!(head.contains(&format!("etag: \"{k}\"")), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", want.len())),
        "{head}"
    );
    assert!(head.contains("accept-ranges: bytes"), "{head}");
    let (_, part) = curl(&[
        "-r",
        "100-199",
        "-o",
        out.to_str().unwrap(),
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(part, "206");
    assert_eq!(std::fs::read(&out).unwrap(), &want[100..200]);
    // Resume: curl -C continues a partial file.
    std::fs::write(&out, &want[..5000]).unwrap();
    let (ok, _) = curl(&["-C", "-", "-o", out.to_str().unwrap(), &url]);
    assert!(ok);
    assert_eq!(std::fs::read(&out).unwrap(), want);
    let (_, code) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("If-None-Match: \"{k}\""),
        &url,
    ]);
    assert_eq!(code, "304");
    let (_, code) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-r",
        "99999999-",
        &url,
    ]);
    assert_eq!(code, "416");
    let (_, code) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/artifacts/{}", "0".repeat(64)),
    ]);
    assert_eq!(code, "404");

    // One keep-alive connection: an artifact (sendfile path), then a script (the router),
    // then the artifact again; curl reuses the connection for all three.
    let (a, b, c) = (
        f.dir.path().join("a"),
        f.dir.path().join("b"),
        f.dir.path().join("c"),
    );
    let (ok, text) = curl(&[
        "-v",
        "-o",
        a.to_str().unwrap(),
        &url,
        "-o",
        b.to_str().unwrap(),
        &format!("{base}/boot/52-54-00-12-34-56.ipxe"),
        "-o",
        c.to_str().unwrap(),
        &url,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("Re-using existing connection"), "{text}");
    assert_eq!(std::fs::read(&a).unwrap(), want);
    assert!(std::fs::read_to_string(&b).unwrap().starts_with("#!ipxe\n"));
    assert_eq!(std::fs::read(&c).unwrap(), want);

    // Firmware over HTTP (UEFI HTTP boot): only what matched the manifest.
    let (_, code) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/firmware/ipxe.efi"),
    ]);
    assert_eq!(code, "200");
    for name in ["tampered.efi", "escape.efi", "..%2Fsecret", "nothere.efi"] {
        let (_, code) = curl(&[
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/firmware/{name}"),
        ]);
        assert_eq!(code, "404", "{name}");
    }

    // The node that asked for its script is on record, with that fetch.
    // The boot journal is written in ticks of 100 ms: wait (bounded) for it.
    let seen = common::wait_for(std::time::Duration::from_secs(10), || {
        let (_, nodes) = curl(&[&format!("{base}/api/v1/nodes")]);
        nodes.contains("52:54:00:12:34:56").then_some(())
    });
    assert!(seen.is_some(), "the node never appeared in /api/v1/nodes");
    let (_, nodes) = curl(&[&format!("{base}/api/v1/nodes")]);
    assert!(nodes.contains("52:54:00:12:34:56"), "{nodes}");
    let (_, node) = curl(&[&format!("{base}/api/v1/nodes/52:54:00:12:34:56")]);
    let v: serde_json::Value = serde_json::from_str(&node).unwrap();
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "http"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("/boot/52-54-00-12-34-56.ipxe")),
        "{node}"
    );
    let (_, code) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/api/v1/nodes/02:00:00:00:00:99"),
    ]);
    assert_eq!(code, "404");
}
