//! The burning_in step: what the node is told to run, and what its report does to it. The
//! judgement itself is `crate::burnin::judge`; this takes a report from an authenticated
//! agent, judges it against its slot's SKU and the cohort, stores both, and moves the node:
//! PASS or WARN on to enrolled, FAIL to failed with the reasons, a first performance failure
//! back to the node to run again.

use provisioner_protocol::burnin::{BurnInReport, DeviceResult};
use provisioner_protocol::{Instruction, ProgressReport};
use tracing::info;

use super::machine::{Actor, Input, State};
use super::{AgentError, Applied, Lifecycle, apply};
use crate::burnin::judge::{Cohort, CohortKey, Expected, Judgement, Level, judge};
use crate::clock::now_ms;
use crate::store as db;
use crate::store::StoreError;
use crate::store::burnin as runs;

impl Lifecycle {
    /// The burn-in a node in burning_in is to run: its SKU's plan, or only the checks its
    /// last report must run again.
    pub(super) async fn burnin_instruction(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        node: &db::nodes::NodeRecord,
    ) -> Result<Instruction, StoreError> {
        // Its drivers are checked before anything runs on them.
        if let Some(check) = self.drivers_instruction(tx, node).await? {
            return Ok(check);
        }
        let sku = match &node.slot {
            Some(slot) => db::plan::slot_sku(tx, slot).await?,
            None => None,
        };
        let Some(profile) = sku.as_ref().and_then(|s| self.profiles.by_sku.get(s)) else {
            return Ok(Instruction::Wait {
                seconds: 60,
                reason: format!(
                    "no burn-in profile for SKU {}; the appliance fails the step when it times out",
                    sku.as_deref().unwrap_or("(no slot)")
                ),
            });
        };
        let mut plan = profile.plan.clone();
        if let Some(slot) = &node.slot {
            plan.nic_speed_mbps = db::plan::slot_nics(tx, slot).await?.map(|(_, mbps)| mbps);
        }
        if let Some(last) = this_burn_in(tx, node).await? {
            plan.only = last.retry;
        }
        Ok(Instruction::BurnIn { plan })
    }

    /// A node's burn-in report. Refused (changing nothing) unless the node is burning in and
    /// the token is its own.
    pub async fn burnin(
        &self,
        bearer: Option<&str>,
        report: &BurnInReport,
    ) -> Result<Judgement, AgentError> {
        let _one = self.write.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (mac, _, node) = self
            .calling_node(&mut tx, bearer, report.mac, false)
            .await?;
        if node.state != State::BurningIn {
            return Err(AgentError::NotNow {
                mac,
                state: node.state.name().to_string(),
                what: "a burn-in report",
            });
        }
        let slot = node.slot.clone().unwrap_or_default();
        let Some(sku) = db::plan::slot_sku(&mut tx, &slot).await? else {
            return Err(AgentError::NoSlot(mac));
        };
        let Some(profile) = self.profiles.by_sku.get(&sku) else {
            return Err(AgentError::NoProfile(sku));
        };
        // A retry's report carries only the checks run again: they replace the last report's.
        let last = this_burn_in(&mut tx, &node).await?;
        let merged = match &last {
            Some(l) if !l.retry.is_empty() => merge_retry(&l.report, report, &l.retry),
            _ => report.clone(),
        };
        let expected = Expected::of_sku(
            self.skus.sku.get(&sku),
            db::plan::slot_nics(&mut tx, &slot).await?,
        );
        let cohort = self.cohort(&mut tx, &sku, &merged, node.id).await?;
        let judgement = judge(&merged, profile, &expected, &cohort);
        let level = match judgement.level {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let report_json = serde_json::to_string(&merged).expect("a report serializes");
        let judgement_json = serde_json::to_string(&judgement).expect("a judgement serializes");
        let run_id = runs::add_run(
            &mut tx,
            &runs::NewRun {
                node_id: node.id,
                at_ms: now,
                sku: &sku,
                profile_version: profile.version,
                level,
                retry: &judgement.retry,
                report: &report_json,
                judgement: &judgement_json,
            },
        )
        .await?;
        let provisional = judgement.level != Level::Fail && !judgement.retry.is_empty();
        if !provisional {
            // Only figures that passed (or warned) join the cohort: a faulty device must not
            // drag its cohort's median towards it.
            let failed: std::collections::BTreeSet<(&str, &str)> = judgement
                .devices
                .iter()
                .flat_map(|d| {
                    d.checks
                        .iter()
                        .filter(|c| c.level == Level::Fail)
                        .map(move |c| (d.id.as_str(), c.check.as_str()))
                })
                .collect();
            let device_failed: std::collections::BTreeSet<&str> = judgement
                .devices
                .iter()
                .filter(|d| d.level == Level::Fail)
                .map(|d| d.id.as_str())
                .collect();
            let kinds: Vec<(&str, &DeviceResult)> = merged
                .devices
                .iter()
                .filter(|d| !device_failed.contains(d.id.as_str()))
                .filter_map(|d| d.kind.map(|k| (k.as_str(), d)))
                .collect();
            let figures: Vec<runs::Figure> = kinds
                .iter()
                .flat_map(|(kind, d)| {
                    let failed = &failed;
                    d.measurements
                        .iter()
                        .filter(move |(check, _)| {
                            !failed.contains(&(d.id.as_str(), check.as_str()))
                        })
                        .map(move |(check, m)| runs::Figure {
                            kind,
                            device: &d.id,
                            driver: d.driver.as_deref(),
                            firmware: d.firmware.as_deref(),
                            check,
                            value: m.value,
                        })
                })
                .collect();
            runs::add_figures(&mut tx, run_id, node.id, &sku, &figures).await?;
        }
        let input = match judgement.level {
            Level::Fail => Some(Input::StepFailed {
                reason: format!("burn-in failed: {}", judgement.failures().join("; ")),
            }),
            _ if provisional => None,
            _ => Some(Input::BurnInPassed),
        };
        let done = match input {
            Some(input) => apply(&mut tx, &node, &input, &Actor::Agent, now).await??,
            None => Applied::unchanged(&node),
        };
        info!(%mac, level, retry = judgement.retry.len(), state = %done.state, "burn-in judged");
        self.commit(tx, [done]).await?;
        Ok(judgement)
    }

    /// Progress lines from a node's agent, kept with the node. Lines are cut to 500
    /// characters and at most 100 are taken per call.
    pub async fn progress(
        &self,
        bearer: Option<&str>,
        p: &ProgressReport,
    ) -> Result<usize, AgentError> {
        let mut tx = self.pool.begin().await?;
        let (_, _, node) = self
            .calling_node(&mut tx, bearer, Some(p.mac), false)
            .await?;
        let lines: Vec<String> = p
            .lines
            .iter()
            .take(100)
            .map(|l| l.chars().take(500).collect())
            .collect();
        runs::add_progress(&mut tx, node.id, now_ms(), &lines).await?;
        tx.commit().await?;
        self.announce(super::Change {
            node: Some(node.mac.to_string()),
            state: None,
            rack: node
                .slot
                .as_deref()
                .and_then(super::rack_of)
                .map(|r| r.to_string()),
        });
        Ok(lines.len())
    }

    /// The cohort of every (kind, check, driver, firmware) the report has.
    async fn cohort(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        sku: &str,
        report: &BurnInReport,
        node_id: i64,
    ) -> Result<Cohort, StoreError> {
        let mut cohort = Cohort::new();
        for d in &report.devices {
            let Some(kind) = d.kind else { continue };
            for check in d.measurements.keys() {
                let key = CohortKey::of(d, kind, check);
                if cohort.contains_key(&key) {
                    continue;
                }
                let values = runs::cohort(
                    tx,
                    sku,
                    kind.as_str(),
                    check,
                    d.driver.as_deref(),
                    d.firmware.as_deref(),
                    node_id,
                )
                .await?;
                cohort.insert(key, values);
            }
        }
        Ok(cohort)
    }
}

/// The node's last run, if it belongs to this stay in burning_in: a retry left over from an
/// earlier one (before a failure and a reprovision) must not cut a new burn-in short.
async fn this_burn_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    node: &db::nodes::NodeRecord,
) -> Result<Option<runs::RunRow>, StoreError> {
    Ok(runs::last_run(tx, node.id)
        .await?
        .filter(|r| r.at_ms >= node.state_since_ms))
}

