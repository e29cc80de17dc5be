//! Rack installation checklist templates (`templates/checklists/*.toml`, versioned): groups
//! of steps, each saying what to check and what "done" means; per-slot steps repeat for every
//! server slot of the rack, and some of those the appliance ticks itself from evidence.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The templates shipped with the appliance.
pub const SHIPPED: [(&str, &str); 3] = [
    (
        "hgx-b200-air",
        include_str!("../../../templates/checklists/hgx-b200-air.toml"),
    ),
    (
        "gb200-nvl72-liquid",
        include_str!("../../../templates/checklists/gb200-nvl72-liquid.toml"),
    ),
    (
        "trn3-ultraserver",
        include_str!("../../../templates/checklists/trn3-ultraserver.toml"),
    ),
];

/// What the appliance can tick by itself, for a slot, from what it has seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auto {
    /// The slot's node network-booted from the appliance.
    PxeBooted,
    /// The slot's node was matched to it by the plan's serial or MAC.
    SerialMatches,
    /// Its NICs trained at the plan's speed in burn-in.
    NicsAtPlanSpeed,
    /// Its burn-in passed and it was enrolled.
    BurninPassed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: String,
    pub check: String,
    pub done: String,
    #[serde(default)]
    pub per_slot: bool,
    #[serde(default)]
    pub auto: Option<Auto>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub step: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub rack_type: String,
    pub version: u32,
    pub title: String,
    pub skus: Vec<String>,
    pub group: Vec<Group>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("checklist template {name}: {source}")]
    Parse {
        name: String,
        source: Box<toml::de::Error>,
    },
    #[error("checklist template {name}: {reason}")]
    Invalid { name: String, reason: String },
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Template {
    /// Parses and checks a template: ids well formed and unique, `auto` only on per-slot
    /// steps, every step saying what to check and what done means.
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let t: Template = toml::from_str(text).map_err(|e| TemplateError::Parse {
            name: name.to_string(),
            source: Box::new(e),
        })?;
        let invalid = |reason: String| TemplateError::Invalid {
            name: name.to_string(),
            reason,
        };
        if t.rack_type != name {
            return Err(invalid(format!(
                "rack_type `{}` is not the file's name",
                t.rack_type
            )));
        }
        let mut ids = BTreeSet::new();
        for g in &t.group {
            if !is_id(&g.id) {
                return Err(invalid(format!("group id `{}` is not [a-z0-9-]+", g.id)));
            }
            for s in &g.step {
                if !is_id(&s.id) || !ids.insert(s.id.clone()) {
                    return Err(invalid(format!(
                        "step id `{}` is not [a-z0-9-]+ or is used twice",
                        s.id
                    )));
                }
                if s.check.trim().is_empty() || s.done.trim().is_empty() {
                    return Err(invalid(format!("step {} must say check and done", s.id)));
                }
                if s.auto.is_some() && !s.per_slot {
                    return Err(invalid(format!(
                        "step {}: only per-slot steps can be ticked by the appliance",
                        s.id
                    )));
                }
            }
        }
        if ids.is_empty() {
            return Err(invalid("no steps".into()));
        }
        Ok(t)
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.group.iter().flat_map(|g| &g.step).find(|s| s.id == id)
    }
}

/// Every shipped template, parsed.
pub fn shipped() -> Result<Vec<Template>, TemplateError> {
    SHIPPED
        .iter()
        .map(|(name, text)| Template::parse(name, text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_templates_parse_and_cover_the_install() {
        let all = shipped().unwrap();
        assert_eq!(all.len(), 3);
        for t in &all {
            let groups: Vec<&str> = t.group.iter().map(|g| g.id.as_str()).collect();
            assert_eq!(
                groups,
                [
                    "site",
                    "power",
                    "cooling",
                    "network",
                    "seating",
                    "first-power-on",
                    "acceptance"
                ],
                "{}",
                t.rack_type
            );
            for auto in [
                Auto::PxeBooted,
                Auto::SerialMatches,
                Auto::NicsAtPlanSpeed,
                Auto::BurninPassed,
            ] {
                assert!(
                    t.group
                        .iter()
                        .flat_map(|g| &g.step)
                        .any(|s| s.auto == Some(auto)),
                    "{}: no {auto:?} step",
                    t.rack_type
                );
            }
        }
        let gb200 = all
            .iter()
            .find(|t| t.rack_type == "gb200-nvl72-liquid")
            .unwrap();
        let text = toml::to_string(gb200).unwrap().to_lowercase();
        assert!(text.contains("leak"), "the coolant loop's leak test");
        assert!(text.contains("nvlink"), "the NVLink switch trays");
        assert!(text.contains("power shel"), "the power shelves");
    }

    #[test]
    fn bad_templates_are_refused_with_the_step_named() {
        let base = "rack_type = \"t\"\nversion = 1\ntitle = \"T\"\nskus = []\n";
        let cases = [
            (
                "[[group]]\nid = \"g\"\ntitle = \"G\"\n[[group.step]]\nid = \"a\"\ncheck = \"c\"\ndone = \"d\"\nauto = \"pxe_booted\"\n",
                "only per-slot steps",
            ),
            (
                "[[group]]\nid = \"g\"\ntitle = \"G\"\n[[group.step]]\nid = \"a\"\ncheck = \"c\"\ndone = \"d\"\n[[group.step]]\nid = \"a\"\ncheck = \"c\"\ndone = \"d\"\n",
                "used twice",
            ),
            (
                "[[group]]\nid = \"g\"\ntitle = \"G\"\n[[group.step]]\nid = \"A b\"\ncheck = \"c\"\ndone = \"d\"\n",
                "`A b`",
            ),
            (
                "[[group]]\nid = \"g\"\ntitle = \"G\"\n[[group.step]]\nid = \"a\"\ncheck = \"c\"\ndone = \" \"\n",
                "check and done",
            ),
        ];
        for (rest, want) in cases {
            let err = Template::parse("t", &format!("{base}{rest}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
        let err = Template::parse("other", &format!("{base}{}", cases[1].0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not the file's name"), "{err}");
    }
}
