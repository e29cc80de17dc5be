//! Live pages: `GET /events` streams every committed change as server-sent events
//! (`event: change`, data `{"node": MAC, "state": ...}` or `{"rack": ...}`); a listener that
//! fell behind gets `event: resync` and reads its page again. `GET /assets/live.js` is the
//! script the pages load to listen; a page without JavaScript is the same page, not live.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;

/// The script of the live pages (`templates/pages/live.js`).
const LIVE_JS: &str = include_str!("../../../templates/pages/live.js");

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        LIVE_JS,
    )
        .into_response()
}

pub async fn events(State(st): State<AppState>) -> Response {
    // Each stream holds a slot while it is open: a flood of them cannot starve the boot plane
    // of connections.
    let Ok(slot) = st.web.live.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            "too many live pages open; the pages still work, reloaded by hand",
        )
            .into_response();
    };
    let changes = st.boot.lifecycle.changes();
    let shutdown = st.shutdown.clone();
    let stream = futures_lite::stream::unfold(
        (changes, shutdown, true, slot),
        |(mut changes, shutdown, first, slot)| async move {
            if first {
                // Said at once, so that a page knows it is live before anything changes.
                let hello = Event::default().event("hello").data("{}");
                return Some((Ok::<_, Infallible>(hello), (changes, shutdown, false, slot)));
            }
            let next = tokio::select! {
                _ = shutdown.cancelled() => return None,
                next = changes.recv() => next,
            };
            let event = match next {
                Ok(change) => Event::default()
                    .event("change")
                    .json_data(&change)
                    .unwrap_or_else(|_| Event::default().event("resync").data("{}")),
                Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (changes, shutdown, false, slot)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
