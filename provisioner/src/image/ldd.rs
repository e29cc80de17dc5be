//! The shared libraries a dynamically linked program needs, found as initramfs-tools'
//! `copy_exec` finds them: by asking ldd(1) and copying each library it resolved, the dynamic
//! loader included, to the same path in the image.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LddError {
    #[error("{program} needs {library}, which ldd cannot find on this host")]
    NotFound { program: String, library: String },
    #[error("ldd said `{line}` about {program}, which is not a library line")]
    Malformed { program: String, line: String },
    #[error("cannot run ldd on {program}: {reason}")]
    Run { program: String, reason: String },
}

/// The libraries in ldd's answer about `program`, in its order, each once. `linux-vdso.so.1`
/// (provided by the kernel, no file) is left out; `=> not found` is an error.
pub fn parse(program: &str, output: &str) -> Result<Vec<PathBuf>, LddError> {
    let mut libs: Vec<PathBuf> = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "statically linked" {
            continue;
        }
        // Drop the load address: `libc.so.6 => /lib/.../libc.so.6 (0x00007f...)`.
        let line_no_addr = match line.rfind(" (0x") {
            Some(i) if line.ends_with(')') => line[..i].trim(),
            _ => line,
        };
        let path = match line_no_addr.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target == "not found" {
                    return Err(LddError::NotFound {
                        program: program.to_string(),
                        library: name.trim().to_string(),
                    });
                }
                // `linux-vdso.so.1 =>  (0x...)` on older glibc: a library with no file.
                if target.is_empty() {
                    continue;
                }
                target
            }
            // The loader is named by its path alone; the vDSO by its name alone.
            None if line_no_addr.starts_with('/') => line_no_addr,
            None if line_no_addr != line && !line_no_addr.contains(' ') => continue,
            None => {
                return Err(LddError::Malformed {
                    program: program.to_string(),
                    line: line.to_string(),
                });
            }
        };
        if !path.starts_with('/') {
            return Err(LddError::Malformed {
                program: program.to_string(),
                line: line.to_string(),
            });
        }
        let path = PathBuf::from(path);
        if !libs.contains(&path) {
            libs.push(path);
        }
    }
    Ok(libs)
}

/// Runs ldd on `program` and returns the libraries it needs (none for a static program).
pub fn libraries(program: &Path) -> Result<Vec<PathBuf>, LddError> {
    let name = program.display().to_string();
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| LddError::Run {
            program: name.clone(),
            reason: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // glibc's ldd exits 1 for a static program and says so.
        if stderr.contains("not a dynamic executable")
            || stdout.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(LddError::Run {
            program: name,
            reason: format!("{}: {}", out.status, stderr.trim()),
        });
    }
    parse(&name, &stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ldd target/release/provisioner-agent` on Debian 12.
    const AGENT: &str = "\tlinux-vdso.so.1 (0x00007fd384a7a000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007fd3849f0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fd38480e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007fd384a7c000)
";

    #[test]
    fn libraries_and_loader_keep_their_paths_and_the_vdso_is_left_out() {
        assert_eq!(
            parse("agent", AGENT).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn older_glibc_vdso_and_static_programs() {
        let old =
            "\tlinux-vdso.so.1 =>  (0x00007ffc3d9e4000)\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        assert_eq!(parse("p", old).unwrap(), [PathBuf::from("/lib/libc.so.6")]);
        assert!(parse("p", "\tstatically linked\n").unwrap().is_empty());
        let twice = format!("{AGENT}\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n");
        assert_eq!(parse("p", &twice).unwrap().len(), 3, "each library once");
    }

    #[test]
    fn a_library_not_found_is_an_error_naming_it() {
        let out = format!("{AGENT}\tlibcuda.so.1 => not found\n");
        assert_eq!(
            parse("agent", &out),
            Err(LddError::NotFound {
                program: "agent".into(),
                library: "libcuda.so.1".into()
            })
        );
    }

    #[test]
    fn an_unexpected_line_is_refused() {
        assert!(matches!(
            parse("p", "something odd happened here\n"),
            Err(LddError::Malformed { .. })
        ));
        assert!(matches!(
            parse("p", "libx.so => relative/libx.so (0x1)\n"),
            Err(LddError::Malformed { .. })
        ));
    }

    #[test]
    fn a_program_that_is_not_dynamic_needs_nothing() {
        if !Path::new("/usr/bin/ldd").is_file() {
            eprintln!("SKIPPED: no ldd (apt-get install libc-bin)");
            return;
        }
        // glibc's ldd answers a script as it answers a static binary.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert_eq!(libraries(&script).unwrap(), Vec::<PathBuf>::new());
        assert!(matches!(
            libraries(&dir.path().join("absent")),
            Err(LddError::Run { .. })
        ));
    }
}
