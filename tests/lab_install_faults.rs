//! Installs that meet faults, in the virtual rack (three BIOS nodes, two disks each, one lab
//! and one image build for all three, so that CI pays for them once):
//!
//! - the appliance is killed with SIGKILL while node 0 downloads its image: the lab restarts
//!   it, as a service manager would, the agent resumes where the connection dropped, and the
//!   node finishes: installed, burned in, enrolled;
//! - node 1's power is pulled (its QEMU killed) in the middle of writing: its disk is left
//!   with no partition table (the first MiB is written last), and powered on again it boots
//!   the network, installs again and is enrolled;
//! - node 2's root device hint (`size=>=10`) matches both its disks: it fails at installing
//!   with a reason that names both, and neither disk is written.
//!
//! Every packet the nodes send goes to the appliance or stays on the segment.
//! Needs root, QEMU, nftables and the image tools (see `.ci/run`).

mod common;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};

use common::labrun::{
    LabRun, never_written, only_to_the_appliance, operator_config, phases, pid, plan, prepare,
    states,
};
use common::{read, wait_for};

const ENROLLED: &str = "this node is enrolled";
/// The agent's progress line while it downloads and writes.
const WRITING: &str = "install: download+write: received";

const NODES: [&str; 3] = [
    "mem=1536,cpus=1,disk=20480,nvme=20480",
    "mem=1536,cpus=1,disk=20480,nvme=20480",
    "mem=1024,cpus=1,disk=20480,nvme=20480",
];

/// Waits (at most 40 minutes) for `text` on node `i`'s console.
fn console_shows(dir: &std::path::Path, i: usize, text: &str) {
    let console = dir.join(format!("node{i}.console"));
    let seen = wait_for(Duration::from_secs(2400), || {
        read(&console).contains(text).then_some(())
    });
    assert!(
        seen.is_some(),
        "node {i} never showed {text:?}:\n{}",
        read(&console)
    );
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU, mmdebstrap) and the packages .ci/run installs"
)]
fn a_killed_appliance_a_pulled_plug_and_ambiguous_hints_each_end_as_they_should() {
    let Some((tmp, images)) = prepare() else {
        return;
    };
    let dir = tmp.path().join("lab");
    let plan = plan(
        tmp.path(),
        &images.name,
        &["serial=LABDISK0", "serial=LABDISK1", "size=>=10"],
    );
    let config = operator_config(tmp.path());
    let first = LabRun {
        dir: &dir,
        images: &images,
        plan: &plan,
        config: &config,
        nodes: &NODES,
        until: ENROLLED,
        limit: 3600,
    };
    let lab = first.start();

    // Node 0 is writing: the appliance dies under it.
    console_shows(&dir, 0, WRITING);
    let appliance = pid(&dir, "appliance");
    kill(appliance, Signal::SIGKILL).expect("kill the appliance");
    // Node 1 is writing: its plug is pulled.
    console_shows(&dir, 1, WRITING);
    kill(pid(&dir, "node1"), Signal::SIGKILL).expect("kill node 1's QEMU");
    let summary = first.finish(lab);
    let lab_out = read(&dir.with_extension("out"));
    assert!(
        lab_out.contains("the appliance died; restarting it"),
        "{lab_out}"
    );
    assert_ne!(pid(&dir, "appliance"), appliance, "a new appliance runs");

    // Node 0 finished its install through the restart.
    let api = &summary[0]["api"];
    let console = read(&dir.join("node0.console"));
    assert_eq!(
        api["state"]["state"], "enrolled",
        "node 0: {api:#}\n{console}"
    );
    assert!(
        console.contains("first-boot files written") && console.contains(ENROLLED),
        "node 0:\n{console}"
    );
    phases(&summary, 0);
    // It resumed the download the appliance's death cut.
    let done = console
        .lines()
        .find(|l| l.contains("written and read back"))
        .expect("node 0's install summary line");
    eprintln!("MEASURED node 0 install: {}", done.trim());
    let retries: u32 = done
        .split(", ")
        .find_map(|part| part.strip_suffix(" retries")?.trim().parse().ok())
        .expect("the install line counts retries");
    assert!(retries >= 1, "node 0 never resumed: {done}");

    // Node 1 lost power mid-write: still installing, and its disk has no partition table.
    let api = &summary[1]["api"];
    assert_eq!(
        api["state"]["state"],
        "installing",
        "node 1: {api:#}\n{}",
        read(&dir.join("node1.console"))
    );
    let disk = std::fs::read(dir.join("node1.virtio.img")).unwrap();
    assert!(
        disk[..1 << 20].iter().all(|b| *b == 0),
        "node 1's disk has something in its first MiB: it could boot"
    );
    assert!(
        !never_written(&dir.join("node1.virtio.img")),
        "node 1's write had begun"
    );
    drop(disk);

    // Node 2's hint matched both disks: failed, naming both; neither written.
    let api = &summary[2]["api"];
    assert_eq!(api["state"]["state"], "failed", "node 2: {api:#}");
    assert_eq!(api["state"]["step"], "installing", "node 2: {api:#}");
    let reason = api["state"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("vda") && reason.contains("nvme0n1"),
        "node 2's reason names both disks: {reason}"
    );
    for disk in ["virtio", "nvme"] {
        assert!(never_written(&dir.join(format!("node2.{disk}.img"))));
    }
    for i in 0..3 {
        only_to_the_appliance(&summary, i);
    }

    // Node 1 (and node 0) powered on again: node 1 installs again from the start and is
    // enrolled; node 0 boots its disk.
    for i in 0..2 {
        std::fs::rename(
            dir.join(format!("node{i}.console")),
            dir.join(format!("node{i}.first.console")),
        )
        .unwrap();
    }
    let again = LabRun {
        nodes: &NODES[..2],
        limit: 2400,
        ..first
    }
    .run();
    let api = &again[1]["api"];
    let console = read(&dir.join("node1.console"));
    assert_eq!(
        api["state"]["state"], "enrolled",
        "node 1: {api:#}\n{console}"
    );
    assert!(
        console.contains("provisioner-discovery: up")
            && console.contains("first-boot files written")
            && console.contains(ENROLLED),
        "node 1 after the power cycle:\n{console}"
    );
    assert_eq!(
        states(api).iter().filter(|s| *s == "enrolled").count(),
        1,
        "node 1: {:#}",
        api["timeline"]
    );
    assert_eq!(again[0]["api"]["state"]["state"], "enrolled");
    for i in 0..2 {
        only_to_the_appliance(&again, i);
    }
}
