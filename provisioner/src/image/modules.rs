//! Kernel modules for an initramfs: the kernel's `modules.dep` (the format depmod(8) writes,
//! modules.dep(5)) read into a map, and the order to insmod a set of modules in, dependencies
//! first.
//!
//! Debian's kernel packages ship no modules.dep (depmod writes it when the package is
//! installed), so `modules_dep_of_tree` writes one the same way from each module's own
//! `depends=` in its `.modinfo` section.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModulesError {
    #[error("modules.dep line {line}: `{text}` is not `MODULE.ko: DEPENDENCY.ko ...`")]
    Malformed { line: usize, text: String },
    #[error("kernel module {module} is not in this kernel (neither a .ko nor built in)")]
    Missing { module: String },
    #[error("kernel module {module}, which {needed_by} depends on, is not in this kernel")]
    MissingDependency { module: String, needed_by: String },
    #[error("kernel modules depend on each other in a circle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
}

/// One module of modules.dep: its file (relative to `/lib/modules/RELEASE`) and the names of
/// the modules it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub path: String,
    pub deps: Vec<String>,
}

/// modules.dep, by module name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleIndex {
    pub modules: BTreeMap<String, Module>,
}

/// The name the kernel knows a module by: `kernel/drivers/nvme/host/nvme-core.ko` →
/// `nvme_core` (the kernel treats `-` and `_` in module names alike).
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let base = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .unwrap_or(base);
    base.replace('-', "_")
}

/// Parses modules.dep: `kernel/a/b.ko: kernel/c/d.ko kernel/e/f.ko`, one module a line.
pub fn parse_modules_dep(text: &str) -> Result<ModuleIndex, ModulesError> {
    let mut modules = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = || ModulesError::Malformed {
            line: i + 1,
            text: line.chars().take(120).collect(),
        };
        let (path, deps) = line.split_once(':').ok_or_else(malformed)?;
        let path = path.trim();
        if path.is_empty() || path.contains(char::is_whitespace) {
            return Err(malformed());
        }
        let deps = deps.split_whitespace().map(module_name).collect();
        let path = path.to_string();
        modules.insert(module_name(&path), Module { path, deps });
    }
    Ok(ModuleIndex { modules })
}

/// Parses modules.builtin (one `kernel/path/name.ko` a line) into module names.
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// Parses a module list recipe: one name a line, `#` starts a comment.
pub fn parse_module_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// The modules to insmod, in order, for `wanted`: each after everything it depends on, each
/// once. A module built into the kernel needs no loading and is left out.
pub fn load_order(
    index: &ModuleIndex,
    builtin: &BTreeSet<String>,
    wanted: &[String],
) -> Result<Vec<String>, ModulesError> {
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    let mut path = Vec::new();
    for name in wanted {
        visit(
            index,
            builtin,
            &module_name(name),
            None,
            &mut path,
            &mut done,
            &mut order,
        )?;
    }
    Ok(order)
}

/// Depth-first: `path` is the chain being visited (to name a cycle), `done` what is placed.
fn visit(
    index: &ModuleIndex,
    builtin: &BTreeSet<String>,
    name: &str,
    needed_by: Option<&str>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) -> Result<(), ModulesError> {
    if done.contains(name) {
        return Ok(());
    }
    if let Some(start) = path.iter().position(|p| p == name) {
        let mut cycle = path[start..].to_vec();
        cycle.push(name.to_string());
        return Err(ModulesError::Cycle(cycle));
    }
    let Some(module) = index.modules.get(name) else {
        if builtin.contains(name) {
            done.insert(name.to_string());
            return Ok(());
        }
        let module = name.to_string();
        return Err(match needed_by {
            None => ModulesError::Missing { module },
            Some(by) => ModulesError::MissingDependency {
                module,
                needed_by: by.to_string(),
            },
        });
    };
    path.push(name.to_string());
    for dep in &module.deps {
        visit(index, builtin, dep, Some(name), path, done, order)?;
    }
    path.pop();
    done.insert(name.to_string());
    order.push(name.to_string());
    Ok(())
}

