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
use crate::checklist::{self, ChecklistError};
use crate::error::Kind;
use crate::lifecycle::machine::Actor;

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

pub async fn get(
    State(st): State<AppState>,
    Path((site, row, rack)): Path<(String, String, String)>,
    Query(q): Query<Format>,
) -> Response {
    let rack = format!("{site}/{row}/{rack}");
    match checklist::view(&st.store, &st.checklists, &rack).await {
        Ok(v) if q.format.as_deref() == Some("csv") => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"checklist-{}.csv\"",
                        rack.replace('/', "-")
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
    Path((site, row, rack)): Path<(String, String, String)>,
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
    let rack = format!("{site}/{row}/{rack}");
    match checklist::start(&st.store, &st.checklists, &rack, &req.rack_type, &by).await {
        Ok(()) => {
            get(
                State(st),
                Path((site, row, rack_name(&rack))),
                Query(Format { format: None }),
            )
            .await
        }
        Err(e) => refused(e),
    }
}

fn rack_name(rack: &str) -> String {
    rack.rsplit('/').next().unwrap_or_default().to_string()
}

async fn change(
    st: AppState,
    rack: (String, String, String),
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
    let (site, row, name) = rack;
    let rack = format!("{site}/{row}/{name}");
    let slot = req.slot.as_deref();
    let done = if undo {
        let reason = req.reason.as_deref().unwrap_or("");
        checklist::untick(
            &st.store,
            &st.checklists,
            &rack,
            &req.step,
            slot,
            &by,
            reason,
        )
        .await
    } else {
        checklist::tick(&st.store, &st.checklists, &rack, &req.step, slot, &by).await
    };
    match done {
        Ok(()) => {
            get(
                State(st),
                Path((site, row, name)),
                Query(Format { format: None }),
            )
            .await
        }
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
