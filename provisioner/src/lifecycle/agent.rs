//! The agent's calls: its token checked against the node and the boot, its inspection report
//! matched against the rack plan, its next instruction. A refused credential is recorded.

use super::*;

/// The agent's next instruction for a node in `state`.
pub(super) fn instruction(state: &State, slot: Option<&str>, reported: bool) -> Instruction {
    match state {
        State::Inspecting if !reported => Instruction::Report,
        State::Inspecting => Instruction::Wait {
            seconds: 10,
            reason: "report received; waiting for the appliance".into(),
        },
        State::Inspected => Instruction::PowerOff {
            reason: format!(
                "inspected and matched to slot {}; powering off until installation",
                slot.unwrap_or("?")
            ),
        },
        State::Installing { written: true } => Instruction::Reboot {
            reason: "image written and read back; rebooting into its disk".into(),
        },
        State::Held { .. } => Instruction::Wait {
            seconds: 30,
            reason: "held by an operator".into(),
        },
        s @ (State::Failed { .. } | State::Retired { .. }) => Instruction::PowerOff {
            reason: format!("this node is {s}"),
        },
        s @ (State::Discovered
        | State::Installing { written: false }
        | State::BurningIn
        | State::Enrolled) => Instruction::Reboot {
            reason: format!("this node is {}; rebooting into what that needs", s.name()),
        },
    }
}

/// How often an enrolled node's installed agent asks again.
pub const ENROLLED_CHECK_IN_SECONDS: u32 = 60;

/// Refused calls recorded per peer and minute; more are only logged.
pub const REFUSALS_PER_MINUTE: i64 = 30;

impl Lifecycle {
    /// Checks an agent's bearer token against the MAC it speaks for: a boot's one-time token,
    /// or the credential an install gave the node's installed system. Refusals are recorded.
    pub(super) async fn authenticate(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        bearer: Option<&str>,
        mac: MacAddr,
        for_report: bool,
    ) -> Result<String, AgentError> {
        Ok(self.caller(tx, bearer, mac, for_report).await?.0)
    }

    /// [`Self::authenticate`], also saying whether the caller is an installed system (its
    /// install's credential) rather than the discovery image (a boot's token).
    pub(super) async fn caller(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        bearer: Option<&str>,
        mac: MacAddr,
        for_report: bool,
    ) -> Result<(String, bool), AgentError> {
        let Some(token) = bearer.filter(|t| !t.is_empty()) else {
            return Err(AgentAuthError::NoToken.into());
        };
        let hash = hash_token(token);
        let Some(rec) = db::tokens::agent_token(tx, &hash).await? else {
            // An installed system's credential: its install must stand and be this node's.
            let Some(install) = db::installs::by_credential(tx, &hash).await? else {
                return Err(AgentAuthError::UnknownToken.into());
            };
            let node = db::nodes::node_by_mac(tx, mac).await?;
            if node.map(|n| n.id) != Some(install.node_id) || for_report {
                return Err(AgentAuthError::OtherNode(mac).into());
            }
            return Ok((hash, true));
        };
        if rec.mac != mac {
            return Err(AgentAuthError::OtherNode(mac).into());
        }
        match rec.status {
            db::tokens::TokenStatus::Superseded => Err(AgentAuthError::EarlierBoot.into()),
            db::tokens::TokenStatus::Reported if for_report => {
                Err(AgentAuthError::AlreadyReported.into())
            }
            _ => Ok((hash, false)),
        }
    }

    /// Records a refused call against the MAC it claimed. A peer that keeps being refused is
    /// only logged past [`REFUSALS_PER_MINUTE`], so it cannot fill the store.
    pub async fn record_refusal(&self, mac: Option<MacAddr>, peer: &str, path: &str, why: &str) {
        let mac = mac.map(|m| m.to_string());
        warn!(
            mac = mac.as_deref().unwrap_or("-"),
            peer,
            path,
            reason = why,
            "call refused"
        );
        let now = now_ms();
        match db::refusals::refusals_since(&self.pool, peer, now - 60_000).await {
            Ok(n) if n >= REFUSALS_PER_MINUTE => return,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot count refused calls"),
        }
        if let Err(e) =
            db::refusals::add_refusal(&self.pool, mac.as_deref(), peer, path, why, now).await
        {
            warn!(error = %e, "cannot record a refused call");
        }
    }

