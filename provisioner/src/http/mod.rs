//! The appliance's HTTP side: health, metrics, the status pages, the JSON API, and HTTP boot
//! (iPXE scripts, firmware, artifacts).

pub mod agent;
pub mod boot;
pub mod conns;
pub mod error;
pub mod files;
pub mod live;
pub mod nodes;
pub mod pages;
pub mod racks;
pub mod sendfile;
pub mod tls;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{self, StoreError};

pub use error::{ApiError, PageError};

#[derive(Clone)]
pub struct AppState {
    pub store: store::Pool,
    pub metrics: Arc<Metrics>,
    pub events: crate::events::Events,
    /// The boot journal: nodes seen and their boot events.
    pub journal: store::Pool,
    pub boot: crate::boot::Boot,
    /// Rack installation checklist templates.
    pub checklists: Arc<crate::checklist::Templates>,
    /// Cancelled when the appliance stops: long-lived responses (the live pages' event
    /// streams) end then.
    pub shutdown: CancellationToken,
    /// Sign-in throttling, the live streams' slots, where HTTPS is.
    pub web: Arc<web::Guard>,
    /// Connection bounds, shared by the HTTP and HTTPS listeners.
    pub conns: conns::Conns,
    /// Which parts of the appliance are serving, for `/healthz`.
    pub health: Arc<crate::supervise::Health>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/racks/{site}/{row}/{rack}", get(pages::rack))
        .route("/nodes/{id}", get(pages::node))
        .route("/nodes/{id}/actions", post(web::node_action))
        .route(
            "/racks/{site}/{row}/{rack}/checklist",
            get(pages::checklist_page).post(web::checklist_start),
        )
        .route(
            "/racks/{site}/{row}/{rack}/checklist/ticks",
            post(web::checklist_tick),
        )
        .route(
            "/racks/{site}/{row}/{rack}/checklist/unticks",
            post(web::checklist_untick),
        )
        .route("/login", get(web::login_page).post(web::login))
        .route("/logout", post(web::logout))
        .route("/events", get(live::events))
        .route("/assets/live.js", get(live::script))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/leases", get(leases))
        .route("/api/v1/nodes", get(nodes::list))
        .route("/api/v1/nodes/{id}", get(nodes::get))
        .route("/api/v1/nodes/{id}/actions", post(nodes::action))
        .route(
            "/api/v1/racks/{site}/{row}/{rack}/checklist",
            get(racks::get).post(racks::start),
        )
        .route(
            "/api/v1/racks/{site}/{row}/{rack}/checklist/ticks",
            post(racks::tick),
        )
        .route(
            "/api/v1/racks/{site}/{row}/{rack}/checklist/unticks",
            post(racks::untick),
        )
        .route(
            provisioner_protocol::PATH_INSPECTION,
            post(agent::inspection),
        )
        .route(provisioner_protocol::PATH_NEXT, get(agent::next))
        .route(provisioner_protocol::PATH_BURNIN, post(agent::burnin))
        .route(provisioner_protocol::PATH_INSTALL, post(agent::install))
        .route(provisioner_protocol::PATH_INSTALLED, post(agent::installed))
        .route(provisioner_protocol::PATH_DRIVERS, post(agent::drivers))
        .route(provisioner_protocol::PATH_PROGRESS, post(agent::progress))
        .route("/boot/{name}", get(boot::script))
        .route("/firmware/{name}", get(boot::firmware))
        .route("/artifacts/{sha}", get(boot::artifact))
        .route("/artifacts/{sha}/{name}", get(boot::artifact))
        .route("/repo/{*path}", get(boot::repo))
        .with_state(state)
}

