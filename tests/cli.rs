//! The `provisioner` binary as an operator runs it: configuration errors that name the key,
//! the HTTP endpoints, and a clean exit on SIGTERM. No root needed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ON_LOOPBACK, Running};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_provisioner"))
}

/// Runs `up` with `args`, expecting it to refuse to start; returns what it said.
fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["up", "--data-dir", dir.path().to_str().unwrap()])
        .args(ON_LOOPBACK)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

#[test]
fn configuration_errors_name_the_key_or_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "[dhcp]\nmode = \"full\"\nrange = \"10.0.0.10-10.0.0.20\"\nleese_time = 60\n",
    )
    .unwrap();
    let e = refused(&["--config", file.to_str().unwrap()]);
    assert!(e.contains("leese_time"), "{e}");

    std::fs::write(&file, "[[dhcp.subnets]]\ncidr = \"10.0.0.0/24\"\nrange = \"10.0.0.10-10.0.0.20\"\nlease_time = 5\n").unwrap();
    let e = refused(&["--config", file.to_str().unwrap()]);
    assert!(e.contains("dhcp.subnets[0].lease_time"), "{e}");

    let e = refused(&["--dhcp-range", "10.0.0.20-10.0.0.10"]);
    assert!(
        e.contains("--dhcp-range") && e.contains("ends before it starts"),
        "{e}"
    );
    let e = refused(&["--dhcp", "sometimes"]);
    assert!(e.contains("--dhcp"), "{e}");
    let e = refused(&["--config", "/nonexistent/provisioner.toml"]);
    assert!(e.contains("/nonexistent/provisioner.toml"), "{e}");
    let e = refused(&[
        "--interface",
        "nosuch0",
        "--dhcp",
        "full",
        "--dhcp-range",
        "10.0.0.10-10.0.0.20",
    ]);
    assert!(e.contains("nosuch0"), "{e}");
}

/// The appliance on loopback with its data in a directory removed when the test ends.
fn up() -> (Running, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up =
        Running::start(&[&["--data-dir", data.to_str().unwrap()][..], &ON_LOOPBACK].concat());
    let addr = up.addr("HTTP listening");
    (up, addr, dir)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn up_serves_health_metrics_and_leases_and_exits_cleanly_on_sigterm() {
    let (mut up, addr, _dir) = up();
    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 200);
    assert!(body.contains("\"ok\""), "{body}");
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE dhcp_store_commits counter"), "{body}");
    let (status, body) = get(addr, "/api/v1/leases");
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "[]");
    assert_eq!(get(addr, "/nope").0, 404);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(up.wait_line("stopped").is_some(), "no clean stop");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = up.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn with_no_interface_dhcp_stays_off_and_says_so() {
    let (mut up, _, _dir) = up();
    let line = up
        .wait_line("DHCP stays off")
        .expect("a line saying DHCP is off");
    assert!(line.contains("--interface"), "{line}");
}

#[test]
fn burnin_plan_and_judge_work_without_an_appliance() {
    let out = bin().args(["burnin", "plan", "hgx-h100"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: provisioner_protocol::burnin::BurnInPlan =
        serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan.gemm_seconds, 600);

    let report = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/nvidia/h100-agent-run/report.json"
    );
    let out = bin()
        .args(["burnin", "judge", "--sku", "hgx-h100", report])
        .output()
        .unwrap();
    // One GPU of eight: the node fails, and the exit code says so.
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("node: FAIL"), "{text}");
    assert!(text.contains("1 of 8 GPU devices reported"), "{text}");
    assert!(
        text.contains("PASS gemm_bf16_p50: 709.68 TFLOP/s"),
        "{text}"
    );

    let fails = |args: &[&str]| {
        let out = bin().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = fails(&["burnin", "plan", "hgx-h1000"]);
    assert!(
        e.contains("no burn-in profile for SKU \"hgx-h1000\""),
        "{e}"
    );
    let e = fails(&["burnin", "judge", "--sku", "hgx-h100", "/nonexistent.json"]);
    assert!(
        e.contains("cannot read the report /nonexistent.json"),
        "{e}"
    );
}
