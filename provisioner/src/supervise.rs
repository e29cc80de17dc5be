//! Keeps the appliance's parts running. Each server (DHCP, TFTP, HTTP, HTTPS, the timeout
//! sweeper) runs as a task under a supervisor: when it panics or ends before shutdown, the
//! supervisor records why, counts the restart, and starts it again from its durable state
//! after a short, growing pause. While a part is not serving, `/healthz` answers 503 and names
//! it, so the appliance is never half-alive without saying so.
//!
//! Why a supervisor and not `panic = "abort"`: a restart of the whole process would cut every
//! transfer in flight (hundreds of nodes fetching kernels in a boot storm) for a fault in one
//! part, and it relies on a service manager the appliance may not run under (`cargo run`, a
//! test). A part restarts from what it keeps durably: the DHCP server reloads its leases from
//! the store, where every lease is committed before its ACK leaves.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::clock::now_ms;
use crate::metrics::{Metrics, PartLabel};

/// The first pause before a restart; it doubles up to `MAX_PAUSE` while restarts keep failing.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// A part that served this long before it stopped restarts after the first pause again.
const STEADY: Duration = Duration::from_secs(60);

/// How one part is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PartState {
    /// Serving.
    Up,
    /// Not serving: starting, or stopped and about to be started again.
    Down { since_ms: i64, reason: String },
}

/// The parts of this appliance and how each is doing, for `/healthz` and `/metrics`.
#[derive(Debug)]
pub struct Health {
    parts: RwLock<BTreeMap<&'static str, PartState>>,
    metrics: Arc<Metrics>,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Health> {
        Arc::new(Health {
            parts: RwLock::new(BTreeMap::new()),
            metrics,
        })
    }

    fn set(&self, part: &'static str, state: PartState) {
        let up = i64::from(state == PartState::Up);
        self.metrics
            .parts
            .up
            .get_or_create(&PartLabel { part })
            .set(up);
        if let Ok(mut parts) = self.parts.write() {
            parts.insert(part, state);
        }
    }

    /// Every part and its state.
    pub fn parts(&self) -> BTreeMap<&'static str, PartState> {
        self.parts.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// The parts that are not serving, with why.
    pub fn down(&self) -> Vec<(&'static str, String)> {
        self.parts()
            .into_iter()
            .filter_map(|(part, s)| match s {
                PartState::Up => None,
                PartState::Down { reason, .. } => Some((part, reason)),
            })
            .collect()
    }
}

/// Given to a part when it starts: it calls [`Ready::serving`] once it is bound and serving.
#[derive(Clone)]
pub struct Ready {
    part: &'static str,
    health: Arc<Health>,
}

impl Ready {
    pub fn serving(&self) {
        self.health.set(self.part, PartState::Up);
    }
}

/// Why a part stopped, from its task's end.
fn why(ended: Result<Result<(), String>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "stopped by itself".into(),
        Ok(Err(reason)) => reason,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            format!("panicked: {msg}")
        }
        Err(e) => format!("task ended: {e}"),
    }
}

/// Runs `part` until `shutdown`: `start` is called for each run and returns the part's future,
/// which calls `Ready::serving` once it serves and returns (or panics) only when it fails.
/// Each run is a task of its own, so its panic is caught here, never in the caller.
pub async fn supervise<S, F>(
    part: &'static str,
    health: Arc<Health>,
    shutdown: CancellationToken,
    mut start: S,
) where
    S: FnMut(Ready) -> F,
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut pause = FIRST_PAUSE;
    loop {
        health.set(
            part,
            PartState::Down {
                since_ms: now_ms(),
                reason: "starting".into(),
            },
        );
        let ready = Ready {
            part,
            health: health.clone(),
        };
        let started = Instant::now();
        let mut run = tokio::spawn(start(ready));
        let ended = tokio::select! {
            ended = &mut run => ended,
            _ = shutdown.cancelled() => {
                // The part drains on the same token; wait for it, bounded.
                let _ = tokio::time::timeout(Duration::from_secs(15), run).await;
                return;
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        let reason = why(ended);
        health.set(
            part,
            PartState::Down {
                since_ms: now_ms(),
                reason: reason.clone(),
            },
        );
        health
            .metrics
            .parts
            .restarts
            .get_or_create(&PartLabel { part })
            .inc();
        if started.elapsed() >= STEADY {
            pause = FIRST_PAUSE;
        }
        error!(part, reason = %reason, pause_ms = pause.as_millis() as u64, "part stopped; starting it again");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return,
        }
        pause = (pause * 2).min(MAX_PAUSE);
        info!(part, "restarting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn restarts(h: &Health, part: &'static str) -> u64 {
        h.metrics
            .parts
            .restarts
            .get_or_create(&PartLabel { part })
            .get()
    }

    async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f()
    }

    #[tokio::test]
    async fn a_part_that_panics_is_counted_and_started_again() {
        let health = Health::new(Arc::new(Metrics::default()));
        let shutdown = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        let sup = tokio::spawn(supervise(
            "dhcp",
            health.clone(),
            shutdown.clone(),
            move |ready| {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    ready.serving();
                    if n == 0 {
                        panic!("injected fault");
                    }
                    std::future::pending::<()>().await;
                    Ok(())
                }
            },
        ));
        assert!(
            until(Duration::from_secs(10), || runs.load(Ordering::SeqCst) == 2
                && health.parts().get("dhcp") == Some(&PartState::Up))
            .await,
            "{:?}",
            health.parts()
        );
        assert_eq!(restarts(&health, "dhcp"), 1);
        assert!(health.down().is_empty());
        shutdown.cancel();
        sup.await.unwrap();
    }

    #[tokio::test]
    async fn a_part_that_cannot_start_is_down_with_its_reason() {
        let health = Health::new(Arc::new(Metrics::default()));
        let shutdown = CancellationToken::new();
        let sup = tokio::spawn(supervise(
            "tftp",
            health.clone(),
            shutdown.clone(),
            |_ready| async { Err("cannot bind 0.0.0.0:69: address in use".to_string()) },
        ));
        assert!(
            until(Duration::from_secs(10), || restarts(&health, "tftp") >= 2).await,
            "it keeps trying"
        );
        let down = health.down();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].0, "tftp");
        assert!(
            down[0].1.contains("address in use") || down[0].1 == "starting",
            "{down:?}"
        );
        shutdown.cancel();
        sup.await.unwrap();
    }

    #[test]
    fn a_panic_message_is_the_reason() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ended = rt.block_on(async {
            tokio::spawn(async {
                let v: Vec<u8> = Vec::new();
                let i = v.len() + 3;
                let _ = v[i];
                Ok::<(), String>(())
            })
            .await
        });
        let reason = why(ended);
        assert!(
            reason.starts_with("panicked: index out of bounds"),
            "{reason}"
        );
    }
}
