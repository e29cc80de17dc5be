//! A rack's installation checklist over HTTP: `GET /api/v1/racks/{site}/{row}/{rack}/checklist`
//! (JSON, or CSV with `?format=csv`) for anyone; starting it and ticking or unticking steps
//! need an admin token, and record the technician's name with the token's.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::checklist::{self, ChecklistError, Mark, StepChange};
use crate::error::Kind;
use crate::lifecycle::Change;
use crate::lifecycle::machine::Actor;
use crate::types::RackId;

fn error(kind: Kind, msg: impl Into<String>) -> Response {
    ApiError::new(kind, msg).into_response()
}

fn refused(e: ChecklistError) -> Response {
    ApiError::from(e).into_response()
}

#[derive(Deserialize)]
pub struct Format {
    format: Option<String>,
}

/// The rack a path names, parsed at the door.
pub(super) fn rack_id(
    (site, row, rack): &(String, String, String),
) -> Result<RackId, ChecklistError> {
    Ok(RackId::new(site, row, rack)?)
}

/// Starts a rack's checklist and tells the rack's live pages: the API and the pages call this.
pub(super) async fn start_checklist(
    st: &AppState,
    rack: &RackId,
    rack_type: &str,
    by: &str,
) -> Result<(), ChecklistError> {
    checklist::start(&st.store, &st.checklists, rack, rack_type, by).await?;
    told(st, rack);
    Ok(())
}

/// A technician's change to a step, and the rack's live pages told: the API and the pages
/// call this; the command line calls `checklist::change` (it has no live pages to tell).
pub(super) async fn change_checklist(
    st: &AppState,
    rack: &RackId,
    c: &StepChange,
) -> Result<(), ChecklistError> {
    checklist::change(&st.store, &st.checklists, rack, c).await?;
    told(st, rack);
    Ok(())
}

fn told(st: &AppState, rack: &RackId) {
    st.boot.lifecycle.announce(Change {
        rack: Some(rack.to_string()),
        ..Change::default()
    });
}

pub async fn get(
    State(st): State<AppState>,
    Path(path): Path<(String, String, String)>,
    Query(q): Query<Format>,
) -> Response {
    let rack = match rack_id(&path) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    match checklist::view(&st.store, &st.checklists, &rack).await {
        Ok(v) if q.format.as_deref() == Some("csv") => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"checklist-{}.csv\"",
                        rack.to_string().replace('/', "-")
                    ),
                ),
            ],
            checklist::to_csv(&v),
        )
            .into_response(),
        Ok(v) => Json(v).into_response(),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    rack_type: String,
    by: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tick {
    step: String,
    slot: Option<String>,
    /// The technician who did it.
    by: String,
    /// Why a tick is undone (unticks only).
    reason: Option<String>,
}

/// "alice (token ci)": the person, and the admin token that let them.
async fn who(st: &AppState, headers: &HeaderMap, by: &str) -> Result<String, Response> {
    match super::nodes::operator(st, headers)
        .await
        .map_err(|e| ApiError::from(e).into_response())?
    {
        Actor::Operator(token) => checklist::signed(by, &token).map_err(refused),
        other => Ok(other.to_string()),
    }
}

pub async fn start(
    State(st): State<AppState>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Json<Start>, JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        return error(Kind::BadRequest, "want {\"rack_type\": ..., \"by\": ...}");
    };
    let by = match who(&st, &headers, &req.by).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let rack = match rack_id(&path) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    match start_checklist(&st, &rack, &req.rack_type, &by).await {
        Ok(()) => get(State(st), Path(path), Query(Format { format: None })).await,
        Err(e) => refused(e),
    }
}

async fn change(
    st: AppState,
    path: (String, String, String),
    headers: HeaderMap,
    body: Result<Json<Tick>, JsonRejection>,
    undo: bool,
) -> Response {
    let Ok(Json(req)) = body else {
        return error(
            Kind::BadRequest,
            "want {\"step\": ..., \"slot\": ..., \"by\": ...} (and \"reason\" to untick)",
        );
    };
    let by = match who(&st, &headers, &req.by).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let rack = match rack_id(&path) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let c = StepChange {
        step: req.step,
        slot: req.slot,
        by,
        mark: match undo {
            false => Mark::Tick,
            true => Mark::Untick {
                reason: req.reason.unwrap_or_default(),
            },
        },
    };
    match change_checklist(&st, &rack, &c).await {
        Ok(()) => get(State(st), Path(path), Query(Format { format: None })).await,
        Err(e) => refused(e),
    }
}

pub async fn tick(
    State(st): State<AppState>,
    Path(rack): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Json<Tick>, JsonRejection>,
) -> Response {
    change(st, rack, headers, body, false).await
}

pub async fn untick(
    State(st): State<AppState>,
    Path(rack): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Json<Tick>, JsonRejection>,
) -> Response {
    change(st, rack, headers, body, true).await
}
