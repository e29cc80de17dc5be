//! The Debian archive formats the repository reads and writes: a `Release` file's fields and
//! SHA256 list, `Packages` paragraphs, and the date format both use (RFC 2822 in UTC).
//! Paragraphs are parsed by `deb822-fast`; what a field means is ours.

use std::collections::BTreeMap;

/// One file a `Release` lists: its SHA256 and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub sha256: String,
    pub size: u64,
}

/// A parsed `Release` (or the signed text of an `InRelease`).
#[derive(Clone, Debug, Default)]
pub struct Release {
    pub fields: BTreeMap<String, String>,
    /// Path (relative to the Release's folder) → SHA256 and size.
    pub sha256: BTreeMap<String, Listed>,
}

impl Release {
    pub fn parse(text: &str) -> Result<Self, String> {
        let para: deb822_fast::Paragraph = text
            .trim_start_matches('\n')
            .split("\n\n")
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|e: deb822_fast::Error| format!("not a Release file: {e}"))?;
        let mut out = Release::default();
        for (name, value) in para.iter() {
            if name.eq_ignore_ascii_case("SHA256") {
                for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let mut parts = line.split_whitespace();
                    let (Some(sha), Some(size), Some(path), None) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        return Err(format!("a SHA256 line is not `HASH SIZE PATH`: {line:?}"));
                    };
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!("a SHA256 line has no SHA256: {line:?}"));
                    }
                    let size = size
                        .parse()
                        .map_err(|_| format!("a SHA256 line has no size: {line:?}"))?;
                    out.sha256.insert(
                        path.trim_start_matches("./").to_string(),
                        Listed {
                            sha256: sha.to_ascii_lowercase(),
                            size,
                        },
                    );
                }
            } else {
                out.fields
                    .insert(name.to_string(), value.trim().to_string());
            }
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Valid-Until` as seconds since the epoch, if the Release has one.
    pub fn valid_until(&self) -> Result<Option<u64>, String> {
        match self.get("Valid-Until") {
            None => Ok(None),
            Some(v) => parse_date(v)
                .map(Some)
                .ok_or_else(|| format!("Valid-Until is not a date: {v:?}")),
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `Thu, 04 Dec 2026 17:00:00 UTC` (also `+0000`, `GMT`, `Z`, or an offset such as `-0500`),
/// as apt writes and reads it; the weekday is optional.
pub fn parse_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = match s.split_once(", ") {
        Some((day, rest)) if DAYS.contains(&day) => rest,
        _ => s,
    };
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [d, mon, y, time, zone] = parts.as_slice() else {
        return None;
    };
    let d: u32 = d.parse().ok().filter(|d| (1..=31).contains(d))?;
    let m = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(mon))? as u32 + 1;
    let y: i64 = y.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let mut hms = time.split(':');
    let h: i64 = hms.next()?.parse().ok().filter(|h| *h < 24)?;
    let mi: i64 = hms.next()?.parse().ok().filter(|m| *m < 60)?;
    let sec: i64 = hms.next()?.parse().ok().filter(|s| *s <= 60)?;
    if hms.next().is_some() {
        return None;
    }
    let offset: i64 = match *zone {
        "UTC" | "GMT" | "Z" | "+0000" | "-0000" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let n: i64 = z[1..].parse().ok()?;
            let secs = (n / 100) * 3600 + (n % 100) * 60;
            if z.starts_with('-') { -secs } else { secs }
        }
        _ => return None,
    };
    let t = days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(t).ok()
}

/// `secs` in the form apt writes: `Fri, 04 Dec 2026 17:00:00 UTC`.
pub fn format_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (the inverse of days_from_civil).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} UTC",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One package of a `Packages` index, with the vendor's whole paragraph kept.
#[derive(Clone, Debug)]
pub struct PackageEntry {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Relative to the archive's base (`./` removed).
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub paragraph: deb822_fast::Paragraph,
}

/// The packages of an index; a paragraph without the fields apt needs is an error naming it.
pub fn parse_packages(text: &str) -> Result<Vec<PackageEntry>, String> {
    let doc: deb822_fast::Deb822 = text
        .parse()
        .map_err(|e: deb822_fast::Error| format!("not a Packages index: {e}"))?;
    let mut out = Vec::new();
    for (i, p) in doc.iter().enumerate() {
        let field = |name: &str| {
            p.get(name).map(|v| v.trim().to_string()).ok_or_else(|| {
                format!(
                    "paragraph {} ({}) has no {name} field",
                    i + 1,
                    p.get("Package").unwrap_or("?")
                )
            })
        };
        let sha256 = field("SHA256")?.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("paragraph {} has a bad SHA256", i + 1));
        }
        let size = field("Size")?
            .parse()
            .map_err(|_| format!("paragraph {} has a bad Size", i + 1))?;
        out.push(PackageEntry {
            package: field("Package")?,
            version: field("Version")?,
            architecture: field("Architecture")?,
            filename: field("Filename")?.trim_start_matches("./").to_string(),
            size,
            sha256,
            paragraph: p.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_and_write_as_apt_does() {
        let t = parse_date("Fri, 04 Dec 2026 17:00:00 UTC").unwrap();
        assert_eq!(format_date(t), "Fri, 04 Dec 2026 17:00:00 UTC");
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_date("04 Dec 2026 17:00:00 +0000"), Some(t));
        assert_eq!(parse_date("Fri, 04 Dec 2026 18:00:00 +0100"), Some(t));
        assert_eq!(format_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 UTC");
        for bad in [
            "",
            "yesterday",
            "Fri, 32 Dec 2026 17:00:00 UTC",
            "Fri, 04 Foo 2026 17:00:00 UTC",
            "Fri, 04 Dec 2026 25:00:00 UTC",
            "Fri, 04 Dec 2026 17:00 UTC",
            "Fri, 04 Dec 2026 17:00:00 CEST",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn release_lists_its_files_and_refuses_a_bad_line() {
        let r = Release::parse(
            "Origin: NVIDIA\nLabel: cuda\nValid-Until: Thu, 01 Jan 1970 00:00:10 UTC\nSHA256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 ./Packages\n",
        )
        .unwrap();
        assert_eq!(r.get("origin"), Some("NVIDIA"));
        assert_eq!(r.valid_until(), Ok(Some(10)));
        assert_eq!(r.sha256["Packages"].size, 0);
        assert!(Release::parse("SHA256:\n nothex 1 Packages\n").is_err());
        assert!(Release::parse("SHA256:\n e3b0 1\n").is_err());
    }

    #[test]
    fn a_packages_paragraph_without_a_hash_is_named() {
        let e =
            parse_packages("Package: a\nVersion: 1\nArchitecture: all\nFilename: a.deb\nSize: 1\n")
                .unwrap_err();
        assert!(e.contains("(a) has no SHA256"), "{e}");
    }
}
