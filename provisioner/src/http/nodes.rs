//! The nodes API: `GET /api/v1/nodes`, `GET /api/v1/nodes/{id}` (facts, state, slot, timeline
//! and boot events; `{id}` is the node's number or its boot MAC), and
//! `POST /api/v1/nodes/{id}/actions` (hold, release, retry, reprovision, retire), which needs
//! an admin token.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::error::Kind;
use crate::lifecycle::hash_token;
use crate::lifecycle::machine::{Action, Actor, State as NodeState};
use crate::store as db;
use crate::store::journal::{EventKind, EventRow, NodeRow};
use crate::types::MacAddr;

fn error(kind: Kind, msg: impl Into<String>) -> Response {
    ApiError::new(kind, msg).into_response()
}

/// Why an admin call's credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    #[error("this call needs an admin token (Authorization: Bearer; `provisioner token create`)")]
    NoToken,
    #[error("unknown admin token")]
    UnknownToken,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl crate::error::Kinded for AdminAuthError {
    fn kind(&self) -> Kind {
        match self {
            AdminAuthError::Store(_) => Kind::Unavailable,
            _ => Kind::Unauthorized,
        }
    }
}

/// One node in the list: what the boot plane saw of it and, once it asked for a boot script,
/// its lifecycle.
#[derive(Serialize)]
pub struct NodeSummary {
    mac: String,
    id: Option<i64>,
    state: Option<String>,
    detail: Option<String>,
    slot: Option<String>,
    first_seen: Option<i64>,
    last_seen: Option<i64>,
    last_ip: Option<String>,
}

pub async fn list(State(st): State<AppState>) -> Result<Json<Vec<NodeSummary>>, ApiError> {
    let mut by_mac: BTreeMap<String, NodeSummary> = BTreeMap::new();
    for n in crate::store::journal::list(&st.journal).await? {
        by_mac.insert(
            n.mac.clone(),
            NodeSummary {
                mac: n.mac,
                id: None,
                state: None,
                detail: None,
                slot: None,
                first_seen: Some(n.first_seen),
                last_seen: Some(n.last_seen),
                last_ip: n.last_ip,
            },
        );
    }
    for n in db::nodes::all_nodes(&st.store).await? {
        let e = by_mac
            .entry(n.mac.to_string())
            .or_insert_with(|| NodeSummary {
                mac: n.mac.to_string(),
                id: None,
                state: None,
                detail: None,
                slot: None,
                first_seen: None,
                last_seen: None,
                last_ip: None,
            });
        e.id = Some(n.id);
        e.state = Some(n.state.name().into());
        e.detail = Some(n.state.to_string());
        e.slot = n.slot;
    }
    Ok(Json(by_mac.into_values().collect()))
}

#[derive(Serialize)]
struct NodeView {
    mac: String,
    id: Option<i64>,
    /// The lifecycle state, with a failure's step and reason or where a held node was.
    state: Option<NodeState>,
    detail: Option<String>,
    state_since_ms: Option<i64>,
    slot: Option<String>,
    inspected_at_ms: Option<i64>,
    facts: Option<serde_json::Value>,
    timeline: Vec<db::nodes::TransitionRow>,
    /// Burn-in reports with their judgements, oldest first.
    burnin: Vec<crate::store::burnin::RunRow>,
    /// The agent's last progress lines.
    progress: Vec<crate::store::burnin::ProgressRow>,
    /// The installed system's check of its image's driver set (latest install): what was
    /// installed, each package's version and sha256, and each check's outcome.
    drivers: Option<DriversView>,
    /// Agent calls refused for this MAC.
    refusals: Vec<db::refusals::RefusalRow>,
    #[serde(flatten)]
    seen: Option<NodeRow>,
    events: Vec<EventRow>,
}

#[derive(Serialize)]
struct DriversView {
    image: String,
    at_ms: i64,
    report: provisioner_protocol::drivers::DriverReport,
}

