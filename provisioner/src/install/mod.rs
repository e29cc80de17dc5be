//! Installing an OS image on an inspected node: which disk, and (later) the instruction the
//! agent follows.

pub mod hints;
