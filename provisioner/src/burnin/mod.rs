//! Burn-in judgement on the appliance: the agent measures, this decides. Per-SKU profiles
//! (floors, counters that must stay zero, hardware XIDs), the node-mate and cohort gates, and
//! verdicts with reasons.

pub mod judge;
pub mod offline;
pub mod profile;