/// Writes modules.dep for the modules under `moddir` (`/lib/modules/RELEASE`) from their
/// `.modinfo` `depends=`, as depmod does (direct dependencies only, which `load_order`
/// follows). Lines are sorted by path.
pub fn modules_dep_of_tree(moddir: &Path) -> Result<String, ModulesError> {
    let mut files = Vec::new();
    collect_modules(moddir, moddir, &mut files)?;
    files.sort();
    let by_name: BTreeMap<String, &str> =
        files.iter().map(|f| (module_name(f), f.as_str())).collect();
    let mut out = String::new();
    for file in &files {
        let deps = modinfo_depends(&moddir.join(file))?;
        out.push_str(file);
        out.push(':');
        for dep in deps {
            out.push(' ');
            match by_name.get(&module_name(&dep)) {
                Some(dep_file) => out.push_str(dep_file),
                // No file: built in, or missing; `load_order` tells which.
                None => out.push_str(&format!("{dep}.ko")),
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// The `*.ko` files under `dir`, relative to `root`.
fn collect_modules(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), ModulesError> {
    let read_err = |e: std::io::Error| ModulesError::Read {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        let kind = entry.file_type().map_err(read_err)?;
        if kind.is_dir() {
            collect_modules(root, &path, out)?;
        } else if kind.is_file()
            && path.extension().is_some_and(|e| e == "ko")
            && let Some(rel) = path.strip_prefix(root).ok().and_then(Path::to_str)
        {
            out.push(rel.to_string());
        }
    }
    Ok(())
}

/// The `depends=` of a module's `.modinfo` section (reading only the ELF headers and that
/// section, not the whole file).
fn modinfo_depends(path: &Path) -> Result<Vec<String>, ModulesError> {
    let read_err = |reason: String| ModulesError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|e| read_err(e.to_string()))?;
    let Some(section) = elf.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let data = section.data().map_err(|e| read_err(e.to_string()))?;
    Ok(depends_of_modinfo(data))
}

/// `.modinfo` is NUL-separated `key=value` strings; `depends=a,b-c` names the modules needed.
fn depends_of_modinfo(modinfo: &[u8]) -> Vec<String> {
    let mut deps = Vec::new();
    for value in modinfo
        .split(|b| *b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
    {
        let value = String::from_utf8_lossy(value);
        deps.extend(
            value
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_string),
        );
    }
    deps
}

#[cfg(test)]
mod tests {
    use super::*;

    /// depmod's format, with modules of Debian 12's kernel (6.1).
    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/drivers/net/net_failover.ko
kernel/drivers/nvme/host/nvme-core.ko:
kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko
kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/block/t10-pi.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/broken.ko: kernel/drivers/nowhere.ko
";

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn order(wanted: &[&str], builtin: &[&str]) -> Result<Vec<String>, ModulesError> {
        let index = parse_modules_dep(DEP).unwrap();
        let builtin = builtin.iter().map(|s| s.to_string()).collect();
        load_order(&index, &builtin, &names(wanted))
    }

    #[test]
    fn names_ignore_directory_suffix_and_dashes() {
        assert_eq!(
            module_name("kernel/drivers/nvme/host/nvme-core.ko"),
            "nvme_core"
        );
        assert_eq!(module_name("kernel/lib/crc-t10dif.ko.xz"), "crc_t10dif");
        assert_eq!(module_name("i2c-algo-bit"), "i2c_algo_bit");
    }

    #[test]
    fn virtio_loads_in_the_order_the_kernel_needs() {
        // FACTS.md: virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
        // failover net_failover virtio_net
        assert_eq!(
            order(&["virtio_pci", "virtio_net"], &[]).unwrap(),
            names(&[
                "virtio_ring",
                "virtio",
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net"
            ])
        );
    }

    #[test]
    fn shared_dependencies_come_once_and_first() {
        let got = order(
            &["nvme", "virtio_net", "nvme-core", "virtio_net"],
            &["t10_pi"],
        )
        .unwrap();
        assert_eq!(
            got,
            names(&[
                "nvme_core",
                "nvme",
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net"
            ])
        );
        // t10-pi is built in: sd_mod needs it but nothing loads it.
        assert_eq!(
            order(&["sd_mod"], &["t10_pi"]).unwrap(),
            names(&["scsi_common", "scsi_mod", "sd_mod"])
        );
    }

    #[test]
    fn a_missing_module_is_named() {
        assert_eq!(
            order(&["virtio_net", "mlx5_core"], &[]),
            Err(ModulesError::Missing {
                module: "mlx5_core".into()
            })
        );
        assert_eq!(
            order(&["sd_mod"], &[]),
            Err(ModulesError::MissingDependency {
                module: "t10_pi".into(),
                needed_by: "sd_mod".into()
            })
        );
        let e = order(&["broken"], &[]).unwrap_err().to_string();
        assert!(e.contains("nowhere") && e.contains("broken"), "{e}");
        assert_eq!(order(&["e1000"], &["e1000"]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_cycle_is_refused_not_followed_forever() {
        let index = parse_modules_dep("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n").unwrap();
        assert_eq!(
            load_order(&index, &BTreeSet::new(), &names(&["a"])),
            Err(ModulesError::Cycle(names(&["a", "b", "c", "a"])))
        );
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        assert_eq!(
            parse_modules_dep("a.ko:\nthis is not a module line\n"),
            Err(ModulesError::Malformed {
                line: 2,
                text: "this is not a module line".into()
            })
        );
        assert!(
            parse_modules_dep("\n# comment\n")
                .unwrap()
                .modules
                .is_empty()
        );
    }

    #[test]
    fn recipe_and_builtin_lists() {
        assert_eq!(
            parse_module_list("# NICs\nvirtio_net\n  e1000e # Intel\n\nnvme-core\n"),
            names(&["virtio_net", "e1000e", "nvme_core"])
        );
        let b = parse_builtin("kernel/lib/crc32.ko\nkernel/block/t10-pi.ko\n");
        assert!(b.contains("t10_pi") && b.contains("crc32"));
    }

    #[test]
    fn modinfo_depends_are_read_from_the_section_strings() {
        let info =
            b"license=GPL\0depends=virtio_ring,virtio,net_failover\0intree=Y\0name=virtio_net\0";
        assert_eq!(
            depends_of_modinfo(info),
            names(&["virtio_ring", "virtio", "net_failover"])
        );
        assert!(depends_of_modinfo(b"depends=\0name=e1000\0").is_empty());
    }

    #[test]
    fn modules_dep_of_a_tree_that_is_not_elf_says_which_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kernel/x")).unwrap();
        std::fs::write(dir.path().join("kernel/x/bad.ko"), b"not elf").unwrap();
        let e = modules_dep_of_tree(dir.path()).unwrap_err().to_string();
        assert!(e.contains("kernel/x/bad.ko"), "{e}");
    }
}
