//! `GET /api/v1/nodes` and `GET /api/v1/nodes/{MAC}`: nodes seen and their boot events.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::store::nodes::{EventKind, EventRow, NodeRow};
use crate::types::MacAddr;

pub async fn list(State(st): State<AppState>) -> Result<Json<Vec<NodeRow>>, ApiError> {
    Ok(Json(crate::store::nodes::list(&st.journal).await?))
}

#[derive(Serialize)]
struct NodeView {
    #[serde(flatten)]
    node: NodeRow,
    events: Vec<EventRow>,
}

pub async fn get(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let Ok(mac) = mac.parse::<MacAddr>() else {
        return Ok((
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": format!("`{mac}` is not a MAC address") })),
        )
            .into_response());
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
    match crate::store::nodes::get(&st.journal, mac).await? {
        Some((node, events)) => Ok(Json(NodeView { node, events }).into_response()),
        None => Ok((
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("node {mac} has not been seen") })),
        )
            .into_response()),
    }
}
