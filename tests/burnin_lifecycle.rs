//! Burn-in through the lifecycle, on a real SQLite store: a node in burning_in is told its
//! SKU's plan; its report (the real H100 capture, with faults injected) is judged against the
//! profile and the cohort of nodes judged before it; PASS moves it to enrolled, FAIL to failed
//! with the reasons, a first performance failure back to the node to run again. And the
//! step timeouts, with the clock given.

mod common;

use common::nvidia::node;
use provisioner::burnin::judge::Level;
use provisioner::burnin::profile::{Profiles, SHIPPED_PROFILES};
use provisioner::lifecycle::admission::{NewNodes, Requester};
use provisioner::lifecycle::machine::{Actor, Input, State};
use provisioner::lifecycle::plan::{SHIPPED_SKUS, Skus, parse_plan};
use provisioner::lifecycle::{AgentAuthError, AgentError, Lifecycle, Timeouts};
use provisioner::store::SyncMode;
use provisioner::types::MacAddr;
use provisioner_protocol::burnin::{BurnInPlan, BurnInReport};
use provisioner_protocol::{Facts, InspectionReport, Instruction, PciDevice};

const PLAN: &str = "\
site,row,rack,u,serial,mac,sku
dc1,r1,a01,10,SN-1,,hgx-h100
dc1,r1,a01,14,SN-2,,hgx-h100
dc1,r1,a01,18,SN-3,,hgx-h100
";

/// Facts of an HGX H100: 8 GPUs (10de:2330), 2 TiB.
fn h100_facts(serial: &str) -> Facts {
    let mut f = Facts::default();
    f.dmi.product_serial = Some(serial.into());
    f.memory.total_bytes = 2 << 40;
    for i in 0..8 {
        let address = format!("0000:{:02x}:00.0", 0x18 + i);
        f.pci.push(PciDevice {
            address: address.clone(),
            vendor: 0x10de,
            device: 0x2330,
            class: 0x030200,
            ..Default::default()
        });
        f.gpus.push(address);
    }
    f
}

