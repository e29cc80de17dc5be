//! The agent's conversation with the appliance: report the facts, then ask what to do next
//! until told to power off or reboot. The appliance decides; the agent reports and obeys.
//! Every wait is printed, so a console reader always knows what the node is doing.

use std::time::Duration;

use provisioner_protocol::burnin::{BurnInPlan, BurnInReport};
use provisioner_protocol::drivers::{DriverReport, DriverSet, DriversReport};
use provisioner_protocol::install::{
    InstallOutcome, InstallPlan, InstallReport, InstalledReport, TargetDisk,
};
use provisioner_protocol::{Facts, InspectionReport, Instruction};

use crate::appliance::{Answer, Appliance};
use crate::backoff::Backoff;
use crate::cmdline::MacAddr;

/// The appliance's two calls, as the session uses them.
pub trait Api {
    fn report(&self, report: &InspectionReport) -> Answer<()>;
    fn burnin(&self, report: &BurnInReport) -> Answer<()>;
    fn install(&self, report: &InstallReport) -> Answer<()>;
    fn installed(&self, report: &InstalledReport) -> Answer<()>;
    fn drivers(&self, report: &DriversReport) -> Answer<()>;
    fn next(&self, mac: &str) -> Answer<Instruction>;
}

impl Api for Appliance {
    fn report(&self, report: &InspectionReport) -> Answer<()> {
        Appliance::report(self, report)
    }

    fn burnin(&self, report: &BurnInReport) -> Answer<()> {
        Appliance::burnin(self, report)
    }

    fn install(&self, report: &InstallReport) -> Answer<()> {
        Appliance::install(self, report)
    }

    fn installed(&self, report: &InstalledReport) -> Answer<()> {
        Appliance::installed(self, report)
    }

    fn drivers(&self, report: &DriversReport) -> Answer<()> {
        Appliance::drivers(self, report)
    }

    fn next(&self, mac: &str) -> Answer<Instruction> {
        Appliance::next(self, mac)
    }
}

/// What the session needs from the node besides the appliance.
pub trait Node {
    /// One line for the console.
    fn say(&mut self, line: &str);
    fn sleep(&mut self, duration: Duration);
    /// The node's facts, read afresh for each report.
    fn facts(&mut self) -> Facts;
    /// Runs the burn-in the appliance asked for; every device's results, or why it could not
    /// be validated.
    fn burn_in(&mut self, plan: &BurnInPlan) -> BurnInReport;
    /// Writes the image the appliance named to the disk it chose; how it went (the report's
    /// `mac` is filled in by the session).
    fn install(&mut self, plan: &InstallPlan) -> InstallReport;
    /// Wipes the signatures of the disk an earlier install of `image` wrote; how it went.
    fn wipe(&mut self, image: &str, disk: &TargetDisk) -> InstallReport;
    /// Checks the driver set on this (installed) system.
    fn verify_drivers(&mut self, set: &DriverSet) -> DriverReport;
}

/// How the session ends: the node is to go down, and why.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    PowerOff { reason: String },
    Reboot { reason: String },
}

/// The shortest wait between two questions, whatever the appliance says.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// Reports, then asks what to do next and does it, until told to power off or reboot.
pub fn run(api: &impl Api, mac: &MacAddr, node: &mut impl Node) -> Ending {
    converse(api, mac, node, true)
}

/// The installed system's session: says what it booted (`installed`), then asks what to do
/// next and does it, until told to power off or reboot. Its facts were reported by the
/// discovery image before the install: it does not report them again.
pub fn run_installed(api: &impl Api, booted: &InstalledReport, node: &mut impl Node) -> Ending {
    let mut backoff = Backoff::default();
    loop {
        match api.installed(booted) {
            Answer::Done(()) => {
                node.say(&format!(
                    "reported the installed system: {} (kernel {})",
                    booted.image, booted.kernel_release
                ));
                break;
            }
            // Already taken (a restarted agent), or wrong: the appliance says what next.
            Answer::Refused(why) => {
                node.say(&format!("{why}; asking what to do next"));
                break;
            }
            Answer::Retry(why) => wait_to_retry(&why, &mut backoff, node),
        }
    }
    converse(api, &booted.mac, node, false)
}

