//! A node asks for its boot script: the lifecycle decides (through `crate::boot`) and, when it
//! boots the discovery image, issues its agent token to the requester of its boot.

use super::*;

impl Lifecycle {
    /// A node asks for its boot script. An unknown node is created (discovered); a node given
    /// the discovery image moves to inspecting and gets a new agent token, which supersedes
    /// the tokens of its earlier boots. What it boots is `boot::boot_target` of its state and of
    /// what the appliance `has`: a node with nothing to boot is told why and stays where it is,
    /// without a token.
    ///
    /// The token goes only to the node itself (`admission`): a requester the network knows as
    /// another MAC gets none and makes no node; while the node's boot has a token not yet used,
    /// a requester at another address gets none and supersedes nothing, unless the network
    /// vouches for it. A refused request is told why in its script and recorded against the
    /// MAC it named.
    pub async fn boot_requested(
        &self,
        mac: MacAddr,
        who: &Requester,
        has: Available,
    ) -> Result<BootDecision, StoreError> {
        if let Identity::Other(real) = who.identity {
            let why = format!(
                "{} is {real} on the provisioning network, not {mac}: no boot script with a token for it",
                who.addr
            );
            return Ok(self.refuse_boot(mac, who, why).await);
        }
        let one = self.write.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let node = match db::nodes::node_by_mac(&mut tx, mac).await? {
            Some(n) => n,
            None => {
                if let Err(limited) = self.new_nodes.take(who, now) {
                    return Ok(BootDecision {
                        target: BootTarget::Wait(limited.to_string()),
                        token: None,
                    });
                }
                let n = db::nodes::insert_node(&mut tx, mac, &State::Discovered, now).await?;
                db::nodes::add_transition(
                    &mut tx,
                    n.id,
                    &db::nodes::TransitionRow {
                        at_ms: now,
                        from: "(new)".into(),
                        to: State::Discovered.name().into(),
                        cause: "first network boot".into(),
                        actor: Actor::Appliance.to_string(),
                    },
                )
                .await?;
                n
            }
        };
        let target = crate::boot::boot_target(Some(&node.state), has);
        let mut done = Applied::unchanged(&node);
        let mut token = None;
        if target == BootTarget::Discovery {
            let addr = who.addr.to_string();
            if who.identity != Identity::Confirmed
                && let Some(holder) = db::tokens::unreported_agent_token(&mut tx, mac).await?
                && holder != addr
            {
                drop(tx);
                let why = format!(
                    "the boot of {mac} is being served to {holder}; a request from {addr} gets no token until that boot's report, its timeout or an operator's retry"
                );
                drop(one);
                return Ok(self.refuse_boot(mac, who, why).await);
            }
            if node.state == State::Discovered {
                done = apply(
                    &mut tx,
                    &node,
                    &Input::DiscoveryBooted,
                    &Actor::Appliance,
                    now,
                )
                .await?
                .expect("discovered nodes boot discovery");
            }
            let t = new_token();
            db::tokens::issue_agent_token(&mut tx, &hash_token(&t), mac, &addr, now).await?;
            db::installs::clear_wipe_errors(&mut tx, node.id).await?;
            token = Some(t);
        }
        self.commit(tx, [done]).await?;
        Ok(BootDecision { target, token })
    }

    /// A boot script refused to `who`: recorded against the MAC it named, and said in the
    /// script so a person at the console reads why.
    pub(super) async fn refuse_boot(
        &self,
        mac: MacAddr,
        who: &Requester,
        why: String,
    ) -> BootDecision {
        self.record_refusal(Some(mac), &who.addr.to_string(), "boot script", &why)
            .await;
        BootDecision {
            target: BootTarget::Wait(why),
            token: None,
        }
    }
}
