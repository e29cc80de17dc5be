//! The host and Neuron burn-ins on this machine, with tiny sizes and times: temporary files
//! as disks, a temporary tree as /sys, and for the Neuron tools scripts that print the
//! recorded outputs of `tests/neuron/` (see its README), hang, or are missing. Production
//! code is driven only through its own interfaces: paths, roots and tool paths.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use provisioner_agent::burnin::host::{self, disk, memory};
use provisioner_agent::burnin::neuron::{self, Env, ls, monitor, nccom, sysfs, tool};
use provisioner_protocol::burnin::{BurnInPlan, DeviceKind, DeviceResult, checks};
use provisioner_protocol::{Cpu, Disk, Facts, Nic};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/neuron")
        .join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(data(rel)).unwrap()
}

fn plan(timeout: u32) -> BurnInPlan {
    BurnInPlan {
        gemm_seconds: 0,
        hbm_fraction: 0.9,
        cpu_seconds: 0,
        memory_fraction: 0.0,
        disk_read_bytes: 0,
        disks_writable: Vec::new(),
        nic_speed_mbps: None,
        tool_timeout_seconds: timeout,
        only: Vec::new(),
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn counters(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

// ---- Neuron: parsers on the recorded samples ----

#[test]
fn neuron_ls_of_the_user_guide_lists_sixteen_trainium2_devices() {
    let devices = ls::parse(&read("neuron-ls/trn2n-48xlarge.json")).unwrap();
    assert_eq!(devices.len(), 16);
    assert_eq!(
        devices[0],
        ls::NeuronDevice {
            index: 0,
            address: "0000:cc:00.0".into(),
            cores: 4,
            memory_bytes: 96 << 30,
        }
    );
    assert_eq!(devices[15].address, "0000:f7:00.0");
    assert!(
        devices
            .iter()
            .all(|d| d.memory_bytes == 96 << 30 && d.cores == 4)
    );
}

#[test]
fn neuron_ls_of_a_trn1_keeps_its_domain_and_has_no_neighbours() {
    let devices = ls::parse(&read("neuron-ls/trn1-2xlarge.json")).unwrap();
    assert_eq!(
        devices,
        [ls::NeuronDevice {
            index: 0,
            address: "0000:00:1e.0".into(),
            cores: 2,
            memory_bytes: 32 << 30,
        }]
    );
}

#[test]
fn sysfs_counters_before_driver_2_31() {
    let root = data("sysfs/before-2.31");
    let c = sysfs::read(&root, 0).unwrap();
    assert_eq!(c.layout, sysfs::Layout::Before2_31);
    assert_eq!(
        c.values,
        counters(&[
            ("hw_collectives_error", 0),
            ("hw_dma_abort_error", 0),
            ("hw_hbm_ue_error", 0),
            // Core 0's 1, once: the link to core 0 is not followed.
            ("hw_nc_ue_error", 1),
            ("hw_repairable_hbm_ue_error", 0),
            ("mem_ecc_repairable_uncorrected", 0),
            ("mem_ecc_uncorrected", 0),
            ("sram_ecc_uncorrected", 0),
        ])
    );
    assert_eq!(
        sysfs::read(&root, 1).unwrap().values["mem_ecc_uncorrected"],
        2
    );
    assert_eq!(sysfs::device_name(&root, 0).as_deref(), Some("Trainium2"));
    assert_eq!(sysfs::driver_version(&root).as_deref(), Some("2.30.12.0"));
    assert!(matches!(
        sysfs::read(&root, 7),
        Err(sysfs::SysfsError::NoDevice(_))
    ));
}

#[test]
fn sysfs_counters_from_driver_2_31_wherever_they_moved() {
    let root = data("sysfs/from-2.31");
    let c = sysfs::read(&root, 1).unwrap();
    assert_eq!(c.layout, sysfs::Layout::From2_31);
    assert_eq!(
        c.values,
        counters(&[
            ("hw_collectives_error", 0),
            ("hw_dma_abort_error", 0),
            ("hw_hbm_ue_error", 0),
            ("hw_nc_ue_error", 1),
            ("mem_ecc_corrected", 5),
            ("mem_ecc_repairable_uncorrected", 0),
            ("mem_ecc_uncorrected", 2),
            ("sram_ecc_corrected", 0),
            ("sram_ecc_uncorrected", 0),
        ])
    );
}

#[test]
fn sysfs_without_counters_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(sysfs::device_dir(tmp.path(), 0).join("info")).unwrap();
    assert!(matches!(
        sysfs::read(tmp.path(), 0),
        Err(sysfs::SysfsError::NoCounters(_))
    ));
}

#[test]
fn neuron_monitor_hardware_counters() {
    let line = read("neuron-monitor/hw-counters.jsonl");
    let hw = monitor::parse_line(&line).unwrap().unwrap();
    assert_eq!(hw.len(), 2);
    assert_eq!(
        hw[&1],
        counters(&[
            ("mem_ecc_corrected", 3),
            ("mem_ecc_uncorrected", 0),
            ("sram_ecc_corrected", 1),
            ("sram_ecc_uncorrected", 0),
        ])
    );
}

#[test]
fn nccom_test_outputs() {
    let sweep = nccom::parse(&read("nccom-test/allr-fp32-sweep.txt"));
    assert_eq!(sweep.rows.len(), 11);
    assert_eq!(sweep.busbw(), Some(52.83));
    assert_eq!(sweep.average_busbw, Some(23.6671));
    assert_eq!((sweep.wrong_results, sweep.failures.len()), (0, 0));

    let failure = nccom::parse(&read("nccom-test/allr-failure.txt"));
    assert_eq!(failure.wrong_results, 0);
    assert_eq!(
        failure.failures,
        ["33554432 B: Failure running neuron-bench - log file /tmp/nccom_test_log_7pqpdfjf.log"]
    );
    assert_eq!(failure.busbw(), None);

    let wrong = nccom::parse(&read("nccom-test/allr-check-wrong-result.txt"));
    assert_eq!(wrong.wrong_results, 1);
    assert!(wrong.failures.is_empty());
}

// ---- Neuron: the run, with scripts for tools ----

const MEM_UE_BEFORE: &str =
    "sys/devices/virtual/neuron_device/neuron1/stats/hardware/mem_ecc_uncorrected";
const MEM_UE_FROM: &str =
    "sys/devices/virtual/neuron_device/neuron1/hardware/ecc/mem_ecc_uncorrected/total";

/// A node of two trn2 devices: a copy of a recorded tree, neuron-ls printing devices 0 and 1
/// of the user guide's sample, and whatever nccom-test and neuron-monitor the test gives.
struct Node {
    tmp: tempfile::TempDir,
    env: Env,
    facts: Facts,
}

impl Node {
    fn new(layout: &str) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        copy_tree(&data(&format!("sysfs/{layout}")), &root);
        let all: Vec<serde_json::Value> =
            serde_json::from_str(&read("neuron-ls/trn2n-48xlarge.json")).unwrap();
        let listing = tmp.path().join("neuron-ls.json");
        fs::write(&listing, serde_json::to_string(&all[..2]).unwrap()).unwrap();
        let neuron_ls = script(
            tmp.path(),
            "neuron-ls",
            &format!("cat '{}'", listing.display()),
        );
        let facts = Facts {
            neuron_devices: vec!["0000:cc:00.0".into(), "0000:b5:00.0".into()],
            ..Facts::default()
        };
        let env = Env {
            root,
            tools: tool::Tools {
                neuron_ls: Some(neuron_ls),
                neuron_monitor: None,
                nccom_test: None,
            },
        };
        Node { tmp, env, facts }
    }

    /// nccom-test printing `output` and exiting `status`, after running `then`.
    fn nccom(mut self, output: &str, status: u8, then: &str) -> Node {
        let body = format!("{then}\ncat '{}'\nexit {status}", data(output).display());
        self.env.tools.nccom_test = Some(script(self.tmp.path(), "nccom-test", &body));
        self
    }

    fn run(&self, plan: &BurnInPlan) -> (Vec<DeviceResult>, Vec<String>) {
        let mut said = Vec::new();
        let results = neuron::run_in(plan, &self.facts, &self.env, &mut |l| {
            said.push(l.to_string())
        });
        (results, said)
    }
}

#[test]
fn a_clean_run_in_either_sysfs_layout_reports_a_new_ecc_error() {
    for (layout, counter) in [("before-2.31", MEM_UE_BEFORE), ("from-2.31", MEM_UE_FROM)] {
        let node = Node::new(layout);
        // Device 1 logs one more uncorrectable memory error during the all-reduce.
        let inject = format!(
            "printf '3\\n' > '{}'",
            node.env.root.join(counter).display()
        );
        let node = node.nccom("nccom-test/allr-fp32-sweep.txt", 0, &inject);
        let (results, said) = node.run(&plan(10));
        assert_eq!(results.len(), 2, "{layout}: {results:?}");
        for (r, id) in results.iter().zip(["0000:cc:00.0", "0000:b5:00.0"]) {
            assert_eq!(r.id, id);
            assert_eq!(r.kind, Some(DeviceKind::Neuron));
            assert_eq!(r.cannot_validate, None, "{layout}: {r:?}");
            assert_eq!(r.model.as_deref(), Some("Trainium2"));
            assert_eq!(r.driver.as_deref(), Some("2.30.12.0"));
            let busbw = &r.measurements[checks::COLLECTIVE_BUSBW];
            assert_eq!(
                (busbw.value, busbw.unit.as_str(), busbw.attempt),
                (52.83, "GB/s", 1)
            );
            assert_eq!(r.measurements[neuron::DEVICE_MEMORY].value, 96.0);
            assert_eq!(r.counters[checks::COLLECTIVE_WRONG_RESULTS], 0);
            // Core 0's old NeuronCore error is not the run's.
            assert_eq!(r.counters["hw_nc_ue_error"], 0);
        }
        assert_eq!(results[0].counters["mem_ecc_uncorrected"], 0);
        assert_eq!(results[1].counters["mem_ecc_uncorrected"], 1, "{layout}");
        assert!(said.iter().any(|l| l.contains("52.83 GB/s")), "{said:?}");
    }
}

#[test]
fn a_wrong_collective_result_is_counted_on_every_device() {
    let node = Node::new("before-2.31").nccom("nccom-test/allr-check-wrong-result.txt", 1, "");
    let (results, _) = node.run(&plan(10));
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.counters[checks::COLLECTIVE_WRONG_RESULTS], 1, "{r:?}");
        assert_eq!(r.cannot_validate, None);
        assert_eq!(r.measurements[checks::COLLECTIVE_BUSBW].value, 52.83);
    }
}

