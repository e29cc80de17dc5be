//! Fuzzes everything a DHCP datagram reaches before a socket is written: framing checks,
//! decoding, the decisions of full and proxy mode, the drop counters and log lines, the
//! reply's encoding and its journal event (`drivers::dhcp_datagram`). Nothing may panic, and
//! no address may end up bound to two MACs.
//! Seeds: real client packets in `fuzz/seeds/dhcp_packet` (see `capture-seeds.sh`); inputs
//! that once crashed: `fuzz/regressions/dhcp_packet`.

#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| drivers::dhcp_datagram(data));
