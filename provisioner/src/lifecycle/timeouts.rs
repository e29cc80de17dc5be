//! Each step's timeout: a node whose step runs past it fails, found by a sweep that runs every
//! `[lifecycle] sweep_every`.

use super::*;

impl Lifecycle {
    /// Fails every node whose step has run past its timeout. Returns how many.
    pub async fn expire(&self) -> Result<usize, StoreError> {
        self.expire_at(now_ms()).await
    }

    /// [`Lifecycle::expire`] with the clock given (Unix ms).
    pub async fn expire_at(&self, now: i64) -> Result<usize, StoreError> {
        let _one = self.write.lock().await;
        let mut failed = 0;
        let timed: Vec<&str> = Step::ALL
            .iter()
            .filter(|s| self.timeouts.0.contains_key(s))
            .map(|s| s.as_str())
            .collect();
        for node in db::nodes::nodes_in_states(&self.pool, &timed).await? {
            let Some(step) = node.state.step() else {
                continue;
            };
            let Some(limit) = self.timeouts.0.get(&step) else {
                continue;
            };
            if now - node.state_since_ms < limit.as_millis() as i64 {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            let input = Input::TimedOut { after: *limit };
            if let Ok(applied) = apply(&mut tx, &node, &input, &Actor::Appliance, now).await? {
                warn!(mac = %node.mac, state = %applied.state, "step timed out");
                self.commit(tx, [applied]).await?;
                failed += 1;
            }
        }
        Ok(failed)
    }

    /// Checks the timeouts every `every` until `shutdown`.
    pub async fn run_timeouts(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.expire().await {
                warn!(error = %e, "cannot check step timeouts");
            }
        }
    }
}
