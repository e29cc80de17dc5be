//! `provisioner image build-discovery`: the kernel and initramfs every new node boots for
//! inspection, made from Debian's kernel and busybox-static packages, the node agent with
//! its shared libraries, the network and disk drivers of images/discovery/modules and the
//! /init of images/discovery/init; then imported into the artifact store.
//!
//! One image per architecture (`--arch x86_64|arm64`). The host's own is made as before, from
//! the host's apt and ldd; another (arm64 on an x86-64 appliance) from that architecture's
//! packages fetched through a private apt state, with the cross-built agent and the libraries
//! its ELF headers name, found in Debian's cross sysroot (`/usr/aarch64-linux-gnu/lib`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::info;

use super::debs::{self, Deb, DebError, PrivateApt};
use super::initramfs::{InitramfsError, Source, Tree};
use super::ldd::{self, LddError};
use super::manifest::{self, DiscoveryManifest, MANIFEST};
use super::modules::{self, ModuleIndex, ModulesError};
use super::needed::{self, NeededError};
use super::target::Target;
use crate::artifacts::{Artifact, ArtifactError, ArtifactStore};
use crate::boot::KernelArch;
use crate::types::sha256_file;

/// The recipe, compiled in so the binary builds the image wherever it runs.
const INIT: &str = include_str!("../../../images/discovery/init");
const UDHCPC_SCRIPT: &str = include_str!("../../../images/discovery/udhcpc.script");

const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The suites a foreign architecture's packages come from (the host's own come from the
/// host's apt sources).
const FOREIGN_SUITES: [&str; 2] = ["bookworm", "bookworm-updates"];
/// The agent and its libraries are read into every node's memory before it can report.
pub const AGENT_LIMIT: u64 = 15_000_000;
/// The agent's file name, beside `provisioner` and in the image's `/bin`.
pub const AGENT_NAME: &str = "provisioner-agent";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no {arch} agent binary at {path} (build it with `{hint}`, or name it with --agent)")]
    NoAgent {
        path: PathBuf,
        arch: KernelArch,
        hint: String,
    },
    #[error(
        "the agent and its libraries are {size} bytes, more than the {limit} a discovery image allows: {files}"
    )]
    AgentTooLarge {
        size: u64,
        limit: u64,
        files: String,
    },
    #[error("{deb} holds no {what}")]
    BadPackage { deb: PathBuf, what: String },
    #[error("{path} is a compressed module; this builder loads plain .ko files with insmod")]
    CompressedModule { path: PathBuf },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ldd(#[from] LddError),
    #[error(transparent)]
    Needed(#[from] NeededError),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    Modules(#[from] ModulesError),
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What to build from and where to put it.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The architecture of the nodes that boot it.
    pub arch: KernelArch,
    /// Default: `DATA_DIR/images/discovery/` (x86_64), `DATA_DIR/images/discovery-arm64/`.
    pub out: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// Default: `provisioner-agent` beside the running executable (another architecture's:
    /// `provisioner-agent-ARCH` there, or cargo's cross-build of it).
    pub agent: Option<PathBuf>,
    /// Default: what `linux-image-amd64` (`linux-image-arm64`) depends on.
    pub kernel_package: Option<String>,
    /// Where downloaded .debs are kept. Default: `DATA_DIR/cache/debs`. Another
    /// architecture's apt state is kept beside it (`apt-arm64`).
    pub deb_cache: Option<PathBuf>,
    /// The Debian mirror another architecture's packages come from.
    pub mirror: String,
}

/// A built image, in its folder and in the artifact store.
#[derive(Clone, Debug)]
pub struct Built {
    pub dir: PathBuf,
    pub manifest: DiscoveryManifest,
    pub kernel: Artifact,
    pub initrd: Artifact,
    pub store: PathBuf,
    pub elapsed: Duration,
}

impl Built {
    /// What was built, for the person who asked.
    pub fn summary(&self) -> String {
        let m = &self.manifest;
        format!(
            "{} discovery image built in {} ({:.1} s)\n  \
             vmlinuz     {:>10} bytes  sha256 {}  {} {}\n  \
             initrd.img  {:>10} bytes  sha256 {}\n  \
             agent       {:>10} bytes  sha256 {}  with {} libraries\n  \
             busybox {} {}; {} modules loaded in order: {}\n\
             imported into {}\n",
            m.arch,
            self.dir.display(),
            self.elapsed.as_secs_f64(),
            m.kernel.size,
            m.kernel.sha256,
            m.kernel.package,
            m.kernel.version,
            m.initrd.size,
            m.initrd.sha256,
            m.agent.size,
            m.agent.sha256,
            m.agent.libraries.len(),
            m.busybox.package,
            m.busybox.version,
            m.modules.load_order.len(),
            m.modules.load_order.join(" "),
            self.store.display(),
        )
    }
}

/// Builds the image into a work folder beside the output folder (removed at the end, also
/// on error), moves vmlinuz, initrd.img and discovery.json into place, and imports the two
/// images into the artifact store.
pub fn build_discovery(opts: &BuildOptions) -> Result<Built, BuildError> {
    let started = Instant::now();
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| manifest::dir_for(&opts.data_dir, opts.arch));
    let target = Target::of(opts.arch);
    let agent = match &opts.agent {
        Some(p) => p.clone(),
        None => default_agent(&target)?,
    };
    let agent_files = agent_with_libraries(&agent, &target)?;

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let work = tempfile::Builder::new()
        .prefix(".build-discovery-")
        .tempdir_in(&parent)
        .map_err(io_err(&parent))?;
    let manifest = build_in(work.path(), opts, &target, &agent, &agent_files)?;
    publish(work.path(), &out, &manifest)?;

    let store = ArtifactStore::open(&opts.data_dir)?;
    let kernel = store.import(&out.join(&manifest.kernel.file))?;
    let initrd = store.import(&out.join(&manifest.initrd.file))?;
    Ok(Built {
        dir: out,
        manifest,
        kernel,
        initrd,
        store: opts.data_dir.join("artifacts"),
        elapsed: started.elapsed(),
    })
}

