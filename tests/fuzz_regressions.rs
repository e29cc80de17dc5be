//! Every fuzz seed and every input that once crashed a fuzz target, run through the same code
//! the targets drive (`fuzz/drivers.rs`) in each `cargo test`, so a crash found once stays
//! fixed without cargo-fuzz. These tests run with debug assertions, as the fuzzer does.

#[path = "../fuzz/drivers.rs"]
mod drivers;

use std::path::PathBuf;

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz"))
        .join(kind)
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn run(target: &str, min_seeds: usize, drive: fn(&[u8])) {
    let seeds = inputs("seeds", target);
    assert!(seeds.len() >= min_seeds, "{target}: {} seeds", seeds.len());
    let crashed = inputs("regressions", target);
    for (path, bytes) in seeds.iter().chain(&crashed) {
        let ok = std::panic::catch_unwind(|| drive(bytes));
        assert!(ok.is_ok(), "{} panics again", path.display());
    }
}

#[test]
fn dhcp_seeds_and_regressions_pass_the_whole_packet_path() {
    run("dhcp_packet", 10, drivers::dhcp_datagram);
    assert!(!inputs("regressions", "dhcp_packet").is_empty());
}

#[test]
fn tftp_seeds_and_regressions_pass_the_request_path() {
    run("tftp_request", 4, drivers::tftp_datagram);
}

#[test]
fn http_seeds_and_regressions_pass_the_head_parser() {
    run("http_head", 5, drivers::http_head);
}
