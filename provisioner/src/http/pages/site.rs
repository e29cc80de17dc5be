//! The site overview and the rack view: the rack plan with the nodes that hold its slots.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{PageError, Viewer, class, current_step, html, rack_href, when};
use crate::checklist::{self, ChecklistError};
use crate::http::{AppState, web};
use crate::lifecycle::machine::{STATE_NAMES, State as NodeState};
use crate::store as db;
use crate::store::nodes::NodeRecord;
use crate::store::plan::PlanRow;

/// A node that needs a person: failed or held.
struct Attention {
    id: i64,
    mac: String,
    class: &'static str,
    detail: String,
    slot: String,
    since: String,
}

struct Count {
    state: &'static str,
    n: usize,
}

/// One slot in a small elevation.
struct Unit {
    u: i64,
    class: &'static str,
    node: Option<i64>,
}

struct RackSummary {
    name: String,
    href: String,
    /// Highest U first, as the rack stands.
    units: Vec<Unit>,
    nodes: usize,
}

struct RowView {
    name: String,
    racks: Vec<RackSummary>,
}

struct SiteView {
    name: String,
    rows: Vec<RowView>,
}

/// The overview's content: the same for every viewer, cached until a node changes state or
/// the plan is imported again.
#[derive(Template)]
#[template(path = "pages/overview_content.html")]
struct OverviewContent {
    attention: Vec<Attention>,
    counts: Vec<Count>,
    sites: Vec<SiteView>,
    slots: usize,
    nodes: usize,
}

fn by_slot(nodes: &[NodeRecord]) -> HashMap<&str, &NodeRecord> {
    nodes
        .iter()
        .filter_map(|n| n.slot.as_deref().map(|s| (s, n)))
        .collect()
}

/// Failed nodes first, then held ones, each oldest first.
fn attention(nodes: &[NodeRecord]) -> Vec<Attention> {
    let mut out: Vec<&NodeRecord> = nodes
        .iter()
        .filter(|n| matches!(n.state, NodeState::Failed { .. } | NodeState::Held { .. }))
        .collect();
    out.sort_by_key(|n| (!matches!(n.state, NodeState::Failed { .. }), n.id));
    out.into_iter()
        .map(|n| Attention {
            id: n.id,
            mac: n.mac.to_string(),
            class: class(Some(&n.state)),
            detail: n.state.to_string(),
            slot: n.slot.clone().unwrap_or_else(|| "not in any slot".into()),
            since: when(n.state_since_ms),
        })
        .collect()
}

fn counts(nodes: &[NodeRecord], empty: usize) -> Vec<Count> {
    let mut counts: Vec<Count> = STATE_NAMES
        .iter()
        .map(|&state| Count {
            state,
            n: nodes.iter().filter(|n| n.state.name() == state).count(),
        })
        .collect();
    counts.push(Count {
        state: "empty",
        n: empty,
    });
    counts
}

/// The plan, ordered by site, row, rack and U, grouped into sites, rows and racks.
fn group(plan: &[PlanRow], held: &HashMap<&str, &NodeRecord>) -> Vec<SiteView> {
    let mut sites: Vec<SiteView> = Vec::new();
    for p in plan {
        if sites.last().is_none_or(|s| s.name != p.site) {
            sites.push(SiteView {
                name: p.site.clone(),
                rows: Vec::new(),
            });
        }
        let rows = &mut sites.last_mut().expect("pushed above").rows;
        if rows.last().is_none_or(|r| r.name != p.row) {
            rows.push(RowView {
                name: p.row.clone(),
                racks: Vec::new(),
            });
        }
        let racks = &mut rows.last_mut().expect("pushed above").racks;
        if racks.last().is_none_or(|r| r.name != p.rack) {
            racks.push(RackSummary {
                name: p.rack.clone(),
                href: rack_href(&p.site, &p.row, &p.rack),
                units: Vec::new(),
                nodes: 0,
            });
        }
        let rack = racks.last_mut().expect("pushed above");
        let node = held.get(p.slot.as_str());
        rack.nodes += usize::from(node.is_some());
        // The plan comes lowest U first; the elevation shows the top of the rack first.
        rack.units.insert(
            0,
            Unit {
                u: p.u,
                class: class(node.map(|n| &n.state)),
                node: node.map(|n| n.id),
            },
        );
    }
    sites
}

/// The rack plan at `version`, from memory when it was read at that version already (it
/// changes only by an import).
async fn plan_at(st: &AppState, version: i64) -> Result<Arc<Vec<PlanRow>>, PageError> {
    let kept = st.web.plan.lock().expect("not poisoned").clone();
    if let Some((v, plan)) = kept
        && v == version
    {
        return Ok(plan);
    }
    let plan = Arc::new(db::plan::plan_rows(&st.store).await?);
    *st.web.plan.lock().expect("not poisoned") = Some((version, plan.clone()));
    Ok(plan)
}

