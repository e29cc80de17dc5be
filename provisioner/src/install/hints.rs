//! Root device hints: which of a node's inspected disks its OS image is written to, in the
//! schema operators know from OpenStack Ironic (a node's `root_device` property).
//!
//! A node's hints are a TOML table, `root_device = { serial = "S1", size = ">= 100" }`, or,
//! in a CSV cell, the compact form `serial=S1;size=>=100` ([`RootDeviceHints`]'s `FromStr`
//! and `Display`). A disk is chosen when it satisfies every hint given, and [`choose`] wants
//! exactly one such disk: Ironic takes the first match, but the order of `/dev/sd*` is not
//! stable across boots, so two matches are refused, never guessed between.
//!
//! Where this follows Ironic, and where it departs from it on purpose:
//! - String hints take Ironic's `s==` (the default with no operator), `s!=`, `<in>`
//!   (substring) and `<or> a <or> b`; they compare ignoring case and surrounding blanks, as
//!   Ironic does. `wwn*` ignore a `0x` prefix, `name` a `/dev/` prefix, `by_path` a
//!   `/dev/disk/by-path/` prefix, so either spelling works. Ironic's `s<`, `s<=`, `s>`, `s>=`
//!   and `<all-in>` are refused: ordering serials chooses no disk anyone means.
//! - `size` is in GiB with `==` (the default), `!=`, `>=`, `>`, `<=`, `<`. The disk's size is
//!   taken in whole GiB, rounded to the nearest as the node page shows it: the 894.3 GiB of a
//!   "960 GB" drive is `size = 894`, the 3576.98 GiB of a "3.84 TB" one `size = 3577` (Ironic
//!   compares the fraction: there `size = 894` matches no 960 GB drive). A range is several
//!   bounds, all of which must hold: `size = [">= 800", "<= 4000"]`, or in the compact form
//!   the key repeated, `size=>=800;size=<=4000`. Ironic's legacy `=` (meaning `>=`) is
//!   refused: in the compact form `size==100` would read as "equal".
//! - A hint on an attribute a disk lacks does not match it, whatever the operator (Ironic
//!   skips such a disk): virtio disks have no `wwn`, NVMe ones no `vendor` or `hctl`.
//!   `by_path` is udev's `ID_PATH` as the agent derives it from sysfs (SATA:
//!   `pci-0000:00:1f.2-ata-1.0`, not the older `-ata-1` link).
//! - No hints: Ironic's default, the smallest disk of at least 4 GiB; two disks of that
//!   same size are refused rather than picked by kernel name.

use std::fmt;
use std::str::FromStr;

use provisioner_protocol::Disk;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const GIB: u64 = 1 << 30;

/// Ironic's default root disk: the smallest at least this big, in GiB.
pub const DEFAULT_MIN_SIZE_GIB: u64 = 4;

/// Every hint key, in the order the compact form writes them.
const KNOWN_KEYS: &str = "serial, wwn, wwn_with_extension, wwn_vendor_extension, by_path, \
                          model, vendor, name, hctl, size, rotational";

/// Which disk of an inspected node its OS image goes on. Empty (the default): Ironic's rule,
/// the smallest disk of at least [`DEFAULT_MIN_SIZE_GIB`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootDeviceHints {
    /// The disk's serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<StringHint>,
    /// World Wide Name, with or without `0x`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<StringHint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_with_extension: Option<StringHint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_vendor_extension: Option<StringHint>,
    /// `/dev/disk/by-path/` name, with or without that prefix: stable for a given slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_path: Option<StringHint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<StringHint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<StringHint>,
    /// Kernel name, with or without `/dev/`. Only for names that do not move between boots
    /// (`nvme0n1` on one controller, `md0`); `sda` and `sdb` can swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<StringHint>,
    /// SCSI host:channel:target:lun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hctl: Option<StringHint>,
    /// Size in whole GiB (rounded to the nearest): one bound or several, all of which must
    /// hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeHint>,
    /// Spinning disk (`true`) or solid state (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
}

/// The string-valued hints, each with where a [`Disk`] keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attribute {
    Serial,
    Wwn,
    WwnWithExtension,
    WwnVendorExtension,
    ByPath,
    Model,
    Vendor,
    Name,
    Hctl,
}

impl Attribute {
    const ALL: [Attribute; 9] = [
        Attribute::Serial,
        Attribute::Wwn,
        Attribute::WwnWithExtension,
        Attribute::WwnVendorExtension,
        Attribute::ByPath,
        Attribute::Model,
        Attribute::Vendor,
        Attribute::Name,
        Attribute::Hctl,
    ];

    fn key(self) -> &'static str {
        match self {
            Attribute::Serial => "serial",
            Attribute::Wwn => "wwn",
            Attribute::WwnWithExtension => "wwn_with_extension",
            Attribute::WwnVendorExtension => "wwn_vendor_extension",
            Attribute::ByPath => "by_path",
            Attribute::Model => "model",
            Attribute::Vendor => "vendor",
            Attribute::Name => "name",
            Attribute::Hctl => "hctl",
        }
    }

    /// The disk's value, where the inspection facts have one.
    fn of(self, disk: &Disk) -> Option<&str> {
        match self {
            Attribute::Serial => disk.serial.as_deref(),
            Attribute::Wwn => disk.wwn.as_deref(),
            Attribute::WwnWithExtension => disk.wwn_with_extension.as_deref(),
            Attribute::WwnVendorExtension => disk.wwn_vendor_extension.as_deref(),
            Attribute::ByPath => disk.by_path.as_deref(),
            Attribute::Model => disk.model.as_deref(),
            Attribute::Vendor => disk.vendor.as_deref(),
            Attribute::Name => Some(&disk.name),
            Attribute::Hctl => disk.hctl.as_deref(),
        }
    }

    /// The form both sides are compared in: operators copy WWNs from tools that print `0x`
    /// and from ones that do not, and device paths with or without their directory.
    fn normalize(self, value: &str) -> String {
        let value = value.trim().to_lowercase();
        let prefix = match self {
            Attribute::Wwn | Attribute::WwnWithExtension | Attribute::WwnVendorExtension => "0x",
            Attribute::Name => "/dev/",
            Attribute::ByPath => "/dev/disk/by-path/",
            _ => "",
        };
        match value.strip_prefix(prefix) {
            Some(rest) => rest.to_string(),
            None => value,
        }
    }
}

