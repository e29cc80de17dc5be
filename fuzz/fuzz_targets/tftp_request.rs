//! Fuzzes what a datagram on the TFTP server port reaches: the request's reading, its name
//! check, the options it would be given (`drivers::tftp_datagram`), and the same bytes read
//! as a transfer's ACK or ERROR. Seeds: `fuzz/seeds/tftp_request` (requests of tftp-hpa,
//! atftp, curl and iPXE, captured by `capture-seeds.sh`).

#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| drivers::tftp_datagram(data));
