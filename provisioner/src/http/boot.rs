//! HTTP boot: per-node iPXE scripts, firmware for UEFI HTTP boot, and content-addressed
//! artifacts. Every fetch is recorded against the node's MAC.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::boot;
use crate::store::journal::EventKind;
use crate::types::{MacAddr, Sha256};

fn client_ip(addr: &SocketAddr) -> Option<Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    }
}

fn ipxe(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /boot/{MAC}.ipxe`: the node's iPXE script. Errors are iPXE scripts too (status 200,
/// so iPXE runs them): they print the reason and retry.
pub async fn script(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split(':').next())
        .and_then(|h| h.parse::<Ipv4Addr>().ok());
    let server = st.boot.server(host);
    let retry_generic = format!("{}/boot/${{net0/mac}}.ipxe", server.base_url());
    let Some(mac) = name
        .strip_suffix(".ipxe")
        .and_then(|m| m.parse::<MacAddr>().ok())
    else {
        return ipxe(
            StatusCode::OK,
            boot::error_script(&format!("`{name}` names no MAC address"), &retry_generic),
        );
    };
    let who = st.events.neighbors().requester(peer.ip(), mac);
    let script = st.boot.script_for(mac, &who, &server).await;
    // Recorded once the lifecycle took the node: a request for a made-up MAC that it refused
    // leaves nothing in the journal.
    if st.boot.lifecycle.state(mac).is_some() {
        st.events.record(
            mac,
            client_ip(&peer),
            EventKind::Http,
            format!("GET /boot/{name} (iPXE script)"),
        );
    }
    ipxe(StatusCode::OK, script)
}

/// `GET /firmware/{NAME}`: a network-boot binary that matched the manifest.
pub async fn firmware(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(fw) = st.boot.firmware.get(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    note_firmware(&st, peer, &name);
    super::files::serve(&fw.path, fw.sha256, &headers).await
}

/// `GET /artifacts/{SHA256}` and `/artifacts/{SHA256}/{NAME}`.
pub async fn artifact(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(params): Path<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let Some(sha) = params
        .iter()
        .find(|(k, _)| k == "sha")
        .and_then(|(_, v)| v.parse::<Sha256>().ok())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(path) = st.boot.artifacts.path(sha) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    note_artifact(&st, peer, sha, &headers);
    super::files::serve(&path, sha, &headers).await
}

/// `GET /repo/{PATH}`: the package repository (`DATA_DIR/repo`: `dists/` and `pool/`) and the
/// archive key, with Range and a sha256 ETag like every file served. A package's digest is in
/// its path (checked at import); an index's is computed as it is served (they are small).
pub async fn repo(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let file = if path == crate::repo::openpgp::PUBLIC_FILE {
        st.boot.archive_key.clone()
    } else {
        match crate::repo::served_path(&st.boot.repo_dir, &path) {
            Some(f) => f,
            None => return StatusCode::NOT_FOUND.into_response(),
        }
    };
    let sha = match path
        .strip_prefix("pool/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|s| s.parse::<Sha256>().ok())
    {
        Some(sha) => sha,
        None => {
            let f = file.clone();
            match tokio::task::spawn_blocking(move || crate::types::sha256_file(&f)).await {
                Ok(Ok((sha, _))) => sha,
                _ => return StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    if let Some(ip) = client_ip(&peer) {
        st.events
            .record_ip(ip, EventKind::Http, format!("GET /repo/{path}"));
    }
    super::files::serve(&file, sha, &headers).await
}

/// Records a firmware fetch against the client's MAC.
pub fn note_firmware(st: &AppState, peer: SocketAddr, name: &str) {
    if let Some(ip) = client_ip(&peer) {
        st.events
            .record_ip(ip, EventKind::Http, format!("GET /firmware/{name}"));
    }
}

/// Records an artifact fetch (and its range) against the client's MAC.
pub fn note_artifact(st: &AppState, peer: SocketAddr, sha: Sha256, headers: &HeaderMap) {
    if let Some(ip) = client_ip(&peer) {
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        st.events
            .record_ip(ip, EventKind::Http, format!("GET /artifacts/{sha}{range}"));
    }
}
