//! `provisioner image build-discovery` as an operator runs it: the initramfs holds what a
//! node needs to come up and report (busybox, /init, the agent with its libraries, the
//! drivers with their dependencies), two builds give the same bytes, and both images land in
//! the artifact store.
//!
//! The build test needs apt-get (Debian) and the network once: the .debs are cached in
//! `target/debs/`, so later runs work offline. It builds the agent it packs with
//! `cargo build --release -p provisioner-agent` (PROVISIONER_AGENT=PATH names another).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn build_discovery(args: &[&str]) -> Output {
    Command::new(common::appliance())
        .args(["image", "build-discovery"])
        .args(args)
        .output()
        .expect("run provisioner image build-discovery")
}

fn built(args: &[&str]) -> String {
    let out = build_discovery(args);
    assert!(
        out.status.success(),
        "build-discovery {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs GNU cpio on the decompressed initramfs (an independent reader of what we wrote).
fn cpio(initrd: &Path, args: &[&str]) -> String {
    let mut plain = Vec::new();
    let gz = std::fs::File::open(initrd).expect("open initrd");
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut plain)
        .expect("initrd is gzip");
    let mut child = Command::new("cpio")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cpio");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&plain));
    let out = child.wait_with_output().expect("cpio output");
    writer.join().expect("writer").expect("feed cpio");
    assert!(out.status.success(), "cpio {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The libraries and loader ldd resolves for `program`, as paths without the leading `/`.
fn ldd_paths(program: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(program).output().expect("run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split("=> ").nth(1).unwrap_or(l);
            path.starts_with('/')
                .then(|| path.split(" (").next().unwrap_or(path))
                .map(|p| p.trim_start_matches('/').to_string())
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(all(tool = "apt-get", tool = "ldd")),
    ignore = "needs apt-get, ldd (the packages .ci/run installs)"
)]
fn discovery_image_holds_what_a_node_needs_and_builds_reproducibly() {
    common::require_tools(&[
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
        ("ldd", "libc-bin"),
        ("cpio", "cpio"),
        ("sha256sum", "coreutils"),
    ]);
    let Some(agent) = common::agent_binary() else {
        return;
    };
    let agent = agent.to_str().expect("utf-8 path");
    let debs = common::target_dir().join("debs");
    let debs = debs.to_str().expect("utf-8 path");
    let tmp = tempfile::tempdir().unwrap();
    let out1 = tmp.path().join("out");
    let data1 = tmp.path().join("data1");
    let data2 = tmp.path().join("data2");
    let p = |p: &Path| p.to_str().unwrap().to_string();

    let said = built(&[
        "--out",
        &p(&out1),
        "--data-dir",
        &p(&data1),
        "--agent",
        agent,
        "--deb-cache",
        debs,
    ]);
    assert!(
        said.contains("initrd.img") && said.contains("sha256"),
        "{said}"
    );
    let initrd = out1.join("initrd.img");
    let vmlinuz = out1.join("vmlinuz");

    let list = cpio(&initrd, &["-t"]);
    let names: Vec<&str> = list
        .lines()
        .map(|l| l.trim_start_matches("./").trim_start_matches('/'))
        .collect();
    let mut expected: Vec<String> = [
        "init",
        "bin/busybox",
        "bin/sh",
        "bin/provisioner-agent",
        "dev/console",
        "etc/udhcpc.script",
        "lib/modules/load-order",
    ]
    .map(String::from)
    .to_vec();
    expected.extend(ldd_paths(Path::new(agent)));
    assert!(
        expected.iter().any(|e| e.contains("ld-linux")),
        "{expected:?}"
    );
    for module in [
        "virtio_pci",
        "virtio_ring",
        "virtio",
        "failover",
        "net_failover",
        "virtio_net",
        "mlx5_core",
        "mlxfw",
        "psample",
        "pci_hyperv_intf",
        "nvme",
        "nvme_core",
        "ahci",
        "libahci",
        "libata",
        "sd_mod",
        "scsi_mod",
    ] {
        expected.push(format!("lib/modules/{module}.ko"));
    }
    for e in &expected {
        assert!(
            names.contains(&e.as_str()),
            "no {e} in the initramfs: {names:?}"
        );
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are in name order");

    // Types and modes, as GNU cpio reads them.
    let long = cpio(&initrd, &["-tv"]);
    let line = |name: &str| {
        long.lines()
            .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
            .unwrap_or_else(|| panic!("no {name} in {long}"))
            .to_string()
    };
    assert!(line("init").starts_with("-rwxr-xr-x"), "{}", line("init"));
    assert!(line("dev/console").starts_with("crw-------"));
    assert!(line("bin/sh").starts_with("lrwxrwxrwx"));

    // Dependencies load first.
    let order = cpio(&initrd, &["-i", "--to-stdout", "lib/modules/load-order"]);
    let order: Vec<&str> = order.lines().collect();
    let at = |m: &str| {
        order
            .iter()
            .position(|o| *o == m)
            .unwrap_or_else(|| panic!("{m} not in load-order {order:?}"))
    };
    for (dep, module) in [
        ("virtio_ring", "virtio_pci"),
        ("failover", "net_failover"),
        ("net_failover", "virtio_net"),
        ("mlxfw", "mlx5_core"),
        ("nvme_core", "nvme"),
        ("scsi_mod", "sd_mod"),
    ] {
        assert!(at(dep) < at(module), "{dep} after {module}: {order:?}");
    }
    let mut unique = order.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), order.len(), "each module once: {order:?}");

    // The manifest, and the artifact store.
    let image = provisioner::image::load(&out1)
        .expect("discovery.json readable")
        .expect("discovery.json present");
    let sha_initrd = common::sha256(&initrd);
    let sha_kernel = common::sha256(&vmlinuz);
    assert_eq!(image.initrd_sha256.to_string(), sha_initrd);
    assert_eq!(image.kernel_sha256.to_string(), sha_kernel);
    assert_eq!(
        image.manifest.agent.sha256.to_string(),
        common::sha256(Path::new(agent))
    );
    assert!(image.manifest.kernel.package.starts_with("linux-image-"));
    assert!(!image.manifest.busybox.version.is_empty());
    assert!(
        image
            .manifest
            .modules
            .requested
            .contains(&"mlx5_core".to_string())
    );
    for sha in [&sha_initrd, &sha_kernel] {
        assert!(
            data1.join("artifacts").join(sha).is_file(),
            "{sha} not stored"
        );
    }

    // A second build of the same inputs, into the default folder of another data dir: the
    // same bytes, found by load_default.
    built(&[
        "--data-dir",
        &p(&data2),
        "--agent",
        agent,
        "--deb-cache",
        debs,
    ]);
    let again = provisioner::image::load_default(&data2)
        .expect("discovery.json readable")
        .expect("built into DATA_DIR/images/discovery");
    assert_eq!(
        again.initrd_sha256.to_string(),
        sha_initrd,
        "initrd differs"
    );
    assert_eq!(again.kernel_sha256.to_string(), sha_kernel);
    assert!(data2.join("artifacts").join(&sha_initrd).is_file());

    // With no --discovery-kernel, the appliance boots nodes into the image built there.
    let mut app = common::Running::start(
        &[
            &common::ON_LOOPBACK[..],
            &[
                "--data-dir",
                &p(&data2),
                "--firmware-dir",
                &p(&tmp.path().join("fw")),
            ],
        ]
        .concat(),
    );
    let http = app.addr("HTTP listening");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .arg(format!("http://{http}/boot/52-54-00-12-34-56.ipxe"))
        .output()
        .expect("run curl");
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains(&format!("/artifacts/{sha_kernel}/")),
        "{script}"
    );
    assert!(
        script.contains(&format!("/artifacts/{sha_initrd}/")),
        "{script}"
    );
    drop(app);

    // The work folders are gone.
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .chain(std::fs::read_dir(data2.join("images")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".build-discovery"))
        .collect();
    assert!(left.is_empty(), "work folders left behind: {left:?}");
}

#[test]
#[cfg_attr(
    not(tool = "ldd"),
    ignore = "needs ldd (the packages .ci/run installs)"
)]
fn an_agent_that_is_missing_or_too_large_is_refused_before_any_download() {
    common::require_tools(&[("ldd", "libc-bin")]);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data = data.to_str().unwrap();

    let out = build_discovery(&["--data-dir", data, "--agent", "/nonexistent/agent"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("/nonexistent/agent"), "{said}");

    // Not an ELF file: ldd finds no libraries, and the size alone is over the limit.
    let big = tmp.path().join("big-agent");
    std::fs::write(&big, vec![0u8; 16_000_000]).unwrap();
    let out = build_discovery(&["--data-dir", data, "--agent", big.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("16000000") && said.contains("15000000"),
        "{said}"
    );
    assert!(
        !tmp.path().join("data/cache").exists(),
        "nothing was fetched"
    );
}
