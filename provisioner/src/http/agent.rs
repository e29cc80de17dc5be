//! The node agent's calls: its inspection report and its next instruction. Each carries the
//! one-time token of the node's boot; a missing, forged, replayed or foreign token is refused
//! (401/403), recorded against the MAC it claimed, and changes nothing.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use provisioner_protocol::burnin::BurnInReport;
use provisioner_protocol::drivers::DriversReport;
use provisioner_protocol::install::{InstallReport, InstalledReport};
use provisioner_protocol::{
    InspectionReport, PATH_BURNIN, PATH_DRIVERS, PATH_INSPECTION, PATH_INSTALL, PATH_INSTALLED,
    PATH_NEXT, PATH_PROGRESS, ProgressReport,
};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::error::Kind;
use crate::lifecycle::AgentError;
use crate::store::journal::EventKind;
use crate::types::MacAddr;

/// The token of `Authorization: Bearer TOKEN`, when there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn refuse(kind: Kind, error: String) -> Response {
    ApiError::new(kind, error).into_response()
}

/// The answer to a call that was not taken; a refused credential is recorded against the MAC
/// it claimed.
async fn refused(
    st: &AppState,
    e: AgentError,
    mac: Option<MacAddr>,
    peer: SocketAddr,
    path: &str,
) -> Response {
    if let AgentError::Auth(auth) = &e {
        st.boot
            .lifecycle
            .record_refusal(mac, &peer.ip().to_string(), path, &auth.to_string())
            .await;
    }
    ApiError::from(e).into_response()
}

/// The body of an agent's call, or the 400 that says why it is not one.
fn body<T>(body: Result<Json<T>, JsonRejection>, what: &str) -> Result<T, String> {
    body.map(|Json(t)| t)
        .map_err(|e| format!("bad {what}: {}", e.body_text()))
}

/// An authenticated agent call is a boot event of its node.
fn note(st: &AppState, mac: Option<MacAddr>, peer: SocketAddr, detail: String) {
    if let Some(mac) = mac
        && let std::net::IpAddr::V4(ip) = peer.ip()
    {
        st.events.record(mac, Some(ip), EventKind::Http, detail);
    }
}

/// `POST /api/v1/agent/inspection`
pub async fn inspection(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    report: Result<Json<InspectionReport>, JsonRejection>,
) -> Response {
    let report = match body(report, "report") {
        Ok(r) => r,
        Err(why) => return refuse(Kind::BadRequest, why),
    };
    match st.boot.lifecycle.report(bearer(&headers), &report).await {
        Ok(state) => {
            // Only an authenticated report is a boot event; the others are refusals.
            note(
                &st,
                Some(report.mac),
                peer,
                format!("POST {PATH_INSPECTION}"),
            );
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "state": state.name(), "detail": state.to_string() })),
            )
                .into_response()
        }
        Err(e) => refused(&st, e, Some(report.mac), peer, PATH_INSPECTION).await,
    }
}

#[derive(Deserialize)]
pub struct NextQuery {
    mac: String,
}

/// `GET /api/v1/agent/next?mac=MAC`
pub async fn next(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let Ok(mac) = q.mac.parse::<MacAddr>() else {
        return refuse(
            Kind::BadRequest,
            format!("`{}` is not a MAC address", q.mac),
        );
    };
    // The install's URLs are under the address the agent reached: the one it can reach.
    let base = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| valid_host(h))
        .map(|h| format!("http://{h}"));
    match st
        .boot
        .lifecycle
        .next_for_agent(bearer(&headers), mac, base.as_deref())
        .await
    {
        Ok(i) => Json(i).into_response(),
        Err(e) => refused(&st, e, Some(mac), peer, PATH_NEXT).await,
    }
}

/// A Host header that can go into a URL: a name or address and a port, nothing else.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// `POST /api/v1/agent/install`: how the write of the OS image went.
pub async fn install(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    report: Result<Json<InstallReport>, JsonRejection>,
) -> Response {
    let report = match body(report, "install report") {
        Ok(r) => r,
        Err(why) => return refuse(Kind::BadRequest, why),
    };
    match st
        .boot
        .lifecycle
        .install_report(bearer(&headers), &report)
        .await
    {
        Ok(state) => {
            note(&st, Some(report.mac), peer, format!("POST {PATH_INSTALL}"));
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "state": state.name(), "detail": state.to_string() })),
            )
                .into_response()
        }
        Err(e) => refused(&st, e, Some(report.mac), peer, PATH_INSTALL).await,
    }
}

/// `POST /api/v1/agent/installed`: the installed system's first call.
pub async fn installed(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    report: Result<Json<InstalledReport>, JsonRejection>,
) -> Response {
    let report = match body(report, "installed report") {
        Ok(r) => r,
        Err(why) => return refuse(Kind::BadRequest, why),
    };
    match st.boot.lifecycle.installed(bearer(&headers), &report).await {
        Ok(state) => {
            note(
                &st,
                Some(report.mac),
                peer,
                format!("POST {PATH_INSTALLED}"),
            );
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "state": state.name(), "detail": state.to_string() })),
            )
                .into_response()
        }
        Err(e) => refused(&st, e, Some(report.mac), peer, PATH_INSTALLED).await,
    }
}

/// `POST /api/v1/agent/drivers`: the installed system's check of its driver set.
pub async fn drivers(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    report: Result<Json<DriversReport>, JsonRejection>,
) -> Response {
    let report = match body(report, "driver report") {
        Ok(r) => r,
        Err(why) => return refuse(Kind::BadRequest, why),
    };
    match st.boot.lifecycle.drivers(bearer(&headers), &report).await {
        Ok(state) => {
            note(&st, Some(report.mac), peer, format!("POST {PATH_DRIVERS}"));
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "state": state.name(), "detail": state.to_string() })),
            )
                .into_response()
        }
        Err(e) => refused(&st, e, Some(report.mac), peer, PATH_DRIVERS).await,
    }
}

/// `POST /api/v1/agent/burnin`: judged at once; the answer is the judgement.
pub async fn burnin(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    report: Result<Json<BurnInReport>, JsonRejection>,
) -> Response {
    let report = match body(report, "burn-in report") {
        Ok(r) => r,
        Err(why) => return refuse(Kind::BadRequest, why),
    };
    match st.boot.lifecycle.burnin(bearer(&headers), &report).await {
        Ok(judgement) => {
            let detail = format!("POST {PATH_BURNIN} ({:?})", judgement.level);
            note(&st, report.mac, peer, detail);
            (StatusCode::ACCEPTED, Json(judgement)).into_response()
        }
        Err(e) => refused(&st, e, report.mac, peer, PATH_BURNIN).await,
    }
}

/// `POST /api/v1/agent/progress`
pub async fn progress(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    report: Result<Json<ProgressReport>, JsonRejection>,
) -> Response {
    let report = match body(report, "progress report") {
        Ok(r) => r,
        Err(why) => return refuse(Kind::BadRequest, why),
    };
    match st.boot.lifecycle.progress(bearer(&headers), &report).await {
        Ok(n) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "lines": n })),
        )
            .into_response(),
        Err(e) => refused(&st, e, Some(report.mac), peer, PATH_PROGRESS).await,
    }
}
