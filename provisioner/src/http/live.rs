//! Live pages: `GET /events` streams every committed change as server-sent events
//! (`event: change`, data `{"node": MAC, "state": ...}` or `{"rack": ...}`); a listener that
//! fell behind gets `event: resync` and reads its page again. `GET /assets/live.js` is the
//! script the pages load to listen; a page without JavaScript is the same page, not live.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::config::Limits;
use crate::net::canonical;

/// The live streams open at once: a bounded number per peer address, and a share of the
/// whole that only signed-in operators may take, so that anonymous pages (any peer on the
/// provisioning network) cannot leave an operator without live pages.
#[derive(Debug)]
pub struct Streams {
    total: usize,
    anonymous: usize,
    per_peer: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    all: usize,
    anonymous: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// One open stream's place; given back when the stream ends.
#[derive(Debug)]
pub struct Stream {
    streams: Arc<Streams>,
    peer: IpAddr,
    anonymous: bool,
}

impl Streams {
    pub fn new(limits: &Limits) -> Streams {
        Streams {
            total: limits.live_streams,
            anonymous: limits.live_streams - limits.live_streams_for_operators,
            per_peer: limits.live_streams_per_peer,
            open: Mutex::default(),
        }
    }

    /// A place for a stream from `peer`, or the limit it ran into.
    pub fn open(self: &Arc<Self>, peer: IpAddr, operator: bool) -> Result<Stream, &'static str> {
        let peer = canonical(peer);
        let mut o = self.open.lock().map_err(|_| "full")?;
        if o.all >= self.total {
            return Err("full");
        }
        if !operator {
            if o.anonymous >= self.anonymous {
                return Err("kept_for_operators");
            }
            if o.per_peer.get(&peer).copied().unwrap_or(0) >= self.per_peer {
                return Err("per_peer");
            }
            o.anonymous += 1;
            *o.per_peer.entry(peer).or_insert(0) += 1;
        }
        o.all += 1;
        Ok(Stream {
            streams: self.clone(),
            peer,
            anonymous: !operator,
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let Ok(mut o) = self.streams.open.lock() else {
            return;
        };
        o.all -= 1;
        if self.anonymous {
            o.anonymous -= 1;
            if let Some(n) = o.per_peer.get_mut(&self.peer) {
                *n -= 1;
                if *n == 0 {
                    o.per_peer.remove(&self.peer);
                }
            }
        }
    }
}

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

pub async fn events(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // Each stream holds a slot while it is open: a flood of them cannot starve the boot plane
    // of connections, nor an operator of live pages.
    let operator = matches!(super::web::viewer(&st, &headers).await, Ok(Some(_)));
    let slot = match st.web.live.open(peer.ip(), operator) {
        Ok(slot) => slot,
        Err(limit) => {
            st.metrics.limits.hit("live", limit);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "30")],
                "too many live pages open; the pages still work, reloaded by hand",
            )
                .into_response();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_streams_are_bounded_per_peer_and_leave_the_operators_share() {
        let limits = Limits {
            live_streams: 10,
            live_streams_for_operators: 4,
            live_streams_per_peer: 2,
            ..Limits::default()
        };
        let s = Arc::new(Streams::new(&limits));
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let a1 = s.open(ip(1), false).unwrap();
        let _a2 = s.open(ip(1), false).unwrap();
        assert_eq!(s.open(ip(1), false).unwrap_err(), "per_peer");
        let anon: Vec<_> = (2..6).map(|n| s.open(ip(n), false).unwrap()).collect();
        assert_eq!(anon.len(), 4);
        assert_eq!(s.open(ip(9), false).unwrap_err(), "kept_for_operators");
        let ops: Vec<_> = (0..4).map(|_| s.open(ip(1), true).unwrap()).collect();
        assert_eq!(s.open(ip(1), true).unwrap_err(), "full");
        drop(ops);
        drop(a1);
        assert!(s.open(ip(1), false).is_ok(), "places come back");
    }
}
