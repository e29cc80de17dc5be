//! Running an AWS Neuron tool (`neuron-ls`, `neuron-monitor`, `nccom-test`) with a time
//! limit. A tool that hangs is killed, with everything it started, and says so: a hung tool
//! is a result ("timed out after N s"), never a hung burn-in.

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Where the Neuron packages install their tools, when `PATH` does not name it.
pub const NEURON_BIN: &str = "/opt/aws/neuron/bin";

/// The most of a tool's stderr kept for a message: the first lines say what went wrong.
const STDERR_KEPT: usize = 4096;
/// The most of its stdout kept: far more than any of these tools writes, and a bound on one
/// that writes without end.
const STDOUT_KEPT: usize = 4 << 20;
/// How long stderr is waited for once the tool has exited or been killed.
const STDERR_WAIT: Duration = Duration::from_secs(1);

/// How often a tool that has closed its output is asked whether it has exited.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} not found")]
    NotFound { tool: String },
    #[error("{tool} could not be started: {source}")]
    Spawn { tool: String, source: io::Error },
    #[error("{tool} timed out after {seconds} s")]
    TimedOut { tool: String, seconds: u64 },
    #[error("{tool} failed ({status}){}", detail(stderr))]
    Failed {
        tool: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
}

fn detail(stderr: &str) -> String {
    match stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!(": {line}"),
        None => String::new(),
    }
}

/// What a tool wrote, when it ran to the end (or to the line its caller waited for).
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// The Neuron tools this node has: found once, in the directories given, so tests can give
/// their own (recorded outputs, a script that hangs) through the same interface.
#[derive(Clone, Debug, Default)]
pub struct Tools {
    pub neuron_ls: Option<PathBuf>,
    pub neuron_monitor: Option<PathBuf>,
    pub nccom_test: Option<PathBuf>,
}

impl Tools {
    /// Looks for each tool in `dirs`, in order.
    pub fn find(dirs: &[PathBuf]) -> Tools {
        let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p));
        Tools {
            neuron_ls: find("neuron-ls"),
            neuron_monitor: find("neuron-monitor"),
            nccom_test: find("nccom-test"),
        }
    }

    /// `PATH`, then the Neuron packages' own directory.
    pub fn search_dirs() -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.push(PathBuf::from(NEURON_BIN));
        dirs
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `program` (the tool `tool`, as messages name it) to its end, for at most `limit`. A
/// non-zero exit is [`ToolError::Failed`] with what the tool wrote (nccom-test reports
/// failed checks on stdout and exits non-zero).
pub fn run(
    tool: &str,
    program: &Path,
    args: &[&str],
    limit: Duration,
) -> Result<Output, ToolError> {
    run_until(tool, program, args, limit, |_| false)
}

/// Runs `program` until it writes a line `done` accepts (then kills it: `neuron-monitor`
/// streams until stopped), or to its end; for at most `limit` either way.
pub fn run_until(
    tool: &str,
    program: &Path,
    args: &[&str],
    limit: Duration,
    mut done: impl FnMut(&str) -> bool,
) -> Result<Output, ToolError> {
    let tool = tool.to_string();
    let deadline = Instant::now() + limit;
    let mut child = spawn(program, args).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ToolError::NotFound { tool: tool.clone() },
        _ => ToolError::Spawn {
            tool: tool.clone(),
            source,
        },
    })?;
    // The readers are never joined: something the tool started may hold its output open
    // after a kill, and a reader waiting on it must not hold the burn-in.
    let lines = read_lines(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let mut stdout = String::new();
    let mut stopped = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let hit = done(&line);
                if stdout.len() + line.len() < STDOUT_KEPT {
                    stdout.push_str(&line);
                    stdout.push('\n');
                }
                if hit {
                    stopped = true;
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                kill(&mut child);
                return Err(timed_out(tool, limit));
            }
        }
    }
    if stopped {
        kill(&mut child);
        let stderr = collect(&stderr);
        return Ok(Output { stdout, stderr });
    }
    // Output closed: the tool is exiting, or has handed its output to something that outlives
    // it. Either way it has until the deadline.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            Ok(None) | Err(_) => {
                kill(&mut child);
                return Err(timed_out(tool, limit));
            }
        }
    };
    let stderr = collect(&stderr);
    if status.success() {
        Ok(Output { stdout, stderr })
    } else {
        Err(ToolError::Failed {
            tool,
            status,
            stdout,
            stderr,
        })
    }
}

fn timed_out(tool: String, limit: Duration) -> ToolError {
    ToolError::TimedOut {
        tool,
        seconds: limit.as_secs(),
    }
}

/// Starts the tool in a process group of its own, so that a kill reaches whatever it started
/// (nccom-test runs neuron-bench; a shell script runs its commands).
fn spawn(program: &Path, args: &[&str]) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        let spawned = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        match spawned {
            // A tool written just before it is run (an update, a test's script) can be held
            // open for writing by a process forked meanwhile: that passes in moments.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Kills the tool's process group (its PID is the group's id), then the tool itself should
/// the group be gone, and reaps it.
fn kill(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group we created for this
        // child in `spawn`; it touches no memory of ours.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_lines(stdout: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (send, lines) = mpsc::channel();
    if let Some(out) = stdout {
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
    }
    lines
}

/// Reads all of stderr, so the tool never blocks on a full pipe, and keeps the start.
fn read_all(stderr: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (send, text) = mpsc::channel();
    if let Some(mut err) = stderr {
        thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = send.send(String::from_utf8_lossy(&kept).into_owned());
        });
    }
    text
}

/// The tool's stderr once its writers are gone; what is known of it after `STDERR_WAIT`
/// where something it started still holds it open.
fn collect(stderr: &mpsc::Receiver<String>) -> String {
    stderr.recv_timeout(STDERR_WAIT).unwrap_or_default()
}
