//! The node page: state, slot, a summary of its facts, its timeline, its latest burn-in
//! judgement per device with charts of its figures, and its boot events.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use provisioner_protocol::Facts;
use provisioner_protocol::burnin::{BurnInReport, ConditionPoint, DeviceKind, DeviceResult};
use serde::Deserialize;

use super::charts::{self, Bar, BarChart, LineChart, Series};
use super::{PageError, Viewer, class, current_step, html, slot_rack_href, when};
use crate::burnin::judge::{Judgement, Level, MIN_COHORT, median};
use crate::burnin::profile::Profile;
use crate::http::{AppState, web};
use crate::lifecycle::machine::{Action, State as NodeState};
use crate::store as db;
use crate::store::{Pool, StoreError};

/// Boot events shown: the latest, so that a node that loops on its boot keeps a small page.
const EVENTS_SHOWN: usize = 200;

/// The device kinds whose burn-in is charted, each with the name shown.
const CHARTED: [(DeviceKind, &str); 2] = [(DeviceKind::Gpu, "GPU"), (DeviceKind::Neuron, "Neuron")];

/// The cohort's median of a check, by device kind and check.
type Medians = BTreeMap<(DeviceKind, String), f64>;

struct FactsView {
    vendor: String,
    product: String,
    serial: String,
    cpu: String,
    threads: u32,
    memory: String,
    disks: Vec<String>,
    nics: Vec<String>,
    gpus: usize,
    problems: Vec<String>,
}

struct Line {
    at: String,
    what: String,
    by: String,
}

struct CheckLine {
    check: String,
    level: &'static str,
    reason: String,
}

struct DeviceLine {
    id: String,
    level: &'static str,
    checks: Vec<CheckLine>,
}

struct BurnIn {
    at: String,
    level: String,
    runs: usize,
    node: Vec<CheckLine>,
    devices: Vec<DeviceLine>,
    note: String,
    /// SVG markup, escaped by `charts` itself: the template puts it in as it is.
    charts: Vec<String>,
}

#[derive(Template)]
#[template(path = "pages/node.html")]
struct NodePage {
    id: i64,
    mac: String,
    class: &'static str,
    detail: String,
    step: &'static str,
    since: String,
    slot: String,
    rack_href: Option<String>,
    facts: Option<FactsView>,
    facts_note: String,
    timeline: Vec<Line>,
    burnin: Option<BurnIn>,
    events: Vec<Line>,
    events_total: usize,
    /// The agent's latest progress lines, while it works.
    progress: Vec<Line>,
    viewer: Option<Viewer>,
    /// What the signed-in operator may do to the node in its state.
    actions: Vec<&'static str>,
}

/// Progress lines shown on the node page.
const PROGRESS_SHOWN: i64 = 20;

fn or_dash(s: &Option<String>) -> String {
    s.as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("-")
        .to_string()
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

fn facts_view(f: &Facts) -> FactsView {
    FactsView {
        vendor: or_dash(&f.dmi.sys_vendor),
        product: or_dash(&f.dmi.product_name),
        serial: or_dash(&f.dmi.product_serial),
        cpu: or_dash(&f.cpu.model),
        threads: f.cpu.threads,
        memory: gib(f.memory.total_bytes),
        disks: f
            .disks
            .iter()
            .map(|d| format!("{} {} {}", d.name, gib(d.size_bytes), or_dash(&d.model)))
            .collect(),
        nics: f
            .nics
            .iter()
            .map(|n| match n.speed_mbps {
                Some(s) => format!("{} {} {s} Mb/s", n.name, n.mac),
                None => format!("{} {}", n.name, n.mac),
            })
            .collect(),
        gpus: f.gpus.len(),
        problems: f.problems.clone(),
    }
}

fn level(l: Level) -> &'static str {
    match l {
        Level::Pass => "pass",
        Level::Warn => "warn",
        Level::Fail => "fail",
    }
}

fn burnin_view(runs: &[crate::store::burnin::RunRow]) -> Option<BurnIn> {
    let last = runs.last()?;
    let mut view = BurnIn {
        at: when(last.at_ms),
        level: last.level.clone(),
        runs: runs.len(),
        node: Vec::new(),
        devices: Vec::new(),
        note: String::new(),
        charts: Vec::new(),
    };
    let check = |c: &crate::burnin::judge::CheckVerdict| CheckLine {
        check: c.check.clone(),
        level: if c.retry { "retry" } else { level(c.level) },
        reason: c.reason.clone(),
    };
    match serde_json::from_value::<Judgement>(last.judgement.clone()) {
        Ok(j) => {
            view.node = j.node.iter().map(check).collect();
            view.devices = j
                .devices
                .iter()
                .map(|d| DeviceLine {
                    id: d.id.clone(),
                    level: level(d.level),
                    checks: d.checks.iter().map(check).collect(),
                })
                .collect();
        }
        Err(e) => view.note = format!("the judgement cannot be read: {e}"),
    }
    Some(view)
}

