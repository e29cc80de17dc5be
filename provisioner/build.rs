//! Says at build time what the tests of this machine can use, so that a test that needs root
//! or a program the machine lacks is reported as ignored, with what it needs, rather than
//! passed without checking anything:
//!
//! - `cfg(lab)`: running as root (network namespaces, taps, port 69);
//! - `cfg(tool = "NAME")`: NAME is on the PATH (curl, tftp, atftp, chromium, ldd, apt-get,
//!   minisign, mmdebstrap, gpg, apt-ftparchive).
//!
//! In CI (`CI=true`) every one is set: there each test runs, and a missing package fails it.
//! Only the tests read these; the appliance is the same either way.

use std::path::Path;

const TOOLS: [&str; 10] = [
    "curl",
    "tftp",
    "atftp",
    "chromium",
    "ldd",
    "apt-get",
    "minisign",
    "mmdebstrap",
    "gpg",
    "apt-ftparchive",
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lab)");
    let values: Vec<String> = TOOLS.iter().map(|t| format!("\"{t}\"")).collect();
    println!(
        "cargo::rustc-check-cfg=cfg(tool, values({}))",
        values.join(", ")
    );
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=USER");
    println!("cargo::rerun-if-changed=build.rs");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0");
    if ci || root {
        println!("cargo::rustc-cfg=lab");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<_> = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .collect();
    for tool in TOOLS {
        if ci || dirs.iter().any(|d| Path::new(d).join(tool).is_file()) {
            println!("cargo::rustc-cfg=tool=\"{tool}\"");
        }
    }
}
