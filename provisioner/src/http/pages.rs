//! Server-rendered, read-only status pages: the site overview (`/`), a rack
//! (`/racks/{site}/{row}/{rack}`) and a node (`/nodes/{id}`). Plain HTML from the askama
//! templates in `templates/pages/`, escaped by askama; no JavaScript.

mod charts;
mod checklist;
mod node;
mod site;

pub(crate) use checklist::anchor as step_anchor;
pub use checklist::checklist_page;
pub use node::node;
pub use site::{overview, rack};

use askama::Template;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::lifecycle::machine::State;

pub use super::error::PageError;

/// The operator signed in to the pages, and the value their forms must carry.
#[derive(Clone, Debug)]
pub struct Viewer {
    /// The admin token's name.
    pub name: String,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "pages/error.html")]
struct ErrorPage<'a> {
    viewer: Option<Viewer>,
    title: &'a str,
    message: String,
}

/// The page that says why a request was not done, with `status`.
pub(crate) fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let page = ErrorPage {
        viewer: None,
        title,
        message: message.to_string(),
    };
    // The error page has two strings; should it fail, the reason still goes out as text.
    match html(&page) {
        Ok(mut resp) => {
            *resp.status_mut() = status;
            resp
        }
        Err(_) => (status, message.to_string()).into_response(),
    }
}

/// What every page may load and do: its own scripts only (live.js), inline styles (each
/// page's own `<style>`), no frames around it, forms only to the appliance.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   form-action 'self'; base-uri 'none'";

/// A rendered template as `text/html; charset=utf-8`, with the pages' security headers; not
/// cached, since a page may show a signed-in operator's forms.
pub(crate) fn html(page: &impl Template) -> Result<Response, PageError> {
    let mut resp = Html(page.render()?).into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The CSS class of a state: its name (`failed`, `burning_in`...), `empty` for no node.
fn class(state: Option<&State>) -> &'static str {
    state.map_or("empty", State::name)
}

/// The step a node is at, or was at when it failed or was held.
fn current_step(state: &State) -> &'static str {
    let step = match state {
        State::Failed { step, .. } => Some(*step),
        State::Held { from } => from.step(),
        s => s.step(),
    };
    step.map_or("-", |s| s.as_str())
}

/// Unix milliseconds as RFC 3339, UTC, to the second.
fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// One path segment, percent-encoded: plan names go into links as they are typed.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The link to the rack page of `site/row/rack`.
pub(crate) fn rack_href(site: &str, row: &str, rack: &str) -> String {
    format!(
        "/racks/{}/{}/{}",
        segment(site),
        segment(row),
        segment(rack)
    )
}

/// `site/row/rack/U12` → the rack's link, when the slot id has that shape.
fn slot_rack_href(slot: &str) -> Option<String> {
    let r = crate::lifecycle::rack_of(slot)?;
    Some(rack_href(&r.site, &r.row, &r.rack))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::machine::Step;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("a01"), "a01");
        assert_eq!(segment("row 1/?#"), "row%201%2F%3F%23");
        assert_eq!(rack_href("lab", "r 1", "a01"), "/racks/lab/r%201/a01");
    }

    #[test]
    fn slot_links_to_its_rack() {
        assert_eq!(
            slot_rack_href("lab/r1/a01/U10").as_deref(),
            Some("/racks/lab/r1/a01")
        );
        assert_eq!(slot_rack_href("nonsense"), None);
    }

    #[test]
    fn steps_of_failed_and_held_nodes() {
        let failed = State::Failed {
            step: Step::Inspecting,
            reason: "not in the rack plan".into(),
        };
        assert_eq!(current_step(&failed), "inspecting");
        let held = State::Held {
            from: Box::new(State::BurningIn),
        };
        assert_eq!(current_step(&held), "burning_in");
        assert_eq!(current_step(&State::Enrolled), "-");
        assert_eq!(class(None), "empty");
        assert_eq!(class(Some(&held)), "held");
    }

    #[test]
    fn a_store_error_is_a_503_page() {
        let resp = PageError::from(crate::store::StoreError::Corrupt("node state `x`".into()))
            .into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ct = resp.headers().get(axum::http::header::CONTENT_TYPE);
        assert_eq!(
            ct.and_then(|v| v.to_str().ok()),
            Some("text/html; charset=utf-8")
        );
        let resp = PageError::not_found("node 7").into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_error_page_escapes_its_message() {
        let page = ErrorPage {
            viewer: None,
            title: "Store unavailable",
            message: "<b>x</b>".into(),
        };
        let html = page.render().expect("renders");
        assert!(html.contains("&#60;b&#62;x&#60;/b&#62;"), "{html}");
        assert!(html.contains("@media print"));
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(when(0), "1970-01-01T00:00:00Z");
        assert_eq!(when(1_700_000_000_999), "2023-11-14T22:13:20Z");
    }
}
