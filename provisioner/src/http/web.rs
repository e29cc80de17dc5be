//! Signing in to the status pages, and what a signed-in operator does there. An admin token
//! typed into the login form opens a session: a random value in a `Secure`, `HttpOnly`,
//! `SameSite=Strict` cookie, of which the store keeps only the hash. Every form that changes
//! something carries the session's CSRF value, and every change is recorded with its actor:
//! node actions as the node's transitions, checklist ticks in the rack's audit trail.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::Digest;
use tracing::info;

use super::AppState;
use super::pages::{PageError, Viewer};
use crate::checklist::{self, Mark, StepChange};
use crate::clock::now_ms;
use crate::error::Kind;
use crate::lifecycle::machine::{Action, Actor};
use crate::lifecycle::{hash_token, new_token};
use crate::store::{self as db, StoreError, sessions};

/// The session cookie's name.
pub const COOKIE: &str = "__Host-provisioner_session";
/// How long a session lasts: a shift.
const SESSION_MS: i64 = 12 * 60 * 60 * 1000;
/// Failed sign-ins a peer may make per minute before it is told to wait (429), without the
/// store being asked.
const FAILED_LOGINS_PER_MINUTE: u32 = 10;

/// How a request reached the appliance (set per connection).
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    pub https: bool,
}

/// What the web side keeps in memory: failed sign-ins per peer, the live streams' slots,
/// and where HTTPS is served, if it is.
#[derive(Debug)]
pub struct Guard {
    failed: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    pub live: std::sync::Arc<super::live::Streams>,
    pub https_port: Option<u16>,
    /// The overview's content as last rendered, and the (state generation, plan version) it
    /// was rendered at.
    pub overview: Mutex<Option<Kept<(u64, i64), String>>>,
    /// The rack plan as last read, and the import it was read at.
    pub plan: Mutex<Option<Kept<i64, Vec<crate::store::plan::PlanRow>>>>,
}

/// Something kept in memory, and the version of the store it was made from.
pub type Kept<V, T> = (V, std::sync::Arc<T>);

impl Guard {
    pub fn new(https_port: Option<u16>, limits: &crate::config::Limits) -> Guard {
        Guard {
            failed: Mutex::new(HashMap::new()),
            live: std::sync::Arc::new(super::live::Streams::new(limits)),
            https_port,
            overview: Mutex::new(None),
            plan: Mutex::new(None),
        }
    }