/// The overview page: the viewer's navigation around the cached content.
#[derive(Template)]
#[template(path = "pages/overview.html")]
struct Overview {
    viewer: Option<Viewer>,
    /// Rendered and escaped by `OverviewContent`.
    content: Arc<String>,
}

pub async fn overview(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    // Read before the store, so that a change committed while rendering makes the next
    // request render again.
    let key = (
        st.boot.lifecycle.generation(),
        db::plan::plan_version(&st.store).await?,
    );
    let cached = st
        .web
        .overview
        .lock()
        .expect("not poisoned")
        .as_ref()
        .filter(|(k, _)| *k == key)
        .map(|(_, c)| c.clone());
    let content = match cached {
        Some(c) => c,
        None => {
            let plan = plan_at(&st, key.1).await?;
            let nodes = db::nodes::all_nodes(&st.store).await?;
            let held = by_slot(&nodes);
            let empty = plan
                .iter()
                .filter(|p| !held.contains_key(p.slot.as_str()))
                .count();
            let content = Arc::new(
                OverviewContent {
                    attention: attention(&nodes),
                    counts: counts(&nodes, empty),
                    sites: group(&plan, &held),
                    slots: plan.len(),
                    nodes: nodes.len(),
                }
                .render()?,
            );
            *st.web.overview.lock().expect("not poisoned") = Some((key, content.clone()));
            content
        }
    };
    html(&Overview {
        viewer: web::viewer(&st, &headers).await?,
        content,
    })
}

/// What a node in a slot is.
struct Actual {
    id: i64,
    mac: String,
    detail: String,
    step: &'static str,
    /// The agent's latest progress line, while the node is at a step.
    progress: String,
}

struct SlotLine {
    u: i64,
    class: &'static str,
    serial: String,
    mac: String,
    sku: String,
    node: Option<Actual>,
}

/// A row of the rack's elevation, top first: a planned slot, or the U positions between
/// planned slots that the plan does not name (switches, PDUs, the bodies of tall servers).
struct ElevationRow {
    slot: Option<SlotLine>,
    gap: String,
}

/// The elevation from the highest planned U down to U1, `slots` being top first.
fn elevation(slots: Vec<SlotLine>) -> Vec<ElevationRow> {
    let gap = |top: i64, bottom: i64| ElevationRow {
        slot: None,
        gap: if top == bottom {
            format!("U{top}")
        } else {
            format!("U{top}–U{bottom}")
        },
    };
    let mut rows = Vec::new();
    let mut below: Option<i64> = None;
    for s in slots {
        if let Some(b) = below
            && s.u + 1 < b
        {
            rows.push(gap(b - 1, s.u + 1));
        }
        below = Some(s.u);
        rows.push(ElevationRow {
            slot: Some(s),
            gap: String::new(),
        });
    }
    if let Some(b) = below
        && b > 1
    {
        rows.push(gap(b - 1, 1));
    }
    rows
}

struct Progress {
    title: String,
    done: usize,
    total: usize,
}

#[derive(Template)]
#[template(path = "pages/rack.html")]
struct RackPage {
    viewer: Option<Viewer>,
    checklist_href: String,
    name: String,
    site: String,
    row: String,
    rows: Vec<ElevationRow>,
    checklist: Option<Progress>,
    checklist_note: String,
}

