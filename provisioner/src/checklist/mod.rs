//! Rack installation checklists: a rack's checklist is its template (at the version it
//! started with) with per-slot steps repeated for every slot the rack plan has in it; a
//! technician ticks the physical steps (name and time), a tick is undone only with a reason,
//! the appliance ticks what it has evidence for, and every change is in the rack's audit
//! trail.

pub mod template;

use std::fmt::Write as _;

use serde::Serialize;

use crate::clock::now_ms;
use crate::store::checklists as db;
use crate::store::{Pool, StoreError};
use crate::store::{nodes, plan as plan_db};
use crate::types::RackId;
use template::{Auto, Template};

#[derive(Debug, thiserror::Error)]
pub enum ChecklistError {
    #[error("`{0}` is not a rack (site/row/rack)")]
    BadRack(String),
    #[error("no checklist type `{0}` (known: {1})")]
    UnknownType(String, String),
    #[error("rack {0} has no checklist; start one first")]
    NotStarted(String),
    #[error("rack {0} already has a checklist")]
    AlreadyStarted(String),
    #[error("rack {rack}'s checklist ({rack_type} v{version}) has no step `{step}`")]
    UnknownStep {
        rack: String,
        rack_type: String,
        version: i64,
        step: String,
    },
    #[error("step {step} is per slot: name one of {slots}")]
    SlotNeeded { step: String, slots: String },
    #[error("step {step} is for the whole rack: no slot")]
    NoSlotWanted { step: String },
    #[error("slot {slot} is not in rack {rack}")]
    UnknownSlot { slot: String, rack: String },
    #[error("step {0} is ticked by the appliance from what it has seen, not by hand")]
    Automatic(String),
    #[error("step {0} is already ticked")]
    AlreadyTicked(String),
    #[error("step {0} is not ticked")]
    NotTicked(String),
    #[error("undoing a tick needs a reason")]
    NoReason,
    #[error("a checklist change needs the name of who did it")]
    NoName,
    #[error(
        "the checklist was started on {rack_type} v{version}, which this appliance no longer has"
    )]
    TemplateGone { rack_type: String, version: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::Kinded for ChecklistError {
    fn kind(&self) -> crate::error::Kind {
        use crate::error::Kind;
        match self {
            ChecklistError::NotStarted(_) => Kind::NotFound,
            ChecklistError::AlreadyStarted(_)
            | ChecklistError::AlreadyTicked(_)
            | ChecklistError::NotTicked(_)
            | ChecklistError::Automatic(_)
            | ChecklistError::TemplateGone { .. } => Kind::Conflict,
            ChecklistError::BadRack(_)
            | ChecklistError::UnknownType(..)
            | ChecklistError::UnknownStep { .. }
            | ChecklistError::SlotNeeded { .. }
            | ChecklistError::NoSlotWanted { .. }
            | ChecklistError::UnknownSlot { .. }
            | ChecklistError::NoReason
            | ChecklistError::NoName => Kind::BadRequest,
            ChecklistError::Store(_) => Kind::Unavailable,
        }
    }
}

impl From<sqlx::Error> for ChecklistError {
    fn from(e: sqlx::Error) -> Self {
        ChecklistError::Store(StoreError::Query(e))
    }
}

/// Who did a step, as the audit trail keeps it: the person at the rack and the admin token
/// that let them ("alice (token ci)"), the same from the API and from the pages. A change
/// needs a person's name: the token alone says who let it, not who did it.
pub fn signed(person: &str, token: &str) -> Result<String, ChecklistError> {
    let person = person.trim();
    if person.is_empty() {
        return Err(ChecklistError::NoName);
    }
    Ok(format!("{person} (token {token})"))
}

impl From<crate::types::BadId> for ChecklistError {
    fn from(e: crate::types::BadId) -> Self {
        match e {
            crate::types::BadId::Rack(s) | crate::types::BadId::Slot(s) => {
                ChecklistError::BadRack(s)
            }
        }
    }
}

/// A technician's change to one step, as every front door (the API, the pages, the command
/// line) asks for it: [`change`] is the one function that carries it out.
#[derive(Clone, Debug, PartialEq)]
pub struct StepChange {
    pub step: String,
    /// The slot of a per-slot step; empty is none.
    pub slot: Option<String>,
    /// Who did it, as the audit trail keeps it (see [`signed`]).
    pub by: String,
    pub mark: Mark,
}

/// Ticking a step, or undoing a tick with the reason.
#[derive(Clone, Debug, PartialEq)]
pub enum Mark {
    Tick,
    Untick { reason: String },
}

/// Where a step stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Open,
    /// Ticked by a person.
    Ticked {
        by: String,
        at_ms: i64,
    },
    /// Ticked by the appliance, with what showed it.
    Seen {
        evidence: String,
        link: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct StepView {
    pub group: String,
    pub id: String,
    pub slot: Option<String>,
    pub check: String,
    pub done: String,
    pub auto: bool,
    #[serde(flatten)]
    pub status: Status,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChecklistView {
    pub rack: String,
    pub rack_type: String,
    pub title: String,
    pub version: i64,
    pub started_by: String,
    pub started_at_ms: i64,
    pub done: usize,
    pub total: usize,
    pub steps: Vec<StepView>,
    pub audit: Vec<db::AuditRow>,
}

/// The templates an appliance knows: every version it shipped with is kept by name and
/// version, so a checklist in progress keeps its own.
pub struct Templates(pub Vec<Template>);

impl Templates {
    pub fn shipped() -> Result<Templates, template::TemplateError> {
        template::shipped().map(Templates)
    }

    fn find(&self, rack_type: &str, version: i64) -> Option<&Template> {
        self.0
            .iter()
            .find(|t| t.rack_type == rack_type && i64::from(t.version) == version)
    }

    fn latest(&self, rack_type: &str) -> Option<&Template> {
        self.0
            .iter()
            .filter(|t| t.rack_type == rack_type)
            .max_by_key(|t| t.version)
    }

    pub fn names(&self) -> String {
        let mut names: Vec<&str> = self.0.iter().map(|t| t.rack_type.as_str()).collect();
        names.dedup();
        names.join(", ")
    }
}

/// Starts `rack`'s checklist on the newest version of `rack_type`.
pub async fn start(
    pool: &Pool,
    templates: &Templates,
    rack: &RackId,
    rack_type: &str,
    by: &str,
) -> Result<(), ChecklistError> {
    if by.trim().is_empty() {
        return Err(ChecklistError::NoName);
    }
    let t = templates
        .latest(rack_type)
        .ok_or_else(|| ChecklistError::UnknownType(rack_type.into(), templates.names()))?;
    let now = now_ms();
    let rack = rack.to_string();
    let rack = rack.as_str();
    let mut tx = pool.begin().await?;
    let row = db::ChecklistRow {
        rack: rack.into(),
        rack_type: rack_type.into(),
        template_version: i64::from(t.version),
        started_at_ms: now,
        started_by: by.into(),
    };
    if !db::start(&mut tx, &row).await? {
        return Err(ChecklistError::AlreadyStarted(rack.into()));
    }
    let detail = format!("{rack_type} v{}", t.version);
    db::audit(&mut tx, rack, now, by, "start", &detail).await?;
    tx.commit().await?;
    Ok(())
}

/// The rack's checklist and the template version it started on.
async fn started<'t>(
    pool: &Pool,
    templates: &'t Templates,
    rack: &str,
) -> Result<(db::ChecklistRow, &'t Template), ChecklistError> {
    let c = db::get(pool, rack)
        .await?
        .ok_or_else(|| ChecklistError::NotStarted(rack.into()))?;
    let t = templates
        .find(&c.rack_type, c.template_version)
        .ok_or_else(|| ChecklistError::TemplateGone {
            rack_type: c.rack_type.clone(),
            version: c.template_version,
        })?;
    Ok((c, t))
}

/// The rack's checklist as it stands now.
pub async fn view(
    pool: &Pool,
    templates: &Templates,
    id: &RackId,
) -> Result<ChecklistView, ChecklistError> {
    let rack = id.to_string();
    let rack = rack.as_str();
    let (c, t) = started(pool, templates, rack).await?;
    let slots = plan_db::rack_slots(pool, &id.site, &id.row, &id.rack).await?;
    let ticks = db::ticks(pool, rack).await?;
    let mut steps = Vec::new();
    for g in &t.group {
        for s in &g.step {
            let places: Vec<Option<&(String, bool)>> = if s.per_slot {
                slots.iter().map(Some).collect()
            } else {
                vec![None]
            };
            for place in places {
                let slot = place.map(|(id, _)| id.clone());
                let status = match (s.auto, place) {
                    (Some(auto), Some((slot, plans_nics))) => {
                        seen(pool, auto, slot, *plans_nics).await?
                    }
                    _ => ticks
                        .iter()
                        .rev()
                        .find(|k| k.step == s.id && k.slot == slot && k.undone_at_ms.is_none())
                        .map_or(Status::Open, |k| Status::Ticked {
                            by: k.by.clone(),
                            at_ms: k.at_ms,
                        }),
                };
                steps.push(StepView {
                    group: g.title.clone(),
                    id: s.id.clone(),
                    slot,
                    check: s.check.clone(),
                    done: s.done.clone(),
                    auto: s.auto.is_some(),
                    status,
                });
            }
        }
    }
    let done = steps.iter().filter(|s| s.status != Status::Open).count();
    Ok(ChecklistView {
        rack: rack.into(),
        rack_type: c.rack_type,
        title: t.title.clone(),
        version: c.template_version,
        started_by: c.started_by,
        started_at_ms: c.started_at_ms,
        done,
        total: steps.len(),
        steps,
        audit: db::audit_trail(pool, rack).await?,
    })
}

/// What the appliance has seen of the node in `slot`, for `auto`.
async fn seen(pool: &Pool, auto: Auto, slot: &str, plans_nics: bool) -> Result<Status, StoreError> {
    let Some(node) = nodes::node_by_slot(pool, slot).await? else {
        return Ok(Status::Open);
    };
    let link = format!("/api/v1/nodes/{}", node.id);
    let at = |ms: i64| crate::clock::format_ms(ms);
    let status = match auto {
        Auto::PxeBooted => Some(format!(
            "node {} network-booted from the appliance at {}",
            node.mac,
            at(node.created_at_ms)
        )),
        Auto::SerialMatches => node.inspected_at_ms.map(|t| {
            format!(
                "node {} matched to {slot} by its serial or MAC at inspection, {}",
                node.mac,
                at(t)
            )
        }),
        Auto::NicsAtPlanSpeed | Auto::BurninPassed => {
            let mut tx = pool.begin().await?;
            let run = crate::store::burnin::last_run(&mut tx, node.id).await?;
            tx.commit().await?;
            run.filter(|r| r.retry.is_empty() && r.level != "FAIL")
                .and_then(|r| match auto {
                    Auto::BurninPassed => Some(format!(
                        "burn-in {} at {}, node {} enrolled",
                        r.level,
                        at(r.at_ms),
                        node.mac
                    )),
                    _ if plans_nics => Some(format!(
                        "burn-in at {} found the planned NICs at the planned speed",
                        at(r.at_ms)
                    )),
                    _ => None,
                })
        }
    };
    Ok(status.map_or(Status::Open, |evidence| Status::Seen { evidence, link }))
}

/// Checks `step` (and `slot`) against the checklist, for a tick or an undo.
async fn checked_step<'t>(
    pool: &Pool,
    templates: &'t Templates,
    id: &RackId,
    step: &str,
    slot: Option<&str>,
) -> Result<&'t template::Step, ChecklistError> {
    let rack = id.to_string();
    let rack = rack.as_str();
    let (c, t) = started(pool, templates, rack).await?;
    let s = t.step(step).ok_or_else(|| ChecklistError::UnknownStep {
        rack: rack.into(),
        rack_type: c.rack_type.clone(),
        version: c.template_version,
        step: step.into(),
    })?;
    if s.auto.is_some() {
        return Err(ChecklistError::Automatic(step.into()));
    }
    let slots = plan_db::rack_slots(pool, &id.site, &id.row, &id.rack).await?;
    match (s.per_slot, slot) {
        (true, None) => Err(ChecklistError::SlotNeeded {
            step: step.into(),
            slots: slots
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        (false, Some(_)) => Err(ChecklistError::NoSlotWanted { step: step.into() }),
        (true, Some(slot)) if !slots.iter().any(|(s, _)| s == slot) => {
            Err(ChecklistError::UnknownSlot {
                slot: slot.into(),
                rack: rack.into(),
            })
        }
        _ => Ok(s),
    }
}

fn what(step: &str, slot: Option<&str>) -> String {
    match slot {
        Some(s) => format!("{step} @ {s}"),
        None => step.to_string(),
    }
}

/// A technician's change to a step: a tick (with who and when), or the undoing of a standing
/// tick with a reason. Both are checked against the checklist's template and the rack plan,
/// and both go into the rack's audit trail.
pub async fn change(
    pool: &Pool,
    templates: &Templates,
    rack: &RackId,
    c: &StepChange,
) -> Result<(), ChecklistError> {
    let (step, by) = (c.step.as_str(), c.by.as_str());
    let slot = c.slot.as_deref().filter(|s| !s.is_empty());
    if by.trim().is_empty() {
        return Err(ChecklistError::NoName);
    }
    if let Mark::Untick { reason } = &c.mark
        && reason.trim().is_empty()
    {
        return Err(ChecklistError::NoReason);
    }
    checked_step(pool, templates, rack, step, slot).await?;
    let rack = rack.to_string();
    let rack = rack.as_str();
    let now = now_ms();
    let mut tx = pool.begin().await?;
    let standing = db::standing_tick(&mut tx, rack, step, slot).await?;
    match (&c.mark, standing) {
        (Mark::Tick, Some(_)) => return Err(ChecklistError::AlreadyTicked(what(step, slot))),
        (Mark::Tick, None) => {
            db::add_tick(&mut tx, rack, step, slot, by, now).await?;
            db::audit(&mut tx, rack, now, by, "tick", &what(step, slot)).await?;
        }
        (Mark::Untick { .. }, None) => {
            return Err(ChecklistError::NotTicked(what(step, slot)));
        }
        (Mark::Untick { reason }, Some(id)) => {
            db::undo_tick(&mut tx, id, by, reason, now).await?;
            let detail = format!("{}: {reason}", what(step, slot));
            db::audit(&mut tx, rack, now, by, "untick", &detail).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// One CSV field (RFC 4180). A field that a spreadsheet would read as a formula (it starts
/// with `=`, `+`, `-`, `@`, a tab or a carriage return: names and reasons people and nodes
/// typed) is quoted with a leading `'`, as spreadsheets take it, so that opening the export
/// runs nothing.
pub fn csv_field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula {
        format!("\"'{}\"", s.replace('"', "\"\""))
    } else if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A completed (or partial) checklist as CSV for the customer's records.
pub fn to_csv(v: &ChecklistView) -> String {
    let field = csv_field;
    let mut out = String::from("rack,rack_type,version,group,step,slot,status,by_or_evidence,at\n");
    for s in &v.steps {
        let (status, who, at) = match &s.status {
            Status::Open => ("open", String::new(), String::new()),
            Status::Ticked { by, at_ms } => ("ticked", by.clone(), crate::clock::format_ms(*at_ms)),
            Status::Seen { evidence, .. } => ("seen", evidence.clone(), String::new()),
        };
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            field(&v.rack),
            field(&v.rack_type),
            v.version,
            field(&s.group),
            field(&s.id),
            field(s.slot.as_deref().unwrap_or("")),
            status,
            field(&who),
            field(&at)
        );
    }
    out
}

/// The checklist for a person at a terminal (`provisioner checklist show`).
pub fn to_text(v: &ChecklistView) -> String {
    let mut out = format!(
        "{} — {} (v{}), started by {} — {}/{} done\n",
        v.rack, v.title, v.version, v.started_by, v.done, v.total
    );
    let mut group = "";
    for s in &v.steps {
        if s.group != group {
            group = &s.group;
            let _ = writeln!(out, "\n{group}");
        }
        let mark = match &s.status {
            Status::Open => "[ ]".to_string(),
            Status::Ticked { by, at_ms } => {
                format!("[x] {by} {}", crate::clock::format_ms(*at_ms))
            }
            Status::Seen { evidence, .. } => format!("[=] {evidence}"),
        };
        let slot = s
            .slot
            .as_deref()
            .map(|s| format!(" @ {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}{slot}: {}\n      done: {}\n      {mark}",
            s.id, s.check, s.done
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn a_field_a_spreadsheet_would_run_is_quoted_as_text() {
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        for (given, want) in [
            (
                "=HYPERLINK(\"http://x\")",
                "\"'=HYPERLINK(\"\"http://x\"\")\"",
            ),
            ("+1", "\"'+1\""),
            ("-2+3", "\"'-2+3\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\t=1", "\"'\t=1\""),
            ("\r=1", "\"'\r=1\""),
        ] {
            assert_eq!(csv_field(given), want, "{given:?}");
        }
    }
}