impl RootDeviceHints {
    /// No hint given: [`choose`] applies the default rule.
    pub fn is_empty(&self) -> bool {
        self.strings().all(|(_, hint)| hint.is_none())
            && self.size.is_none()
            && self.rotational.is_none()
    }

    /// Whether `disk` satisfies every hint given.
    pub fn matches(&self, disk: &Disk) -> bool {
        self.strings()
            .all(|(attribute, hint)| hint.is_none_or(|h| h.matches(attribute, attribute.of(disk))))
            && self
                .size
                .as_ref()
                .is_none_or(|s| s.admits_bytes(disk.size_bytes))
            && self.rotational.is_none_or(|r| r == disk.rotational)
    }

    fn strings(&self) -> impl Iterator<Item = (Attribute, Option<&StringHint>)> {
        Attribute::ALL.into_iter().map(|a| {
            let hint = match a {
                Attribute::Serial => &self.serial,
                Attribute::Wwn => &self.wwn,
                Attribute::WwnWithExtension => &self.wwn_with_extension,
                Attribute::WwnVendorExtension => &self.wwn_vendor_extension,
                Attribute::ByPath => &self.by_path,
                Attribute::Model => &self.model,
                Attribute::Vendor => &self.vendor,
                Attribute::Name => &self.name,
                Attribute::Hctl => &self.hctl,
            };
            (a, hint.as_ref())
        })
    }

    fn string_mut(&mut self, attribute: Attribute) -> &mut Option<StringHint> {
        match attribute {
            Attribute::Serial => &mut self.serial,
            Attribute::Wwn => &mut self.wwn,
            Attribute::WwnWithExtension => &mut self.wwn_with_extension,
            Attribute::WwnVendorExtension => &mut self.wwn_vendor_extension,
            Attribute::ByPath => &mut self.by_path,
            Attribute::Model => &mut self.model,
            Attribute::Vendor => &mut self.vendor,
            Attribute::Name => &mut self.name,
            Attribute::Hctl => &mut self.hctl,
        }
    }
}

/// The compact form, for a CSV cell: `KEY=VALUE` pairs separated by `;`, e.g.
/// `serial=S1;size=>=800;size=<=4000;rotational=false`. Only `size` may repeat (one bound
/// each); an empty string is no hints.
impl FromStr for RootDeviceHints {
    type Err = HintError;

    fn from_str(s: &str) -> Result<Self, HintError> {
        let mut hints = RootDeviceHints::default();
        let mut bounds = Vec::new();
        for item in s.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(HintError::NotKeyValue {
                    item: item.to_string(),
                });
            };
            let (key, value) = (key.trim(), value.trim());
            let bad = |key: &'static str| {
                move |problem| HintError::BadValue {
                    key,
                    value: value.to_string(),
                    problem,
                }
            };
            if key == "size" {
                bounds.push(value.parse::<SizeBound>().map_err(bad("size"))?);
            } else if key == "rotational" {
                if hints.rotational.is_some() {
                    return Err(HintError::Repeated { key: "rotational" });
                }
                hints.rotational = Some(parse_bool(value).map_err(bad("rotational"))?);
            } else {
                let attribute = Attribute::ALL
                    .into_iter()
                    .find(|a| a.key() == key)
                    .ok_or_else(|| HintError::UnknownKey {
                        key: key.to_string(),
                    })?;
                let hint = value.parse::<StringHint>().map_err(bad(attribute.key()))?;
                let slot = hints.string_mut(attribute);
                if slot.is_some() {
                    return Err(HintError::Repeated {
                        key: attribute.key(),
                    });
                }
                *slot = Some(hint);
            }
        }
        if !bounds.is_empty() {
            let value = join(&bounds, ", ");
            hints.size = Some(
                SizeHint::new(bounds).map_err(|problem| HintError::BadValue {
                    key: "size",
                    value,
                    problem,
                })?,
            );
        }
        Ok(hints)
    }
}

/// The compact form; it parses back to the same hints.
impl fmt::Display for RootDeviceHints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        for (attribute, hint) in self.strings() {
            if let Some(hint) = hint {
                items.push(format!("{}={hint}", attribute.key()));
            }
        }
        for bound in self.size.iter().flat_map(SizeHint::bounds) {
            items.push(format!("size={bound}"));
        }
        if let Some(rotational) = self.rotational {
            items.push(format!("rotational={rotational}"));
        }
        f.write_str(&items.join(";"))
    }
}

/// Ironic's booleans, as an operator might type them into a CSV cell.
fn parse_bool(value: &str) -> Result<bool, BadValue> {
    match value.to_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(BadValue::NotABool(value.to_string())),
    }
}

fn join<T: fmt::Display>(items: &[T], separator: &str) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// A string hint: Ironic's `[OPERATOR] VALUE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StringHint {
    op: StringOp,
    /// As written, trimmed; one for every operator but `<or>`, which has one or more.
    values: Vec<String>,
}

/// How a string hint compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringOp {
    /// `s==`, or no operator: the whole value.
    Equal,
    /// `s!=`
    NotEqual,
    /// `<in>`: the hint is part of the value.
    Contains,
    /// `<or> a <or> b`: equal to one of them.
    OneOf,
}

/// Ironic's string operators that choose no disk anyone means.
const UNSUPPORTED_STRING_OPS: [&str; 5] = ["s>=", "s<=", "s>", "s<", "<all-in>"];