/// The last report with the retried checks' new figures in place, marked as second attempts.
fn merge_retry(
    last: &serde_json::Value,
    retry: &BurnInReport,
    pairs: &[(String, String)],
) -> BurnInReport {
    let Ok(mut merged) = serde_json::from_value::<BurnInReport>(last.clone()) else {
        return retry.clone();
    };
    for d in &retry.devices {
        let Some(old) = merged.devices.iter_mut().find(|o| o.id == d.id) else {
            merged.devices.push(d.clone());
            continue;
        };
        for (check, m) in &d.measurements {
            let mut m = m.clone();
            if pairs.iter().any(|(dev, c)| *dev == d.id && c == check) {
                m.attempt = m.attempt.max(2);
            }
            old.measurements.insert(check.clone(), m);
        }
        for (name, n) in &d.counters {
            *old.counters.entry(name.clone()).or_default() += n;
        }
        old.xids.extend(d.xids.iter().copied());
        if d.cannot_validate.is_some() {
            old.cannot_validate = d.cannot_validate.clone();
        }
        if d.conditions.is_some() {
            old.conditions = d.conditions.clone();
        }
    }
    merged.mac = retry.mac;
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_protocol::burnin::{DeviceKind, Measurement};
    use std::collections::BTreeMap;

    fn device(id: &str, value: f64, attempt: u32) -> DeviceResult {
        DeviceResult {
            id: id.into(),
            kind: Some(DeviceKind::Gpu),
            measurements: BTreeMap::from([(
                "gemm_bf16_p50".into(),
                Measurement {
                    value,
                    unit: "TFLOP/s".into(),
                    attempt,
                },
            )]),
            ..Default::default()
        }
    }

    #[test]
    fn a_retry_replaces_only_its_checks_and_counts_as_the_second_attempt() {
        let last = BurnInReport {
            mac: None,
            devices: vec![device("a", 670.0, 1), device("b", 530.0, 1)],
        };
        let mut again = device("b", 668.0, 1);
        again.counters.insert("gemm_mismatches".into(), 1);
        let retry = BurnInReport {
            mac: None,
            devices: vec![again],
        };
        let merged = merge_retry(
            &serde_json::to_value(&last).unwrap(),
            &retry,
            &[("b".into(), "gemm_bf16_p50".into())],
        );
        let m = &merged.devices[1].measurements["gemm_bf16_p50"];
        assert_eq!((m.value, m.attempt), (668.0, 2));
        assert_eq!(merged.devices[0].measurements["gemm_bf16_p50"].value, 670.0);
        // Faults seen in the retry are not forgotten.
        assert_eq!(merged.devices[1].counters["gemm_mismatches"], 1);
    }
}
