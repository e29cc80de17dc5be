//! Fuzzes the sendfile path's request head: parsing and framing, the file it names, and the
//! response plan with its Range and conditional headers (`drivers::http_head`). Seeds:
//! `fuzz/seeds/http_head` (request heads of curl, wget and iPXE, captured by
//! `capture-seeds.sh`).

#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| drivers::http_head(data));
