//! The hardening grade of an image's root filesystem, measured offline by tools nobody here
//! wrote: OpenSCAP (`oscap`, Debian 12's `openscap-scanner`) with the SCAP Security Guide's
//! Debian 12 datastream and its ANSSI BP-028 profiles, and Lynis. Both run on a throw-away copy
//! of the tree, never on the tree itself (the scanners write into what they scan).
//!
//! Counting (the same as the `Result` lines `oscap xccdf eval` prints, checked on every run):
//! a rule is *evaluated* when its result is `pass` or `fail`; `percent` is pass / evaluated.
//! `notapplicable`, `notchecked`, `unknown`, `error`, `informational` and `fixed` are reported
//! but count neither way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::image::debs::{self, DebError, PrivateApt};

/// The SCAP Security Guide with Debian 12 content is packaged from trixie on (bookworm's
/// 0.1.65 has none); both packages are architecture-independent XML.
pub const SSG_PACKAGES: [(&str, &str); 2] = [("ssg-base", "0.1.76-1"), ("ssg-debian", "0.1.76-1")];
/// Lynis from trixie: bookworm's 3.0.8 lacks tests 3.1 has (and scores differently).
pub const LYNIS_PACKAGE: (&str, &str) = ("lynis", "3.1.4-1");
/// The suite both come from.
pub const TOOLS_SUITE: &str = "trixie";
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The profiles graded, as the datastream names them without the
/// `xccdf_org.ssgproject.content_profile_` prefix.
pub const PROFILES: [&str; 2] = ["anssi_bp28_minimal", "anssi_bp28_intermediary"];

const DATASTREAM: &str = "usr/share/xml/scap/ssg/content/ssg-debian12-ds.xml";
const PROFILE_PREFIX: &str = "xccdf_org.ssgproject.content_profile_";
const RULE_PREFIX: &str = "xccdf_org.ssgproject.content_rule_";
const XCCDF_NS: &str = "http://checklists.nist.gov/xccdf/1.2";
/// Where the Lynis copy runs inside the scanned tree, and writes its report.
const LYNIS_DIR: &str = "tmp/provisioner-lynis";

#[derive(Debug, thiserror::Error)]
pub enum GradeError {
    #[error("grade: cannot fetch {what} from {TOOLS_SUITE}: {source}")]
    Fetch { what: String, source: DebError },
    #[error("grade: {step}: cannot run {tool}: {source} (apt-get install {package})")]
    Spawn {
        step: String,
        tool: &'static str,
        package: &'static str,
        source: std::io::Error,
    },
    #[error("grade: {step}: {tool} failed ({status}): {output}")]
    Tool {
        step: String,
        tool: &'static str,
        status: String,
        output: String,
    },
    #[error("grade: {step}: {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("grade: {tool} results {path}: {problem}")]
    Results {
        tool: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "grade: profile {profile}: oscap printed {printed_pass} pass / {printed_fail} fail, \
         its results file holds {pass} / {fail}"
    )]
    Disagree {
        profile: String,
        printed_pass: u32,
        printed_fail: u32,
        pass: u32,
        fail: u32,
    },
}

/// The grade the manifest records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    pub openscap: Vec<ProfileScore>,
    pub lynis: LynisScore,
    /// Rule ids (short form) failing in any graded profile, sorted.
    pub failing: Vec<String>,
    pub tools: ToolVersions,
}

/// One XCCDF profile's results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileScore {
    pub profile: String,
    pub pass: u32,
    pub fail: u32,
    pub error: u32,
    pub unknown: u32,
    pub notapplicable: u32,
    pub notchecked: u32,
    pub notselected: u32,
    pub informational: u32,
    pub fixed: u32,
    /// pass + fail.
    pub evaluated: u32,
    /// 100 × pass / evaluated, one decimal.
    pub percent: f64,
    /// Short ids of the rules that failed.
    pub failing: Vec<String>,
    /// Short ids of the rules that came out `error` or `unknown`.
    pub undecided: Vec<String>,
}

/// Lynis's own summary (`hardening_index` of its report file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LynisScore {
    pub index: u32,
    pub version: String,
    pub tests_done: u32,
    pub warnings: Vec<String>,
    /// The test ids Lynis made suggestions under (what would raise the index).
    pub suggestions: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolVersions {
    pub oscap: String,
    pub ssg: String,
    pub lynis: String,
}

