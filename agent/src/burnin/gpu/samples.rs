//! How a GPU runs while it computes, sampled through NVML about every second: throttle
//! (clock event) reasons, power against its limit, temperature and SM clock, folded into the
//! conditions its result reports.

use nvml_wrapper::Device;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use std::time::Instant;

use provisioner_protocol::burnin::{ConditionPoint, Conditions, SERIES_MAX};

/// One sample of how a GPU runs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub throttle_reasons: Option<u64>,
    pub power_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    pub temperature_c: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
}

pub fn read_sample(device: &Device) -> Sample {
    Sample {
        throttle_reasons: device.current_throttle_reasons().ok().map(|r| r.bits()),
        power_w: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
        power_limit_w: device
            .enforced_power_limit()
            .ok()
            .map(|mw| f64::from(mw) / 1000.0),
        temperature_c: device
            .temperature(TemperatureSensor::Gpu)
            .ok()
            .map(f64::from),
        sm_clock_mhz: device.clock_info(Clock::SM).ok().map(f64::from),
    }
}

/// The samples of one GPU folded as they come: reasons ORed, extremes kept, and a series
/// of at most `SERIES_MAX` points for the charts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    count: u32,
    conditions: Conditions,
    first: Option<Instant>,
    /// Every `stride`-th sample goes into the series; doubled when the series is full.
    stride: u32,
}

impl Samples {
    /// A sample taken now.
    pub fn add(&mut self, s: &Sample) {
        let now = Instant::now();
        let first = *self.first.get_or_insert(now);
        self.add_at(s, now.duration_since(first).as_secs_f64());
    }

    /// A sample taken `t_s` seconds after the first.
    pub fn add_at(&mut self, s: &Sample, t_s: f64) {
        if self.stride == 0 {
            self.stride = 1;
        }
        if self.count.is_multiple_of(self.stride) {
            let series = &mut self.conditions.series;
            if series.len() == SERIES_MAX {
                // Keep every other point: the series stays even over the whole run.
                let mut i = 0;
                series.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
            if self.count.is_multiple_of(self.stride) {
                series.push(ConditionPoint {
                    t_s,
                    power_w: s.power_w,
                    temperature_c: s.temperature_c,
                    sm_clock_mhz: s.sm_clock_mhz,
                });
            }
        }
        self.count += 1;
        let c = &mut self.conditions;
        c.throttle_reasons |= s.throttle_reasons.unwrap_or(0);
        c.power_max_w = max(c.power_max_w, s.power_w);
        c.power_limit_w = max(c.power_limit_w, s.power_limit_w);
        c.temperature_max_c = max(c.temperature_max_c, s.temperature_c);
        c.sm_clock_min_mhz = min(c.sm_clock_min_mhz, s.sm_clock_mhz);
        c.sm_clock_max_mhz = max(c.sm_clock_max_mhz, s.sm_clock_mhz);
    }

    /// What the samples saw; `None` if there were none.
    pub fn conditions(&self) -> Option<Conditions> {
        (self.count > 0).then(|| self.conditions.clone())
    }
}

fn max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_protocol::burnin::throttle;
    use std::path::Path;

    /// `during-load.csv`: timestamp, temperature, power, SM clock, clock event reasons.
    fn fixture_samples(card: &str) -> Vec<Sample> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/nvidia")
            .join(card)
            .join("during-load.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split(',').map(str::trim).collect();
                let number = |s: &str| s.split(' ').next().unwrap().parse::<f64>().unwrap();
                Sample {
                    throttle_reasons: Some(
                        u64::from_str_radix(f[4].trim_start_matches("0x"), 16).unwrap(),
                    ),
                    power_w: Some(number(f[2])),
                    power_limit_w: Some(700.0),
                    temperature_c: Some(number(f[1])),
                    sm_clock_mhz: Some(number(f[3])),
                }
            })
            .collect()
    }

    #[test]
    fn the_h100_fixture_samples_fold_to_a_power_capped_load() {
        let mut samples = Samples::default();
        assert_eq!(samples.conditions(), None);
        // Only the samples under load, as the burn-in takes them (after the GEMM started).
        for s in fixture_samples("h100-sxm5-80gb")
            .iter()
            .filter(|s| s.power_w > Some(200.0))
        {
            samples.add(s);
        }
        let c = samples.conditions().unwrap();
        assert_eq!(
            c.throttle_reasons & throttle::SW_POWER_CAP,
            throttle::SW_POWER_CAP
        );
        assert_eq!(c.throttle_reasons & throttle::HW_SLOWDOWN, 0);
        assert!(c.power_max_w.unwrap() > 690.0, "{c:?}");
        assert_eq!(c.power_limit_w, Some(700.0));
        assert!(c.temperature_max_c.unwrap() >= 76.0, "{c:?}");
        assert!(c.sm_clock_min_mhz.unwrap() >= 1485.0, "{c:?}");
        assert!(c.sm_clock_max_mhz.unwrap() <= 1980.0, "{c:?}");
    }

    #[test]
    fn missing_readings_leave_gaps_not_zeros() {
        let mut samples = Samples::default();
        samples.add(&Sample {
            throttle_reasons: Some(throttle::SW_THERMAL),
            ..Sample::default()
        });
        samples.add(&Sample {
            sm_clock_mhz: Some(1500.0),
            ..Sample::default()
        });
        let c = samples.conditions().unwrap();
        assert_eq!(c.throttle_reasons, throttle::SW_THERMAL);
        assert_eq!(c.power_max_w, None);
        assert_eq!(c.sm_clock_min_mhz, Some(1500.0));
        assert_eq!(c.sm_clock_max_mhz, Some(1500.0));
    }

    #[test]
    fn a_long_run_keeps_an_even_series_of_bounded_length() {
        let mut samples = Samples::default();
        let s = Sample {
            power_w: Some(700.0),
            ..Sample::default()
        };
        // An hour at one sample a second.
        for t in 0..3600 {
            samples.add_at(&s, f64::from(t));
        }
        let series = samples.conditions().unwrap().series;
        assert!(series.len() <= SERIES_MAX, "{}", series.len());
        assert!(series.len() > SERIES_MAX / 2, "{}", series.len());
        assert_eq!(series[0].t_s, 0.0);
        let step = series[1].t_s - series[0].t_s;
        assert!(
            series.windows(2).all(|w| w[1].t_s - w[0].t_s == step),
            "evenly spaced: {series:?}"
        );
        assert!(series.last().unwrap().t_s > 3600.0 - 2.0 * step);
    }

    #[test]
    fn a_short_run_keeps_every_sample() {
        let mut samples = Samples::default();
        for t in 0..10 {
            let s = Sample {
                temperature_c: Some(40.0 + f64::from(t)),
                ..Sample::default()
            };
            samples.add_at(&s, f64::from(t));
        }
        let c = samples.conditions().unwrap();
        assert_eq!(c.series.len(), 10);
        assert_eq!(c.series[9].temperature_c, Some(49.0));
        assert_eq!(c.temperature_max_c, Some(49.0));
    }
}