impl StringHint {
    pub fn op(&self) -> StringOp {
        self.op
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// A disk without the attribute matches no hint on it, `s!=` included (as in Ironic).
    fn matches(&self, attribute: Attribute, actual: Option<&str>) -> bool {
        let Some(actual) = actual
            .map(|a| attribute.normalize(a))
            .filter(|a| !a.is_empty())
        else {
            return false;
        };
        let mut wanted = self.values.iter().map(|v| attribute.normalize(v));
        match self.op {
            StringOp::Equal => wanted.any(|w| w == actual),
            StringOp::NotEqual => wanted.all(|w| w != actual),
            StringOp::Contains => wanted.any(|w| actual.contains(&w)),
            StringOp::OneOf => wanted.any(|w| w == actual),
        }
    }
}

impl FromStr for StringHint {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<Self, BadValue> {
        let s = s.trim();
        if s.contains(';') {
            return Err(BadValue::Semicolon);
        }
        if let Some(op) = UNSUPPORTED_STRING_OPS
            .into_iter()
            .find(|op| s.starts_with(op))
        {
            return Err(BadValue::UnsupportedOperator(op));
        }
        let (op, values): (StringOp, Vec<&str>) = if let Some(rest) = s.strip_prefix("<or>") {
            (StringOp::OneOf, rest.split("<or>").map(str::trim).collect())
        } else if let Some(rest) = s.strip_prefix("<in>") {
            (StringOp::Contains, vec![rest.trim()])
        } else if let Some(rest) = s.strip_prefix("s!=") {
            (StringOp::NotEqual, vec![rest.trim()])
        } else if let Some(rest) = s.strip_prefix("s==") {
            (StringOp::Equal, vec![rest.trim()])
        } else {
            (StringOp::Equal, vec![s])
        };
        if values.iter().any(|v| v.is_empty()) {
            return Err(BadValue::Empty);
        }
        // `samsung <or> winsys` would otherwise be one literal value that never matches.
        for inner in ["<or>", "<in>"] {
            if values.iter().any(|v| v.contains(inner)) {
                return Err(BadValue::OperatorInside(inner));
            }
        }
        let values = values.into_iter().map(str::to_string).collect();
        Ok(StringHint { op, values })
    }
}

impl fmt::Display for StringHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            StringOp::Equal => {
                let value = &self.values[0];
                // A value that reads as an operator keeps its `s==`, so it parses back.
                if value.parse::<StringHint>().as_ref() == Ok(self) {
                    f.write_str(value)
                } else {
                    write!(f, "s== {value}")
                }
            }
            StringOp::NotEqual => write!(f, "s!= {}", self.values[0]),
            StringOp::Contains => write!(f, "<in> {}", self.values[0]),
            StringOp::OneOf => {
                let alternatives: Vec<String> =
                    self.values.iter().map(|v| format!("<or> {v}")).collect();
                f.write_str(&alternatives.join(" "))
            }
        }
    }
}

impl TryFrom<String> for StringHint {
    type Error = BadValue;

    fn try_from(s: String) -> Result<Self, BadValue> {
        s.parse()
    }
}

impl From<StringHint> for String {
    fn from(hint: StringHint) -> String {
        hint.to_string()
    }
}

/// One size comparison, in whole GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeBound {
    pub op: SizeOp,
    pub gib: u64,
}

/// Ironic's integer operators, less its legacy `=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeOp {
    /// `==`, or no operator.
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
}

impl SizeOp {
    /// Two-character operators first, so `>=` is not read as `>` and `=5`.
    const ALL: [(&str, SizeOp); 6] = [
        ("==", SizeOp::Eq),
        ("!=", SizeOp::Ne),
        (">=", SizeOp::Ge),
        ("<=", SizeOp::Le),
        (">", SizeOp::Gt),
        ("<", SizeOp::Lt),
    ];

    fn symbol(self) -> &'static str {
        SizeOp::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("", |(s, _)| s)
    }
}

impl SizeBound {
    pub fn admits(&self, gib: u64) -> bool {
        match self.op {
            SizeOp::Eq => gib == self.gib,
            SizeOp::Ne => gib != self.gib,
            SizeOp::Ge => gib >= self.gib,
            SizeOp::Gt => gib > self.gib,
            SizeOp::Le => gib <= self.gib,
            SizeOp::Lt => gib < self.gib,
        }
    }
}

impl FromStr for SizeBound {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<Self, BadValue> {
        let s = s.trim();
        let (op, number) = SizeOp::ALL
            .iter()
            .find_map(|(symbol, op)| Some((*op, s.strip_prefix(symbol)?)))
            .unwrap_or((SizeOp::Eq, s));
        if op == SizeOp::Eq && number.starts_with('=') {
            return Err(BadValue::LegacyEquals);
        }
        let gib = number
            .trim()
            .parse::<u64>()
            .map_err(|_| BadValue::NotASize(s.to_string()))?;
        if gib == 0 {
            return Err(BadValue::ZeroSize);
        }
        Ok(SizeBound { op, gib })
    }
}

/// `==` is written as the bare number, as Ironic reads it.
impl fmt::Display for SizeBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            SizeOp::Eq => write!(f, "{}", self.gib),
            op => write!(f, "{}{}", op.symbol(), self.gib),
        }
    }
}

/// The `size` hint: one or more bounds that must all hold, and that some size satisfies.
/// In TOML an integer (`size = 894`, equal), a string (`size = ">= 800"`), or an array of
/// either (`size = [">= 800", "<= 4000"]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeHint {
    bounds: Vec<SizeBound>,
}

