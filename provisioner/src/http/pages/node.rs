//! The node page: state, slot, a summary of its facts, its timeline, its latest burn-in
//! judgement per device, and its boot events.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use provisioner_protocol::Facts;

use super::{PageError, class, current_step, html, slot_rack_href, when};
use crate::burnin::judge::{Judgement, Level};
use crate::http::AppState;
use crate::store::lifecycle as db;
use crate::types::MacAddr;

/// Boot events shown: the latest, so that a node that loops on its boot keeps a small page.
const EVENTS_SHOWN: usize = 200;

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
}

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

pub async fn node(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Some(n) = st.boot.lifecycle.find(&id).await? else {
        return Err(PageError::NotFound(format!("node {id}")));
    };
    let (facts, facts_note) = match db::facts(&st.store, n.id).await? {
        None => (None, "not inspected yet".to_string()),
        Some(v) => match serde_json::from_value::<Facts>(v) {
            Ok(f) => (Some(facts_view(&f)), String::new()),
            Err(e) => (None, format!("the facts cannot be read: {e}")),
        },
    };
    let timeline = db::timeline(&st.store, n.id)
        .await?
        .into_iter()
        .map(|t| Line {
            at: when(t.at_ms),
            what: format!("{} → {}: {}", t.from, t.to, t.cause),
            by: t.actor,
        })
        .collect();
    let burnin = burnin_view(&crate::store::burnin::runs(&st.store, n.id).await?);
    let seen = match n.mac.parse::<MacAddr>() {
        Ok(mac) => crate::store::nodes::get(&st.journal, mac).await?,
        Err(_) => None,
    };
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
    html(&NodePage {
        id: n.id,
        class: class(Some(&n.state)),
        detail: n.state.to_string(),
        step: current_step(&n.state),
        since: when(n.state_since_ms),
        rack_href: n.slot.as_deref().and_then(slot_rack_href),
        slot: n.slot.unwrap_or_else(|| "not in any slot".into()),
        mac: n.mac,
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
}
