//! A rack's installation checklist as a page: its steps by group, who ticked each and when
//! or what the appliance saw, the forms to tick and untick for a signed-in operator, the
//! audit trail, and the exports. It prints as the paper checklist of that rack: forms hidden,
//! a box and a signature line for every step still open.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{PageError, Viewer, html, rack_href, when};
use crate::checklist::{self, ChecklistError, Status};
use crate::http::AppState;
use crate::http::web;

struct StepLine {
    /// Unique on the page: the step's id, and its slot's for a per-slot step.
    anchor: String,
    id: String,
    slot: String,
    check: String,
    done: String,
    /// `open`, `ticked` or `seen`.
    status: &'static str,
    by: String,
    at: String,
    evidence: String,
    link: String,
    /// Ticked by the appliance only: no form.
    auto: bool,
}

struct GroupView {
    title: String,
    steps: Vec<StepLine>,
}

struct AuditLine {
    at: String,
    actor: String,
    action: String,
    detail: String,
}

struct Started {
    title: String,
    rack_type: String,
    version: i64,
    started: String,
    done: usize,
    total: usize,
    groups: Vec<GroupView>,
    audit: Vec<AuditLine>,
}

struct RackType {
    name: String,
    title: String,
}

#[derive(Template)]
#[template(path = "pages/checklist.html")]
struct ChecklistPage {
    viewer: Option<Viewer>,
    rack: String,
    rack_href: String,
    /// Where the forms post: `{rack_href}/checklist`.
    base: String,
    api: String,
    started: Option<Started>,
    types: Vec<RackType>,
}

/// The element id of a step's row: its id, and its slot's for a per-slot step.
pub(crate) fn anchor(id: &str, slot: Option<&str>) -> String {
    let slot: String = slot
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if slot.is_empty() {
        format!("step-{id}")
    } else {
        format!("step-{id}-{slot}")
    }
}

fn started(v: checklist::ChecklistView) -> Started {
    let mut groups: Vec<GroupView> = Vec::new();
    for s in v.steps {
        let (status, by, at, evidence, link) = match s.status {
            Status::Open => (
                "open",
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ),
            Status::Ticked { by, at_ms } => {
                ("ticked", by, when(at_ms), String::new(), String::new())
            }
            Status::Seen { evidence, link } => {
                // The export links the API; a person reading the page wants the node's page.
                let link = match link.strip_prefix("/api/v1") {
                    Some(page) if page.starts_with("/nodes/") => page.to_string(),
                    _ => link,
                };
                ("seen", String::new(), String::new(), evidence, link)
            }
        };
        let line = StepLine {
            anchor: anchor(&s.id, s.slot.as_deref()),
            id: s.id,
            slot: s.slot.unwrap_or_default(),
            check: s.check,
            done: s.done,
            status,
            by,
            at,
            evidence,
            link,
            auto: s.auto,
        };
        match groups.last_mut() {
            Some(g) if g.title == s.group => g.steps.push(line),
            _ => groups.push(GroupView {
                title: s.group,
                steps: vec![line],
            }),
        }
    }
    Started {
        title: v.title,
        rack_type: v.rack_type,
        version: v.version,
        started: format!("{} by {}", when(v.started_at_ms), v.started_by),
        done: v.done,
        total: v.total,
        groups,
        audit: v
            .audit
            .into_iter()
            .map(|a| AuditLine {
                at: when(a.at_ms),
                actor: a.actor,
                action: a.action,
                detail: a.detail,
            })
            .collect(),
    }
}

pub async fn checklist_page(
    State(st): State<AppState>,
    Path((site, row, rack)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let name = crate::types::RackId::new(&site, &row, &rack).map_err(ChecklistError::from)?;
    let href = rack_href(&site, &row, &rack);
    let started = match checklist::view(&st.store, &st.checklists, &name).await {
        Ok(v) => Some(started(v)),
        Err(ChecklistError::NotStarted(_)) => None,
        Err(e) => return Err(e.into()),
    };
    // A new checklist starts on its rack type's latest version.
    let mut latest = std::collections::BTreeMap::new();
    for t in &st.checklists.0 {
        let kept = latest.entry(t.rack_type.as_str()).or_insert(t);
        if t.version > kept.version {
            *kept = t;
        }
    }
    let types = latest
        .into_values()
        .map(|t| RackType {
            name: t.rack_type.clone(),
            title: format!("{} (v{})", t.title, t.version),
        })
        .collect();
    html(&ChecklistPage {
        viewer: web::viewer(&st, &headers).await?,
        api: format!("/api/v1{href}/checklist"),
        base: format!("{href}/checklist"),
        rack: name.to_string(),
        rack_href: href,
        started,
        types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_unique_per_slot_and_plain() {
        assert_eq!(anchor("pdu-on", None), "step-pdu-on");
        assert_eq!(
            anchor("seat", Some("dc1/r1/a01/U10")),
            "step-seat-dc1-r1-a01-U10"
        );
    }
}