#[test]
fn a_collective_that_did_not_run_cannot_be_validated() {
    let node = Node::new("before-2.31").nccom("nccom-test/allr-failure.txt", 1, "");
    let (results, _) = node.run(&plan(10));
    for r in &results {
        let why = r.cannot_validate.as_deref().unwrap();
        assert!(why.contains("Failure running neuron-bench"), "{why}");
        assert!(!r.measurements.contains_key(checks::COLLECTIVE_BUSBW));
        assert_eq!(r.counters[checks::COLLECTIVE_WRONG_RESULTS], 0);
    }
}

#[test]
fn a_missing_tool_or_driver_is_never_a_pass() {
    let mut node = Node::new("before-2.31");
    let (results, _) = node.run(&plan(10));
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| r.cannot_validate.as_deref() == Some("nccom-test not found"))
    );

    node.env.tools.neuron_ls = None;
    let (results, _) = node.run(&plan(10));
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.cannot_validate.as_deref(), Some("neuron-ls not found"));
        assert_eq!(r.kind, Some(DeviceKind::Neuron));
    }

    node.env.root = node.tmp.path().join("no-driver");
    let (results, _) = node.run(&plan(10));
    assert_eq!(
        results[0].cannot_validate.as_deref(),
        Some("no Neuron driver (/sys/devices/virtual/neuron_device missing)")
    );
}