/// Where the scanners are cached and where the throw-away copy goes.
#[derive(Clone, Debug)]
pub struct GradeOptions {
    /// The scanners' `.deb`s and their unpacked files (a second grade downloads nothing).
    pub cache: PathBuf,
    pub mirror: String,
    /// Where the copy of the tree is made (needs room for the whole tree).
    pub work: PathBuf,
}

impl GradeOptions {
    pub fn new(cache: &Path) -> GradeOptions {
        GradeOptions {
            cache: cache.to_path_buf(),
            mirror: DEFAULT_MIRROR.to_string(),
            work: std::env::temp_dir(),
        }
    }
}

/// Grades the root filesystem `tree` (left unchanged) with every profile of `PROFILES` and
/// with Lynis.
pub fn grade(tree: &Path, opts: &GradeOptions) -> Result<Grade, GradeError> {
    let scanners = Scanners::fetch(&opts.cache, &opts.mirror)?;
    let started = Instant::now();
    let copy = ThrowAway::of(tree, &opts.work)?;
    info!(tree = %tree.display(), seconds = started.elapsed().as_secs(), "grade: copied the tree");
    let mut openscap = Vec::new();
    for profile in PROFILES {
        let started = Instant::now();
        let score = oscap_eval(&scanners, &copy, profile)?;
        let (pass, evaluated, seconds) = (score.pass, score.evaluated, started.elapsed().as_secs());
        info!(
            profile,
            pass,
            evaluated,
            percent = score.percent,
            seconds,
            "grade: oscap"
        );
        openscap.push(score);
    }
    let started = Instant::now();
    let lynis = lynis_audit(&scanners, &copy)?;
    let seconds = started.elapsed().as_secs();
    info!(index = lynis.index, version = %lynis.version, seconds, "grade: lynis");
    let failing: BTreeSet<String> = openscap
        .iter()
        .flat_map(|p| p.failing.iter().cloned())
        .collect();
    Ok(Grade {
        tools: ToolVersions {
            oscap: oscap_version()?,
            ssg: SSG_PACKAGES[1].1.to_string(),
            lynis: lynis.version.clone(),
        },
        openscap,
        lynis,
        failing: failing.into_iter().collect(),
    })
}

/// The scanners' files, unpacked from their `.deb`s in the cache.
struct Scanners {
    datastream: PathBuf,
    lynis: PathBuf,
}

impl Scanners {
    /// Downloads and unpacks only what the cache lacks: with both unpacked, no network.
    fn fetch(cache: &Path, mirror: &str) -> Result<Scanners, GradeError> {
        let unpacked = cache.join("unpacked");
        let ssg = unpacked.join(format!("ssg-{}", SSG_PACKAGES[1].1));
        let lynis = unpacked.join(format!("lynis-{}", LYNIS_PACKAGE.1));
        if !ssg.join(DATASTREAM).is_file() || !lynis.join("usr/sbin/lynis").is_file() {
            let suites = [TOOLS_SUITE.to_string()];
            let apt = PrivateApt::open(&cache.join("apt"), mirror, &suites).map_err(|source| {
                GradeError::Fetch {
                    what: "the package indexes".to_string(),
                    source,
                }
            })?;
            unpack_all(&apt, cache, &SSG_PACKAGES, &ssg)?;
            unpack_all(&apt, cache, &[LYNIS_PACKAGE], &lynis)?;
        }
        Ok(Scanners {
            datastream: ssg.join(DATASTREAM),
            lynis,
        })
    }
}

/// Unpacks `packages` into `dest` by way of a private folder, so an interrupted unpack never
/// passes for a complete one.
fn unpack_all(
    apt: &PrivateApt,
    cache: &Path,
    packages: &[(&str, &str)],
    dest: &Path,
) -> Result<(), GradeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GradeError::Io {
            step: "unpack the scanners",
            path,
            source,
        }
    };
    let parent = dest.parent().unwrap_or(cache);
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let partial = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    for (package, version) in packages {
        let fetch_err = |source| GradeError::Fetch {
            what: format!("{package} {version}"),
            source,
        };
        let deb = apt
            .fetch(&cache.join("debs"), package, version)
            .map_err(fetch_err)?;
        debs::unpack(&deb, partial.path()).map_err(fetch_err)?;
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(io(dest))?;
    }
    std::fs::rename(partial.keep(), dest).map_err(io(dest))
}

/// A copy of the tree the scanners may write into, removed when dropped.
struct ThrowAway {
    dir: tempfile::TempDir,
    root: PathBuf,
    apt_config: PathBuf,
}