    /// The node an agent's call speaks for: its MAC parsed, its token checked, the node found,
    /// all inside `tx`. Returns the MAC, the token's hash and the node.
    pub(super) async fn calling_node(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        bearer: Option<&str>,
        mac: Option<MacAddr>,
        for_report: bool,
    ) -> Result<(MacAddr, String, db::nodes::NodeRecord), AgentError> {
        let mac = mac.ok_or(AgentError::NoMac)?;
        let hash = self.authenticate(tx, bearer, mac, for_report).await?;
        let Some(node) = db::nodes::node_by_mac(tx, mac).await? else {
            return Err(AgentError::UnknownNode(mac));
        };
        Ok((mac, hash, node))
    }

    /// The caller behind `bearer` for `mac` (see [`Self::caller`]): whether it is an installed
    /// system, and its node.
    pub(super) async fn installed_caller(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        bearer: Option<&str>,
        mac: MacAddr,
    ) -> Result<(bool, db::nodes::NodeRecord), AgentError> {
        let (_, installed) = self.caller(tx, bearer, mac, false).await?;
        let node = db::nodes::node_by_mac(tx, mac)
            .await?
            .ok_or(AgentError::UnknownNode(mac))?;
        Ok((installed, node))
    }

    /// The agent's inspection report: matched against the rack plan, it moves the node to
    /// inspected or fails it with the reason.
    pub async fn report(
        &self,
        bearer: Option<&str>,
        report: &InspectionReport,
    ) -> Result<State, AgentError> {
        let _one = self.write.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (mac, hash, node) = self
            .calling_node(&mut tx, bearer, Some(report.mac), true)
            .await?;
        if node.state != State::Inspecting {
            return Err(AgentError::NotNow {
                mac,
                state: node.state.to_string(),
                what: "an inspection report",
            });
        }
        let facts = serde_json::to_string(&report.facts).expect("facts serialize");
        db::nodes::set_facts(&mut tx, node.id, Some(&facts), Some(now)).await?;
        let plan = db::plan::plan(&mut tx).await?;
        let taken: Vec<Taken> = db::nodes::taken_slots(&mut tx)
            .await?
            .into_iter()
            .map(Taken::from)
            .collect();
        let mut contested = None;
        let input = match plan::match_slot(mac, &report.facts, &plan, &self.skus, &taken) {
            Claim::Matched(slot) => Input::Matched { slot },
            Claim::Mismatch(reason) => Input::Mismatched { reason },
            Claim::Conflict { reason, hold } => {
                warn!(%mac, reason = %reason, "slot conflict: an operator decides");
                if let Some(holder) = hold {
                    contested = Some((holder, reason.clone()));
                }
                Input::Mismatched {
                    reason: format!("conflict: {reason}"),
                }
            }
        };
        let applied = apply(&mut tx, &node, &input, &Actor::Agent, now).await??;
        // The holder of a contested slot stops where it is until an operator decides.
        let mut held = None;
        if let Some((holder, reason)) = contested
            && let Some(h) = db::nodes::node_by_mac(&mut tx, holder).await?
        {
            let why = format!("conflict: {reason}; held until an operator decides");
            if let Ok(done) = apply(
                &mut tx,
                &h,
                &Input::Contested { reason: why },
                &Actor::Appliance,
                now,
            )
            .await?
            {
                held = Some(done);
            }
        }
        db::tokens::mark_token_reported(&mut tx, &hash).await?;
        // Inspected: installed at once when its slot names an image and one disk fits.
        let mut applied = applied;
        if let Some(inspected) = db::nodes::node_by_mac(&mut tx, mac).await?
            && let (Some(installing), _) = self.consider_install(&mut tx, &inspected, now).await?
        {
            applied = Applied {
                slot_before: applied.slot_before,
                ..installing
            };
        }
        let state = applied.state.clone();
        let holder = held.as_ref().map(|h| h.mac);
        self.commit(tx, std::iter::once(applied).chain(held))
            .await?;
        info!(%mac, %state, "inspection report taken");
        if let Some(holder) = holder {
            warn!(mac = %holder, "held: its slot is contested");
        }
        Ok(state)
    }