#[test]
fn a_hung_neuron_ls_times_out() {
    let mut node = Node::new("before-2.31").nccom("nccom-test/allr-fp32-sweep.txt", 0, "");
    // The sleep is the script's child: the kill must reach it too, or its open output would
    // keep the run waiting.
    node.env.tools.neuron_ls = Some(script(
        node.tmp.path(),
        "neuron-ls-hangs",
        "sleep 60\necho '[]'",
    ));
    let start = Instant::now();
    let (results, _) = node.run(&plan(1));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(
            r.cannot_validate.as_deref(),
            Some("neuron-ls timed out after 1 s")
        );
    }
}

#[test]
fn a_hung_nccom_test_times_out_and_the_counters_are_still_read() {
    let node = Node::new("from-2.31").nccom("nccom-test/allr-fp32-sweep.txt", 0, "sleep 60");
    let start = Instant::now();
    let (results, _) = node.run(&plan(1));
    assert!(start.elapsed() < Duration::from_secs(10));
    for r in &results {
        assert_eq!(
            r.cannot_validate.as_deref(),
            Some("nccom-test timed out after 1 s")
        );
        assert_eq!(r.counters["mem_ecc_uncorrected"], 0);
        assert!(!r.counters.contains_key(checks::COLLECTIVE_WRONG_RESULTS));
    }
}