fn converse(api: &impl Api, mac: &MacAddr, node: &mut impl Node, report_first: bool) -> Ending {
    let mut report_due = report_first;
    let mut refused = false;
    // An appliance that refuses the report and asks for it again must not be hammered.
    let mut refusals = Backoff::default();
    loop {
        if report_due {
            refused = !report(api, mac, node);
            if !refused {
                refusals = Backoff::default();
            }
        }
        match ask(api, mac, node) {
            Instruction::Report => {
                if refused {
                    let why = "appliance asks again for the report it refused";
                    wait_to_retry(why, &mut refusals, node);
                }
                report_due = true;
            }
            Instruction::Wait { seconds, reason } => {
                report_due = false;
                let wait = Duration::from_secs(seconds.into()).max(MIN_WAIT);
                node.say(&format!(
                    "waiting {}s before asking again: {reason}",
                    wait.as_secs()
                ));
                node.sleep(wait);
            }
            Instruction::BurnIn { plan } => {
                report_due = false;
                let mut results = node.burn_in(&plan);
                results.mac = Some(*mac);
                send_burnin(api, &results, node);
            }
            Instruction::Install { plan } => {
                report_due = false;
                let mut result = node.install(&plan);
                result.mac = *mac;
                send_install(api, &result, node);
            }
            Instruction::VerifyDrivers { set } => {
                report_due = false;
                node.say(&format!(
                    "checking driver set {} ({} packages from suite {})",
                    set.name,
                    set.packages.len(),
                    set.suite
                ));
                let report = DriversReport {
                    mac: *mac,
                    report: node.verify_drivers(&set),
                };
                send_drivers(api, &report, node);
            }
            Instruction::Wipe {
                image,
                disk,
                reason,
            } => {
                node.say(&format!("wiping {}: {reason}", disk.name));
                let mut result = node.wipe(&image, &disk);
                result.mac = *mac;
                send_install(api, &result, node);
            }
            Instruction::PowerOff { reason } => return Ending::PowerOff { reason },
            Instruction::Reboot { reason } => return Ending::Reboot { reason },
        }
    }
}

/// Sends how the install went until the appliance takes or refuses it; either way the
/// appliance then says what comes next (reboot into the disk, or power off failed).
fn send_install(api: &impl Api, result: &InstallReport, node: &mut impl Node) {
    let mut backoff = Backoff::default();
    loop {
        match api.install(result) {
            Answer::Done(()) => {
                node.say(&match &result.outcome {
                    InstallOutcome::Written => format!(
                        "reported the install of {}: {} MiB written and read back in {:.0} s",
                        result.image,
                        result.written_bytes >> 20,
                        result.seconds
                    ),
                    InstallOutcome::Wiped => {
                        format!("reported the wipe of the disk of {}", result.image)
                    }
                    InstallOutcome::Failed { stage, reason } => {
                        format!("reported the failure ({stage}): {reason}")
                    }
                });
                return;
            }
            Answer::Refused(why) => {
                node.say(&format!("{why}; asking what to do next"));
                return;
            }
            Answer::Retry(why) => wait_to_retry(&why, &mut backoff, node),
        }
    }
}

/// Sends the driver report until the appliance takes or refuses it; either way the appliance
/// then says what comes next (burn-in, or power off failed).
fn send_drivers(api: &impl Api, report: &DriversReport, node: &mut impl Node) {
    let mut backoff = Backoff::default();
    loop {
        match api.drivers(report) {
            Answer::Done(()) => {
                let r = &report.report;
                node.say(&match r.failed() {
                    Some(c) => format!("reported driver set {}: {} failed: {}", r.set, c.check, c.detail),
                    None => format!(
                        "reported driver set {}: {} checks, none failed ({} could not be validated here)",
                        r.set,
                        r.checks.len(),
                        r.checks
                            .iter()
                            .filter(|c| c.outcome == provisioner_protocol::drivers::Outcome::CannotValidate)
                            .count()
                    ),
                });
                return;
            }
            Answer::Refused(why) => {
                node.say(&format!("{why}; asking what to do next"));
                return;
            }
            Answer::Retry(why) => wait_to_retry(&why, &mut backoff, node),
        }
    }
}