struct Setup {
    _dir: tempfile::TempDir,
    lc: std::sync::Arc<Lifecycle>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pool = provisioner::store::open(dir.path(), SyncMode::Normal)
        .await
        .unwrap();
    let skus = Skus::parse(SHIPPED_SKUS).unwrap();
    let slots = parse_plan(std::path::Path::new("plan.csv"), PLAN, &skus).unwrap();
    let mut tx = pool.begin().await.unwrap();
    provisioner::store::plan::replace_plan(&mut tx, &slots, "plan.csv", skus.version, 0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let profiles = Profiles::parse(SHIPPED_PROFILES).unwrap();
    let lc = Lifecycle::open(
        pool,
        skus,
        profiles,
        Timeouts::default(),
        NewNodes::default(),
    )
    .await
    .unwrap();
    Setup { _dir: dir, lc }
}

/// What the appliance of these tests has to give: a discovery image.
const DISCOVERY: provisioner::boot::Available = provisioner::boot::Available { discovery: true };

/// A requester on loopback, as the tests' own tools are.
fn local() -> Requester {
    Requester::unknown([127, 0, 0, 1].into())
}

/// Takes `mac` through discovery, inspection and installation; returns its agent token.
async fn to_burning_in(lc: &Lifecycle, mac: &str, serial: &str) -> String {
    let m: MacAddr = mac.parse().unwrap();
    let token = lc
        .boot_requested(m, &local(), DISCOVERY)
        .await
        .unwrap()
        .token
        .unwrap();
    let report = InspectionReport {
        mac: mac.parse().unwrap(),
        facts: h100_facts(serial),
    };
    let state = lc.report(Some(&token), &report).await.unwrap();
    assert_eq!(state, State::Inspected);
    for input in [
        Input::InstallStarted {
            what: "installing in the test".into(),
        },
        Input::DiskWritten,
        Input::Installed,
    ] {
        lc.apply_input(mac, input, &Actor::Appliance).await.unwrap();
    }
    assert_eq!(lc.state(m), Some(State::BurningIn));
    token
}

/// What a burning-in node is told: its plan.
async fn burn_in_plan(lc: &Lifecycle, token: &str, mac: &str) -> BurnInPlan {
    match lc
        .next_for_agent(
            Some(token),
            mac.parse().unwrap(),
            Some("http://10.99.0.1:8080"),
        )
        .await
        .unwrap()
    {
        Instruction::BurnIn { plan } => plan,
        other => panic!("a burning-in node is told to burn in, not {other:?}"),
    }
}

fn report(mac: &str) -> BurnInReport {
    BurnInReport {
        mac: mac.parse().ok(),
        ..node("h100-sxm5-80gb")
    }
}

#[tokio::test]
async fn a_slow_gpu_is_run_again_then_the_node_is_enrolled() {
    let s = setup().await;
    let mac = "52:54:00:00:00:01";
    let token = to_burning_in(&s.lc, mac, "SN-1").await;

    let plan = burn_in_plan(&s.lc, &token, mac).await;
    assert_eq!(plan.gemm_seconds, 600);
    assert!(plan.only.is_empty());

    // GPU 6 is 20% slow on its first run: it runs its checks again.
    let mut first = report(mac);
    for m in first.devices[6].measurements.values_mut() {
        m.value *= 0.8;
    }
    let j = s.lc.burnin(Some(&token), &first).await.unwrap();
    assert!(!j.retry.is_empty(), "{j:#?}");
    assert_eq!(s.lc.state(mac.parse().unwrap()), Some(State::BurningIn));
    let plan = burn_in_plan(&s.lc, &token, mac).await;
    assert!(
        plan.only.iter().all(|(d, _)| d == "0000:1e:00.0") && !plan.only.is_empty(),
        "{:?}",
        plan.only
    );

    // The retry measures it healthy: only its checks are sent, and the node passes.
    let mut retry = report(mac);
    retry.devices.retain(|d| d.id == "0000:1e:00.0");
    let j = s.lc.burnin(Some(&token), &retry).await.unwrap();
    assert_eq!(j.level, Level::Pass, "{j:#?}");
    assert_eq!(j.devices.len(), 8);
    assert_eq!(s.lc.state(mac.parse().unwrap()), Some(State::Enrolled));

    // Enrolled, a report is no longer taken.
    let err = s.lc.burnin(Some(&token), &report(mac)).await.unwrap_err();
    assert!(matches!(err, AgentError::NotNow { .. }), "{err}");
}

#[tokio::test]
async fn a_hardware_xid_fails_the_node_with_the_gpu_named() {
    let s = setup().await;
    let mac = "52:54:00:00:00:02";
    let token = to_burning_in(&s.lc, mac, "SN-2").await;
    let mut r = report(mac);
    r.devices[3].xids = vec![79];
    let j = s.lc.burnin(Some(&token), &r).await.unwrap();
    assert_eq!(j.level, Level::Fail);
    let Some(State::Failed { step, reason }) = s.lc.state(mac.parse().unwrap()) else {
        panic!("the node failed")
    };
    assert_eq!(step.as_str(), "burning_in");
    assert_eq!(
        reason,
        "burn-in failed: 0000:1b:00.0 xid: hardware XID [79] in the kernel log"
    );
}

#[tokio::test]
async fn a_node_far_under_its_cohort_fails_and_bad_tokens_change_nothing() {
    let s = setup().await;
    // The first node passes: its eight GPUs are the cohort.
    let a = "52:54:00:00:00:01";
    let ta = to_burning_in(&s.lc, a, "SN-1").await;
    assert_eq!(
        s.lc.burnin(Some(&ta), &report(a)).await.unwrap().level,
        Level::Pass
    );

    let b = "52:54:00:00:00:03";
    let tb = to_burning_in(&s.lc, b, "SN-3").await;
    // Someone else's token, and no token: refused, nothing stored.
    assert!(matches!(
        s.lc.burnin(Some(&ta), &report(b)).await.unwrap_err(),
        AgentError::Auth(AgentAuthError::OtherNode(_))
    ));
    assert!(matches!(
        s.lc.burnin(None, &report(b)).await.unwrap_err(),
        AgentError::Auth(AgentAuthError::NoToken)
    ));
    assert_eq!(s.lc.state(b.parse().unwrap()), Some(State::BurningIn));

    // Every GPU of node b copies at 2.85 TB/s: over the floor, level with its mates, but 6%
    // under the cohort's 3.03. Measured twice, it fails.
    let mut r = report(b);
    for d in &mut r.devices {
        let m = d.measurements.get_mut("hbm_copy").unwrap();
        m.value = 2.85;
        m.attempt = 2;
    }
    let j = s.lc.burnin(Some(&tb), &r).await.unwrap();
    assert_eq!(j.level, Level::Fail, "{j:#?}");
    let Some(State::Failed { reason, .. }) = s.lc.state(b.parse().unwrap()) else {
        panic!()
    };
    assert!(
        reason.contains("under its cohort's median of 3.03 TB/s"),
        "{reason}"
    );
}

#[tokio::test]
async fn progress_lines_are_kept_with_the_node_and_need_its_token() {
    let s = setup().await;
    let mac = "52:54:00:00:00:01";
    let token = to_burning_in(&s.lc, mac, "SN-1").await;
    let long = "x".repeat(2000);
    let p = provisioner_protocol::ProgressReport {
        mac: mac.parse().unwrap(),
        lines: vec!["gemm 12/600 s, 671 TFLOP/s".into(), long],
    };
    assert_eq!(s.lc.progress(Some(&token), &p).await.unwrap(), 2);
    assert!(matches!(
        s.lc.progress(Some("forged"), &p).await.unwrap_err(),
        AgentError::Auth(AgentAuthError::UnknownToken)
    ));
    let id = s.lc.find(mac).await.unwrap().unwrap().id;
    let pool = provisioner::store::open(s._dir.path(), SyncMode::Normal)
        .await
        .unwrap();
    let kept = provisioner::store::burnin::progress(&pool, id, 100)
        .await
        .unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].line, "gemm 12/600 s, 671 TFLOP/s");
    assert_eq!(kept[1].line.len(), 500, "a line is cut to 500 characters");
}