#[test]
fn neuron_monitor_adds_the_corrected_counts() {
    let node = Node::new("before-2.31");
    let state = node.tmp.path().join("monitor-line");
    let line = read("neuron-monitor/hw-counters.jsonl");
    fs::write(&state, &line).unwrap();
    // Device 1 corrects two more memory errors during the all-reduce.
    let after = line.replace("\"mem_ecc_corrected\":3", "\"mem_ecc_corrected\":5");
    let after_file = node.tmp.path().join("monitor-after");
    fs::write(&after_file, after).unwrap();
    let inject = format!("cp '{}' '{}'", after_file.display(), state.display());
    let mut node = node.nccom("nccom-test/allr-fp32-sweep.txt", 0, &inject);
    // neuron-monitor streams until stopped: the script prints its report and waits.
    node.env.tools.neuron_monitor = Some(script(
        node.tmp.path(),
        "neuron-monitor",
        &format!("echo starting >&2\ncat '{}'\nsleep 60", state.display()),
    ));
    let start = Instant::now();
    let (results, _) = node.run(&plan(10));
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(results[0].counters["mem_ecc_corrected"], 0);
    assert_eq!(results[1].counters["mem_ecc_corrected"], 2);
    assert_eq!(results[1].counters["sram_ecc_corrected"], 0);
    assert!(results.iter().all(|r| r.cannot_validate.is_none()));
}

#[test]
fn a_device_neuron_ls_does_not_list_is_reported() {
    let mut node = Node::new("before-2.31").nccom("nccom-test/allr-fp32-sweep.txt", 0, "");
    node.facts.neuron_devices.push("0000:10:1c.0".into());
    let (results, _) = node.run(&plan(10));
    assert_eq!(results.len(), 3);
    assert_eq!(results[2].id, "0000:10:1c.0");
    assert_eq!(
        results[2].cannot_validate.as_deref(),
        Some("not listed by neuron-ls")
    );
}

#[test]
fn a_retry_runs_only_the_named_devices() {
    let node = Node::new("before-2.31").nccom("nccom-test/allr-fp32-sweep.txt", 0, "");
    let mut plan = plan(10);
    plan.only = vec![("0000:b5:00.0".into(), checks::COLLECTIVE_BUSBW.into())];
    let (results, _) = node.run(&plan);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].id, "0000:b5:00.0");
    assert_eq!(results[0].measurements[checks::COLLECTIVE_BUSBW].attempt, 2);
}