/// Sends the report until the appliance takes it (true) or refuses it (false).
fn report(api: &impl Api, mac: &MacAddr, node: &mut impl Node) -> bool {
    let report = InspectionReport {
        mac: *mac,
        facts: node.facts(),
    };
    let mut backoff = Backoff::default();
    loop {
        match api.report(&report) {
            Answer::Done(()) => {
                let facts = &report.facts;
                node.say(&format!(
                    "reported facts ({} PCI devices, {} GPUs, {} disks)",
                    facts.pci.len(),
                    facts.gpus.len(),
                    facts.disks.len()
                ));
                return true;
            }
            Answer::Refused(why) => {
                node.say(&format!("{why}; asking what to do next"));
                return false;
            }
            Answer::Retry(why) => wait_to_retry(&why, &mut backoff, node),
        }
    }
}

/// Sends the burn-in results until the appliance takes or refuses them; either way the
/// appliance then says what comes next.
fn send_burnin(api: &impl Api, results: &BurnInReport, node: &mut impl Node) {
    let mut backoff = Backoff::default();
    loop {
        match api.burnin(results) {
            Answer::Done(()) => {
                node.say(&format!(
                    "reported burn-in ({} devices)",
                    results.devices.len()
                ));
                return;
            }
            Answer::Refused(why) => {
                node.say(&format!("{why}; asking what to do next"));
                return;
            }
            Answer::Retry(why) => wait_to_retry(&why, &mut backoff, node),
        }
    }
}

/// Asks what to do next until the appliance says.
fn ask(api: &impl Api, mac: &MacAddr, node: &mut impl Node) -> Instruction {
    let mut backoff = Backoff::default();
    loop {
        match api.next(&mac.to_string()) {
            Answer::Done(instruction) => return instruction,
            Answer::Refused(why) | Answer::Retry(why) => wait_to_retry(&why, &mut backoff, node),
        }
    }
}