/// The devices of `kind` in the report.
fn of_kind(report: &BurnInReport, kind: DeviceKind) -> Vec<&DeviceResult> {
    report
        .devices
        .iter()
        .filter(|d| d.kind == Some(kind))
        .collect()
}

/// The charts of a report: for each accelerator check with a floor in the profile, a bar per
/// device against the floor and the cohort's median; per kind, temperature and power over
/// the run, with the power limits.
fn burnin_charts(
    report: &BurnInReport,
    profile: Option<&Profile>,
    medians: &Medians,
) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, name) in CHARTED {
        let devices = of_kind(report, kind);
        if devices.is_empty() {
            continue;
        }
        let floors = profile.map_or(&[][..], |p| &p.floors[..]);
        for floor in floors.iter().filter(|f| f.kind == kind) {
            // A figure in another unit than its floor's is not drawn against it (the table
            // says why it failed).
            let bars: Vec<Bar> = devices
                .iter()
                .filter_map(|d| {
                    let m = d.measurements.get(&floor.name)?;
                    (m.unit == floor.unit).then(|| Bar {
                        device: d.id.clone(),
                        value: m.value,
                    })
                })
                .collect();
            out.extend(charts::bar_chart(&BarChart {
                check: &floor.name,
                unit: &floor.unit,
                bars: &bars,
                floor: Some(floor.min),
                median: medians.get(&(kind, floor.name.clone())).copied(),
            }));
        }
        let series = |value: fn(&ConditionPoint) -> Option<f64>| -> Vec<Series> {
            devices
                .iter()
                .filter_map(|d| {
                    let points = d
                        .conditions
                        .as_ref()?
                        .series
                        .iter()
                        .filter_map(|p| Some((p.t_s, value(p)?)))
                        .collect();
                    Some(Series {
                        device: d.id.clone(),
                        points,
                    })
                })
                .collect()
        };
        let limits: Vec<f64> = devices
            .iter()
            .filter_map(|d| d.conditions.as_ref()?.power_limit_w)
            .collect();
        out.extend(charts::line_chart(&LineChart {
            title: &format!("{name} temperature"),
            unit: "°C",
            series: &series(|p| p.temperature_c),
            limits: &[],
        }));
        out.extend(charts::line_chart(&LineChart {
            title: &format!("{name} power"),
            unit: "W",
            series: &series(|p| p.power_w),
            limits: &limits,
        }));
    }
    out
}

/// The cohort's median of each charted check: the passed figures of other nodes of the same
/// SKU, kind, driver and firmware, as the store holds them now (so possibly more than the run
/// was judged against). Where the node's devices differ in driver or firmware there is no
/// one cohort, and no median is drawn.
async fn cohort_medians(
    pool: &Pool,
    sku: &str,
    report: &BurnInReport,
    profile: &Profile,
    node_id: i64,
) -> Result<Medians, StoreError> {
    let mut medians = Medians::new();
    let mut tx = pool.begin().await?;
    for (kind, _) in CHARTED {
        let devices = of_kind(report, kind);
        for floor in profile.floors.iter().filter(|f| f.kind == kind) {
            let cohorts: BTreeSet<(Option<&str>, Option<&str>)> = devices
                .iter()
                .filter(|d| d.measurements.contains_key(&floor.name))
                .map(|d| (d.driver.as_deref(), d.firmware.as_deref()))
                .collect();
            let [(driver, firmware)] = cohorts.into_iter().collect::<Vec<_>>()[..] else {
                continue;
            };
            let mut values = crate::store::burnin::cohort(
                &mut tx,
                sku,
                kind.as_str(),
                &floor.name,
                driver,
                firmware,
                node_id,
            )
            .await?;
            // As in the judgement: too few figures say nothing about a median.
            if values.len() >= MIN_COHORT {
                medians.insert((kind, floor.name.clone()), median(&mut values));
            }
        }
    }
    Ok(medians)
}

/// Draws the charts of the node's latest run into its view, or says why there are none.
async fn add_charts(
    st: &AppState,
    node_id: i64,
    run: &crate::store::burnin::RunRow,
    view: &mut BurnIn,
) -> Result<(), StoreError> {
    let report = match BurnInReport::deserialize(&run.report) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("the report cannot be read: {e}");
            view.note = match view.note.as_str() {
                "" => why,
                note => format!("{note}; {why}"),
            };
            return Ok(());
        }
    };
    let profile = st.boot.lifecycle.profiles().by_sku.get(&run.sku);
    let medians = match profile {
        Some(p) => cohort_medians(&st.store, &run.sku, &report, p, node_id).await?,
        None => Medians::new(),
    };
    view.charts = burnin_charts(&report, profile, &medians);
    Ok(())
}

