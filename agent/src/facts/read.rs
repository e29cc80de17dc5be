//! Reading sysfs and procfs under a root (`/` on a node, a recorded tree in tests), keeping a
//! list of what could not be read: a reader returns what it can, and the report says what is
//! missing and why instead of failing or guessing.

use std::fmt::Display;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The files under one root, and the problems met reading them.
pub struct Tree {
    root: PathBuf,
    problems: Vec<String>,
}

impl Tree {
    pub fn new(root: &Path) -> Self {
        Tree {
            root: root.to_path_buf(),
            problems: Vec::new(),
        }
    }

    /// Where `rel` (a path relative to the root, like `sys/block`) is on this machine.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Records that `rel` could not be read, shown as the absolute path it has on the node.
    pub fn problem(&mut self, rel: &str, why: impl Display) {
        self.problems.push(format!("/{rel}: {why}"));
    }

    pub fn into_problems(self) -> Vec<String> {
        self.problems
    }

    /// A file that must be there: any failure is a problem. Returns the trimmed text, which
    /// may be empty.
    pub fn required(&mut self, rel: &str) -> Option<String> {
        match fs::read_to_string(self.path(rel)) {
            Ok(text) => Some(text.trim().to_string()),
            Err(e) => {
                self.problem(rel, e);
                None
            }
        }
    }

    /// An attribute the kernel creates only when the firmware or the driver has a value: its
    /// absence is an answer, not a problem. Empty text is `None` too.
    pub fn optional(&mut self, rel: &str) -> Option<String> {
        match fs::read_to_string(self.path(rel)) {
            Ok(text) => non_empty(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.problem(rel, e);
                None
            }
        }
    }

    /// An attribute whose read fails by design in some states: `speed` and `carrier` of a
    /// network interface that is down answer EINVAL. Any failure is `None`.
    pub fn quiet(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.path(rel))
            .ok()
            .and_then(|text| non_empty(&text))
    }

    /// Raw bytes of a file that must be there (SMBIOS tables, SCSI VPD pages).
    pub fn bytes(&mut self, rel: &str) -> Option<Vec<u8>> {
        match fs::read(self.path(rel)) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.problem(rel, e);
                None
            }
        }
    }

    /// A required number in sysfs's hexadecimal form, `0x10de`.
    pub fn hex<T: FromHex>(&mut self, rel: &str) -> Option<T> {
        let text = self.required(rel)?;
        self.parsed_hex(rel, &text)
    }

    /// An optional number in sysfs's hexadecimal form.
    pub fn optional_hex<T: FromHex>(&mut self, rel: &str) -> Option<T> {
        let text = self.optional(rel)?;
        self.parsed_hex(rel, &text)
    }

    fn parsed_hex<T: FromHex>(&mut self, rel: &str, text: &str) -> Option<T> {
        let digits = text.strip_prefix("0x").unwrap_or(text);
        match T::from_hex(digits) {
            Some(value) => Some(value),
            None => {
                self.problem(rel, format_args!("not a hexadecimal number: {text:?}"));
                None
            }
        }
    }

    /// A required decimal number.
    pub fn number<T: FromStr>(&mut self, rel: &str) -> Option<T> {
        let text = self.required(rel)?;
        self.parsed(rel, &text)
    }

    /// An optional decimal number.
    pub fn optional_number<T: FromStr>(&mut self, rel: &str) -> Option<T> {
        let text = self.optional(rel)?;
        self.parsed(rel, &text)
    }

    fn parsed<T: FromStr>(&mut self, rel: &str, text: &str) -> Option<T> {
        match text.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.problem(rel, format_args!("not a number: {text:?}"));
                None
            }
        }
    }

    /// The last component of a symlink's target (`device/driver` → `nvidia`). A missing link
    /// is `None`: a device without a bound driver has none.
    pub fn link_name(&mut self, rel: &str) -> Option<String> {
        match fs::read_link(self.path(rel)) {
            Ok(target) => target
                .file_name()
                .map(|name| name.to_string_lossy().into_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.problem(rel, e);
                None
            }
        }
    }

    /// Whether `rel` exists, without following a final symlink.
    pub fn has(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.path(rel)).is_ok()
    }

    /// The names in a directory that must be there (`sys/block`), sorted.
    pub fn entries(&mut self, rel: &str) -> Vec<String> {
        match list(&self.path(rel)) {
            Ok(names) => names,
            Err(e) => {
                self.problem(rel, e);
                Vec::new()
            }
        }
    }

    /// The names in a directory that only some machines have, sorted; none when it is absent.
    pub fn entries_if_present(&mut self, rel: &str) -> Vec<String> {
        match list(&self.path(rel)) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.problem(rel, e);
                Vec::new()
            }
        }
    }
}

fn list(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Numbers sysfs writes in hexadecimal.
pub trait FromHex: Sized {
    fn from_hex(digits: &str) -> Option<Self>;
}

impl FromHex for u16 {
    fn from_hex(digits: &str) -> Option<Self> {
        u16::from_str_radix(digits, 16).ok()
    }
}

impl FromHex for u32 {
    fn from_hex(digits: &str) -> Option<Self> {
        u32::from_str_radix(digits, 16).ok()
    }
}