#[test]
fn a_neuron_ls_that_knows_only_the_newer_option_is_asked_again() {
    let mut node = Node::new("before-2.31").nccom("nccom-test/allr-fp32-sweep.txt", 0, "");
    let listing = data("neuron-ls/trn1-2xlarge.json");
    node.facts.neuron_devices = vec!["0000:00:1e.0".into()];
    node.env.tools.neuron_ls = Some(script(
        node.tmp.path(),
        "neuron-ls-2.34",
        &format!(
            "if [ \"$1\" = --json-output ]; then echo 'unknown flag: --json-output' >&2; exit 2; fi\ncat '{}'",
            listing.display()
        ),
    ));
    let (results, _) = node.run(&plan(10));
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].measurements[neuron::DEVICE_MEMORY].value, 32.0);
}

#[test]
fn the_tool_runner_reports_failures_with_their_output() {
    let tmp = tempfile::tempdir().unwrap();
    let failing = script(
        tmp.path(),
        "failing",
        "echo out\necho 'it broke' >&2\nexit 3",
    );
    match tool::run("failing", &failing, &[], Duration::from_secs(5)) {
        Err(tool::ToolError::Failed { stdout, stderr, .. }) => {
            assert_eq!(stdout, "out\n");
            assert_eq!(stderr, "it broke\n");
        }
        other => panic!("{other:?}"),
    }
    let missing = tmp.path().join("absent");
    assert!(matches!(
        tool::run("absent", &missing, &[], Duration::from_secs(5)),
        Err(tool::ToolError::NotFound { .. })
    ));
    let found = tool::Tools::find(&[tmp.path().to_path_buf()]);
    assert_eq!(found.neuron_ls, None);
}

// ---- Host ----

const MIB: u64 = 1 << 20;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8))
        .flat_map(|i| memory::splitmix64(seed + i as u64).to_le_bytes())
        .take(len)
        .collect()
}

/// A machine of temporary files: two 3 MiB "disks" a and b, a /sys/class/net with eth0 at
/// 25 Gb/s and eth1 without a cable, and a /proc/meminfo.
struct Host {
    _tmp: tempfile::TempDir,
    env: host::Env,
    facts: Facts,
}

impl Host {
    fn new(mem_available_kib: u64) -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path().join("dev");
        fs::create_dir(&dev).unwrap();
        for (name, seed) in [("a", 1), ("b", 2)] {
            fs::write(dev.join(name), random_bytes(3 * MIB as usize, seed)).unwrap();
        }
        let net = tmp.path().join("net");
        for (name, speed, carrier) in [("eth0", Some("25000"), "1"), ("eth1", None, "0")] {
            fs::create_dir_all(net.join(name)).unwrap();
            fs::write(net.join(name).join("carrier"), format!("{carrier}\n")).unwrap();
            if let Some(speed) = speed {
                fs::write(net.join(name).join("speed"), format!("{speed}\n")).unwrap();
            }
        }
        let meminfo = tmp.path().join("meminfo");
        fs::write(
            &meminfo,
            format!("MemTotal:       24731708 kB\nMemAvailable:   {mem_available_kib} kB\n"),
        )
        .unwrap();
        let disk = |name: &str| Disk {
            name: name.into(),
            size_bytes: 3 * MIB,
            model: Some("scratch file".into()),
            ..Disk::default()
        };
        let nic = |name: &str| Nic {
            name: name.into(),
            ..Nic::default()
        };
        let facts = Facts {
            cpu: Cpu {
                model: Some("Test CPU".into()),
                ..Cpu::default()
            },
            disks: vec![disk("a"), disk("b")],
            nics: vec![nic("eth0"), nic("eth1")],
            ..Facts::default()
        };
        let env = host::Env { dev, net, meminfo };
        Host {
            _tmp: tmp,
            env,
            facts,
        }
    }

    fn run(&self, plan: &BurnInPlan) -> (BTreeMap<String, DeviceResult>, Vec<String>) {
        let mut said = Vec::new();
        let results = host::run_in(plan, &self.facts, &self.env, &mut |l| {
            said.push(l.to_string())
        });
        (
            results.into_iter().map(|r| (r.id.clone(), r)).collect(),
            said,
        )
    }

    fn disk(&self, name: &str) -> Vec<u8> {
        fs::read(self.env.dev.join(name)).unwrap()
    }
}

