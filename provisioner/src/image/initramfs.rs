//! An initramfs: a newc cpio archive compressed with gzip, the format the kernel unpacks into
//! its first root file system (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! It is built reproducibly, so the same inputs give the same bytes and the same sha256:
//! entries in name order, owned by root, mtime 0, inode numbers counted in that order, and a
//! gzip header without a timestamp.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use cpio::newc::{Builder, ModeFileType};

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("`{0}` is not a usable path inside the initramfs")]
    BadPath(String),
    #[error("`{path}` is added to the initramfs twice")]
    Duplicate { path: String },
    #[error("`{path}` is under `{parent}`, which is not a directory in the initramfs")]
    NotADirectory { path: String, parent: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, more than a newc entry can hold")]
    TooLarge { path: String, size: usize },
    #[error("cannot write the initramfs: {0}")]
    Write(#[source] std::io::Error),
}

/// Where a regular file's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Read when the archive is written.
    Path(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File { source: Source, mode: u32 },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

/// The files of an initramfs, by path (no leading `/`). Adding a path adds its parent
/// directories.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// `/bin//busybox` → `bin/busybox`; `..`, `.` and an empty path are refused.
fn normalize(path: &str) -> Result<String, InitramfsError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(InitramfsError::BadPath(path.to_string()));
    }
    Ok(parts.join("/"))
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// A directory (mode 0755); adding one that exists is a no-op.
    pub fn dir(&mut self, path: &str) -> Result<(), InitramfsError> {
        let path = normalize(path)?;
        self.parents(&path)?;
        match self.nodes.get(&path) {
            Some(Node::Dir) => Ok(()),
            Some(_) => Err(InitramfsError::Duplicate { path }),
            None => {
                self.nodes.insert(path, Node::Dir);
                Ok(())
            }
        }
    }

    /// A regular file with permission bits `mode` (e.g. 0o755).
    pub fn file(&mut self, path: &str, source: Source, mode: u32) -> Result<(), InitramfsError> {
        let mode = mode & 0o7777;
        self.insert(path, Node::File { source, mode })
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), InitramfsError> {
        let target = target.to_string();
        self.insert(path, Node::Symlink { target })
    }

    /// A character device node, such as `dev/console` (5, 1): the kernel opens it for init's
    /// standard streams before any devtmpfs is mounted.
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), InitramfsError> {
        let mode = mode & 0o7777;
        self.insert(path, Node::CharDevice { mode, major, minor })
    }

    pub fn contains(&self, path: &str) -> bool {
        normalize(path).is_ok_and(|p| self.nodes.contains_key(&p))
    }

    /// Every path, in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    fn insert(&mut self, path: &str, node: Node) -> Result<(), InitramfsError> {
        let path = normalize(path)?;
        self.parents(&path)?;
        if self.nodes.contains_key(&path) {
            return Err(InitramfsError::Duplicate { path });
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    /// Adds the directories above `path`, refusing to put anything under a non-directory.
    fn parents(&mut self, path: &str) -> Result<(), InitramfsError> {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            match self.nodes.get(parent) {
                Some(Node::Dir) => {}
                Some(_) => {
                    return Err(InitramfsError::NotADirectory {
                        path: path.to_string(),
                        parent: parent.to_string(),
                    });
                }
                None => {
                    self.nodes.insert(parent.to_string(), Node::Dir);
                }
            }
            at += i + 1;
        }
        Ok(())
    }

    /// Writes the uncompressed newc archive, trailer included.
    pub fn write_cpio<W: Write>(&self, mut out: W) -> Result<W, InitramfsError> {
        for (ino, (path, node)) in (1u32..).zip(&self.nodes) {
            let header = Builder::new(path).ino(ino).uid(0).gid(0).mtime(0);
            let (header, data) = match node {
                Node::Dir => (
                    header
                        .mode(0o755)
                        .set_mode_file_type(ModeFileType::Directory)
                        .nlink(2),
                    Vec::new(),
                ),
                Node::File { source, mode } => (
                    header.mode(*mode).set_mode_file_type(ModeFileType::Regular),
                    read(source)?,
                ),
                Node::Symlink { target } => (
                    header.mode(0o777).set_mode_file_type(ModeFileType::Symlink),
                    target.as_bytes().to_vec(),
                ),
                Node::CharDevice { mode, major, minor } => (
                    header
                        .mode(*mode)
                        .set_mode_file_type(ModeFileType::Char)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    Vec::new(),
                ),
            };
            let size = u32::try_from(data.len()).map_err(|_| InitramfsError::TooLarge {
                path: path.clone(),
                size: data.len(),
            })?;
            let mut entry = header.write(out, size);
            entry.write_all(&data).map_err(InitramfsError::Write)?;
            out = entry.finish().map_err(InitramfsError::Write)?;
        }
        cpio::newc::trailer(out).map_err(InitramfsError::Write)
    }

    /// Writes the archive gzip-compressed, as the kernel takes it.
    pub fn write_gzip<W: Write>(&self, out: W) -> Result<W, InitramfsError> {
        // GzBuilder writes mtime 0 and "unknown" for the OS unless told otherwise. Level 6,
        // not 9: on the discovery image 9 saves 1% and takes six times as long.
        let gz = flate2::GzBuilder::new().write(out, flate2::Compression::default());
        let gz = self.write_cpio(gz)?;
        gz.finish().map_err(InitramfsError::Write)
    }

    /// Writes the gzip'd archive to `path`.
    pub fn write_to(&self, path: &Path) -> Result<(), InitramfsError> {
        let file = std::fs::File::create(path).map_err(InitramfsError::Write)?;
        let out = self.write_gzip(std::io::BufWriter::new(file))?;
        let file = out
            .into_inner()
            .map_err(|e| InitramfsError::Write(e.into_error()))?;
        file.sync_all().map_err(InitramfsError::Write)
    }
}

