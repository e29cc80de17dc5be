//! The virtual rack inspects real (QEMU) nodes: three nodes with different memory, CPUs and
//! disks boot the discovery image that `provisioner image build-discovery` builds; its agent
//! reports their facts; two that are in the rack plan are matched to their slots (one by MAC,
//! one by serial), the third, not in the plan, fails with its reason. In the middle of
//! inspection the appliance is killed with SIGKILL; the lab restarts it (as a service manager
//! would) and nothing is lost: the nodes carry on.
//! Needs root, QEMU, and apt-get download (once) for the image.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::labrun::LabProcess;
use common::{appliance, firmware_dir, require, workspace};

/// What QEMU is given: memory MiB, CPUs, virtio disk MiB, NVMe MiB, serial (as `just
/// inspect-lab` gives them).
const NODES: [(u64, u32, u64, Option<u64>, &str); 3] = [
    (1024, 1, 2048, None, "LAB-SN-0"),
    (1536, 2, 3072, Some(1024), "LAB-SN-1"),
    (1024, 1, 1024, None, "LAB-SN-9"),
];

fn within_5_percent(got: u64, want: u64) -> bool {
    got.abs_diff(want) * 100 <= want * 5
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn three_nodes_are_inspected_and_matched_and_a_killed_appliance_loses_nothing() {
    require(&[
        ("ip", "iproute2"),
        ("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
    ]);
    let Some(agent) = common::agent_binary() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    let built = Command::new(appliance())
        .args(["image", "build-discovery", "--out"])
        .arg(&image)
        .arg("--data-dir")
        .arg(tmp.path().join("image-data"))
        .arg("--agent")
        .arg(&agent)
        .arg("--deb-cache")
        .arg(common::target_dir().join("debs"))
        .output()
        .expect("run provisioner image build-discovery");
    assert!(
        built.status.success(),
        "build-discovery failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    // Node 0 is in it by MAC, node 1 by serial; node 2 is not.
    let plan = workspace().join("tests/lab/plan.csv");

    let dir = tmp.path().join("lab");
    let mut lab = Command::new(appliance());
    lab.args(["lab", "--timeout", "900", "--dir"])
        .arg(&dir)
        .arg("--firmware-dir")
        .arg(firmware_dir())
        .arg("--discovery-kernel")
        .arg(image.join("vmlinuz"))
        .arg("--discovery-initrd")
        .arg(image.join("initrd.img"))
        .arg("--plan")
        .arg(&plan);
    for (mem, cpus, disk, nvme, serial) in NODES {
        let mut spec = format!("mem={mem},cpus={cpus},disk={disk},serial={serial}");
        if let Some(n) = nvme {
            spec.push_str(&format!(",nvme={n}"));
        }
        lab.args(["--node", &spec]);
    }
    let lab_out = tmp.path().join("lab.out");
    let out_file = std::fs::File::create(&lab_out).unwrap();
    let mut lab = LabProcess(
        lab.stdout(out_file.try_clone().unwrap())
            .stderr(out_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start provisioner lab"),
    );

    // Kill the appliance once node 0's discovery image is up: its agent is about to report,
    // and the node is inspecting.
    let up = common::wait_for(Duration::from_secs(600), || {
        common::read(&dir.join("node0.console"))
            .contains("provisioner-discovery: up")
            .then_some(())
    });
    assert!(
        up.is_some(),
        "node 0 never came up:\n{}",
        common::read(&dir.join("node0.console"))
    );
    let pid: i32 = common::read(&dir.join("appliance.pid"))
        .trim()
        .parse()
        .expect("appliance.pid");
    let killed_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the appliance");

    let status = common::wait_for(Duration::from_secs(900), || lab.0.try_wait().ok().flatten());
    let text = common::read(&lab_out);
    let log = common::read(&dir.join("appliance.log"));
    assert!(
        status.is_some_and(|s| s.success()),
        "provisioner lab failed or ran past 900 s:\n{text}\n{log}"
    );
    assert!(text.contains("the appliance died; restarting it"), "{text}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();

    for (i, (mem, cpus, disk, nvme, _serial)) in NODES.iter().enumerate() {
        let node = &summary[i];
        let console = common::read(&dir.join(format!("node{i}.console")));
        let api = &node["api"];
        assert!(
            node["exited"] == true,
            "node {i} did not power off by itself:\n{console}\n{api:#}"
        );
        let facts = &api["facts"];
        assert!(facts.is_object(), "node {i} has no facts: {api:#}");
        // Facts within 5% of what QEMU was given; disk sizes and MACs exact.
        let dimms: u64 = facts["memory"]["dimms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["size_bytes"].as_u64().unwrap())
            .sum();
        let memory = if dimms > 0 {
            dimms
        } else {
            facts["memory"]["total_bytes"].as_u64().unwrap()
        };
        assert!(
            within_5_percent(memory, mem << 20),
            "node {i} memory {memory} vs {} MiB",
            mem
        );
        assert_eq!(
            facts["cpu"]["threads"], *cpus,
            "node {i}: {:#}",
            facts["cpu"]
        );
        let disks = facts["disks"].as_array().unwrap();
        let size_of = |serial: &str| {
            disks
                .iter()
                .find(|d| d["serial"] == serial)
                .and_then(|d| d["size_bytes"].as_u64())
        };
        assert_eq!(
            size_of(&format!("LABDISK{i}")),
            Some(disk << 20),
            "node {i}: {disks:#?}"
        );
        if let Some(n) = nvme {
            let d = disks
                .iter()
                .find(|d| d["serial"] == format!("LABNVME{i}"))
                .unwrap_or_else(|| panic!("node {i} NVMe missing: {disks:#?}"));
            assert_eq!(d["size_bytes"].as_u64(), Some(n << 20));
            assert_eq!(d["nvme"], true);
        }
        let mac = format!("52:54:00:99:00:{i:02x}");
        assert!(
            facts["nics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["mac"] == mac.as_str()),
            "node {i}: {:#}",
            facts["nics"]
        );
        // The timeline is the node's history: every transition, with cause and actor.
        let timeline: Vec<String> = api["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                format!(
                    "{}->{}",
                    t["from"].as_str().unwrap(),
                    t["to"].as_str().unwrap()
                )
            })
            .collect();
        let end = if i == 2 {
            "inspecting->failed"
        } else {
            "inspecting->inspected"
        };
        assert_eq!(
            timeline,
            ["(new)->discovered", "discovered->inspecting", end],
            "node {i}"
        );
        assert_eq!(api["refusals"], serde_json::json!([]), "node {i}");
    }
    // Node 0 was inspecting when the appliance died: its report came after, to the restarted
    // appliance, which still had the node, its token and its place in the plan.
    let inspected_at = summary[0]["api"]["inspected_at_ms"].as_i64().unwrap();
    assert!(
        inspected_at > killed_at_ms,
        "node 0 reported before the kill ({inspected_at} <= {killed_at_ms})"
    );

    let state = |i: usize| summary[i]["api"]["state"].clone();
    assert_eq!(state(0)["state"], "inspected", "{:#}", summary[0]["api"]);
    assert_eq!(summary[0]["api"]["slot"], "lab/r1/a01/U10");
    assert_eq!(state(1)["state"], "inspected", "{:#}", summary[1]["api"]);
    assert_eq!(summary[1]["api"]["slot"], "lab/r1/a01/U12");
    assert_eq!(state(2)["state"], "failed", "{:#}", summary[2]["api"]);
    assert_eq!(state(2)["step"], "inspecting");
    assert_eq!(
        state(2)["reason"],
        "not in the rack plan: no slot lists serial LAB-SN-9 or MAC 52:54:00:99:00:02"
    );
    // The agent printed what it was told.
    assert!(
        common::read(&dir.join("node2.console")).contains("not in the rack plan"),
        "node 2's console"
    );

    // The rack's installation checklist, started once the lab is over: the appliance ticked
    // the steps the booted QEMU nodes showed it (network boot, serial or MAC matched) in
    // their slots, with the evidence; the empty slot's stay open.
    let data = dir.join("data");
    let cli = |args: &[&str]| common::cli(&data, args);
    cli(&[
        "checklist",
        "start",
        "lab/r1/a01",
        "--type",
        "hgx-b200-air",
        "--by",
        "lab",
    ]);
    let checklist: serde_json::Value = serde_json::from_str(&cli(&[
        "checklist",
        "show",
        "lab/r1/a01",
        "--format",
        "json",
    ]))
    .expect("the checklist as JSON");
    let mac = |i: usize| summary[i]["mac"].as_str().expect("a MAC").to_string();
    for (slot, mac) in [("lab/r1/a01/U10", mac(0)), ("lab/r1/a01/U12", mac(1))] {
        for step in ["pxe-booted", "serial-matches"] {
            let s = checklist["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == step && s["slot"] == slot)
                .unwrap_or_else(|| panic!("no step {step} for {slot}"));
            assert_eq!(s["status"], "seen", "{step} of {slot}: {s:#}");
            assert!(
                s["evidence"].as_str().unwrap().contains(&mac),
                "{step} of {slot}: {s:#}"
            );
        }
    }

    // Power-on to inspected, for docs/benchmarks.md.
    for i in 0..2 {
        let on = summary[i]["powered_on_ms"].as_i64().unwrap();
        let at = summary[i]["api"]["inspected_at_ms"].as_i64().unwrap();
        eprintln!(
            "MEASURED node {i}: power-on to inspected {:.1} s",
            (at - on) as f64 / 1000.0
        );
    }
}