fn host_plan() -> BurnInPlan {
    BurnInPlan {
        memory_fraction: 0.02,
        disk_read_bytes: 2 * MIB,
        disks_writable: vec!["b".into()],
        nic_speed_mbps: Some(100_000),
        ..plan(30)
    }
}

#[test]
fn the_host_burn_in_measures_every_device_and_writes_only_where_allowed() {
    // 272 MiB available, 2% asked: about 5 MiB tested, the reserve untouched.
    let host = Host::new(272 * 1024);
    let a = host.disk("a");
    let b = host.disk("b");
    let (results, said) = host.run(&host_plan());
    assert_eq!(
        results.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "cpu", "eth0", "eth1", "memory"]
    );

    let cpu = &results["cpu"];
    assert_eq!(cpu.kind, Some(DeviceKind::Cpu));
    assert_eq!(cpu.model.as_deref(), Some("Test CPU"));
    assert!(cpu.measurements[checks::CPU_GFLOPS].value > 0.0);
    assert_eq!(cpu.measurements[checks::CPU_GFLOPS].unit, "GFLOP/s");
    assert_eq!(cpu.counters[host::CPU_MISMATCHES], 0);

    let mem = &results["memory"];
    assert_eq!(mem.cannot_validate, None, "{mem:?}");
    assert_eq!(mem.counters[checks::MEMORY_BAD_WORDS], 0);
    let tested = mem.measurements[host::MEMORY_TESTED].value;
    assert!(tested > 0.004 && tested < 0.006, "{tested} GiB");

    // a is only read; b is read, then written and verified in its scratch regions.
    assert_eq!(host.disk("a"), a);
    assert_ne!(host.disk("b"), b);
    for name in ["a", "b"] {
        let r = &results[name];
        assert_eq!(r.cannot_validate, None, "{r:?}");
        assert!(r.measurements[checks::SEQUENTIAL_READ].value > 0.0);
        assert_eq!(r.measurements[checks::SEQUENTIAL_READ].unit, "MB/s");
    }
    assert!(
        !results["a"]
            .counters
            .contains_key(checks::DISK_VERIFY_ERRORS)
    );
    assert_eq!(results["b"].counters[checks::DISK_VERIFY_ERRORS], 0);
    assert!(
        said.iter().any(|l| l.starts_with("b: writable by the plan: write-read-verify at byte offsets 0+")),
        "{said:?}"
    );

    // The plan cabled for 100 Gb/s: eth0's 25 Gb/s is reported for the appliance to judge;
    // eth1 has no link.
    assert_eq!(
        results["eth0"].measurements[checks::LINK_SPEED].value,
        25_000.0
    );
    assert_eq!(results["eth0"].cannot_validate, None);
    assert_eq!(
        results["eth1"].cannot_validate.as_deref(),
        Some("link down")
    );
    assert!(
        !results["eth1"]
            .measurements
            .contains_key(checks::LINK_SPEED)
    );
}

#[test]
fn no_disk_outside_the_plan_is_ever_writable() {
    let host = Host::new(272 * 1024);
    let plan = host_plan();
    assert!(disk::WritableDisk::from_plan(&plan, "a", &host.env.dev).is_none());
    assert!(disk::WritableDisk::from_plan(&plan, "b", &host.env.dev).is_some());
    let untouched = host.disk("b");
    let (results, _) = host.run(&BurnInPlan {
        disks_writable: Vec::new(),
        ..plan
    });
    assert_eq!(host.disk("b"), untouched);
    assert!(
        !results["b"]
            .counters
            .contains_key(checks::DISK_VERIFY_ERRORS)
    );
}