pub async fn rack(
    State(st): State<AppState>,
    Path((site, row, rack)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let name = format!("{site}/{row}/{rack}");
    let plan = db::plan::rack_plan_rows(&st.store, &site, &row, &rack).await?;
    let id = match crate::types::RackId::new(&site, &row, &rack) {
        Ok(id) if !plan.is_empty() => id,
        _ => return Err(PageError::not_found(format!("rack {name} in the plan"))),
    };
    let nodes = db::nodes::rack_nodes(&st.store, &site, &row, &rack).await?;
    let held = by_slot(&nodes);
    let progress = crate::store::burnin::rack_progress(&st.store, &site, &row, &rack).await?;
    let slots = plan
        .iter()
        .rev()
        .map(|p| {
            let node = held.get(p.slot.as_str());
            SlotLine {
                u: p.u,
                class: class(node.map(|n| &n.state)),
                serial: p.serial.clone().unwrap_or_else(|| "-".into()),
                mac: p.mac.clone().unwrap_or_else(|| "-".into()),
                sku: p.sku.clone(),
                node: node.map(|n| Actual {
                    id: n.id,
                    mac: n.mac.to_string(),
                    detail: n.state.to_string(),
                    step: current_step(&n.state),
                    progress: progress
                        .get(&n.id)
                        .filter(|_| n.state.step().is_some())
                        .map(|p| format!("{} ({})", p.line, when(p.at_ms)))
                        .unwrap_or_default(),
                }),
            }
        })
        .collect();
    let (checklist, checklist_note) = match checklist::view(&st.store, &st.checklists, &id).await {
        Ok(v) => (
            Some(Progress {
                title: v.title,
                done: v.done,
                total: v.total,
            }),
            String::new(),
        ),
        Err(ChecklistError::NotStarted(_)) => (None, "no checklist started".into()),
        Err(ChecklistError::Store(e)) => return Err(e.into()),
        Err(e) => (None, e.to_string()),
    };
    html(&RackPage {
        viewer: web::viewer(&st, &headers).await?,
        checklist_href: format!("{}/checklist", rack_href(&site, &row, &rack)),
        name,
        site,
        row,
        rows: elevation(slots),
        checklist,
        checklist_note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_line(u: i64) -> SlotLine {
        SlotLine {
            u,
            class: "empty",
            serial: "-".into(),
            mac: "-".into(),
            sku: "x".into(),
            node: None,
        }
    }

    #[test]
    fn the_elevation_names_the_unplanned_positions_down_to_u1() {
        let rows = elevation(vec![
            slot_line(20),
            slot_line(19),
            slot_line(10),
            slot_line(3),
        ]);
        let shown: Vec<String> = rows
            .iter()
            .map(|r| match &r.slot {
                Some(s) => format!("slot U{}", s.u),
                None => r.gap.clone(),
            })
            .collect();
        assert_eq!(
            shown,
            [
                "slot U20",
                "slot U19",
                "U18–U11",
                "slot U10",
                "U9–U4",
                "slot U3",
                "U2–U1"
            ]
        );
        assert_eq!(elevation(vec![slot_line(1)]).len(), 1);
        assert_eq!(elevation(vec![slot_line(2)])[1].gap, "U1");
    }
    use crate::lifecycle::machine::Step;

    fn node(id: i64, state: NodeState, slot: Option<&str>) -> NodeRecord {
        NodeRecord {
            id,
            mac: crate::types::MacAddr([0x52, 0x54, 0, 0, 0, id as u8]),
            state,
            state_since_ms: 0,
            slot: slot.map(String::from),
            inspected_at_ms: None,
            created_at_ms: 0,
        }
    }

    fn slot(rack: &str, u: i64) -> PlanRow {
        PlanRow {
            slot: format!("lab/r1/{rack}/U{u}"),
            site: "lab".into(),
            row: "r1".into(),
            rack: rack.into(),
            u,
            serial: None,
            mac: None,
            sku: "qemu-lab".into(),
        }
    }

    #[test]
    fn failed_before_held_and_unslotted_included() {
        let nodes = vec![
            node(
                1,
                NodeState::Held {
                    from: Box::new(NodeState::Inspected),
                },
                Some("lab/r1/a01/U1"),
            ),
            node(2, NodeState::Enrolled, None),
            node(
                3,
                NodeState::Failed {
                    step: Step::Inspecting,
                    reason: "not in the rack plan".into(),
                },
                None,
            ),
        ];
        let a = attention(&nodes);
        assert_eq!(a.iter().map(|a| a.id).collect::<Vec<_>>(), [3, 1]);
        assert_eq!(a[0].slot, "not in any slot");
        assert!(a[0].detail.contains("not in the rack plan"));
    }

    #[test]
    fn racks_are_grouped_top_of_rack_first() {
        let plan = [slot("a01", 1), slot("a01", 2), slot("a02", 1)];
        let nodes = [node(7, NodeState::Inspected, Some("lab/r1/a01/U2"))];
        let sites = group(&plan, &by_slot(&nodes));
        assert_eq!(sites.len(), 1);
        let racks = &sites[0].rows[0].racks;
        assert_eq!(racks.len(), 2);
        let units: Vec<(i64, &str)> = racks[0].units.iter().map(|u| (u.u, u.class)).collect();
        assert_eq!(units, [(2, "inspected"), (1, "empty")]);
        assert_eq!(racks[0].nodes, 1);
        let c = counts(&nodes, 2);
        assert_eq!(
            c.iter().find(|c| c.state == "inspected").map(|c| c.n),
            Some(1)
        );
        assert_eq!(c.last().map(|c| (c.state, c.n)), Some(("empty", 2)));
    }
}