impl SizeHint {
    /// Refuses no bounds, and bounds no size satisfies (`>= 4000` with `<= 800`): a typo
    /// there would otherwise read as "no disk matches" on every node.
    pub fn new(bounds: Vec<SizeBound>) -> Result<SizeHint, BadValue> {
        let (mut low, mut high) = (0, u64::MAX);
        for b in &bounds {
            match b.op {
                SizeOp::Eq => (low, high) = (low.max(b.gib), high.min(b.gib)),
                SizeOp::Ge => low = low.max(b.gib),
                SizeOp::Gt => low = low.max(b.gib.saturating_add(1)),
                SizeOp::Le => high = high.min(b.gib),
                SizeOp::Lt => high = high.min(b.gib.saturating_sub(1)),
                SizeOp::Ne => {}
            }
        }
        if bounds.is_empty() {
            return Err(BadValue::Empty);
        }
        let only_excluded = low == high && bounds.iter().any(|b| !b.admits(low));
        if low > high || only_excluded {
            return Err(BadValue::NoSizeFits(join(&bounds, ", ")));
        }
        Ok(SizeHint { bounds })
    }

    pub fn bounds(&self) -> &[SizeBound] {
        &self.bounds
    }

    /// Whether a disk of `bytes` is within every bound, in whole GiB rounded to the nearest.
    pub fn admits_bytes(&self, bytes: u64) -> bool {
        let gib = bytes / GIB + u64::from(bytes % GIB >= GIB / 2);
        self.bounds.iter().all(|b| b.admits(gib))
    }
}

impl Serialize for SizeHint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.bounds.as_slice() {
            [
                SizeBound {
                    op: SizeOp::Eq,
                    gib,
                },
            ] => s.serialize_u64(*gib),
            [one] => s.collect_str(one),
            many => s.collect_seq(many.iter().map(SizeBound::to_string)),
        }
    }
}

impl<'de> Deserialize<'de> for SizeHint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bounds = d.deserialize_any(SizeVisitor { many: true })?;
        SizeHint::new(bounds).map_err(de::Error::custom)
    }
}

/// An integer, a string, or (at the top only) an array of them.
struct SizeVisitor {
    many: bool,
}

impl<'de> Visitor<'de> for SizeVisitor {
    type Value = Vec<SizeBound>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size in GiB: an integer, a string like \">= 800\", or an array of them")
    }

    fn visit_u64<E: de::Error>(self, gib: u64) -> Result<Self::Value, E> {
        if gib == 0 {
            return Err(E::custom(BadValue::ZeroSize));
        }
        Ok(vec![SizeBound {
            op: SizeOp::Eq,
            gib,
        }])
    }

    fn visit_i64<E: de::Error>(self, gib: i64) -> Result<Self::Value, E> {
        match u64::try_from(gib) {
            Ok(gib) => self.visit_u64(gib),
            Err(_) => Err(E::custom(BadValue::NotASize(gib.to_string()))),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(vec![s.parse().map_err(E::custom)?])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if !self.many {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut bounds = Vec::new();
        while let Some(Bound(mut one)) = seq.next_element()? {
            bounds.append(&mut one);
        }
        Ok(bounds)
    }
}

/// One element of a `size` array.
struct Bound(Vec<SizeBound>);

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor { many: false }).map(Bound)
    }
}

/// What an error says about a disk, so the operator can write a hint that picks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSummary {
    pub name: String,
    pub serial: Option<String>,
    pub size_bytes: u64,
    pub model: Option<String>,
}

impl From<&Disk> for DiskSummary {
    fn from(d: &Disk) -> Self {
        DiskSummary {
            name: d.name.clone(),
            serial: d.serial.clone(),
            size_bytes: d.size_bytes,
            model: d.model.clone(),
        }
    }
}

impl fmt::Display for DiskSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = self.size_bytes as f64 / GIB as f64;
        write!(f, "{} (", self.name)?;
        match &self.serial {
            Some(serial) => write!(f, "serial {serial}")?,
            None => f.write_str("no serial")?,
        }
        write!(f, ", {gib:.1} GiB, ")?;
        match &self.model {
            Some(model) => write!(f, "model {model:?})"),
            None => f.write_str("no model)"),
        }
    }
}

fn summaries<'a>(disks: impl IntoIterator<Item = &'a Disk>) -> Vec<DiskSummary> {
    disks.into_iter().map(DiskSummary::from).collect()
}

/// Why one value of a hint is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    #[error("the value is empty")]
    Empty,
    #[error("`;` separates hints in the compact form, so no value can hold one")]
    Semicolon,
    #[error("operator `{0}` is not supported (string hints take s==, s!=, <in>, <or>)")]
    UnsupportedOperator(&'static str),
    #[error("`{0}` must start the value: `<in> a`, `<or> a <or> b`")]
    OperatorInside(&'static str),
    #[error("`{0}` is not a size in GiB with ==, !=, >=, >, <= or <")]
    NotASize(String),
    #[error("Ironic's legacy `=` (meaning >=) is not accepted; write `>=` or `==`")]
    LegacyEquals,
    #[error("a size is at least 1 GiB")]
    ZeroSize,
    #[error("no disk size is within all of {0}")]
    NoSizeFits(String),
    #[error("`{0}` is not true or false")]
    NotABool(String),
}

/// Hints that do not parse, or that choose no single disk.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    #[error("root device hint `{item}` is not KEY=VALUE")]
    NotKeyValue { item: String },
    #[error("unknown root device hint `{key}` (known: {KNOWN_KEYS})")]
    UnknownKey { key: String },
    #[error("root device hint `{key}` is given twice (only size repeats, one bound each)")]
    Repeated { key: &'static str },
    #[error("root device hint {key} = `{value}`: {problem}")]
    BadValue {
        key: &'static str,
        value: String,
        problem: BadValue,
    },
    #[error("the node reported no disks")]
    NoDisks,
    #[error(
        "no disk matches root device hints `{hints}`; the node's disks: {}",
        join(.disks, "; ")
    )]
    NoMatch {
        hints: Box<RootDeviceHints>,
        disks: Vec<DiskSummary>,
    },
    #[error(
        "root device hints `{hints}` match {} disks, not one: {}; add a hint to tell them apart",
        .matching.len(),
        join(.matching, "; ")
    )]
    SeveralMatch {
        hints: Box<RootDeviceHints>,
        matching: Vec<DiskSummary>,
    },
    #[error(
        "no root device hints, and no disk of at least {DEFAULT_MIN_SIZE_GIB} GiB to default \
         to; the node's disks: {}",
        join(.disks, "; ")
    )]
    NoDefault { disks: Vec<DiskSummary> },
    #[error(
        "no root device hints, and the smallest disks of at least {DEFAULT_MIN_SIZE_GIB} GiB \
         are the same size: {}; set hints to choose one",
        join(.tied, "; ")
    )]
    DefaultTie { tied: Vec<DiskSummary> },
}

