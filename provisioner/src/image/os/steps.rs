//! The steps of an image build, as the person running it sees them: a line per step with its
//! time, a bar with bytes and rate where there is a size, and every tool's output in the
//! build's log, which a failed build keeps and names.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("step {step}: cannot run {tool}: {source} (is it installed? see docs/images.md)")]
    Spawn {
        step: String,
        tool: String,
        source: std::io::Error,
    },
    #[error("step {step}: {tool} failed ({status}); its output is in {log}")]
    Failed {
        step: String,
        tool: String,
        status: String,
        log: PathBuf,
    },
    #[error("step {step}: {what}: {source}")]
    Io {
        step: String,
        what: String,
        source: std::io::Error,
    },
    #[error("step {step}: {what}")]
    Check { step: String, what: String },
}

/// The build's running account: where the log is and which step is on.
pub struct Steps {
    log_path: PathBuf,
    log: File,
    step: String,
    number: usize,
    total: usize,
    started: Instant,
    step_started: Instant,
    quiet: bool,
}

impl Steps {
    pub fn open(log_path: &Path, total: usize, quiet: bool) -> Result<Steps, StepError> {
        let log = File::create(log_path).map_err(|source| StepError::Io {
            step: "start".into(),
            what: format!("cannot create the log {}", log_path.display()),
            source,
        })?;
        Ok(Steps {
            log_path: log_path.to_path_buf(),
            log,
            step: "start".into(),
            number: 0,
            total,
            started: Instant::now(),
            step_started: Instant::now(),
            quiet,
        })
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Starts the next step, closing the one before with its time.
    pub fn begin(&mut self, step: &str) {
        self.end_step();
        self.number += 1;
        self.step = step.to_string();
        self.step_started = Instant::now();
        let line = format!("[{}/{}] {step}", self.number, self.total);
        let _ = writeln!(self.log, "==> {line}");
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    fn end_step(&mut self) {
        if self.number > 0 {
            let s = self.step_started.elapsed().as_secs_f64();
            let _ = writeln!(self.log, "<== {} done in {s:.1} s", self.step);
        }
    }

    /// Ends the last step; the whole build's time.
    pub fn finish(&mut self) -> f64 {
        self.end_step();
        self.number = 0;
        self.started.elapsed().as_secs_f64()
    }

    pub fn note(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
        if !self.quiet {
            eprintln!("      {line}");
        }
    }

    pub fn io(&self, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StepError {
        let step = self.step.clone();
        let what = what.into();
        move |source| StepError::Io { step, what, source }
    }

    pub fn check(&self, what: impl Into<String>) -> StepError {
        StepError::Check {
            step: self.step.clone(),
            what: what.into(),
        }
    }

    /// Runs `cmd` with its output into the log; its stdout is returned too.
    pub fn run(&mut self, cmd: &mut Command) -> Result<String, StepError> {
        self.run_logging(cmd, true)
    }

    /// Like `run`, with only the tool's stderr in the log (for tools that echo every line of
    /// a long script).
    pub fn run_quiet(&mut self, cmd: &mut Command) -> Result<String, StepError> {
        self.run_logging(cmd, false)
    }

    fn run_logging(&mut self, cmd: &mut Command, stdout: bool) -> Result<String, StepError> {
        let tool = cmd.get_program().to_string_lossy().into_owned();
        let _ = writeln!(self.log, "$ {cmd:?}");
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| StepError::Spawn {
                step: self.step.clone(),
                tool: tool.clone(),
                source,
            })?;
        if stdout {
            let _ = self.log.write_all(&out.stdout);
        }
        let _ = self.log.write_all(&out.stderr);
        if !out.status.success() {
            return Err(StepError::Failed {
                step: self.step.clone(),
                tool,
                status: out.status.to_string(),
                log: self.log_path.clone(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `cmd` with `input` on its stdin, showing a bar of the bytes fed and their rate.
    pub fn pipe(&mut self, cmd: &mut Command, input: &Path) -> Result<(), StepError> {
        let tool = cmd.get_program().to_string_lossy().into_owned();
        let _ = writeln!(self.log, "$ {cmd:?} < {}", input.display());
        let mut src =
            File::open(input).map_err(self.io(format!("cannot read {}", input.display())))?;
        let total = src.metadata().map(|m| m.len()).unwrap_or(0);
        let log = self
            .log
            .try_clone()
            .map_err(self.io("cannot share the log"))?;
        let log2 = self
            .log
            .try_clone()
            .map_err(self.io("cannot share the log"))?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| StepError::Spawn {
                step: self.step.clone(),
                tool: tool.clone(),
                source,
            })?;
        let fed = (|| {
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| std::io::Error::other("no stdin"))?;
            let mut buf = vec![0u8; 4 << 20];
            let mut done = 0u64;
            let start = Instant::now();
            let mut shown = Instant::now();
            // A terminal gets a bar redrawn in place; a log, a line every ten seconds.
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let every = if tty { 500 } else { 10_000 };
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                stdin.write_all(&buf[..n])?;
                done += n as u64;
                if !self.quiet && shown.elapsed().as_millis() >= every {
                    shown = Instant::now();
                    let line = bar(done, total, start.elapsed().as_secs_f64());
                    if tty {
                        eprint!("\r      {line}");
                    } else {
                        eprintln!("      {line}");
                    }
                }
            }
            if !self.quiet {
                eprintln!(
                    "\r      {}",
                    bar(done, total, start.elapsed().as_secs_f64())
                );
            }
            Ok::<(), std::io::Error>(())
        })();
        let status = child
            .wait()
            .map_err(self.io(format!("waiting for {tool}")))?;
        fed.map_err(self.io(format!("feeding {tool}")))?;
        if !status.success() {
            return Err(StepError::Failed {
                step: self.step.clone(),
                tool,
                status: status.to_string(),
                log: self.log_path.clone(),
            });
        }
        Ok(())
    }
}

/// `[#########.........]  1.2 GiB / 4.0 GiB  310 MiB/s`
pub fn bar(done: u64, total: u64, secs: f64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done.min(total) * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let rate = if secs > 0.0 { mib(done) / secs } else { 0.0 };
    format!(
        "[{}{}] {:>7.1} MiB / {:.1} MiB  {rate:.0} MiB/s",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize),
        mib(done),
        mib(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_bytes_done() {
        let half = bar(512 << 20, 1024 << 20, 2.0);
        assert!(
            half.starts_with(&format!("[{}{}]", "#".repeat(15), ".".repeat(15))),
            "{half}"
        );
        assert!(half.contains("256 MiB/s"), "{half}");
        assert!(bar(5, 0, 0.0).starts_with(&format!("[{}]", "#".repeat(30))));
    }

    #[test]
    fn a_failed_tool_names_the_step_and_keeps_its_output_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let mut steps = Steps::open(&log, 2, true).unwrap();
        steps.begin("bootstrap");
        let e = steps
            .run(Command::new("sh").args(["-c", "echo the reason >&2; exit 3"]))
            .unwrap_err();
        assert!(e.to_string().contains("step bootstrap: sh failed"), "{e}");
        assert!(e.to_string().contains(&log.display().to_string()), "{e}");
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("the reason")
        );
        let e = steps
            .run(&mut Command::new("/nonexistent/tool"))
            .unwrap_err();
        assert!(matches!(e, StepError::Spawn { .. }), "{e}");
    }
}