impl ThrowAway {
    fn of(tree: &Path, work: &Path) -> Result<ThrowAway, GradeError> {
        let dir = tempfile::Builder::new()
            .prefix("provisioner-grade-")
            .tempdir_in(work)
            .map_err(|source| GradeError::Io {
                step: "make the throw-away copy",
                path: work.to_path_buf(),
                source,
            })?;
        let root = dir.path().join("root");
        let mut cp = Command::new("cp");
        cp.args(["-a", "--reflink=auto"]).arg(tree).arg(&root);
        run("copy the tree", "cp", "coreutils", &mut cp, &[0])?;
        // oscap's dpkginfo probe reads apt's configuration: the build host's snippets (a
        // docker-clean one, say) must not steer how it reads the image's package database,
        // and its architecture is the image's (an arm64 image graded on an x86 host would
        // otherwise have none of its packages "installed").
        let apt_config = dir.path().join("apt.conf");
        std::fs::write(&apt_config, apt_config_for(&root)).map_err(|source| GradeError::Io {
            step: "write a neutral APT_CONFIG",
            path: apt_config.clone(),
            source,
        })?;
        Ok(ThrowAway {
            dir,
            root,
            apt_config,
        })
    }
}

/// The APT configuration oscap's dpkginfo probe reads for the tree at `root`: no snippets of
/// the host's, and the tree's own architecture (its `var/lib/dpkg/arch`, first line).
fn apt_config_for(root: &Path) -> String {
    let mut conf = String::from("Dir::Etc::Parts \"/nonexistent\";\n");
    let arch = std::fs::read_to_string(root.join("var/lib/dpkg/arch")).unwrap_or_default();
    let arch = arch.lines().next().unwrap_or("").trim();
    if !arch.is_empty()
        && arch
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        conf += &format!("APT::Architecture \"{arch}\";\n");
    }
    conf
}

/// Runs `cmd`; an exit status outside `ok` is an error naming the tool and the step.
fn run(
    step: &str,
    tool: &'static str,
    package: &'static str,
    cmd: &mut Command,
    ok: &[i32],
) -> Result<Output, GradeError> {
    let out = cmd.output().map_err(|source| GradeError::Spawn {
        step: step.to_string(),
        tool,
        package,
        source,
    })?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Ok(out);
    }
    let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stdout));
    let tail: String = output
        .trim()
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .join("\n");
    Err(GradeError::Tool {
        step: step.to_string(),
        tool,
        status: out.status.to_string(),
        output: tail,
    })
}

/// `oscap xccdf eval` of one profile on the copy (exit 0: all pass, 2: some fail).
fn oscap_eval(s: &Scanners, copy: &ThrowAway, profile: &str) -> Result<ProfileScore, GradeError> {
    let results = copy.dir.path().join(format!("{profile}.xml"));
    let mut cmd = Command::new("oscap");
    cmd.args(["xccdf", "eval", "--profile"])
        .arg(format!("{PROFILE_PREFIX}{profile}"))
        .arg("--results")
        .arg(&results)
        .arg(&s.datastream)
        .env("OSCAP_PROBE_ROOT", &copy.root)
        .env("APT_CONFIG", &copy.apt_config);
    let step = format!("evaluate profile {profile}");
    let out = run(&step, "oscap", "openscap-scanner", &mut cmd, &[0, 2])?;
    if let Some(line) = probe_failure(&String::from_utf8_lossy(&out.stderr)) {
        return Err(GradeError::Tool {
            step,
            tool: "oscap",
            status: "a probe failed, so its rules would read notapplicable".to_string(),
            output: line.to_string(),
        });
    }
    let xml = std::fs::read_to_string(&results).map_err(|source| GradeError::Io {
        step: "read oscap's results",
        path: results.clone(),
        source,
    })?;
    let score = score_of_results(profile, &xml).map_err(|problem| GradeError::Results {
        tool: "oscap",
        path: results,
        problem,
    })?;
    let (printed_pass, printed_fail) = printed_counts(&String::from_utf8_lossy(&out.stdout));
    if (printed_pass, printed_fail) != (score.pass, score.fail) {
        return Err(GradeError::Disagree {
            profile: profile.to_string(),
            printed_pass,
            printed_fail,
            pass: score.pass,
            fail: score.fail,
        });
    }
    Ok(score)
}

