//! Prometheus metrics of the appliance, served as text at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubnetLabel {
    pub subnet: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartLabel {
    pub part: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub part: &'static str,
    pub reason: &'static str,
}

/// The appliance's parts under supervision (`crate::supervise`).
#[derive(Default, Debug)]
pub struct PartMetrics {
    /// 1 while a part serves, 0 while it is starting or down.
    pub up: Family<PartLabel, Gauge>,
    pub restarts: Family<PartLabel, Counter>,
}

/// Requests a limit turned away, by part and limit (`docs/security.md` lists them). Clones
/// count into the same counters.
#[derive(Default, Debug, Clone)]
pub struct LimitMetrics {
    pub limited: Family<LimitLabel, Counter>,
}

impl LimitMetrics {
    pub fn hit(&self, part: &'static str, reason: &'static str) {
        self.limited
            .get_or_create(&LimitLabel { part, reason })
            .inc();
    }

    pub fn count(&self, part: &'static str, reason: &'static str) -> u64 {
        self.limited
            .get_or_create(&LimitLabel { part, reason })
            .get()
    }
}

/// Counters of the DHCP server.
#[derive(Default, Debug)]
pub struct DhcpMetrics {
    pub received: Family<TypeLabel, Counter>,
    pub sent: Family<TypeLabel, Counter>,
    pub dropped: Family<ReasonLabel, Counter>,
    pub pool_exhausted: Family<SubnetLabel, Counter>,
    pub active_leases: Gauge,
    pub store_commits: Counter,
    pub store_errors: Counter,
}

impl DhcpMetrics {
    pub fn drop(&self, reason: &'static str) {
        self.dropped.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// All metrics of one appliance.
#[derive(Default, Debug)]
pub struct Metrics {
    pub dhcp: DhcpMetrics,
    pub parts: PartMetrics,
    pub limits: LimitMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

impl Metrics {
    /// Renders the Prometheus text exposition format, with the lifecycle's nodes per state
    /// as they are now.
    pub fn render(
        &self,
        nodes_by_state: &[(&'static str, usize)],
    ) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        let states = Family::<StateLabel, Gauge>::default();
        for (state, n) in nodes_by_state {
            states
                .get_or_create(&StateLabel {
                    state: (*state).to_string(),
                })
                .set(*n as i64);
        }
        registry.register("nodes", "Nodes in each lifecycle state", states);
        let d = &self.dhcp;
        registry.register(
            "dhcp_received",
            "DHCP messages received, by type",
            d.received.clone(),
        );
        registry.register("dhcp_sent", "DHCP replies sent, by type", d.sent.clone());
        registry.register(
            "dhcp_dropped",
            "DHCP packets dropped or left unanswered, by reason",
            d.dropped.clone(),
        );
        registry.register(
            "dhcp_pool_exhausted",
            "DISCOVERs that found no free address, by subnet",
            d.pool_exhausted.clone(),
        );
        registry.register(
            "dhcp_active_leases",
            "Active unexpired leases",
            d.active_leases.clone(),
        );
        registry.register(
            "dhcp_store_commits",
            "Lease batches committed to the store",
            d.store_commits.clone(),
        );
        registry.register(
            "dhcp_store_errors",
            "Lease batches the store refused (their replies were not sent)",
            d.store_errors.clone(),
        );
        registry.register(
            "part_up",
            "1 while a part of the appliance serves, 0 while it is starting or down",
            self.parts.up.clone(),
        );
        registry.register(
            "part_restarts",
            "Times a part stopped or panicked and was started again",
            self.parts.restarts.clone(),
        );
        registry.register(
            "limited",
            "Requests turned away or cut short by a limit, by part and limit",
            self.limits.limited.clone(),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}
