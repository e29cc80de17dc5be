//! An image's root tree read back out of its compressed disk image, without mounting: zstd
//! to a raw file, then debugfs `rdump` of each ext4 filesystem at its offset into its mount
//! point. What `image grade NAME` grades, so a grade can be checked long after the build.

use std::path::Path;
use std::process::Command;

use super::layout::Filesystem;
use super::manifest::ImageManifest;
use super::steps::{StepError, Steps};

/// Unpacks `compressed` (the image `m` describes) into `dest/root`, using `dest` for the raw
/// image meanwhile. `dest/root` is the whole installed tree, separate filesystems included.
pub fn extract(
    steps: &mut Steps,
    compressed: &Path,
    m: &ImageManifest,
    dest: &Path,
) -> Result<std::path::PathBuf, StepError> {
    steps.begin(&format!("decompress {}", m.compressed.file));
    std::fs::create_dir_all(dest).map_err(steps.io(format!("cannot create {}", dest.display())))?;
    let raw = dest.join(&m.raw.file);
    let _ = std::fs::remove_file(&raw);
    steps.run(
        Command::new("zstd")
            .args(["-q", "-d", "--sparse", "-o"])
            .arg(&raw)
            .arg(compressed),
    )?;
    steps.begin("read each filesystem back (debugfs rdump)");
    let root = dest.join("root");
    super::tree::remove_all(&root).map_err(steps.io("cannot clear the tree"))?;
    std::fs::create_dir_all(&root).map_err(steps.io("cannot create the tree"))?;
    let mut parts: Vec<_> = m
        .partitions
        .iter()
        .filter(|p| p.filesystem == Filesystem::Ext4 && p.mount.is_some())
        .collect();
    // Parents first, so each mount point exists when its filesystem is dumped into it.
    parts.sort_by_key(|p| {
        p.mount
            .as_deref()
            .map(|m| m.matches('/').count() - usize::from(m == "/"))
    });
    for p in parts {
        let Some(mount) = &p.mount else { continue };
        let into = root.join(mount.trim_start_matches('/'));
        std::fs::create_dir_all(&into).map_err(steps.io(format!("cannot create {mount}")))?;
        // rdump / DIR writes the filesystem's root's entries into DIR.
        let staging = dest.join(format!("dump-{}", p.name));
        super::tree::remove_all(&staging).map_err(steps.io("cannot clear the dump"))?;
        std::fs::create_dir_all(&staging).map_err(steps.io("cannot create the dump"))?;
        steps.run(
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("rdump / {}", staging.display()))
                .arg(format!("{}?offset={}", raw.display(), p.offset())),
        )?;
        for e in std::fs::read_dir(&staging)
            .map_err(steps.io("cannot read the dump"))?
            .flatten()
        {
            let to = into.join(e.file_name());
            if to.is_dir()
                && e.path().is_dir()
                && std::fs::read_dir(&to)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false)
            {
                std::fs::remove_dir(&to).map_err(steps.io("cannot replace a mount point"))?;
            }
            std::fs::rename(e.path(), &to)
                .map_err(steps.io(format!("cannot move into {mount}")))?;
        }
        let _ = std::fs::remove_dir_all(&staging);
        steps.note(&format!("{} into {mount}", p.name));
    }
    let _ = std::fs::remove_file(&raw);
    Ok(root)
}

#[derive(Debug, thiserror::Error)]
pub enum RegradeError {
    #[error(transparent)]
    Library(#[from] super::library::LibraryError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error("image {0}'s disk image is not in the artifact store")]
    Missing(String),
    #[error("grading failed: {0}")]
    Grade(String),
}

/// `image grade NAME`: the image's tree read back from its disk image and graded again.
pub fn regrade(
    data_dir: &Path,
    cache_dir: &Path,
    name: &str,
) -> Result<crate::image::grade::Grade, RegradeError> {
    let entry = super::library::find(data_dir, name)?;
    let m = &entry.manifest;
    let store = crate::artifacts::ArtifactStore::open(data_dir)
        .map_err(super::library::LibraryError::from)?;
    let compressed = store
        .path(m.compressed.sha256)
        .ok_or_else(|| RegradeError::Missing(name.to_string()))?;
    let work = data_dir.join("builds").join(format!(".grade-{name}"));
    let _ = super::tree::remove_all(&work);
    std::fs::create_dir_all(&work).map_err(|source| StepError::Io {
        step: "start".into(),
        what: format!("cannot create {}", work.display()),
        source,
    })?;
    let mut steps = Steps::open(&work.join("grade.log"), 3, false)?;
    let result = (|| {
        let root = extract(&mut steps, &compressed, m, &work)?;
        steps.begin("grade (OpenSCAP, Lynis)");
        crate::image::grade::grade(&root, &crate::image::grade::GradeOptions::new(cache_dir))
            .map_err(|e| RegradeError::Grade(e.to_string()))
    })();
    steps.finish();
    let _ = super::tree::remove_all(&work);
    result
}