/// An `E:` line saying a probe could not start (`E: oscap:     dpkginfo_init has failed.`):
/// oscap still exits 2, with every rule that probe decides `notapplicable`.
fn probe_failure(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .find(|l| l.starts_with("E: ") && l.contains("has failed"))
        .map(str::trim)
}

fn oscap_version() -> Result<String, GradeError> {
    let mut cmd = Command::new("oscap");
    let out = run(
        "read its version",
        "oscap",
        "openscap-scanner",
        cmd.arg("--version"),
        &[0],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(version_of_banner(&text).unwrap_or_default())
}

/// `OpenSCAP command line tool (oscap) 1.3.7` → `1.3.7`.
fn version_of_banner(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    first.split_whitespace().last().map(str::to_string)
}

/// The counts of one profile from the XCCDF 1.2 results `oscap --results` writes: the
/// `rule-result`s of its `TestResult`.
pub fn score_of_results(profile: &str, xml: &str) -> Result<ProfileScore, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let test = doc
        .descendants()
        .find(|n| n.has_tag_name((XCCDF_NS, "TestResult")))
        .ok_or("no XCCDF 1.2 TestResult element")?;
    let mut score = ProfileScore {
        profile: profile.to_string(),
        ..ProfileScore::default()
    };
    let results = test
        .children()
        .filter(|n| n.has_tag_name((XCCDF_NS, "rule-result")));
    for rule in results {
        let id = rule
            .attribute("idref")
            .ok_or("a rule-result without idref")?;
        let result = rule
            .children()
            .find(|n| n.has_tag_name((XCCDF_NS, "result")))
            .and_then(|n| n.text())
            .ok_or_else(|| format!("rule-result {id} has no result"))?;
        count(
            &mut score,
            id.strip_prefix(RULE_PREFIX).unwrap_or(id),
            result.trim(),
        )?;
    }
    score.evaluated = score.pass + score.fail;
    score.percent = percent(score.pass, score.evaluated);
    Ok(score)
}

fn count(score: &mut ProfileScore, id: &str, result: &str) -> Result<(), String> {
    let slot = match result {
        "pass" => &mut score.pass,
        "fail" => {
            score.failing.push(id.to_string());
            &mut score.fail
        }
        "error" | "unknown" => {
            score.undecided.push(id.to_string());
            if result == "error" {
                &mut score.error
            } else {
                &mut score.unknown
            }
        }
        "notapplicable" => &mut score.notapplicable,
        "notchecked" => &mut score.notchecked,
        "notselected" => &mut score.notselected,
        "informational" => &mut score.informational,
        "fixed" => &mut score.fixed,
        other => return Err(format!("rule-result {id}: unknown result {other:?}")),
    };
    *slot += 1;
    Ok(())
}

/// 100 × part / whole with one decimal; 0 when nothing was evaluated.
fn percent(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (1000.0 * f64::from(part) / f64::from(whole)).round() / 10.0
}

/// (pass, fail) as counted from the `Result` lines `oscap xccdf eval` prints.
pub fn printed_counts(stdout: &str) -> (u32, u32) {
    let mut counts = (0, 0);
    for line in stdout.lines() {
        match line.strip_prefix("Result").map(str::trim) {
            Some("pass") => counts.0 += 1,
            Some("fail") => counts.1 += 1,
            _ => {}
        }
    }
    counts
}

/// Lynis laid out as its own release tarball is (`./lynis`, `include/`, `db/`, `plugins/`,
/// `default.prf`), so `--usecwd` reads nothing of the scanned tree's own /etc/lynis.
const LYNIS_FILES: [(&str, &str); 5] = [
    ("usr/sbin/lynis", "lynis"),
    ("usr/share/lynis/include", "include"),
    ("usr/share/lynis/db", "db"),
    ("etc/lynis/plugins", "plugins"),
    ("etc/lynis/default.prf", "default.prf"),
];

/// Lynis's settings for an offline audit: a grade reads the tree, it never runs `apt-get
/// update` in it.
const LYNIS_CUSTOM_PROFILE: &str = "refresh-repositories=no\n";

