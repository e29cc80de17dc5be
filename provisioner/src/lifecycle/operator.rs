//! An operator's actions on a node (hold, release, retry, reprovision, retire), and finding a
//! node by number or MAC: what the API, the pages and the command line all call.

use super::*;

impl Lifecycle {
    /// An operator's action on a node.
    pub async fn act(
        &self,
        node: &str,
        action: Action,
        actor: &Actor,
    ) -> Result<State, ActionError> {
        let state = self
            .apply_input(node, Input::Operator(action), actor)
            .await?;
        info!(node, action = action.as_str(), %actor, state = %state, "operator action");
        Ok(state)
    }

    /// A node by its id or its MAC.
    pub async fn find(&self, node: &str) -> Result<Option<db::nodes::NodeRecord>, StoreError> {
        if let Ok(id) = node.parse::<i64>() {
            return db::nodes::node_by_id(&self.pool, id).await;
        }
        let Ok(mac) = node.parse::<MacAddr>() else {
            return Ok(None);
        };
        let mut tx = self.pool.begin().await?;
        let n = db::nodes::node_by_mac(&mut tx, mac).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// An input from outside the agent's calls (the installer's progress, a test's setup):
    /// the same transitions, from the same machine.
    pub async fn apply_input(
        &self,
        node: &str,
        input: Input,
        actor: &Actor,
    ) -> Result<State, ActionError> {
        let _one = self.write.lock().await;
        let rec = self
            .find(node)
            .await?
            .ok_or_else(|| ActionError::NotFound(node.to_string()))?;
        let mut tx = self.pool.begin().await?;
        let applied = apply(&mut tx, &rec, &input, actor, now_ms()).await??;
        let state = applied.state.clone();
        self.commit(tx, [applied]).await?;
        Ok(state)
    }
}