/// Writes `work/vmlinuz` and `work/initrd.img` and returns their manifest.
fn build_in(
    work: &Path,
    opts: &BuildOptions,
    target: &Target,
    agent: &Path,
    agent_files: &[ImageInput],
) -> Result<DiscoveryManifest, BuildError> {
    let src = Sources::fetch(work, opts, target)?;
    let requested = target.module_list();
    let (index, order) = src.kernel.load_order(&requested)?;
    info!(release = %src.kernel.release, modules = %order.join(" "), "modules");

    let mut tree = base_tree(&src.busybox)?;
    for f in agent_files {
        tree.file(&f.in_image, Source::Path(f.source.clone()), 0o755)?;
    }
    add_modules(&mut tree, &src.kernel.moddir, &index, &order)?;
    let initrd = work.join("initrd.img");
    tree.write_to(&initrd)?;
    let vmlinuz = work.join("vmlinuz");
    std::fs::copy(&src.kernel.vmlinuz, &vmlinuz).map_err(io_err(&src.kernel.vmlinuz))?;

    let vmlinuz = image_file(&vmlinuz)?;
    Ok(DiscoveryManifest {
        arch: target.arch,
        kernel: manifest::KernelFile {
            package: src.kernel_deb.package,
            version: src.kernel_deb.version,
            release: src.kernel.release,
            file: vmlinuz.file,
            size: vmlinuz.size,
            sha256: vmlinuz.sha256,
        },
        initrd: image_file(&initrd)?,
        busybox: manifest::Package {
            package: src.busybox_deb.package,
            version: src.busybox_deb.version,
        },
        agent: agent_entry(agent, agent_files)?,
        modules: manifest::Modules {
            requested,
            load_order: order,
        },
    })
}