/// `lynis audit system --quick` run inside the copy with chroot (`--rootdir` is not honoured
/// by many of its tests).
fn lynis_audit(s: &Scanners, copy: &ThrowAway) -> Result<LynisScore, GradeError> {
    let dir = copy.root.join(LYNIS_DIR);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GradeError::Io {
            step: "lay out Lynis in the copy",
            path,
            source,
        }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for (from, to) in LYNIS_FILES {
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(s.lynis.join(from)).arg(dir.join(to));
        run(
            "lay out Lynis in the copy",
            "cp",
            "coreutils",
            &mut cp,
            &[0],
        )?;
    }
    let custom = dir.join("custom.prf");
    std::fs::write(&custom, LYNIS_CUSTOM_PROFILE).map_err(io(&custom))?;
    let inside = format!("/{LYNIS_DIR}");
    let script = format!(
        "cd {inside} && ./lynis audit system --quick --usecwd --no-colors \
         --report-file {inside}/report.dat --logfile {inside}/lynis.log"
    );
    let mut cmd = Command::new("chroot");
    cmd.arg(&copy.root)
        .args(["/bin/sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .env("TERM", "dumb");
    run("audit system", "lynis", "coreutils", &mut cmd, &[0])?;
    let report = dir.join("report.dat");
    let text = std::fs::read_to_string(&report).map_err(|source| GradeError::Io {
        step: "read the Lynis report",
        path: report.clone(),
        source,
    })?;
    lynis_of_report(&text).map_err(|problem| GradeError::Results {
        tool: "lynis",
        path: report,
        problem,
    })
}

/// The summary of a Lynis report file (`key=value` lines, `key[]=` for lists).
pub fn lynis_of_report(text: &str) -> Result<LynisScore, String> {
    let mut score = LynisScore::default();
    let mut index = None;
    for (key, value) in text.lines().filter_map(|l| l.split_once('=')) {
        match key {
            "hardening_index" => index = value.trim().parse().ok(),
            "lynis_version" => score.version = value.trim().to_string(),
            "lynis_tests_done" => score.tests_done = value.trim().parse().unwrap_or(0),
            "warning[]" => score.warnings.push(value.trim().to_string()),
            "suggestion[]" => score.suggestions.push(test_id(value)),
            _ => {}
        }
    }
    score.index = index.ok_or("no hardening_index line (did the audit finish?)")?;
    if score.version.is_empty() {
        return Err("no lynis_version line".to_string());
    }
    Ok(score)
}

/// `AUTH-9230|Configure password hashing rounds|-|-|` → `AUTH-9230`.
fn test_id(value: &str) -> String {
    value.split('|').next().unwrap_or(value).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from the results `oscap xccdf eval --profile ...anssi_bp28_minimal --results`
    /// wrote for a Debian 12 tree (OpenSCAP 1.3.7, SSG 0.1.76): the TestResult with four of
    /// its rule-results, and a rule-result outside it that must not count.
    const RESULTS: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2" id="xccdf_org.ssgproject.content_benchmark_DEBIAN-12">
  <Rule id="xccdf_org.ssgproject.content_rule_package_sudo_installed" selected="false"/>
  <TestResult id="xccdf_org.open-scap_testresult_xccdf_org.ssgproject.content_profile_anssi_bp28_minimal" start-time="2026-12-03T15:02:11+00:00" end-time="2026-12-03T15:02:13+00:00" version="0.1.76" test-system="cpe:/a:redhat:openscap:1.3.7">
    <benchmark href="#scap_org.open-scap_comp_ssg-debian12-xccdf.xml" id="xccdf_org.ssgproject.content_benchmark_DEBIAN-12"/>
    <profile idref="xccdf_org.ssgproject.content_profile_anssi_bp28_minimal"/>
    <rule-result idref="xccdf_org.ssgproject.content_rule_package_sudo_installed" role="full" time="2026-12-03T15:02:11+00:00" severity="medium" weight="1.000000">
      <result>pass</result>
      <check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"/>
    </rule-result>
    <rule-result idref="xccdf_org.ssgproject.content_rule_sudo_add_noexec" role="full" time="2026-12-03T15:02:11+00:00" severity="high" weight="1.000000">
      <result>fail</result>
    </rule-result>
    <rule-result idref="xccdf_org.ssgproject.content_rule_service_auditd_enabled" role="full" time="2026-12-03T15:02:12+00:00" severity="medium" weight="1.000000">
      <result>unknown</result>
    </rule-result>
    <rule-result idref="xccdf_org.ssgproject.content_rule_sebool_polyinstantiation_enabled" role="full" time="2026-12-03T15:02:12+00:00" severity="medium" weight="1.000000">
      <result>notapplicable</result>
    </rule-result>
    <score system="urn:xccdf:scoring:default" maximum="100.000000">50.000000</score>
  </TestResult>
</Benchmark>
"##;

    /// The matching lines `oscap xccdf eval` printed.
    const PRINTED: &str = "Title\tInstall sudo Package\nRule\txccdf_org.ssgproject.content_rule_package_sudo_installed\nResult\tpass\n\nTitle\tAdd noexec option to sudo\nRule\txccdf_org.ssgproject.content_rule_sudo_add_noexec\nResult\tfail\n\nTitle\tEnable auditd Service\nRule\txccdf_org.ssgproject.content_rule_service_auditd_enabled\nResult\tunknown\n";

    #[test]
    fn results_count_pass_and_fail_as_evaluated() {
        let s = score_of_results("anssi_bp28_minimal", RESULTS).unwrap();
        assert_eq!((s.pass, s.fail, s.unknown, s.notapplicable), (1, 1, 1, 1));
        assert_eq!((s.evaluated, s.percent), (2, 50.0));
        assert_eq!(s.failing, ["sudo_add_noexec"]);
        assert_eq!(s.undecided, ["service_auditd_enabled"]);
        assert_eq!(printed_counts(PRINTED), (s.pass, s.fail));
    }

    #[test]
    fn results_without_a_test_result_or_with_a_strange_result_are_refused() {
        let bare = r#"<Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2"/>"#;
        assert!(
            score_of_results("p", bare)
                .unwrap_err()
                .contains("TestResult")
        );
        let odd = RESULTS.replace("<result>unknown</result>", "<result>maybe</result>");
        assert!(score_of_results("p", &odd).unwrap_err().contains("maybe"));
        assert!(score_of_results("p", "<not xml").is_err());
    }

    #[test]
    fn percent_has_one_decimal_and_survives_nothing_evaluated() {
        assert_eq!(percent(167, 181), 92.3);
        assert_eq!(percent(0, 0), 0.0);
    }

    /// Lines of the report.dat Lynis 3.1.4 wrote for a hardened Debian 12 tree.
    const REPORT: &str = "# Lynis Report\nreport_version_major=1\nlynis_version=3.1.4\nos=Linux\nlynis_tests_done=238\nwarning[]=FIRE-4512|iptables module(s) loaded, but no rules active|-|-|\nsuggestion[]=AUTH-9230|Configure password hashing rounds in /etc/login.defs|-|-|\nhardening_index=59\n";

    #[test]
    fn the_lynis_report_gives_index_version_and_warnings() {
        let s = lynis_of_report(REPORT).unwrap();
        assert_eq!(
            (s.index, s.version.as_str(), s.tests_done),
            (59, "3.1.4", 238)
        );
        assert_eq!(s.warnings.len(), 1);
        assert_eq!(s.suggestions, ["AUTH-9230"]);
        let unfinished = REPORT.replace("hardening_index=59\n", "");
        assert!(
            lynis_of_report(&unfinished)
                .unwrap_err()
                .contains("hardening_index")
        );
    }

    #[test]
    fn a_probe_that_did_not_start_is_caught() {
        // What oscap 1.3.7 wrote when the build host's apt configuration broke dpkginfo.
        let broken = "WARNING: Skipping ./security-oval-oval-definitions-bookworm.xml.bz2 file\n\
                      E: oscap:     dpkginfo_init has failed.\n\
                      W: oscap:     Requested offline mode is not supported by shadow probe.\n";
        assert_eq!(
            probe_failure(broken),
            Some("E: oscap:     dpkginfo_init has failed.")
        );
        let fine = "W: oscap:     Requested offline mode is not supported by uname probe.\n";
        assert_eq!(probe_failure(fine), None);
    }

    #[test]
    fn the_oscap_banner_gives_its_version() {
        let banner =
            "OpenSCAP command line tool (oscap) 1.3.7\nCopyright 2009--2021 Red Hat Inc.\n";
        assert_eq!(version_of_banner(banner).as_deref(), Some("1.3.7"));
    }

    #[test]
    fn the_probe_reads_packages_for_the_trees_own_architecture() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            apt_config_for(dir.path()),
            "Dir::Etc::Parts \"/nonexistent\";\n"
        );
        std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(dir.path().join("var/lib/dpkg/arch"), "arm64\ni386\n").unwrap();
        assert!(apt_config_for(dir.path()).ends_with("APT::Architecture \"arm64\";\n"));
        std::fs::write(dir.path().join("var/lib/dpkg/arch"), "arm64\"; X \"y\n").unwrap();
        assert!(!apt_config_for(dir.path()).contains("APT::Architecture"));
    }
}
