//! The agent binary end to end: `--once` on a recorded tree, and a whole conversation with a
//! fake appliance on an ephemeral port (503 twice, then 202, then power off). The agent runs
//! with `--root` on a recorded tree, so it leaves this machine's network alone, and without
//! `--really-power-off`, so it only says it would power off. Every wait here is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use provisioner_agent::facts::collect;
use provisioner_protocol::{Facts, InspectionReport};

const AGENT: &str = env!("CARGO_BIN_EXE_provisioner-agent");
const DEADLINE: Duration = Duration::from_secs(30);

fn vm_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sysfs/vm")
}

/// Waits for the agent, killing it past the deadline.
fn finish(mut child: Child) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > DEADLINE {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the agent ran past {DEADLINE:?}; it said:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn agent(args: &[&str]) -> Output {
    let child = Command::new(AGENT)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child)
}

#[test]
fn once_prints_the_facts_of_the_tree_as_json() {
    let root = vm_tree();
    let output = agent(&["--once", "--root", root.to_str().unwrap()]);
    assert!(output.status.success());
    let printed: Facts = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed, collect(&root));
    assert_eq!(printed.nics[0].mac, "02:fc:00:00:00:01");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "provisioner-agent: printed facts (6 PCI devices, 0 GPUs, 1 disks, 1 problems)\n"
    );
}

#[test]
fn mistakes_on_the_command_line_are_said_and_exit_non_zero() {
    let output = agent(&["--bogus"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("provisioner-agent: unknown argument \"--bogus\"\nusage:"));
}

#[test]
fn a_kernel_command_line_without_the_parameters_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "console=ttyS0 provisioner.url=http://10.0.0.1\n").unwrap();
    let root = vm_tree();
    let output = agent(&[
        "--cmdline",
        cmdline.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "provisioner-agent: cannot start: no provisioner.mac= on the kernel command line\n"
    );
}

/// One request as the fake appliance saw it.
#[derive(Debug)]
struct Seen {
    request_line: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

fn read_request(stream: &mut TcpStream) -> Seen {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let (mut authorization, mut length) = (None, 0);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "authorization" => authorization = Some(value.trim().to_string()),
            "content-length" => length = value.trim().parse().unwrap(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    Seen {
        request_line: request_line.trim_end().to_string(),
        authorization,
        body,
    }
}

/// Answers each connection with the next canned (status, body), then returns what it saw.
fn fake_appliance(
    listener: TcpListener,
    answers: Vec<(&'static str, &'static str)>,
) -> thread::JoinHandle<Vec<Seen>> {
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let started = Instant::now();
        let mut seen = Vec::new();
        for (status, body) in answers {
            let mut stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(started.elapsed() < DEADLINE, "the agent stopped calling");
                        thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            seen.push(read_request(&mut stream));
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
        }
        seen
    })
}

#[test]
fn reports_through_503s_then_obeys_power_off_without_doing_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let appliance = fake_appliance(
        listener,
        vec![
            ("503 Service Unavailable", r#"{"error":"starting"}"#),
            ("503 Service Unavailable", r#"{"error":"starting"}"#),
            ("202 Accepted", ""),
            ("200 OK", r#"{"action":"power_off","reason":"inspected"}"#),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(
        &cmdline,
        format!(
            "console=ttyS0 provisioner.url={url}/ provisioner.mac=02:FC:00:00:00:01 \
             provisioner.token=t0ken\n"
        ),
    )
    .unwrap();
    let root = vm_tree();
    let output = agent(&[
        "--cmdline",
        cmdline.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    let seen = appliance.join().unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let expected = format!(
        "provisioner-agent: starting: appliance {url}, boot interface 02:fc:00:00:00:01\n\
         provisioner-agent: appliance answered 503 Service Unavailable, retry 1 in 1s\n\
         provisioner-agent: appliance answered 503 Service Unavailable, retry 2 in 2s\n\
         provisioner-agent: reported facts (6 PCI devices, 0 GPUs, 1 disks)\n\
         provisioner-agent: would power off (inspected); not in the initramfs, not PID 1 and \
         no --really-power-off, so exiting\n"
    );
    assert_eq!(stderr, expected);

    assert_eq!(seen.len(), 4);
    for post in &seen[..3] {
        assert_eq!(post.request_line, "POST /api/v1/agent/inspection HTTP/1.1");
        assert_eq!(post.authorization.as_deref(), Some("Bearer t0ken"));
    }
    let report: InspectionReport = serde_json::from_slice(&seen[2].body).unwrap();
    assert_eq!(report.mac.to_string(), "02:fc:00:00:00:01");
    assert_eq!(report.facts, collect(&root));
    assert_eq!(
        seen[3].request_line,
        "GET /api/v1/agent/next?mac=02:fc:00:00:00:01 HTTP/1.1"
    );
    assert_eq!(seen[3].authorization.as_deref(), Some("Bearer t0ken"));
}

#[test]
fn an_appliance_that_is_not_there_is_retried_and_said() {
    // A port nobody listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(
        &cmdline,
        format!(
            "provisioner.url=http://127.0.0.1:{port} provisioner.mac=02:fc:00:00:00:01 \
             provisioner.token=t\n"
        ),
    )
    .unwrap();
    let root = vm_tree();
    let mut child = Command::new(AGENT)
        .args(["--cmdline", cmdline.to_str().unwrap()])
        .args(["--root", root.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read until the second retry is announced (about 1 s), then stop the agent.
    let stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .take(3)
            .collect::<Vec<_>>()
    });
    let started = Instant::now();
    while !reader.is_finished() && started.elapsed() < DEADLINE {
        thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = reader.join().unwrap();
    assert_eq!(
        lines[1..],
        [
            "provisioner-agent: appliance unreachable (connection refused), retry 1 in 1s",
            "provisioner-agent: appliance unreachable (connection refused), retry 2 in 2s",
        ]
    );
}

#[test]
fn burn_in_runs_a_plan_here_and_prints_its_report() {
    let dir = std::env::temp_dir().join(format!("agent-burn-in-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.json");
    std::fs::write(
        &plan,
        r#"{"gemm_seconds": 1, "hbm_fraction": 0.9, "cpu_seconds": 1, "memory_fraction": 0.001,
            "disk_read_bytes": 0, "disks_writable": [], "nic_speed_mbps": null,
            "tool_timeout_seconds": 20}"#,
    )
    .unwrap();
    let root = vm_tree();
    let output = agent(&[
        "--burn-in",
        plan.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    let report: provisioner_protocol::burnin::BurnInReport =
        serde_json::from_slice(&output.stdout).unwrap();
    let cpu = report
        .devices
        .iter()
        .find(|d| d.id == "cpu")
        .expect("a CPU result");
    assert_eq!(cpu.counters.get("cpu_mismatches"), Some(&0), "{cpu:?}");
    assert!(said.contains("printed the burn-in report"), "{said}");

    // A plan that is not there is named, and nothing runs.
    let output = agent(&["--burn-in", dir.join("none.json").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("cannot read the plan") && said.contains("none.json"),
        "{said}"
    );
    assert!(output.stdout.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