/// The two packages, fetched (or found in the cache) and unpacked under the work folder.
struct Sources {
    kernel_deb: Deb,
    busybox_deb: Deb,
    kernel: Kernel,
    busybox: PathBuf,
}

impl Sources {
    fn fetch(work: &Path, opts: &BuildOptions, target: &Target) -> Result<Sources, BuildError> {
        let cache = opts
            .deb_cache
            .clone()
            .unwrap_or_else(|| opts.data_dir.join("cache").join("debs"));
        let (kernel_deb, busybox_deb) = if target.is_host() {
            let kernel_package = match &opts.kernel_package {
                Some(p) => p.clone(),
                None => debs::kernel_package(&target.kernel_metapackage(), &cache)?,
            };
            (
                debs::fetch(&cache, &kernel_package)?,
                debs::fetch(&cache, BUSYBOX_PACKAGE)?,
            )
        } else {
            let state = cache.with_file_name(format!("apt-{}", target.debian));
            let suites = FOREIGN_SUITES.map(String::from);
            info!(arch = target.debian, mirror = %opts.mirror, state = %state.display(), "reading the package lists");
            let apt = PrivateApt::open_for(&state, &opts.mirror, &suites, Some(target.debian))?;
            let kernel_package = match &opts.kernel_package {
                Some(p) => p.clone(),
                None => apt.kernel_package(&target.kernel_metapackage())?,
            };
            (
                apt.fetch_candidate(&cache, &kernel_package)?,
                apt.fetch_candidate(&cache, BUSYBOX_PACKAGE)?,
            )
        };
        info!(deb = %kernel_deb.path.display(), "unpacking");
        debs::unpack(&kernel_deb.path, &work.join("kernel"))?;
        debs::unpack(&busybox_deb.path, &work.join("busybox"))?;
        let kernel = Kernel::find(&kernel_deb, &work.join("kernel"))?;
        let busybox = work.join("busybox/bin/busybox");
        if !busybox.is_file() {
            return Err(BuildError::BadPackage {
                deb: busybox_deb.path.clone(),
                what: "bin/busybox".into(),
            });
        }
        // A package of the wrong architecture would only show as a node that never comes up.
        let bytes = std::fs::read(&busybox).map_err(io_err(&busybox))?;
        needed::dynamic_of(&busybox, &bytes, target.machine, target.arch.name())?;
        Ok(Sources {
            kernel_deb,
            busybox_deb,
            kernel,
            busybox,
        })
    }
}

/// `provisioner-agent` beside the running `provisioner`, as cargo and packages place them.
/// Another architecture's: `provisioner-agent-ARCH` beside it (a package), else where cargo
/// puts a cross-build (`target/aarch64-unknown-linux-gnu/release/` for `target/release/`).
pub fn default_agent(target: &Target) -> Result<PathBuf, BuildError> {
    let exe = std::env::current_exe().map_err(io_err(Path::new("/proc/self/exe")))?;
    let dir = exe.parent().unwrap_or_else(|| Path::new("."));
    if target.is_host() {
        return Ok(dir.join(AGENT_NAME));
    }
    let packaged = dir.join(format!("{AGENT_NAME}-{}", target.arch));
    if packaged.is_file() {
        return Ok(packaged);
    }
    // cargo: target/PROFILE/provisioner → target/TRIPLE/PROFILE/provisioner-agent (tests run
    // from target/PROFILE/deps/).
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let profile = dir.file_name().unwrap_or_default();
    let root = dir.parent().unwrap_or(dir).join(target.rust);
    // The agent is built --release for images (its size matters); a debug appliance takes it.
    let same = root.join(profile).join(AGENT_NAME);
    let release = root.join("release").join(AGENT_NAME);
    Ok(if !same.is_file() && release.is_file() {
        release
    } else {
        same
    })
}