#[tokio::test]
async fn a_retry_left_from_an_earlier_burn_in_does_not_cut_a_new_one_short() {
    let s = setup().await;
    let mac = "52:54:00:00:00:01";
    let token = to_burning_in(&s.lc, mac, "SN-1").await;
    let mut first = report(mac);
    for m in first.devices[6].measurements.values_mut() {
        m.value *= 0.8;
    }
    assert!(
        !s.lc
            .burnin(Some(&token), &first)
            .await
            .unwrap()
            .retry
            .is_empty()
    );
    // The node is held and reprovisioned before its retry; it comes back to burning_in.
    let admin = Actor::Operator("alice".into());
    s.lc.apply_input(
        mac,
        Input::Operator(provisioner::lifecycle::machine::Action::Reprovision),
        &admin,
    )
    .await
    .unwrap();
    // Wall-clock milliseconds separate the two stays in burning_in.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let token = to_burning_in(&s.lc, mac, "SN-1").await;
    let plan = burn_in_plan(&s.lc, &token, mac).await;
    assert!(plan.only.is_empty(), "a full burn-in: {:?}", plan.only);
    // A full report is judged on its own, not merged into the old one.
    let j = s.lc.burnin(Some(&token), &report(mac)).await.unwrap();
    assert_eq!(j.level, Level::Pass, "{j:#?}");
}

#[tokio::test]
async fn a_step_past_its_timeout_fails_its_node_at_the_time_given() {
    let s = setup().await;
    let m: MacAddr = "52:54:00:00:00:09".parse().unwrap();
    s.lc.boot_requested(m, &local(), DISCOVERY).await.unwrap();
    let since =
        s.lc.find("52:54:00:00:00:09")
            .await
            .unwrap()
            .unwrap()
            .state_since_ms;
    let fifteen = 15 * 60 * 1000;
    assert_eq!(s.lc.expire_at(since + fifteen - 1).await.unwrap(), 0);
    assert_eq!(s.lc.state(m), Some(State::Inspecting));
    assert_eq!(s.lc.expire_at(since + fifteen).await.unwrap(), 1);
    let Some(State::Failed { step, reason }) = s.lc.state(m) else {
        panic!()
    };
    assert_eq!(step.as_str(), "inspecting");
    assert_eq!(reason, "inspecting timed out after 15m");
    assert_eq!(s.lc.counts()[6], ("failed", 1));
}