pub async fn node(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let Some(n) = st.boot.lifecycle.find(&id).await? else {
        return Err(PageError::not_found(format!("node {id}")));
    };
    let (facts, facts_note) = match db::nodes::facts(&st.store, n.id).await? {
        None => (None, "not inspected yet".to_string()),
        Some(v) => match serde_json::from_value::<Facts>(v) {
            Ok(f) => (Some(facts_view(&f)), String::new()),
            Err(e) => (None, format!("the facts cannot be read: {e}")),
        },
    };
    let timeline = db::nodes::timeline(&st.store, n.id)
        .await?
        .into_iter()
        .map(|t| Line {
            at: when(t.at_ms),
            what: format!("{} → {}: {}", t.from, t.to, t.cause),
            by: t.actor,
        })
        .collect();
    let runs = crate::store::burnin::runs(&st.store, n.id).await?;
    let mut burnin = burnin_view(&runs);
    if let (Some(view), Some(last)) = (burnin.as_mut(), runs.last()) {
        add_charts(&st, n.id, last, view).await?;
    }
    let seen = crate::store::journal::get(&st.journal, n.mac).await?;
    let all = seen.map(|(_, e)| e).unwrap_or_default();
    let events_total = all.len();
    let events = all
        .into_iter()
        .skip(events_total.saturating_sub(EVENTS_SHOWN))
        .map(|e| Line {
            at: when(e.at_ms),
            what: e.detail,
            by: e.kind,
        })
        .collect();
    let working = matches!(
        n.state,
        NodeState::Inspecting | NodeState::Installing { .. } | NodeState::BurningIn
    );
    let progress = if working {
        crate::store::burnin::progress(&st.store, n.id, PROGRESS_SHOWN)
            .await?
            .into_iter()
            .map(|p| Line {
                at: when(p.at_ms),
                what: p.line,
                by: String::new(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let viewer = web::viewer(&st, &headers).await?;
    let actions = Action::allowed(&n.state)
        .into_iter()
        .map(Action::as_str)
        .collect();
    html(&NodePage {
        progress,
        viewer,
        actions,
        id: n.id,
        class: class(Some(&n.state)),
        detail: n.state.to_string(),
        step: current_step(&n.state),
        since: when(n.state_since_ms),
        rack_href: n.slot.as_deref().and_then(slot_rack_href),
        slot: n.slot.unwrap_or_else(|| "not in any slot".into()),
        mac: n.mac.to_string(),
        facts,
        facts_note,
        timeline,
        burnin,
        events,
        events_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_summary() {
        let mut f = Facts::default();
        f.dmi.product_serial = Some("SN-1".into());
        f.memory.total_bytes = 2 << 30;
        let v = facts_view(&f);
        assert_eq!(v.serial, "SN-1");
        assert_eq!(v.vendor, "-");
        assert_eq!(v.memory, "2.0 GiB");
        assert_eq!(v.gpus, 0);
    }

    #[test]
    fn no_runs_no_burnin() {
        assert!(burnin_view(&[]).is_none());
    }

    /// The charts' titles, in order.
    fn titles(charts: &[String]) -> Vec<&str> {
        charts
            .iter()
            .filter_map(|c| c.split("<title>").nth(1)?.split("</title>").next())
            .collect()
    }

    #[test]
    fn the_profiles_floors_choose_the_bar_charts() {
        use crate::burnin::profile::{Profiles, SHIPPED_PROFILES};
        use provisioner_protocol::burnin::{Conditions, Measurement};
        let m = |value: f64, unit: &str| Measurement {
            value,
            unit: unit.into(),
            attempt: 1,
        };
        let point = |t_s: f64, temperature: f64| ConditionPoint {
            t_s,
            power_w: None,
            temperature_c: Some(temperature),
            sm_clock_mhz: None,
        };
        let gpu = DeviceResult {
            id: "0000:18:00.0".into(),
            kind: Some(DeviceKind::Gpu),
            // A figure with no floor in the profile is not charted.
            measurements: BTreeMap::from([
                ("hbm_copy".into(), m(2.9, "TB/s")),
                ("hbm_pattern_coverage".into(), m(0.9, "fraction")),
            ]),
            conditions: Some(Conditions {
                series: vec![point(0.0, 50.0), point(1.0, 60.0)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let cpu = DeviceResult {
            id: "cpu".into(),
            kind: Some(DeviceKind::Cpu),
            measurements: BTreeMap::from([("cpu_gflops".into(), m(900.0, "GFLOP/s"))]),
            ..Default::default()
        };
        let report = BurnInReport {
            mac: None,
            devices: vec![gpu, cpu],
        };
        let profiles = Profiles::parse(SHIPPED_PROFILES).unwrap();
        let medians = Medians::from([((DeviceKind::Gpu, "hbm_copy".into()), 3.0)]);
        let charts = burnin_charts(&report, profiles.by_sku.get("hgx-h100"), &medians);
        // No power samples: no power chart.
        assert_eq!(titles(&charts), ["hbm_copy, TB/s", "GPU temperature, °C"]);
        assert!(
            charts[0].contains(">floor 2.7</text>")
                && charts[0].contains(">cohort median 3</text>")
        );
        // A SKU without a profile still shows how its devices ran.
        let charts = burnin_charts(&report, None, &Medians::new());
        assert_eq!(titles(&charts), ["GPU temperature, °C"]);
    }
}
