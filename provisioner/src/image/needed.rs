//! The shared libraries a program built for another architecture needs, read from its own ELF
//! dynamic section (`PT_INTERP`, `DT_NEEDED`) and found in that architecture's library folders
//! (a cross sysroot such as Debian's `/usr/aarch64-linux-gnu/lib`), each library's own needs
//! followed in turn, as the dynamic loader would. ldd cannot answer for such a program: it runs
//! the program's loader, which this host cannot execute.

use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NeededError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} is not a 64-bit little-endian ELF file: {reason}")]
    NotElf { path: PathBuf, reason: String },
    #[error("{path} is built for ELF machine {found}, not {want} ({arch})")]
    WrongMachine {
        path: PathBuf,
        found: elf::Machine,
        want: elf::Machine,
        arch: &'static str,
    },
    #[error("{program} needs {library}, which is in none of {searched}")]
    NotFound {
        program: String,
        library: String,
        searched: String,
    },
}

/// What one ELF file asks of the dynamic loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dynamic {
    /// `PT_INTERP`: the loader's path on the target (`/lib/ld-linux-aarch64.so.1`).
    pub interpreter: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
}

/// Reads `PT_INTERP` and `DT_NEEDED` from an ELF file's bytes, refusing one whose machine is
/// not `machine` (an x86-64 agent must never go into an arm64 image).
pub fn dynamic_of(
    path: &Path,
    data: &[u8],
    machine: elf::Machine,
    arch: &'static str,
) -> Result<Dynamic, NeededError> {
    type Header = elf::FileHeader64<object::LittleEndian>;
    let not_elf = |e: object::read::Error| NeededError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let header = Header::parse(data).map_err(not_elf)?;
    let endian = header.endian().map_err(not_elf)?;
    let found = header.e_machine(endian);
    if found != machine {
        return Err(NeededError::WrongMachine {
            path: path.to_path_buf(),
            found,
            want: machine,
            arch,
        });
    }
    let mut interpreter = None;
    for ph in header.program_headers(endian, data).map_err(not_elf)? {
        if let Some(interp) = ph.interpreter(endian, data).map_err(not_elf)? {
            interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = header.sections(endian, data).map_err(not_elf)?;
    let table = sections.dynamic_table(endian, data).map_err(not_elf)?;
    let mut needed = Vec::new();
    for d in table.iter() {
        if d.tag == elf::DT_NEEDED {
            let name = table.string(d).map_err(not_elf)?;
            needed.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(Dynamic {
        interpreter,
        needed,
    })
}

/// A library to copy: where it is on this host, and where the target's loader looks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Library {
    pub source: PathBuf,
    pub in_image: String,
}

/// Everything `program` needs, its loader first, then each library in the order it is first
/// needed, each once: the loader at its `PT_INTERP` path, the others under `lib_dir` (the
/// target's multiarch folder, `/lib/aarch64-linux-gnu`). `search` lists where on this host the
/// target's libraries are. A static program needs nothing.
pub fn libraries(
    program: &Path,
    machine: elf::Machine,
    arch: &'static str,
    search: &[PathBuf],
    lib_dir: &str,
) -> Result<Vec<Library>, NeededError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| NeededError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let find = |by: &Path, name: &str| {
        search
            .iter()
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| NeededError::NotFound {
                program: by.display().to_string(),
                library: name.to_string(),
                searched: search
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    };
    let top = dynamic_of(program, &read(program)?, machine, arch)?;
    let mut out: Vec<Library> = Vec::new();
    if let Some(interp) = &top.interpreter {
        let name = interp.rsplit('/').next().unwrap_or(interp);
        out.push(Library {
            source: find(program, name)?,
            in_image: interp.trim_start_matches('/').to_string(),
        });
    }
    // Breadth-first, as the loader orders its search list.
    let mut queue: Vec<(PathBuf, String)> = top
        .needed
        .iter()
        .map(|n| (program.to_path_buf(), n.clone()))
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some((by, name)) = queue.get(i).cloned() {
        i += 1;
        let is_loader = top
            .interpreter
            .as_deref()
            .is_some_and(|p| p.rsplit('/').next() == Some(name.as_str()));
        if seen.contains(&name) || is_loader {
            continue;
        }
        seen.push(name.clone());
        let source = find(&by, &name)?;
        let dynamic = dynamic_of(&source, &read(&source)?, machine, arch)?;
        queue.extend(dynamic.needed.into_iter().map(|n| (source.clone(), n)));
        out.push(Library {
            in_image: format!("{}/{name}", lib_dir.trim_matches('/')),
            source,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's aarch64 cross libc, where gcc-aarch64-linux-gnu puts it.
    const SYSROOT: &str = "/usr/aarch64-linux-gnu/lib";

    #[test]
    fn a_foreign_program_is_refused_by_machine_and_bytes_that_are_no_elf_are_said() {
        let me = std::env::current_exe().unwrap();
        let data = std::fs::read(&me).unwrap();
        let e = dynamic_of(&me, &data, elf::EM_AARCH64, "arm64").unwrap_err();
        #[cfg(target_arch = "x86_64")]
        assert!(
            matches!(
                e,
                NeededError::WrongMachine {
                    found: elf::EM_X86_64,
                    ..
                }
            ),
            "{e}"
        );
        let _ = e;
        assert!(matches!(
            dynamic_of(Path::new("x"), b"#!/bin/sh\n", elf::EM_AARCH64, "arm64"),
            Err(NeededError::NotElf { .. })
        ));
        // Truncated inside the program headers: an error, not a panic.
        assert!(dynamic_of(Path::new("x"), &data[..80], elf::EM_X86_64, "x86_64").is_err());
    }

    #[test]
    fn this_hosts_own_test_binary_needs_what_ldd_says() {
        // The native case checks the reader against ldd's answer: libc and the loader.
        #[cfg(target_arch = "x86_64")]
        {
            let me = std::env::current_exe().unwrap();
            let search = [PathBuf::from("/lib/x86_64-linux-gnu")];
            let libs = libraries(
                &me,
                elf::EM_X86_64,
                "x86_64",
                &search,
                "/lib/x86_64-linux-gnu",
            )
            .unwrap();
            assert_eq!(libs[0].in_image, "lib64/ld-linux-x86-64.so.2", "{libs:#?}");
            assert!(
                libs.iter()
                    .any(|l| l.in_image == "lib/x86_64-linux-gnu/libc.so.6"),
                "{libs:#?}"
            );
            let names: Vec<_> = libs.iter().map(|l| &l.in_image).collect();
            let mut unique = names.clone();
            unique.dedup();
            assert_eq!(names, unique, "each library once");
        }
    }

    #[test]
    fn an_arm64_library_is_followed_to_the_loader_in_the_cross_sysroot() {
        let libc = Path::new(SYSROOT).join("libc.so.6");
        if !libc.is_file() {
            eprintln!(
                "SKIPPED: no {} (apt-get install libc6-dev-arm64-cross)",
                libc.display()
            );
            return;
        }
        let data = std::fs::read(&libc).unwrap();
        let d = dynamic_of(&libc, &data, elf::EM_AARCH64, "arm64").unwrap();
        assert_eq!(d.needed, ["ld-linux-aarch64.so.1"]);
        assert_eq!(d.interpreter.as_deref(), Some("/lib/ld-linux-aarch64.so.1"));
        let missing = libraries(
            &libc,
            elf::EM_AARCH64,
            "arm64",
            &[PathBuf::from("/nonexistent")],
            "/lib/aarch64-linux-gnu",
        )
        .unwrap_err();
        assert!(
            missing.to_string().contains("ld-linux-aarch64.so.1"),
            "{missing}"
        );
    }
}