pub async fn get(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let lc = st.boot.lifecycle.find(&id).await?;
    let mac = match (&lc, id.parse::<MacAddr>()) {
        (Some(n), _) => Some(n.mac),
        (None, Ok(mac)) => Some(mac),
        (None, Err(_)) if id.parse::<i64>().is_ok() => None,
        (None, Err(_)) => {
            return Ok(error(
                Kind::BadRequest,
                format!("`{id}` is neither a node number nor a MAC address"),
            ));
        }
    };
    let Some(mac) = mac else {
        return Ok(error(Kind::NotFound, format!("no node {id}")));
    };
    // A node asking about itself is calling back: that is a boot event too.
    if let std::net::IpAddr::V4(ip) = peer.ip()
        && st.events.neighbors().lookup(ip) == Some(mac)
    {
        st.events.record(
            mac,
            Some(ip),
            EventKind::Http,
            format!("GET /api/v1/nodes/{mac} (callback)"),
        );
    }
    let seen = crate::store::journal::get(&st.journal, mac).await?;
    if lc.is_none() && seen.is_none() {
        return Ok(error(
            Kind::NotFound,
            format!("node {mac} has not been seen"),
        ));
    }
    let (seen, events) = seen.map_or((None, Vec::new()), |(n, e)| (Some(n), e));
    let mut view = NodeView {
        mac: mac.to_string(),
        id: None,
        state: None,
        detail: None,
        state_since_ms: None,
        slot: None,
        inspected_at_ms: None,
        facts: None,
        timeline: Vec::new(),
        burnin: Vec::new(),
        progress: Vec::new(),
        drivers: None,
        refusals: db::refusals::refusals(&st.store, &mac.to_string()).await?,
        seen,
        events,
    };
    if let Some(n) = lc {
        view.id = Some(n.id);
        view.detail = Some(n.state.to_string());
        view.state = Some(n.state);
        view.state_since_ms = Some(n.state_since_ms);
        view.slot = n.slot;
        view.inspected_at_ms = n.inspected_at_ms;
        view.facts = db::nodes::facts(&st.store, n.id).await?;
        view.timeline = db::nodes::timeline(&st.store, n.id).await?;
        view.burnin = crate::store::burnin::runs(&st.store, n.id).await?;
        view.progress = crate::store::burnin::progress(&st.store, n.id, 100).await?;
        view.drivers = crate::store::installs::latest_drivers(&st.store, n.id)
            .await?
            .and_then(|(image, at_ms, json)| {
                Some(DriversView {
                    image,
                    at_ms,
                    report: serde_json::from_str(&json).ok()?,
                })
            });
    }
    Ok(Json(view).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    action: Action,
}

/// The operator behind an admin bearer token.
pub async fn operator(st: &AppState, headers: &HeaderMap) -> Result<Actor, AdminAuthError> {
    let Some(token) = super::agent::bearer(headers).filter(|t| !t.is_empty()) else {
        return Err(AdminAuthError::NoToken);
    };
    match db::tokens::admin_token(&st.store, &hash_token(token)).await? {
        Some(name) => Ok(Actor::Operator(name)),
        None => Err(AdminAuthError::UnknownToken),
    }
}

/// Records a refused operator call on node `id` (its number or its MAC), against the node
/// when it is known: the API's and the pages' actions alike.
pub(crate) async fn refuse_node_call(
    st: &AppState,
    peer: SocketAddr,
    id: &str,
    path: &str,
    why: &str,
) {
    let mac = match st.boot.lifecycle.find(id).await {
        Ok(Some(n)) => Some(n.mac),
        _ => id.parse::<MacAddr>().ok(),
    };
    st.boot
        .lifecycle
        .record_refusal(mac, &peer.ip().to_string(), path, why)
        .await;
}

pub async fn action(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ActionRequest>, JsonRejection>,
) -> Response {
    let actor = match operator(&st, &headers).await {
        Ok(a) => a,
        Err(e) => {
            refuse_node_call(
                &st,
                peer,
                &id,
                &format!("/api/v1/nodes/{id}/actions"),
                "admin call without a valid admin token",
            )
            .await;
            return ApiError::from(e).into_response();
        }
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return error(
                Kind::BadRequest,
                format!(
                    "bad action (hold, release, retry, reprovision, retire): {}",
                    e.body_text()
                ),
            );
        }
    };
    match st.boot.lifecycle.act(&id, req.action, &actor).await {
        Ok(state) => Json(serde_json::json!({
            "state": state.name(),
            "detail": state.to_string(),
        }))
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