#[test]
fn a_retry_runs_only_its_pairs() {
    let host = Host::new(272 * 1024);
    let before = host.disk("b");
    let mut plan = host_plan();
    plan.only = vec![("b".into(), checks::SEQUENTIAL_READ.into())];
    let (results, _) = host.run(&plan);
    assert_eq!(results.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(
        results["b"].measurements[checks::SEQUENTIAL_READ].attempt,
        2
    );
    // The retry is of the read: the verify (a counter, never retried) does not run again.
    assert_eq!(host.disk("b"), before);
}

#[test]
fn steps_that_run_out_of_time_say_so() {
    let host = Host::new(272 * 1024);
    let (results, _) = host.run(&BurnInPlan {
        tool_timeout_seconds: 0,
        ..host_plan()
    });
    let mem = results["memory"].cannot_validate.as_deref().unwrap();
    assert!(
        mem.starts_with("memory pattern test timed out after 0 s"),
        "{mem}"
    );
    let read = results["a"].cannot_validate.as_deref().unwrap();
    assert!(
        read.starts_with("sequential read timed out after 0 s"),
        "{read}"
    );
    // The CPU's time is its own duration plus the timeout: one round, still checked.
    assert_eq!(results["cpu"].cannot_validate, None);
}

#[test]
fn memory_is_never_taken_into_the_reserve() {
    // MemAvailable is all reserve: nothing can be tested, and that is said.
    let host = Host::new(memory::RESERVE_BYTES / 1024);
    let (results, _) = host.run(&BurnInPlan {
        memory_fraction: 0.9,
        ..host_plan()
    });
    assert_eq!(
        results["memory"].measurements[host::MEMORY_TESTED].value,
        0.0
    );
    let why = results["memory"].cannot_validate.as_deref().unwrap();
    assert!(why.starts_with("no memory could be taken"), "{why}");
}

#[test]
fn a_sequential_read_of_a_file_as_a_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("disk");
    fs::write(&path, random_bytes(3 * MIB as usize + 100, 9)).unwrap();
    let far = Instant::now() + Duration::from_secs(30);
    let run = disk::sequential_read(&path, 5 * MIB, far).unwrap();
    // All of it that is whole blocks: the read stops at the end of the file.
    assert!(
        run.bytes >= 3 * MIB && run.bytes <= 3 * MIB + 100,
        "{run:?}"
    );
    assert!(!run.timed_out);
    let run = disk::sequential_read(&path, 2 * MIB + 10, far).unwrap();
    assert_eq!(run.bytes, 2 * MIB);
    let late = disk::sequential_read(&path, 2 * MIB, Instant::now()).unwrap();
    assert!(late.timed_out && late.bytes == 0);
    assert!(matches!(
        disk::sequential_read(&tmp.path().join("absent"), MIB, far),
        Err(disk::DiskError::Open { .. })
    ));
}

#[test]
fn write_read_verify_leaves_each_block_holding_its_own_pattern() {
    let host = Host::new(272 * 1024);
    let scratch = disk::WritableDisk::from_plan(&host_plan(), "b", &host.env.dev).unwrap();
    let regions = disk::scratch_regions(3 * MIB, 3 * 64 * 1024);
    let far = Instant::now() + Duration::from_secs(30);
    let v = disk::write_read_verify(&scratch, &regions, 77, far).unwrap();
    assert_eq!((v.blocks, v.bad_blocks), (3 * 16, 0));
    let contents = host.disk("b");
    let mut want = vec![0u8; disk::ALIGN];
    for region in &regions {
        let at = region.offset as usize;
        disk::block_pattern(&mut want, region.offset, 77);
        assert_eq!(&contents[at..at + disk::ALIGN], &want[..]);
    }
}