fn wait_to_retry(why: &str, backoff: &mut Backoff, node: &mut impl Node) {
    let (retry, delay) = backoff.next_retry();
    node.say(&format!("{why}, retry {retry} in {}s", delay.as_secs()));
    node.sleep(delay);
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use super::*;

    /// An appliance that gives scripted answers, in order, and records what it was sent.
    #[derive(Default)]
    struct Scripted {
        reports: RefCell<VecDeque<Answer<()>>>,
        instructions: RefCell<VecDeque<Answer<Instruction>>>,
        sent: RefCell<Vec<String>>,
    }

    impl Api for Scripted {
        fn report(&self, report: &InspectionReport) -> Answer<()> {
            self.sent
                .borrow_mut()
                .push(format!("report {}", report.mac));
            self.reports
                .borrow_mut()
                .pop_front()
                .expect("no more scripted report answers")
        }

        fn burnin(&self, report: &BurnInReport) -> Answer<()> {
            self.sent.borrow_mut().push(format!(
                "burnin {} ({} devices)",
                report.mac.map(|m| m.to_string()).unwrap_or_default(),
                report.devices.len()
            ));
            self.reports
                .borrow_mut()
                .pop_front()
                .expect("no more scripted report answers")
        }

        fn install(&self, report: &InstallReport) -> Answer<()> {
            self.sent.borrow_mut().push(format!(
                "install {} {} ({:?})",
                report.mac, report.image, report.outcome
            ));
            self.reports
                .borrow_mut()
                .pop_front()
                .expect("no more scripted report answers")
        }

        fn installed(&self, report: &InstalledReport) -> Answer<()> {
            self.sent.borrow_mut().push(format!(
                "installed {} {} {}",
                report.mac, report.image, report.kernel_release
            ));
            self.reports
                .borrow_mut()
                .pop_front()
                .expect("no more scripted report answers")
        }

        fn drivers(&self, report: &DriversReport) -> Answer<()> {
            self.sent.borrow_mut().push(format!(
                "drivers {} {} ({} checks)",
                report.mac,
                report.report.set,
                report.report.checks.len()
            ));
            self.reports
                .borrow_mut()
                .pop_front()
                .expect("no more scripted report answers")
        }

        fn next(&self, mac: &str) -> Answer<Instruction> {
            self.sent.borrow_mut().push(format!("next {mac}"));
            self.instructions
                .borrow_mut()
                .pop_front()
                .expect("no more scripted instructions")
        }
    }

    #[derive(Default)]
    struct Recorder {
        lines: Vec<String>,
        slept: Vec<u64>,
    }

    impl Node for Recorder {
        fn say(&mut self, line: &str) {
            self.lines.push(line.to_string());
        }

        fn sleep(&mut self, duration: Duration) {
            self.slept.push(duration.as_secs());
        }

        fn facts(&mut self) -> Facts {
            Facts {
                gpus: vec!["0000:19:00.0".to_string()],
                pci: vec![Default::default(); 3],
                ..Facts::default()
            }
        }

        fn burn_in(&mut self, plan: &BurnInPlan) -> BurnInReport {
            self.lines
                .push(format!("burn-in for {}s of GEMM", plan.gemm_seconds));
            BurnInReport {
                mac: None,
                devices: vec![Default::default(); 2],
            }
        }

        fn verify_drivers(&mut self, set: &DriverSet) -> DriverReport {
            self.lines.push(format!("verify drivers {}", set.name));
            DriverReport {
                set: set.name.clone(),
                kernel: "6.1.0-28-amd64".into(),
                checks: vec![provisioner_protocol::drivers::DriverCheck {
                    check: "packages".into(),
                    outcome: provisioner_protocol::drivers::Outcome::Pass,
                    detail: "all".into(),
                }],
                installed: Vec::new(),
            }
        }

        fn wipe(&mut self, image: &str, disk: &TargetDisk) -> InstallReport {
            self.lines.push(format!("wipe {} of {image}", disk.name));
            InstallReport {
                mac: Default::default(),
                image: image.to_string(),
                outcome: InstallOutcome::Wiped,
                written_bytes: 0,
                received_bytes: 0,
                seconds: 0.1,
            }
        }

        fn install(&mut self, plan: &InstallPlan) -> InstallReport {
            self.lines
                .push(format!("install {} on {}", plan.image, plan.disk.name));
            InstallReport {
                mac: Default::default(),
                image: plan.image.clone(),
                outcome: InstallOutcome::Written,
                written_bytes: 4 << 20,
                received_bytes: 1 << 20,
                seconds: 2.0,
            }
        }
    }

    fn mac() -> MacAddr {
        "52:54:00:12:34:56".parse().unwrap()
    }

    fn retry(why: &str) -> Answer<()> {
        Answer::Retry(why.to_string())
    }

    #[test]
    fn retries_the_report_with_backoff_then_powers_off() {
        let api = Scripted::default();
        api.reports.borrow_mut().extend([
            retry("appliance unreachable (connection refused)"),
            retry("appliance answered 503 Service Unavailable"),
            retry("appliance answered 503 Service Unavailable"),
            Answer::Done(()),
        ]);
        api.instructions
            .borrow_mut()
            .push_back(Answer::Done(Instruction::PowerOff {
                reason: "inspected".to_string(),
            }));
        let mut node = Recorder::default();
        let ending = run(&api, &mac(), &mut node);
        assert_eq!(
            ending,
            Ending::PowerOff {
                reason: "inspected".to_string()
            }
        );
        assert_eq!(
            node.lines,
            [
                "appliance unreachable (connection refused), retry 1 in 1s",
                "appliance answered 503 Service Unavailable, retry 2 in 2s",
                "appliance answered 503 Service Unavailable, retry 3 in 4s",
                "reported facts (3 PCI devices, 1 GPUs, 0 disks)",
            ]
        );
        assert_eq!(node.slept, [1, 2, 4]);
        assert_eq!(api.sent.borrow().len(), 5);
    }

    #[test]
    fn an_install_is_written_reported_with_the_mac_then_the_node_reboots_into_its_disk() {
        let api = Scripted::default();
        api.reports.borrow_mut().extend([
            Answer::Done(()),
            retry("appliance answered 503 Service Unavailable"),
            Answer::Done(()),
        ]);
        let plan: InstallPlan = serde_json::from_value(serde_json::json!({
            "image": "img-1", "url": "http://a/i.zst", "sha256": "00", "raw_sha256": "00",
            "raw_bytes": 1, "bmap_url": "http://a/i.bmap", "bmap_sha256": "00",
            "disk": { "name": "vdb", "size_bytes": 2, "serial": "S1", "hints": "serial=S1" },
            "first_boot": { "hostname": "h", "ssh_authorized_keys": [], "ntp": [],
                "apt_sources": [], "credential": "c" }
        }))
        .unwrap();
        api.instructions.borrow_mut().extend([
            Answer::Done(Instruction::Install {
                plan: Box::new(plan),
            }),
            Answer::Done(Instruction::Reboot {
                reason: "written".into(),
            }),
        ]);
        let mut node = Recorder::default();
        let ending = run(&api, &mac(), &mut node);
        assert_eq!(
            ending,
            Ending::Reboot {
                reason: "written".into()
            }
        );
        let sent = api.sent.borrow();
        assert_eq!(
            sent[2], "install 52:54:00:12:34:56 img-1 (Written)",
            "{sent:?}"
        );
        assert_eq!(sent[3], sent[2], "retried after the 503");
        assert!(node.lines.contains(&"install img-1 on vdb".to_string()));
        assert!(
            node.lines
                .iter()
                .any(|l| l.starts_with("reported the install of img-1: 4 MiB")),
            "{:?}",
            node.lines
        );
    }

    #[test]
    fn a_driver_check_is_run_and_reported_with_the_mac_before_what_comes_next() {
        let api = Scripted::default();
        api.reports.borrow_mut().extend([
            Answer::Done(()),
            retry("appliance answered 503 Service Unavailable"),
            Answer::Done(()),
        ]);
        let set = DriverSet {
            name: "debian-nvidia-535".into(),
            ..DriverSet::default()
        };
        api.instructions.borrow_mut().extend([
            Answer::Done(Instruction::VerifyDrivers { set: Box::new(set) }),
            Answer::Done(Instruction::PowerOff {
                reason: "failed".into(),
            }),
        ]);
        let mut node = Recorder::default();
        run(&api, &mac(), &mut node);
        let sent = api.sent.borrow();
        assert_eq!(
            sent[2], "drivers 52:54:00:12:34:56 debian-nvidia-535 (1 checks)",
            "{sent:?}"
        );
        assert_eq!(sent[3], sent[2], "retried after the 503");
        assert!(
            node.lines
                .contains(&"verify drivers debian-nvidia-535".to_string())
        );
        assert!(
            node.lines
                .iter()
                .any(|l| l
                    .starts_with("reported driver set debian-nvidia-535: 1 checks, none failed")),
            "{:?}",
            node.lines
        );
    }

    #[test]
    fn the_installed_system_says_what_it_booted_first_and_never_reports_facts() {
        let api = Scripted::default();
        api.reports.borrow_mut().extend([
            retry("appliance unreachable (connection refused)"),
            Answer::Done(()),
        ]);
        api.instructions.borrow_mut().extend([
            Answer::Done(Instruction::Wait {
                seconds: 60,
                reason: "this node is enrolled".into(),
            }),
            Answer::Done(Instruction::Reboot {
                reason: "reprovision".into(),
            }),
        ]);
        let booted = InstalledReport {
            mac: mac(),
            image: "img-1".into(),
            raw_sha256: "ab".repeat(32),
            kernel_release: "6.1.0-57-amd64".into(),
        };
        let mut node = Recorder::default();
        let ending = run_installed(&api, &booted, &mut node);
        assert_eq!(
            ending,
            Ending::Reboot {
                reason: "reprovision".into()
            }
        );
        let sent = api.sent.borrow();
        let installed = "installed 52:54:00:12:34:56 img-1 6.1.0-57-amd64";
        assert_eq!(
            *sent,
            [
                installed,
                installed,
                "next 52:54:00:12:34:56",
                "next 52:54:00:12:34:56"
            ],
            "no inspection report from the installed system"
        );
        assert_eq!(node.slept, [1, 60]);
        assert!(node.lines[1].starts_with("reported the installed system: img-1"));
    }

    #[test]
    fn an_appliance_that_refuses_and_asks_again_is_not_hammered() {
        let api = Scripted::default();
        let refused = || Answer::Refused("appliance refused (400 Bad Request): bad".into());
        api.reports
            .borrow_mut()
            .extend([refused(), refused(), refused(), Answer::Done(())]);
        api.instructions.borrow_mut().extend([
            Answer::Done(Instruction::Report),
            Answer::Done(Instruction::Report),
            Answer::Done(Instruction::Report),
            Answer::Done(Instruction::PowerOff {
                reason: "given up".to_string(),
            }),
        ]);
        let mut node = Recorder::default();
        run(&api, &mac(), &mut node);
        assert_eq!(node.slept, [1, 2, 4]);
        assert_eq!(api.sent.borrow().len(), 8);
    }

    #[test]
    fn a_refused_report_is_not_retried_until_the_appliance_asks() {
        let api = Scripted::default();
        let refused = || Answer::Refused("appliance refused (409 Conflict): installing".into());
        api.reports
            .borrow_mut()
            .extend([refused(), Answer::Done(())]);
        api.instructions.borrow_mut().extend([
            Answer::Done(Instruction::Wait {
                seconds: 0,
                reason: "operator holds the node".to_string(),
            }),
            Answer::Retry("appliance unreachable (timed out)".to_string()),
            Answer::Done(Instruction::Report),
            Answer::Done(Instruction::Reboot {
                reason: "install".to_string(),
            }),
        ]);
        let mut node = Recorder::default();
        let ending = run(&api, &mac(), &mut node);
        assert_eq!(
            ending,
            Ending::Reboot {
                reason: "install".to_string()
            }
        );
        assert_eq!(
            *api.sent.borrow(),
            [
                "report 52:54:00:12:34:56",
                "next 52:54:00:12:34:56",
                "next 52:54:00:12:34:56",
                "next 52:54:00:12:34:56",
                "report 52:54:00:12:34:56",
                "next 52:54:00:12:34:56",
            ]
        );
        assert_eq!(
            node.lines,
            [
                "appliance refused (409 Conflict): installing; asking what to do next",
                "waiting 1s before asking again: operator holds the node",
                "appliance unreachable (timed out), retry 1 in 1s",
                "appliance asks again for the report it refused, retry 1 in 1s",
                "reported facts (3 PCI devices, 1 GPUs, 0 disks)",
            ]
        );
        assert_eq!(node.slept, [1, 1, 1]);
    }

    #[test]
    fn a_burn_in_is_run_and_its_results_sent_under_the_node_s_mac() {
        let api = Scripted::default();
        api.reports.borrow_mut().extend([
            Answer::Done(()),
            retry("appliance answered 503 Service Unavailable"),
            Answer::Done(()),
        ]);
        let plan = BurnInPlan {
            gemm_seconds: 60,
            hbm_fraction: 0.9,
            cpu_seconds: 30,
            memory_fraction: 0.8,
            disk_read_bytes: 1 << 30,
            disks_writable: vec![],
            nic_speed_mbps: None,
            tool_timeout_seconds: 300,
            only: vec![],
        };
        api.instructions.borrow_mut().extend([
            Answer::Done(Instruction::BurnIn { plan }),
            Answer::Done(Instruction::PowerOff {
                reason: "enrolled".to_string(),
            }),
        ]);
        let mut node = Recorder::default();
        run(&api, &mac(), &mut node);
        assert_eq!(
            *api.sent.borrow(),
            [
                "report 52:54:00:12:34:56",
                "next 52:54:00:12:34:56",
                "burnin 52:54:00:12:34:56 (2 devices)",
                "burnin 52:54:00:12:34:56 (2 devices)",
                "next 52:54:00:12:34:56",
            ]
        );
        assert!(node.lines.contains(&"burn-in for 60s of GEMM".to_string()));
        assert!(
            node.lines
                .contains(&"reported burn-in (2 devices)".to_string())
        );
    }
}
