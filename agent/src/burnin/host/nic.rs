//! NIC link state and speed as the driver reports them now (`/sys/class/net/NAME/speed`,
//! `carrier`, `operstate`), against the speed the rack plan cabled for. The appliance judges
//! the figure; a link that is down where the plan expects one cannot be validated.

use std::fs;
use std::path::Path;

/// What the driver says about one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Mb/s; `None` while down, or where the driver does not say (virtio, ENA: -1).
    pub speed_mbps: Option<u32>,
    pub up: Option<bool>,
}

/// Reads the link of interface `name` under `net` (`/sys/class/net` on a node).
pub fn read(net: &Path, name: &str) -> Link {
    let dir = net.join(name);
    let text = |file: &str| {
        fs::read_to_string(dir.join(file))
            .ok()
            .map(|t| t.trim().to_string())
    };
    // Both `speed` and `carrier` read EINVAL while the interface is down.
    let speed_mbps = text("speed")
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| u32::try_from(s).ok())
        .filter(|&s| s > 0);
    let carrier = text("carrier").and_then(|c| match c.as_str() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    });
    let up = carrier.or_else(|| match text("operstate").as_deref() {
        Some("up") => Some(true),
        Some("down" | "lowerlayerdown" | "notpresent") => Some(false),
        _ => None,
    });
    Link { speed_mbps, up }
}

/// What the burn-in reports for a link, given the speed the plan expects (if any): the speed
/// as a measurement, or why the link cannot be validated.
pub fn verdict(link: &Link, planned_mbps: Option<u32>) -> (Option<u32>, Option<String>) {
    match (link.up, link.speed_mbps, planned_mbps) {
        (Some(false), _, Some(_)) => (None, Some("link down".into())),
        (_, Some(speed), _) => (Some(speed), None),
        (_, None, Some(planned)) => (
            None,
            Some(format!(
                "link speed unknown (the driver reports none; the plan wants {planned} Mb/s)"
            )),
        ),
        // Nothing cabled for, nothing to hold it to: an unused port is not a fault.
        (_, None, None) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(up: Option<bool>, speed: Option<u32>) -> Link {
        Link {
            speed_mbps: speed,
            up,
        }
    }

    #[test]
    fn a_link_up_reports_its_speed_even_when_slow() {
        assert_eq!(
            verdict(&link(Some(true), Some(100_000)), Some(400_000)),
            (Some(100_000), None)
        );
        assert_eq!(
            verdict(&link(Some(true), Some(400_000)), None),
            (Some(400_000), None)
        );
    }

    #[test]
    fn a_link_down_the_plan_expects_cannot_be_validated() {
        assert_eq!(
            verdict(&link(Some(false), None), Some(400_000)),
            (None, Some("link down".into()))
        );
        assert_eq!(verdict(&link(Some(false), None), None), (None, None));
    }

    #[test]
    fn an_unknown_speed_the_plan_expects_cannot_be_validated() {
        let (speed, why) = verdict(&link(Some(true), None), Some(25_000));
        assert_eq!(speed, None);
        assert!(why.unwrap().contains("unknown"));
    }
}