/// A file for the initramfs: where it goes there, where it comes from here, its size.
#[derive(Clone, Debug)]
struct ImageInput {
    in_image: String,
    source: PathBuf,
    size: u64,
}

/// The agent as `/bin/provisioner-agent` and each library it needs: on the host's own
/// architecture as ldd resolves them, at their own paths; on another as its ELF headers name
/// them, from the cross sysroot, at the paths that architecture's loader searches. Refused if
/// together they pass `AGENT_LIMIT`.
fn agent_with_libraries(agent: &Path, target: &Target) -> Result<Vec<ImageInput>, BuildError> {
    if !agent.is_file() {
        return Err(BuildError::NoAgent {
            path: agent.to_path_buf(),
            arch: target.arch,
            hint: target.agent_hint(),
        });
    }
    let mut files = vec![ImageInput {
        in_image: format!("bin/{AGENT_NAME}"),
        source: agent.to_path_buf(),
        size: 0,
    }];
    if target.is_host() {
        for lib in ldd::libraries(agent)? {
            files.push(ImageInput {
                in_image: lib.display().to_string(),
                source: lib,
                size: 0,
            });
        }
    } else {
        let search = [target.sysroot_libs()];
        let lib_dir = format!("/lib/{}", target.triplet);
        for lib in needed::libraries(agent, target.machine, target.arch.name(), &search, &lib_dir)?
        {
            files.push(ImageInput {
                in_image: lib.in_image,
                source: lib.source,
                size: 0,
            });
        }
    }
    for f in &mut files {
        // metadata follows symlinks: the loader is often one, and its target is what's copied.
        f.size = std::fs::metadata(&f.source)
            .map_err(io_err(&f.source))?
            .len();
    }
    let size: u64 = files.iter().map(|f| f.size).sum();
    if size > AGENT_LIMIT {
        let files = files
            .iter()
            .map(|f| format!("{} {} bytes", f.source.display(), f.size))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(BuildError::AgentTooLarge {
            size,
            limit: AGENT_LIMIT,
            files,
        });
    }
    // An agent of another architecture would only show as a node that never reports.
    let bytes = std::fs::read(agent).map_err(io_err(agent))?;
    needed::dynamic_of(agent, &bytes, target.machine, target.arch.name())?;
    Ok(files)
}

fn agent_entry(agent: &Path, files: &[ImageInput]) -> Result<manifest::Agent, BuildError> {
    let (sha256, size) = sha256_file(agent).map_err(io_err(agent))?;
    Ok(manifest::Agent {
        size,
        sha256,
        libraries: files[1..]
            .iter()
            .map(|f| format!("/{}", f.in_image.trim_start_matches('/')))
            .collect(),
    })
}

fn image_file(path: &Path) -> Result<manifest::ImageFile, BuildError> {
    let (sha256, size) = sha256_file(path).map_err(io_err(path))?;
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    Ok(manifest::ImageFile { file, size, sha256 })
}

/// The unpacked kernel package.
struct Kernel {
    release: String,
    vmlinuz: PathBuf,
    /// `lib/modules/RELEASE`
    moddir: PathBuf,
}