/// Serves on `listener` until `shutdown`, letting requests in flight finish (for up to ten
/// seconds). Connections that start with a boot-file request take the sendfile path; the
/// rest, and whatever such a connection asks next, go to hyper and the router.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = router(state.clone());
    let conns = state.conns.clone();
    accept_loop(
        listener,
        "HTTP",
        &conns,
        shutdown,
        move |stream, peer, conn, token| {
            connection(stream, peer, conn, router.clone(), state.clone(), token)
        },
    )
    .await;
    Ok(())
}

/// Accepts connections on `listener` until `shutdown`, each served by `serve` in a task of
/// its own while it holds a place in `limits`; then waits up to ten seconds for those in
/// flight. Shared by HTTP and HTTPS.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    what: &'static str,
    limits: &conns::Conns,
    shutdown: CancellationToken,
    mut serve: F,
) where
    F: FnMut(tokio::net::TcpStream, SocketAddr, Arc<conns::Conn>, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Over a limit the connection is closed at once: it costs the appliance nothing more.
        let Some(conn) = limits.admit(peer.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let evicted = conn.evicted();
        let work = serve(stream, peer, conn, shutdown.clone());
        conns.spawn(async move {
            tokio::select! {
                _ = work => {}
                _ = evicted => {}
            }
        });
        while conns.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    conn: Arc<conns::Conn>,
    router: Router,
    state: AppState,
    token: CancellationToken,
) {
    let mut head = [0u8; 16];
    // The first bytes must come within the head deadline too: a connection that says nothing
    // holds a place for no longer than a slow one.
    let peeked = tokio::select! {
        _ = token.cancelled() => return,
        r = tokio::time::timeout(conn.head_timeout(), stream.peek(&mut head)) => match r {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        },
    };
    if sendfile::wants(&head[..peeked]) {
        let after = tokio::select! {
            _ = token.cancelled() => return,
            a = sendfile::serve(stream, peer, &conn, &state) => a,
        };
        if let sendfile::After::Hyper(rewind) = after {
            with_hyper(rewind, peer, false, conn, router, token).await;
        }
        return;
    }
    with_hyper(stream, peer, false, conn, router, token).await;
}

/// Largest request head hyper reads (its buffer): a head past this is refused (431).
const MAX_HEAD: usize = 64 * 1024;

/// Serves one connection with the router; `https` says whether it came over TLS.
pub(crate) async fn with_hyper<I>(
    io: I,
    peer: SocketAddr,
    https: bool,
    place: Arc<conns::Conn>,
    router: Router,
    token: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let head_timeout = place.head_timeout();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            place.headed();
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req.extensions_mut().insert(web::Transport { https });
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, req).await }
        });
    // The header timer bounds each request head from when hyper starts waiting for it (so the
    // idle time between keep-alive requests too); without a timer hyper has none at all.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), conn).await;
        }
    }
}

/// `GET /healthz`: 200 when the store answers and every part serves; 503 otherwise, naming
/// what is down and why (`{"status": "degraded", "down": {"dhcp": "panicked: ..."}}`).
async fn healthz(State(st): State<AppState>) -> Result<Response, ApiError> {
    sqlx::query("SELECT 1")
        .execute(&st.store)
        .await
        .map_err(StoreError::from)?;
    let down: serde_json::Map<String, serde_json::Value> = st
        .health
        .down()
        .into_iter()
        .map(|(part, why)| (part.to_string(), why.into()))
        .collect();
    let parts = serde_json::to_value(st.health.parts()).unwrap_or_default();
    if down.is_empty() {
        return Ok(Json(serde_json::json!({ "status": "ok", "parts": parts })).into_response());
    }
    Ok((
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "status": "degraded", "down": down, "parts": parts })),
    )
        .into_response())
}

async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let text = st.metrics.render(&st.boot.lifecycle.counts())?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(Serialize)]
struct LeaseView {
    mac: String,
    ip: String,
    state: &'static str,
    /// RFC 3339, UTC.
    expires_at: String,
    hostname: Option<String>,
}