    /// What the agent on `mac` should do now, from the node's state. `base` is the
    /// appliance's URL as the agent reached it (the URLs of an install are under it); none
    /// when its request named no host.
    pub async fn next_for_agent(
        &self,
        bearer: Option<&str>,
        mac: MacAddr,
        base: Option<&str>,
    ) -> Result<Instruction, AgentError> {
        // An inspected node may be moved on (an image imported since): one change at a time.
        let _one = self.write.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (hash, installed) = self.caller(&mut tx, bearer, mac, false).await?;
        let reported = installed
            || db::tokens::agent_token(&mut tx, &hash)
                .await?
                .is_some_and(|t| t.status == db::tokens::TokenStatus::Reported);
        let node = db::nodes::node_by_mac(&mut tx, mac).await?;
        let Some(node) = node else {
            return Err(AgentError::UnknownNode(mac));
        };
        let mut changed = None;
        // The disk an earlier install wrote is wiped first (reprovisioned, retired).
        if matches!(
            node.state,
            State::Inspecting | State::Retired { wiped: false }
        ) && let Some(wipe) = self.wipe_instruction(&mut tx, &node).await?
        {
            tx.commit().await?;
            return Ok(wipe);
        }
        let next = match node.state {
            State::BurningIn => self.burnin_instruction(&mut tx, &node).await?,
            // Its installed system says what it booted first (`POST .../installed`).
            State::Installing { written: true } if installed => Instruction::Wait {
                seconds: 10,
                reason: "installed system: report what was booted first".into(),
            },
            State::Retired { wiped: false } => {
                if let Some(why) = db::installs::wipe_error(&mut tx, node.id).await? {
                    tx.commit().await?;
                    return Ok(Instruction::PowerOff {
                        reason: format!(
                            "retired; wiping its disk failed ({why}): the next boot tries again"
                        ),
                    });
                }
                // Nothing (left) to wipe.
                let applied =
                    apply(&mut tx, &node, &Input::DiskWiped, &Actor::Appliance, now).await??;
                let next = instruction(&applied.state, None, reported);
                changed = Some(applied);
                next
            }
            State::Installing { written: false } => {
                self.install_instruction(&mut tx, &node, base).await?
            }
            // An enrolled node's installed system checks in; it is not rebooted.
            State::Enrolled if installed => Instruction::Wait {
                seconds: ENROLLED_CHECK_IN_SECONDS,
                reason: "this node is enrolled; checking in again later".into(),
            },
            State::Inspected => match self.consider_install(&mut tx, &node, now).await? {
                (Some(applied), _) => {
                    let next = match &applied.state {
                        State::Installing { written: false } => {
                            let moved = db::nodes::node_by_mac(&mut tx, mac)
                                .await?
                                .ok_or(AgentError::UnknownNode(mac))?;
                            self.install_instruction(&mut tx, &moved, base).await?
                        }
                        s => instruction(s, node.slot.as_deref(), reported),
                    };
                    changed = Some(applied);
                    next
                }
                // Like a commissioned machine in MAAS: off until it can be installed (an
                // operator or, later, its BMC powers it on again once the image is there).
                (None, Some(why)) => Instruction::PowerOff {
                    reason: format!(
                        "inspected and matched to slot {}; powering off until it can be installed: {why}",
                        node.slot.as_deref().unwrap_or("?")
                    ),
                },
                (None, None) => instruction(&node.state, node.slot.as_deref(), reported),
            },
            _ => instruction(&node.state, node.slot.as_deref(), reported),
        };
        self.commit(tx, changed).await?;
        Ok(next)
    }
}
