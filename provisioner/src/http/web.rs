//! Signing in to the status pages, and what a signed-in operator does there. An admin token
//! typed into the login form opens a session: a random value in a `Secure`, `HttpOnly`,
//! `SameSite=Strict` cookie, of which the store keeps only the hash. Every form that changes
//! something carries the session's CSRF value, and every change is recorded with its actor:
//! node actions as the node's transitions, checklist ticks in the rack's audit trail.

use std::net::SocketAddr;

use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::Digest;
use tracing::info;

use super::AppState;
use super::pages::{PageError, Viewer};
use crate::checklist::{self, ChecklistError};
use crate::events::now_ms;
use crate::lifecycle::machine::{Action, Actor};
use crate::lifecycle::{ActionError, Change, hash_token, new_token};
use crate::store::{StoreError, lifecycle as db, sessions};
use crate::types::MacAddr;

/// The session cookie's name.
pub const COOKIE: &str = "provisioner_session";
/// How long a session lasts: a shift.
const SESSION_MS: i64 = 12 * 60 * 60 * 1000;

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
    match viewer(st, headers).await? {
        Some(v) if constant_time_eq(v.csrf.as_bytes(), csrf.as_bytes()) => Ok(v),
        Some(_) => Err(PageError::Refused(
            StatusCode::FORBIDDEN,
            "this form is stale or came from another site: reload the page and try again".into(),
        )),
        None => Err(PageError::Refused(
            StatusCode::UNAUTHORIZED,
            "sign in with an admin token first (Log in, top right)".into(),
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A local path to go back to after signing in: never another site.
fn local(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
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
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Result<Response, PageError> {
    let page = LoginPage {
        viewer: viewer(&st, &headers).await?,
        next: local(q.next.as_deref()),
        problem: String::new(),
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = local(form.next.as_deref());
    let token = form.token.trim();
    let Some(name) = db::admin_token(&st.store, &hash_token(token)).await? else {
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
        return Ok((StatusCode::UNAUTHORIZED, Html(page.render()?)).into_response());
    };
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
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    operator(&st, &headers, &form.csrf).await?;
    if let Some(value) = session_value(&headers) {
        sessions::remove(&st.store, &hash_token(value)).await?;
    }
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "provisioner_session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
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
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    let who = match operator(&st, &headers, &form.csrf).await {
        Ok(v) => v,
        Err(e) => {
            let mac = match st.boot.lifecycle.find(&id.to_string()).await {
                Ok(Some(n)) => n.mac.parse::<MacAddr>().ok(),
                _ => None,
            };
            st.boot
                .lifecycle
                .record_refusal(
                    mac,
                    &peer.ip().to_string(),
                    &format!("/nodes/{id}/actions"),
                    "page action without a signed-in operator",
                )
                .await;
            return Err(e);
        }
    };
    let actor = Actor::Operator(who.name);
    match st
        .boot
        .lifecycle
        .act(&id.to_string(), form.action, &actor)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/nodes/{id}")).into_response()),
        Err(ActionError::NotFound(n)) => Err(PageError::NotFound(format!("node {n}"))),
        Err(ActionError::Refused(r)) => {
            Err(PageError::Refused(StatusCode::CONFLICT, r.to_string()))
        }
        Err(ActionError::Store(e)) => Err(e.into()),
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

fn checklist_refused(e: ChecklistError) -> PageError {
    match e {
        ChecklistError::Store(e) => PageError::Store(e),
        ChecklistError::NotStarted(r) => PageError::NotFound(format!("checklist of rack {r}")),
        other => PageError::Refused(StatusCode::CONFLICT, other.to_string()),
    }
}

/// "alice (token ci)": the person at the rack, and the operator's token that let them.
fn signed(by: &str, who: &Viewer) -> String {
    format!("{} (token {})", by.trim(), who.name)
}

pub async fn checklist_start(
    State(st): State<AppState>,
    Path((site, row, rack)): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(form): Form<StartForm>,
) -> Result<Response, PageError> {
    let who = operator(&st, &headers, &form.csrf).await?;
    if form.by.trim().is_empty() {
        return Err(checklist_refused(ChecklistError::NoName));
    }
    let name = format!("{site}/{row}/{rack}");
    checklist::start(
        &st.store,
        &st.checklists,
        &name,
        &form.rack_type,
        &signed(&form.by, &who),
    )
    .await
    .map_err(checklist_refused)?;
    st.boot.lifecycle.announce(Change {
        rack: Some(name),
        ..Change::default()
    });
    Ok(Redirect::to(&checklist_page(&site, &row, &rack)).into_response())
}

async fn checklist_change(
    st: AppState,
    (site, row, rack): (String, String, String),
    headers: HeaderMap,
    form: TickForm,
    undo: bool,
) -> Result<Response, PageError> {
    let who = operator(&st, &headers, &form.csrf).await?;
    if form.by.trim().is_empty() {
        return Err(checklist_refused(ChecklistError::NoName));
    }
    let name = format!("{site}/{row}/{rack}");
    let by = signed(&form.by, &who);
    let slot = form.slot.as_deref().filter(|s| !s.is_empty());
    let done = if undo {
        let reason = form.reason.as_deref().unwrap_or("");
        checklist::untick(
            &st.store,
            &st.checklists,
            &name,
            &form.step,
            slot,
            &by,
            reason,
        )
        .await
    } else {
        checklist::tick(&st.store, &st.checklists, &name, &form.step, slot, &by).await
    };
    done.map_err(checklist_refused)?;
    st.boot.lifecycle.announce(Change {
        rack: Some(name),
        ..Change::default()
    });
    let anchor = format!("#step-{}", form.step);
    Ok(Redirect::to(&(checklist_page(&site, &row, &rack) + &anchor)).into_response())
}

pub async fn checklist_tick(
    State(st): State<AppState>,
    Path(rack): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(form): Form<TickForm>,
) -> Result<Response, PageError> {
    checklist_change(st, rack, headers, form, false).await
}

pub async fn checklist_untick(
    State(st): State<AppState>,
    Path(rack): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(form): Form<TickForm>,
) -> Result<Response, PageError> {
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
            HeaderValue::from_static("a=1; provisioner_session=abc; b=2"),
        );
        assert_eq!(session_value(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("provisioner_session="),
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
        assert_eq!(local(None), "/");
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