impl Kernel {
    fn find(deb: &Deb, root: &Path) -> Result<Kernel, BuildError> {
        let bad = |what: &str| BuildError::BadPackage {
            deb: deb.path.clone(),
            what: what.to_string(),
        };
        let modules_root = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| root.join(d))
            .find(|d| d.is_dir())
            .ok_or_else(|| bad("lib/modules/"))?;
        let mut releases: Vec<String> = std::fs::read_dir(&modules_root)
            .map_err(io_err(&modules_root))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        releases.sort();
        let [release] = <[String; 1]>::try_from(releases)
            .map_err(|_| bad("single kernel release under lib/modules/"))?;
        let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
        if !vmlinuz.is_file() {
            return Err(bad(&format!("boot/vmlinuz-{release}")));
        }
        Ok(Kernel {
            moddir: modules_root.join(&release),
            release,
            vmlinuz,
        })
    }

    /// modules.dep (the package's, or one made from the modules themselves) and the load
    /// order for `requested`.
    fn load_order(&self, requested: &[String]) -> Result<(ModuleIndex, Vec<String>), BuildError> {
        let dep_file = self.moddir.join("modules.dep");
        let dep = if dep_file.is_file() {
            std::fs::read_to_string(&dep_file).map_err(io_err(&dep_file))?
        } else {
            modules::modules_dep_of_tree(&self.moddir)?
        };
        let index = modules::parse_modules_dep(&dep)?;
        let builtin_file = self.moddir.join("modules.builtin");
        let builtin = match std::fs::read_to_string(&builtin_file) {
            Ok(text) => modules::parse_builtin(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(io_err(&builtin_file)(e)),
        };
        let order = modules::load_order(&index, &builtin, requested)?;
        Ok((index, order))
    }
}

/// Everything but the agent and the modules: busybox, /init, the DHCP script, the
/// directories /init mounts on, and /dev/console for init's first output.
fn base_tree(busybox: &Path) -> Result<Tree, BuildError> {
    let mut tree = Tree::new();
    for dir in ["dev", "etc", "proc", "run", "sys", "tmp", "lib/modules"] {
        tree.dir(dir)?;
    }
    tree.char_device("dev/console", 0o600, 5, 1)?;
    tree.file("init", Source::Bytes(INIT.as_bytes().to_vec()), 0o755)?;
    tree.file("bin/busybox", Source::Path(busybox.to_path_buf()), 0o755)?;
    // /init's interpreter; it makes the other applets' links itself.
    tree.symlink("bin/sh", "busybox")?;
    let script = UDHCPC_SCRIPT.as_bytes().to_vec();
    tree.file("etc/udhcpc.script", Source::Bytes(script), 0o755)?;
    // udhcpc's own default, so a plain `udhcpc -i IFACE` applies the lease too.
    tree.symlink("usr/share/udhcpc/default.script", "/etc/udhcpc.script")?;
    Ok(tree)
}

/// `/lib/modules/NAME.ko` for each module and `/lib/modules/load-order` listing them.
fn add_modules(
    tree: &mut Tree,
    moddir: &Path,
    index: &ModuleIndex,
    order: &[String],
) -> Result<(), BuildError> {
    for name in order {
        let Some(module) = index.modules.get(name) else {
            continue;
        };
        let source = moddir.join(&module.path);
        if !module.path.ends_with(".ko") {
            return Err(BuildError::CompressedModule { path: source });
        }
        tree.file(
            &format!("lib/modules/{name}.ko"),
            Source::Path(source),
            0o644,
        )?;
    }
    let list = order.iter().map(|m| format!("{m}\n")).collect::<String>();
    tree.file(
        "lib/modules/load-order",
        Source::Bytes(list.into_bytes()),
        0o644,
    )?;
    Ok(())
}

/// Moves the built files from `work` into `out`, the manifest last: a folder with a
/// discovery.json holds a complete image.
fn publish(work: &Path, out: &Path, manifest: &DiscoveryManifest) -> Result<(), BuildError> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| BuildError::Io {
        path: work.join(MANIFEST),
        source: e.into(),
    })?;
    let staged = work.join(MANIFEST);
    std::fs::write(&staged, json).map_err(io_err(&staged))?;
    // An older manifest must not describe the new files while they are being replaced.
    let _ = std::fs::remove_file(out.join(MANIFEST));
    for name in ["vmlinuz", "initrd.img", MANIFEST] {
        let (from, to) = (work.join(name), out.join(name));
        if std::fs::rename(&from, &to).is_err() {
            // Another file system (`out` is a mount point): copy instead.
            std::fs::copy(&from, &to).map_err(io_err(&to))?;
        }
    }
    Ok(())
}