    /// Counts a sign-in attempt from `peer` before its token is checked, in one step under
    /// the lock, so that concurrent attempts cannot all pass a check made before any of them
    /// is counted. `false`: the peer has used its attempts for this minute (429).
    fn attempt(&self, peer: IpAddr, now: Instant) -> bool {
        let Ok(mut failed) = self.failed.lock() else {
            return false;
        };
        // Forget old windows so the map stays the size of the peers trying now.
        if failed.len() > 10_000 {
            failed.retain(|_, (since, _)| now.duration_since(*since) < Duration::from_secs(60));
        }
        let entry = failed
            .entry(crate::net::canonical(peer))
            .or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        if entry.1 >= FAILED_LOGINS_PER_MINUTE {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// A sign-in succeeded: its attempt does not count against the peer.
    fn succeeded(&self, peer: IpAddr) {
        if let Ok(mut failed) = self.failed.lock()
            && let Some(entry) = failed.get_mut(&crate::net::canonical(peer))
        {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

/// A form the page did not send (a field missing or malformed): a clear page, not axum's
/// plain-text rejection.
fn bad_form(e: FormRejection) -> PageError {
    PageError::new(
        Kind::BadRequest,
        format!(
            "this form is not one of the appliance's pages: {}",
            e.body_text()
        ),
    )
}

/// A browser tells where a form came from; one posted from another site is refused (the
/// session cookie is `SameSite=Strict` too).
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
}

/// The request's `Host` without its port; an IPv6 address keeps its brackets.
fn host_name(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.find(']') {
        Some(end) if host.starts_with('[') => &host[..=end],
        _ => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    (!name.is_empty()).then_some(name)
}

/// Whether the request's `Host` is this machine's loopback, where a browser keeps a
/// `Secure` cookie over plain HTTP.
fn loopback_host(headers: &HeaderMap) -> bool {
    host_name(headers).is_some_and(|name| {
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    })
}

/// `https://HOST:PORT/login?next=...` for a request that came by plain HTTP, when the
/// appliance serves HTTPS; `None` when the host name is not a plain one.
fn https_login(headers: &HeaderMap, port: u16, next: &str) -> Option<String> {
    let name = host_name(headers)?;
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    // The path keeps its slashes; everything else in it is percent-encoded.
    let next: Vec<String> = next.split('/').map(super::pages::segment).collect();
    plain.then(|| format!("https://{name}:{port}/login?next={}", next.join("/")))
}

/// The session cookie's value, if the request has one.
fn session_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// The CSRF value of a session: derived from the cookie's value, which a page of another
/// site cannot read.
fn csrf_of(session: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("csrf:{session}").as_bytes()))
}

/// Who is signed in, if anyone.
pub async fn viewer(st: &AppState, headers: &HeaderMap) -> Result<Option<Viewer>, StoreError> {
    let Some(value) = session_value(headers) else {
        return Ok(None);
    };
    let name = sessions::find(&st.store, &hash_token(value), now_ms()).await?;
    Ok(name.map(|name| Viewer {
        name,
        csrf: csrf_of(value),
    }))
}

/// The signed-in operator of a form, checked against the form's CSRF value.
async fn operator(st: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Viewer, PageError> {
    if cross_site(headers) {
        return Err(PageError::new(
            Kind::Forbidden,
            "a form posted from another site",
        ));
    }
    match viewer(st, headers).await? {
        Some(v) if constant_time_eq(v.csrf.as_bytes(), csrf.as_bytes()) => Ok(v),
        Some(_) => Err(PageError::new(
            Kind::Forbidden,
            "this form is stale or came from another site: reload the page and try again",
        )),
        None => Err(PageError::new(
            Kind::Unauthorized,
            "sign in with an admin token first (Log in, top right)",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A local path to go back to after signing in: never another site. Browsers drop tabs and
/// line breaks from a URL before reading it (`/\t/evil` is `//evil`), so only printable
/// ASCII passes, and no second slash or backslash after the first.
fn local(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !matches!(n.as_bytes().get(1), Some(b'/' | b'\\'))
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n.into()
        }
        _ => "/".into(),
    }
}

#[derive(Template)]
#[template(path = "pages/login.html")]
struct LoginPage {
    viewer: Option<Viewer>,
    next: String,
    problem: String,
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

pub async fn login_page(
    State(st): State<AppState>,
    Extension(transport): Extension<Transport>,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Result<Response, PageError> {
    let next = local(q.next.as_deref());
    let mut problem = String::new();
    if !transport.https && !loopback_host(&headers) {
        // The browser would drop the session's cookie here, after the token crossed the
        // network in clear: go to HTTPS if there is one, else say so.
        if let Some(to) = st
            .web
            .https_port
            .and_then(|p| https_login(&headers, p, &next))
        {
            return Ok(Redirect::to(&to).into_response());
        }
        problem = "this page came over plain HTTP: your browser will not keep the sign-in, \
                   and the token would cross the network in clear. Start the appliance with \
                   --https-listen (or put a TLS proxy in front of it) and sign in over HTTPS"
            .into();
    }
    let page = LoginPage {
        viewer: viewer(&st, &headers).await?,
        next,
        problem,
    };
    super::pages::html(&page)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(bad_form)?;
    if cross_site(&headers) {
        return Err(PageError::new(
            Kind::Forbidden,
            "a sign-in posted from another site",
        ));
    }
    let now = Instant::now();
    if !st.web.attempt(peer.ip(), now) {
        return Err(PageError::new(
            Kind::TooManyRequests,
            format!(
                "more than {FAILED_LOGINS_PER_MINUTE} failed sign-ins from {} in a minute: wait a minute",
                peer.ip()
            ),
        ));
    }
    let next = local(form.next.as_deref());
    let token = form.token.trim();
    let Some(name) = db::tokens::admin_token(&st.store, &hash_token(token)).await? else {
        st.boot
            .lifecycle
            .record_refusal(
                None,
                &peer.ip().to_string(),
                "/login",
                "sign-in with an unknown admin token",
            )
            .await;
        let page = LoginPage {
            viewer: None,
            next,
            problem: "unknown admin token (`provisioner token create NAME` makes one)".into(),
        };
        let mut resp = super::pages::html(&page)?;
        *resp.status_mut() = super::error::status(Kind::Unauthorized);
        return Ok(resp);
    };
    st.web.succeeded(peer.ip());
    // Signing in again ends the session the browser had.
    if let Some(old) = session_value(&headers) {
        sessions::remove(&st.store, &hash_token(old)).await?;
    }
    let value = new_token();
    let now = now_ms();
    sessions::add(&st.store, &hash_token(&value), &name, now, now + SESSION_MS).await?;
    info!(token = %name, peer = %peer.ip(), "signed in to the status pages");
    let cookie = format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Strict",
        SESSION_MS / 1000
    );
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex and ASCII"),
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(st): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(bad_form)?;
    operator(&st, &headers, &form.csrf).await?;
    if let Some(value) = session_value(&headers) {
        sessions::remove(&st.store, &hash_token(value)).await?;
    }
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-provisioner_session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
        ),
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub struct ActionForm {
    action: Action,
    csrf: String,
}

/// `POST /nodes/{id}/actions`: a button of the node page.
pub async fn node_action(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, PageError> {
    let csrf = form.as_ref().map_or("", |Form(f)| f.csrf.as_str());
    let who = match operator(&st, &headers, csrf).await {
        Ok(v) => v,
        Err(e) => {
            let why = match e.kind {
                Kind::Forbidden => "page action with a stale or foreign form",
                _ => "page action without a signed-in operator",
            };
            let path = format!("/nodes/{id}/actions");
            super::nodes::refuse_node_call(&st, peer, &id.to_string(), &path, why).await;
            return Err(e);
        }
    };
    let Form(form) = form.map_err(bad_form)?;
    let actor = Actor::Operator(who.name);
    match st
        .boot
        .lifecycle
        .act(&id.to_string(), form.action, &actor)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/nodes/{id}")).into_response()),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct StartForm {
    rack_type: String,
    by: String,
    csrf: String,
}

#[derive(Deserialize)]
pub struct TickForm {
    step: String,
    slot: Option<String>,
    by: String,
    reason: Option<String>,
    csrf: String,
}

/// Where a checklist form goes back to.
fn checklist_page(site: &str, row: &str, rack: &str) -> String {
    format!("{}/checklist", super::pages::rack_href(site, row, rack))
}

pub async fn checklist_start(
    State(st): State<AppState>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
    form: Result<Form<StartForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(bad_form)?;
    let who = operator(&st, &headers, &form.csrf).await?;
    let by = checklist::signed(&form.by, &who.name).map_err(PageError::from)?;
    let rack = super::racks::rack_id(&path).map_err(PageError::from)?;
    super::racks::start_checklist(&st, &rack, &form.rack_type, &by)
        .await
        .map_err(PageError::from)?;
    let (site, row, rack) = path;
    Ok(Redirect::to(&checklist_page(&site, &row, &rack)).into_response())
}

async fn checklist_change(
    st: AppState,
    path: (String, String, String),
    headers: HeaderMap,
    form: TickForm,
    undo: bool,
) -> Result<Response, PageError> {
    let who = operator(&st, &headers, &form.csrf).await?;
    let by = checklist::signed(&form.by, &who.name).map_err(PageError::from)?;
    let rack = super::racks::rack_id(&path).map_err(PageError::from)?;
    let anchor = format!(
        "#{}",
        super::pages::step_anchor(&form.step, form.slot.as_deref().filter(|s| !s.is_empty()))
    );
    let c = StepChange {
        step: form.step,
        slot: form.slot,
        by,
        mark: match undo {
            false => Mark::Tick,
            true => Mark::Untick {
                reason: form.reason.unwrap_or_default(),
            },
        },
    };
    super::racks::change_checklist(&st, &rack, &c)
        .await
        .map_err(PageError::from)?;
    let (site, row, rack) = path;
    Ok(Redirect::to(&(checklist_page(&site, &row, &rack) + &anchor)).into_response())
}

pub async fn checklist_tick(
    State(st): State<AppState>,
    Path(rack): Path<(String, String, String)>,
    headers: HeaderMap,
    form: Result<Form<TickForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(bad_form)?;
    checklist_change(st, rack, headers, form, false).await
}

pub async fn checklist_untick(
    State(st): State<AppState>,
    Path(rack): Path<(String, String, String)>,
    headers: HeaderMap,
    form: Result<Form<TickForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(bad_form)?;
    checklist_change(st, rack, headers, form, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-provisioner_session=abc; b=2"),
        );
        assert_eq!(session_value(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-provisioner_session="),
        );
        assert_eq!(session_value(&h), None);
        assert_eq!(session_value(&HeaderMap::new()), None);
    }

    #[test]
    fn after_signing_in_only_local_paths() {
        assert_eq!(local(Some("/nodes/3")), "/nodes/3");
        assert_eq!(local(Some("//evil.example/")), "/");
        assert_eq!(local(Some("https://evil.example/")), "/");
        assert_eq!(local(Some("/\\evil.example")), "/");
        assert_eq!(local(Some("/\t/evil.example")), "/");
        assert_eq!(local(Some("/\r\nX: y")), "/");
        assert_eq!(local(Some("/\x7f")), "/");
        assert_eq!(
            local(Some("/racks/a/b/c/checklist?x=1#step-a")),
            "/racks/a/b/c/checklist?x=1#step-a"
        );
        assert_eq!(local(None), "/");
    }

    fn host(h: &'static str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_static(h));
        m
    }

    #[test]
    fn loopback_hosts_keep_a_secure_cookie_over_http_others_go_to_https() {
        for h in [
            "localhost:8080",
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
        ] {
            assert!(loopback_host(&host(h)), "{h}");
        }
        for h in [
            "10.0.0.1:8080",
            "appliance.example:8080",
            "[fe80::1]:80",
            "localhost.evil:80",
        ] {
            assert!(!loopback_host(&host(h)), "{h}");
        }
        assert_eq!(
            https_login(&host("appliance.example:8080"), 8443, "/nodes/3").as_deref(),
            Some("https://appliance.example:8443/login?next=/nodes/3")
        );
        assert_eq!(
            https_login(&host("[fd00::1]:8080"), 8443, "/").as_deref(),
            Some("https://[fd00::1]:8443/login?next=/")
        );
        assert_eq!(https_login(&host("evil.example/x@y:80"), 8443, "/"), None);
    }

    #[test]
    fn failed_sign_ins_are_throttled_per_peer_for_a_minute() {
        let g = Guard::new(None, &crate::config::Limits::default());
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        for _ in 0..FAILED_LOGINS_PER_MINUTE {
            assert!(g.attempt(a, t));
        }
        assert!(!g.attempt(a, t));
        assert!(g.attempt(b, t), "only that peer");
        assert!(g.attempt(a, t + Duration::from_secs(61)), "a minute later");
        // A successful sign-in gives its attempt back.
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        for _ in 0..3 * FAILED_LOGINS_PER_MINUTE {
            assert!(g.attempt(c, t));
            g.succeeded(c);
        }
    }

    #[test]
    fn csrf_values_differ_per_session_and_compare_exactly() {
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert!(constant_time_eq(
            csrf_of("a").as_bytes(),
            csrf_of("a").as_bytes()
        ));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