fn read(source: &Source) -> Result<Vec<u8>, InitramfsError> {
    match source {
        Source::Bytes(b) => Ok(b.clone()),
        Source::Path(p) => std::fs::read(p).map_err(|source| InitramfsError::Read {
            path: p.clone(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(order: &[&str]) -> Tree {
        let mut t = Tree::new();
        for name in order {
            match *name {
                "init" => t.file("/init", Source::Bytes(b"#!/bin/sh\n".to_vec()), 0o755),
                "busybox" => t.file("bin/busybox", Source::Bytes(vec![7; 1001]), 0o755),
                "sh" => t.symlink("bin/sh", "busybox"),
                "console" => t.char_device("dev/console", 0o600, 5, 1),
                "proc" => t.dir("proc"),
                other => panic!("{other}"),
            }
            .unwrap();
        }
        t
    }

    /// Name, mode, rdev and contents of every entry, read back with the crate's reader.
    fn entries(archive: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        use std::io::Read;
        let mut out = Vec::new();
        let mut rest = archive;
        loop {
            let mut r = cpio::NewcReader::new(rest).unwrap();
            if r.entry().is_trailer() {
                return out;
            }
            let e = r.entry();
            assert_eq!((e.mtime(), e.uid(), e.gid()), (0, 0, 0));
            let meta = (
                e.name().to_string(),
                e.mode(),
                e.rdev_major(),
                e.rdev_minor(),
            );
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            out.push((meta.0, meta.1, meta.2, meta.3, data));
            rest = r.finish().unwrap();
        }
    }

    #[test]
    fn the_same_files_added_in_any_order_give_the_same_bytes() {
        let a = sample(&["init", "busybox", "sh", "console", "proc"]);
        let b = sample(&["proc", "console", "sh", "busybox", "init"]);
        let gz_a = a.write_gzip(Vec::new()).unwrap();
        assert_eq!(gz_a, b.write_gzip(Vec::new()).unwrap());
        assert_eq!(gz_a, a.write_gzip(Vec::new()).unwrap(), "and again");
        assert_eq!(&gz_a[4..8], &[0, 0, 0, 0], "no gzip timestamp");
    }

    #[test]
    fn entries_are_sorted_with_parents_first_and_typed() {
        let t = sample(&["init", "busybox", "sh", "console", "proc"]);
        let archive = t.write_cpio(Vec::new()).unwrap();
        let got = entries(&archive);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "proc"
            ]
        );
        assert_eq!(got[0].1, 0o040755);
        assert_eq!((got[1].1, got[1].4.len()), (0o100755, 1001));
        assert_eq!((got[2].1, got[2].4.as_slice()), (0o120777, &b"busybox"[..]));
        assert_eq!((got[4].1, got[4].2, got[4].3), (0o020600, 5, 1));

        // gzip round trip
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&t.write_gzip(Vec::new()).unwrap()[..]),
            &mut plain,
        )
        .unwrap();
        assert_eq!(plain, archive);
    }

    #[test]
    fn bad_and_conflicting_paths_are_refused() {
        let mut t = sample(&["init", "busybox"]);
        assert!(matches!(
            t.file("bin/busybox", Source::Bytes(vec![]), 0o644),
            Err(InitramfsError::Duplicate { .. })
        ));
        assert!(matches!(
            t.file("init/x", Source::Bytes(vec![]), 0o644),
            Err(InitramfsError::NotADirectory { .. })
        ));
        assert!(matches!(
            t.symlink("../etc/passwd", "x"),
            Err(InitramfsError::BadPath(_))
        ));
        assert!(t.dir("bin").is_ok(), "a directory may be named again");
        assert!(t.contains("/bin/busybox") && !t.contains("bin/sh"));
    }

    #[test]
    fn a_missing_source_file_names_itself() {
        let mut t = Tree::new();
        t.file("x", Source::Path("/nonexistent/x".into()), 0o644)
            .unwrap();
        let e = t.write_cpio(Vec::new()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/x"), "{e}");
    }
}