/// The one disk `hints` choose among a node's inspected `disks`. No match, or several, is an
/// error naming the disks, so the operator can correct the hints; without hints, the
/// smallest disk of at least [`DEFAULT_MIN_SIZE_GIB`], if only one disk has that size.
pub fn choose<'a>(hints: &RootDeviceHints, disks: &'a [Disk]) -> Result<&'a Disk, HintError> {
    if disks.is_empty() {
        return Err(HintError::NoDisks);
    }
    if hints.is_empty() {
        return default_disk(disks);
    }
    let matching: Vec<&Disk> = disks.iter().filter(|d| hints.matches(d)).collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(HintError::NoMatch {
            hints: Box::new(hints.clone()),
            disks: summaries(disks),
        }),
        several => Err(HintError::SeveralMatch {
            hints: Box::new(hints.clone()),
            matching: summaries(several.iter().copied()),
        }),
    }
}

/// Ironic's default. Two same-size disks are usually a mirrored pair or two of one model,
/// and which of them the kernel names first is not stable: refused rather than guessed.
fn default_disk(disks: &[Disk]) -> Result<&Disk, HintError> {
    let big_enough = disks
        .iter()
        .filter(|d| d.size_bytes >= DEFAULT_MIN_SIZE_GIB * GIB);
    let Some(smallest) = big_enough.map(|d| d.size_bytes).min() else {
        return Err(HintError::NoDefault {
            disks: summaries(disks),
        });
    };
    let tied: Vec<&Disk> = disks.iter().filter(|d| d.size_bytes == smallest).collect();
    match tied.as_slice() {
        [one] => Ok(one),
        _ => Err(HintError::DefaultTie {
            tied: summaries(tied),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, size_bytes: u64, model: &str, serial: &str, rotational: bool) -> Disk {
        Disk {
            name: name.to_string(),
            size_bytes,
            model: Some(model.to_string()),
            serial: Some(serial.to_string()),
            nvme: name.starts_with("nvme"),
            rotational,
            ..Disk::default()
        }
    }

    /// A "960 GB" boot NVMe (894.3 GiB), a "3.84 TB" data NVMe (3576.98 GiB) and an 8 TB
    /// spinning disk (7452.0 GiB), as sysfs reports them.
    fn node() -> Vec<Disk> {
        vec![
            disk(
                "nvme0n1",
                960_197_124_096,
                "SAMSUNG MZ1L2960HCJR-00A07",
                "S665NE0R100001",
                false,
            ),
            disk(
                "nvme1n1",
                3_840_755_982_336,
                "SAMSUNG MZQL23T8HCLS-00A07",
                "S64HNE0R200002",
                false,
            ),
            disk(
                "sda",
                8_001_563_222_016,
                "ST8000NM000A-2KE101",
                "WKD3ABCD",
                true,
            ),
        ]
    }

    fn hints(compact: &str) -> RootDeviceHints {
        compact.parse().unwrap_or_else(|e| panic!("{compact}: {e}"))
    }

    #[test]
    fn each_hint_and_operator_chooses_its_disk() {
        let cases = [
            ("serial=S665NE0R100001", "nvme0n1"),
            ("serial=s665ne0r100001", "nvme0n1"),
            ("serial=s== S64HNE0R200002", "nvme1n1"),
            ("serial=<in> WKD3", "sda"),
            ("serial=<or> NOPE <or> WKD3ABCD", "sda"),
            ("model=st8000nm000a-2ke101", "sda"),
            ("model=<in> MZQL2", "nvme1n1"),
            ("model=s!= ST8000NM000A-2KE101;size=<1000", "nvme0n1"),
            ("name=nvme1n1", "nvme1n1"),
            ("name=/dev/sda", "sda"),
            ("name=<or> /dev/nvme0n1 <or> md0", "nvme0n1"),
            ("size=894", "nvme0n1"),
            ("size===3577", "nvme1n1"),
            ("size=!=894;rotational=false", "nvme1n1"),
            ("size=>=7000", "sda"),
            ("size=>7451", "sda"),
            ("size=<=894", "nvme0n1"),
            ("size=<900", "nvme0n1"),
            ("size=>=1000;size=<=4000", "nvme1n1"),
            ("rotational=true", "sda"),
            ("rotational=yes", "sda"),
            ("rotational=0;size=>1000", "nvme1n1"),
        ];
        let disks = node();
        for (compact, want) in cases {
            let got = choose(&hints(compact), &disks).map(|d| d.name.as_str());
            assert_eq!(got, Ok(want), "{compact}");
        }
    }

    #[test]
    fn string_hints_normalize_both_sides() {
        use Attribute::*;
        let cases = [
            (Wwn, "0x5000C500A1B2C3D4", Some("5000c500a1b2c3d4"), true),
            (Wwn, "5000c500a1b2c3d4", Some("0x5000C500A1B2C3D4"), true),
            (Wwn, "<in> a1b2", Some("0x5000c500a1b2c3d4"), true),
            (Wwn, "0x5000c500a1b2c3d4", Some("0x5000c500a1b2c3d5"), false),
            (
                WwnWithExtension,
                "0x6001405ABCDEF",
                Some("6001405abcdef"),
                true,
            ),
            (WwnVendorExtension, "0X1234", Some("0x1234"), true),
            (
                ByPath,
                "pci-0000:17:00.0-nvme-1",
                Some("/dev/disk/by-path/pci-0000:17:00.0-nvme-1"),
                true,
            ),
            (
                ByPath,
                "/dev/disk/by-path/pci-0000:17:00.0-nvme-1",
                Some("pci-0000:17:00.0-nvme-1"),
                true,
            ),
            (Vendor, "<or> samsung <or> winsys", Some("WINSYS  "), true),
            (Vendor, "<or> samsung <or> winsys", Some("ATA"), false),
            (Hctl, "0:0:0:0", Some("0:0:0:0"), true),
            (Serial, "s!= S1", Some("S2"), true),
            (Serial, "s!= S1", Some("s1"), false),
            // A disk without the attribute matches no hint on it, `s!=` included.
            (Serial, "s!= S1", None, false),
            (Serial, "S1", Some(""), false),
        ];
        for (attribute, hint, actual, want) in cases {
            let hint: StringHint = hint.parse().unwrap();
            assert_eq!(
                hint.matches(attribute, actual),
                want,
                "{attribute:?} {hint} {actual:?}"
            );
        }
    }

    /// [`node`] with what the agent reads for Ironic's other hints: the NVMe drives'
    /// namespace WWIDs and slots, the SATA disk's WWN and port, and a RAID volume with a
    /// 16-byte NAA.
    fn node_with_ids() -> Vec<Disk> {
        let mut disks = node();
        for (disk, (slot, wwid)) in disks.iter_mut().zip([
            ("17", "eui.002538b111b2c3d4"),
            ("18", "eui.36344730526001520025384500000001"),
        ]) {
            disk.wwn = Some(wwid.to_string());
            disk.by_path = Some(format!("pci-0000:{slot}:00.0-nvme-1"));
        }
        let sda = &mut disks[2];
        sda.wwn = Some("0x5000c500a1b2c3d4".to_string());
        sda.wwn_with_extension = sda.wwn.clone();
        sda.vendor = Some("ATA".to_string());
        sda.hctl = Some("0:0:0:0".to_string());
        sda.by_path = Some("pci-0000:00:17.0-ata-1.0".to_string());
        disks.push(Disk {
            wwn: Some("0x6d0946606a8b1c00".to_string()),
            wwn_with_extension: Some("0x6d0946606a8b1c002d6b1e0f12345678".to_string()),
            wwn_vendor_extension: Some("0x2d6b1e0f12345678".to_string()),
            vendor: Some("DELL".to_string()),
            hctl: Some("0:2:0:0".to_string()),
            by_path: Some("pci-0000:65:00.0-scsi-0:2:0:0".to_string()),
            ..disk(
                "sdb",
                1_919_850_381_312,
                "PERC H755 Front",
                "00a1b2c3",
                false,
            )
        });
        disks
    }

    #[test]
    fn hints_on_wwn_vendor_hctl_and_by_path_choose_their_disk() {
        let cases = [
            ("wwn=0x5000c500a1b2c3d4", "sda"),
            ("wwn=5000C500A1B2C3D4", "sda"),
            ("wwn=eui.002538b111b2c3d4", "nvme0n1"),
            ("wwn=<in> 36344730", "nvme1n1"),
            ("wwn=0x6d0946606a8b1c00", "sdb"),
            ("wwn_with_extension=0x5000c500a1b2c3d4", "sda"),
            ("wwn_with_extension=6d0946606a8b1c002d6b1e0f12345678", "sdb"),
            ("wwn_vendor_extension=0x2d6b1e0f12345678", "sdb"),
            ("wwn_vendor_extension=<in> 2d6b", "sdb"),
            ("vendor=ata", "sda"),
            ("vendor=<or> dell <or> hp", "sdb"),
            // NVMe has no SCSI vendor: `s!=` does not choose it.
            ("vendor=s!= ATA", "sdb"),
            ("hctl=0:0:0:0", "sda"),
            ("hctl=s!= 0:0:0:0", "sdb"),
            ("by_path=pci-0000:18:00.0-nvme-1", "nvme1n1"),
            (
                "by_path=/dev/disk/by-path/pci-0000:17:00.0-nvme-1",
                "nvme0n1",
            ),
            ("by_path=pci-0000:00:17.0-ata-1.0", "sda"),
            ("by_path=<in> scsi-0:2:0:0", "sdb"),
            ("wwn=<in> eui.;size=<1000", "nvme0n1"),
        ];
        let disks = node_with_ids();
        for (compact, want) in cases {
            let got = choose(&hints(compact), &disks).map(|d| d.name.as_str());
            assert_eq!(got, Ok(want), "{compact}");
        }
    }

    #[test]
    fn hints_on_ids_a_disk_lacks_or_no_disk_has_match_none() {
        let disks = node_with_ids();
        for compact in [
            "wwn=0x5000c500a1b2c3d5",
            "wwn_with_extension=eui.002538b111b2c3d4",
            "wwn_vendor_extension=0x5000c500a1b2c3d4",
            "vendor=Samsung",
            "by_path=pci-0000:17:00.0-nvme-2",
            "hctl=0:0:1:0",
        ] {
            let got = choose(&hints(compact), &disks);
            assert!(
                matches!(got, Err(HintError::NoMatch { .. })),
                "{compact}: {got:?}"
            );
        }
        // Facts from an agent that did not report them: no disk has any.
        let reported_before = node();
        for compact in ["vendor=ATA", "wwn=0x5000c500a1b2c3d4", "hctl=s!= 9:9:9:9"] {
            let got = choose(&hints(compact), &reported_before);
            assert!(
                matches!(got, Err(HintError::NoMatch { .. })),
                "{compact}: {got:?}"
            );
        }
    }

    #[test]
    fn size_bounds_compare_whole_gib() {
        let cases = [
            ("100", 100, true),
            ("100", 101, false),
            ("== 100", 100, true),
            ("!=100", 100, false),
            ("!=100", 99, true),
            (">=100", 100, true),
            (">=100", 99, false),
            (">100", 100, false),
            (">100", 101, true),
            ("<=100", 100, true),
            ("<=100", 101, false),
            ("<100", 100, false),
            ("<100", 99, true),
        ];
        for (expr, gib, want) in cases {
            let bound: SizeBound = expr.parse().unwrap();
            assert_eq!(bound.admits(gib), want, "{expr} against {gib} GiB");
        }
        let hundred = SizeHint::new(vec!["100".parse().unwrap()]).unwrap();
        assert!(hundred.admits_bytes(100 * GIB - GIB / 2));
        assert!(hundred.admits_bytes(100 * GIB + GIB / 2 - 1));
        assert!(!hundred.admits_bytes(100 * GIB + GIB / 2));
        assert!(!hundred.admits_bytes(u64::MAX));
    }

    #[test]
    fn no_match_lists_every_disk_and_the_hints() {
        let mut disks = node();
        disks.push(Disk {
            name: "vda".to_string(),
            size_bytes: 20 * GIB,
            ..Disk::default()
        });
        let err = choose(&hints("serial=NOPE;rotational=false"), &disks).unwrap_err();
        assert!(matches!(err, HintError::NoMatch { ref disks, .. } if disks.len() == 4));
        let text = err.to_string();
        for part in [
            "serial=NOPE;rotational=false",
            "vda (no serial, 20.0 GiB, no model)",
            "nvme0n1 (serial S665NE0R100001, 894.3 GiB, model \"SAMSUNG MZ1L2960HCJR-00A07\")",
            "nvme1n1 (serial S64HNE0R200002, 3577.0 GiB",
            "sda (serial WKD3ABCD, 7452.0 GiB, model \"ST8000NM000A-2KE101\")",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
    }

    #[test]
    fn two_matches_are_refused_naming_both() {
        let err = choose(&hints("model=<in> samsung"), &node()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, HintError::SeveralMatch { ref matching, .. } if matching.len() == 2));
        for part in [
            "match 2 disks",
            "nvme0n1 (serial S665NE0R100001",
            "nvme1n1 (serial S64HNE0R200002",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
        assert!(!text.contains("sda"), "{text}");
    }

    #[test]
    fn no_disks_is_its_own_error() {
        assert_eq!(choose(&hints("serial=S1"), &[]), Err(HintError::NoDisks));
        assert_eq!(
            choose(&RootDeviceHints::default(), &[]),
            Err(HintError::NoDisks)
        );
    }

    #[test]
    fn without_hints_the_smallest_disk_of_4_gib_or_more() {
        let none = RootDeviceHints::default();
        assert!(none.is_empty());
        let mut disks = node();
        assert_eq!(choose(&none, &disks).unwrap().name, "nvme0n1");

        // A 1 GiB USB stick is below the floor; a disk of exactly 4 GiB is not.
        disks.push(disk("sdb", GIB, "Flash Disk", "USB1", false));
        assert_eq!(choose(&none, &disks).unwrap().name, "nvme0n1");
        disks.push(disk("vdb", 4 * GIB, "virtio", "V4", false));
        assert_eq!(choose(&none, &disks).unwrap().name, "vdb");

        let small = vec![disk("sdb", GIB, "Flash Disk", "USB1", false)];
        let err = choose(&none, &small).unwrap_err();
        assert!(matches!(err, HintError::NoDefault { .. }), "{err:?}");
        assert!(
            err.to_string().contains("sdb (serial USB1, 1.0 GiB"),
            "{err}"
        );
    }

    #[test]
    fn without_hints_two_smallest_of_one_size_are_refused() {
        let mut disks = node();
        disks.push(disk(
            "nvme2n1",
            960_197_124_096,
            "SAMSUNG MZ1L2960HCJR-00A07",
            "S665NE0R100003",
            false,
        ));
        let err = choose(&RootDeviceHints::default(), &disks).unwrap_err();
        assert!(
            matches!(err, HintError::DefaultTie { ref tied } if tied.len() == 2),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("nvme0n1 (serial S665NE0R100001"), "{text}");
        assert!(text.contains("nvme2n1 (serial S665NE0R100003"), "{text}");
        // A hint settles it.
        let one = choose(&hints("serial=S665NE0R100003"), &disks).unwrap();
        assert_eq!(one.name, "nvme2n1");
    }

    #[test]
    fn compact_form_round_trips() {
        let cases = [
            ("", ""),
            ("serial=S1;size=>=100", "serial=S1;size=>=100"),
            (
                " size = >= 800 ; size=<=4000; serial = S1 ;",
                "serial=S1;size=>=800;size=<=4000",
            ),
            (
                "rotational=no;model=<in> MZQL",
                "model=<in> MZQL;rotational=false",
            ),
            (
                "vendor=<or>samsung<or>  winsys",
                "vendor=<or> samsung <or> winsys",
            ),
            ("serial=s== S1;size===100", "serial=S1;size=100"),
            ("serial=s!= S1", "serial=s!= S1"),
            // A value that reads as an operator keeps its `s==`.
            ("serial=s== s!= odd", "serial=s== s!= odd"),
            ("model=A=B", "model=A=B"),
            (
                "hctl=0:0:0:0;name=/dev/nvme0n1;by_path=pci-0000:17:00.0-nvme-1;\
                 wwn_vendor_extension=0x2;wwn_with_extension=0x1;wwn=0x5000C500A1B2C3D4",
                "wwn=0x5000C500A1B2C3D4;wwn_with_extension=0x1;wwn_vendor_extension=0x2;\
                 by_path=pci-0000:17:00.0-nvme-1;name=/dev/nvme0n1;hctl=0:0:0:0",
            ),
        ];
        for (input, canonical) in cases {
            let parsed = hints(input);
            assert_eq!(parsed.to_string(), canonical, "{input}");
            assert_eq!(hints(canonical), parsed, "{canonical}");
        }
        assert!(hints("").is_empty());
    }

    #[test]
    fn compact_form_errors_name_the_key_and_value() {
        let bad = |key, value: &str, problem| HintError::BadValue {
            key,
            value: value.to_string(),
            problem,
        };
        let cases = [
            (
                "colour=red",
                HintError::UnknownKey {
                    key: "colour".into(),
                },
            ),
            (
                "serial",
                HintError::NotKeyValue {
                    item: "serial".into(),
                },
            ),
            ("serial=a;b", HintError::NotKeyValue { item: "b".into() }),
            ("serial=S1;serial=S2", HintError::Repeated { key: "serial" }),
            (
                "rotational=1;rotational=0",
                HintError::Repeated { key: "rotational" },
            ),
            ("serial=", bad("serial", "", BadValue::Empty)),
            (
                "model=s> A",
                bad("model", "s> A", BadValue::UnsupportedOperator("s>")),
            ),
            (
                "model=<all-in> A",
                bad(
                    "model",
                    "<all-in> A",
                    BadValue::UnsupportedOperator("<all-in>"),
                ),
            ),
            (
                "vendor=samsung <or> winsys",
                bad(
                    "vendor",
                    "samsung <or> winsys",
                    BadValue::OperatorInside("<or>"),
                ),
            ),
            (
                "vendor=<or> samsung <or>",
                bad("vendor", "<or> samsung <or>", BadValue::Empty),
            ),
            ("size==100", bad("size", "=100", BadValue::LegacyEquals)),
            (
                "size=big",
                bad("size", "big", BadValue::NotASize("big".into())),
            ),
            (
                "size=<in>5",
                bad("size", "<in>5", BadValue::NotASize("<in>5".into())),
            ),
            ("size=0", bad("size", "0", BadValue::ZeroSize)),
            (
                "size=>=4000;size=<=800",
                bad(
                    "size",
                    ">=4000, <=800",
                    BadValue::NoSizeFits(">=4000, <=800".into()),
                ),
            ),
            (
                "size=5;size=!=5",
                bad("size", "5, !=5", BadValue::NoSizeFits("5, !=5".into())),
            ),
            (
                "rotational=maybe",
                bad("rotational", "maybe", BadValue::NotABool("maybe".into())),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<RootDeviceHints>(), Err(want), "{input}");
        }
        let text = "size==100"
            .parse::<RootDeviceHints>()
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("size = `=100`") && text.contains("`>=`"),
            "{text}"
        );
        let text = "colour=red"
            .parse::<RootDeviceHints>()
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("`colour`") && text.contains("by_path"),
            "{text}"
        );
    }

    #[derive(Debug, Deserialize, Serialize)]
    struct Node {
        root_device: RootDeviceHints,
    }

    fn toml_hints(text: &str) -> Result<RootDeviceHints, String> {
        toml::from_str::<Node>(text)
            .map(|n| n.root_device)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn toml_table_parses_like_the_compact_form() {
        let cases = [
            (
                r#"root_device = { serial = "S1", size = ">= 100" }"#,
                "serial=S1;size=>=100",
            ),
            ("root_device = { size = 894 }", "size=894"),
            (
                "[root_device]\n\
                 size = [\">= 800\", \"<= 4000\"]\n\
                 rotational = false\n\
                 vendor = \"<or> samsung <or> winsys\"\n",
                "vendor=<or> samsung <or> winsys;size=>=800;size=<=4000;rotational=false",
            ),
            (
                r#"root_device = { size = [800, "!= 900"] }"#,
                "size=800;size=!=900",
            ),
            (
                "root_device = { wwn = \"0x5000c500a1b2c3d4\", name = \"/dev/nvme0n1\" }",
                "wwn=0x5000c500a1b2c3d4;name=/dev/nvme0n1",
            ),
            ("root_device = {}", ""),
        ];
        for (text, compact) in cases {
            assert_eq!(toml_hints(text), Ok(hints(compact)), "{text}");
        }
    }

    #[test]
    fn toml_refuses_unknown_keys_and_bad_values() {
        let cases = [
            (
                r#"root_device = { serial = "S1", colour = "red" }"#,
                "colour",
            ),
            (r#"root_device = { serial = "a;b" }"#, "`;`"),
            (r#"root_device = { model = "s< A" }"#, "`s<`"),
            (r#"root_device = { size = "= 100" }"#, "legacy `=`"),
            ("root_device = { size = -5 }", "`-5` is not a size"),
            ("root_device = { size = 0 }", "at least 1 GiB"),
            (
                r#"root_device = { size = [">= 4000", "<= 800"] }"#,
                "no disk size is within",
            ),
            ("root_device = { size = [] }", "the value is empty"),
            ("root_device = { size = [[100]] }", "a size in GiB"),
            (r#"root_device = { rotational = "no" }"#, "boolean"),
        ];
        for (text, part) in cases {
            let err = toml_hints(text).expect_err(text);
            assert!(err.contains(part), "{text}: {part:?} not in {err}");
        }
    }

    #[test]
    fn toml_serialization_round_trips() {
        for compact in [
            "size=894",
            "serial=S1;size=>=100",
            "model=<in> MZQL;vendor=<or> samsung <or> winsys;size=>=800;rotational=true",
            "serial=s== s!= odd",
            "",
        ] {
            let node = Node {
                root_device: hints(compact),
            };
            let text = toml::to_string(&node).unwrap();
            assert_eq!(
                toml_hints(&text),
                Ok(node.root_device),
                "{compact} as {text}"
            );
        }
    }
}