async fn leases(State(st): State<AppState>) -> Result<Json<Vec<LeaseView>>, ApiError> {
    let now = crate::clock::now_s();
    let rows = store::leases::all(&st.store).await?;
    Ok(Json(
        rows.into_iter()
            .map(|l| LeaseView {
                mac: l.mac.to_string(),
                ip: l.ip.to_string(),
                state: l.shown_state(now),
                expires_at: rfc3339(l.expires_at),
                hostname: l.hostname,
            })
            .collect(),
    ))
}

fn rfc3339(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::store::SyncMode;
    use crate::supervise::{Health, supervise};

    /// The appliance's router on a fresh store in `dir`, with `health`, as `app::up` builds it.
    async fn state(dir: &std::path::Path, health: Arc<Health>) -> AppState {
        let pool = store::open(dir, SyncMode::Normal).await.unwrap();
        let journal = store::open_journal(dir).await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let lifecycle = crate::lifecycle::Lifecycle::open(
            pool.clone(),
            crate::app::load_skus(None).unwrap(),
            crate::app::load_profiles(None).unwrap(),
            crate::lifecycle::Timeouts::default(),
            crate::lifecycle::admission::NewNodes::default(),
        )
        .await
        .unwrap();
        let (events, writer) = crate::events::Events::new(journal.clone(), Default::default(), 100);
        tokio::spawn(writer);
        let limits = Limits::default();
        AppState {
            store: pool,
            metrics: metrics.clone(),
            events,
            journal,
            boot: Arc::new(crate::boot::BootContext {
                firmware: crate::firmware::FirmwareSet::load(dir).unwrap(),
                artifacts: crate::artifacts::ArtifactStore::open(dir).unwrap(),
                discovery: Vec::new(),
                advertise: None,
                http_port: 8080,
                lifecycle,
                runtime: tokio::runtime::Handle::current(),
                repo_dir: crate::repo::repo_dir(dir),
                archive_key: crate::repo::ArchiveKey::public_path(dir),
            }),
            checklists: Arc::new(crate::checklist::Templates::shipped().unwrap()),
            shutdown: CancellationToken::new(),
            web: Arc::new(web::Guard::new(None, &limits)),
            conns: conns::Conns::new(&limits, metrics),
            health,
        }
    }

    async fn get(router: &mut Router, path: &str) -> (StatusCode, serde_json::Value) {
        let req = axum::http::Request::get(path)
            .extension(axum::extract::ConnectInfo(SocketAddr::from((
                [127, 0, 0, 1],
                9,
            ))))
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = tower_service::Service::call(router, req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn healthz_names_a_part_that_is_down_and_answers_503_while_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let health = Health::new(Arc::new(Metrics::default()));
        let shutdown = CancellationToken::new();
        // A part that serves, and one that cannot start (as a port taken by another program).
        tokio::spawn(supervise(
            "http",
            health.clone(),
            shutdown.clone(),
            |ready| async move {
                ready.serving();
                std::future::pending::<()>().await;
                Ok(())
            },
        ));
        tokio::spawn(supervise(
            "tftp",
            health.clone(),
            shutdown.clone(),
            |_| async { Err("cannot listen for TFTP on 0.0.0.0:69: address in use".to_string()) },
        ));
        let mut router = router(state(dir.path(), health.clone()).await);
        let mut seen = None;
        for _ in 0..100 {
            let (status, body) = get(&mut router, "/healthz").await;
            if body["down"]["tftp"]
                .as_str()
                .is_some_and(|r| r.contains("address in use"))
            {
                seen = Some((status, body));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (status, body) = seen.expect("/healthz names the part that is down");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["parts"]["http"]["status"], "up", "{body}");
        assert!(body["down"].get("http").is_none(), "{body}");
        shutdown.cancel();

        // All parts up: 200.
        let all_up = Health::new(Arc::new(Metrics::default()));
        let mut router = super::router(state(dir.path(), all_up).await);
        let (status, body) = get(&mut router, "/healthz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ok");
    }
}
