//! `provisioner image build RECIPE`: Debian packages (mmdebstrap) into a root tree, the agent
//! and first-boot units, the hardening profile, then a raw GPT disk image made without
//! mounting anything (sfdisk, mkfs.ext4 -d, mkfs.vfat and mtools at offsets in one file, GRUB
//! cores by grub-mkimage), zstd, a block map and a signed manifest. Every time, UUID and seed
//! comes from the recipe, so the same recipe and package versions give the same sha256.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::disk;
use super::layout::{self, Mount, Table, Want};
use super::manifest::{self, FileDigest, ImageManifest};
use super::recipe::{Arch, Firmware, Recipe};
use super::sbom;
use super::steps::{StepError, Steps};
use super::tree;
use crate::image::hardening::Profile;
use crate::keys::ApplianceKey;

#[derive(Debug, thiserror::Error)]
pub enum OsBuildError {
    #[error(transparent)]
    Recipe(#[from] super::recipe::RecipeError),
    #[error(transparent)]
    Hardening(#[from] crate::image::hardening::HardeningError),
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(
        "no agent binary for {arch} at {path} (build it with `cargo build --release -p provisioner-agent{target}`, or name it with --agent)"
    )]
    NoAgent {
        arch: Arch,
        path: PathBuf,
        target: &'static str,
    },
    #[error("{path} is not an {arch} executable")]
    AgentArch { path: PathBuf, arch: Arch },
}

/// What to build and where.
#[derive(Clone, Debug)]
pub struct OsBuildOptions {
    pub recipe: PathBuf,
    pub arch: Arch,
    /// Replaces the recipe's mirror (a local mirror or apt cache proxy).
    pub mirror: Option<String>,
    /// The build folder: work tree, raw image, log. Default `DATA_DIR/builds/NAME`.
    pub out: PathBuf,
    pub data_dir: PathBuf,
    /// Downloaded packages (`os-debs/ARCH/`) and the graders' content, kept between builds.
    pub cache_dir: PathBuf,
    pub agent: Option<PathBuf>,
    /// Skip the OpenSCAP and Lynis grade (the manifest then says it was not graded).
    pub grade: bool,
    /// Keep `OUT/work` (the root tree and its per-filesystem split) after the build, to see
    /// what went into each filesystem or to compare two builds file by file.
    pub keep_work: bool,
    pub quiet: bool,
    /// A driver set to build into the image (resolved against its suite).
    pub drivers: Option<super::drivers::DriverBuild>,
}

/// A finished build: its folder, its manifest, and how long it took.
#[derive(Clone, Debug)]
pub struct OsBuilt {
    pub dir: PathBuf,
    pub manifest: ImageManifest,
    pub seconds: f64,
}

/// The number of steps `build` announces.
const STEPS: usize = 11;

pub fn build(opts: &OsBuildOptions) -> Result<OsBuilt, OsBuildError> {
    let recipe = Recipe::load(&opts.recipe)?;
    recipe.arch(opts.arch)?;
    let name = match &opts.drivers {
        Some(d) => recipe.image_name_with(opts.arch, &d.set.name),
        None => recipe.image_name(opts.arch),
    };
    let profile = match &recipe.build.hardening {
        Some(p) => Some(Profile::load(&super::recipe::find_profile(p)?)?),
        None => None,
    };
    let agent = agent_binary(opts)?;
    let key = ApplianceKey::load_or_create(&opts.data_dir)?;
    std::fs::create_dir_all(&opts.out).map_err(|source| StepError::Io {
        step: "start".into(),
        what: format!("cannot create {}", opts.out.display()),
        source,
    })?;
    let total = STEPS + usize::from(opts.drivers.is_some());
    let mut steps = Steps::open(&opts.out.join("build.log"), total, opts.quiet)?;
    let work = opts.out.join("work");
    let result = build_in(
        &mut steps,
        opts,
        &recipe,
        &name,
        profile.as_ref(),
        &agent,
        &key,
        &work,
    );
    // The work tree is a gigabyte; the log stays, and the error names it.
    if !opts.keep_work {
        let _ = tree::remove_all(&work);
    }
    let (manifest, seconds) = result?;
    Ok(OsBuilt {
        dir: opts.out.clone(),
        manifest,
        seconds,
    })
}

#[allow(clippy::too_many_arguments)]
fn build_in(
    steps: &mut Steps,
    opts: &OsBuildOptions,
    recipe: &Recipe,
    name: &str,
    profile: Option<&Profile>,
    agent: &Path,
    key: &ApplianceKey,
    work: &Path,
) -> Result<(ImageManifest, f64), OsBuildError> {
    let arch = opts.arch;
    let arch_recipe = recipe.arch(arch)?;
    let epoch = recipe.build.epoch;
    let root = work.join("root");
    tree::remove_all(work).map_err(steps.io(format!("cannot clear {}", work.display())))?;
    std::fs::create_dir_all(work).map_err(steps.io(format!("cannot create {}", work.display())))?;

    steps.begin(&format!(
        "bootstrap {name} from {} (mmdebstrap)",
        recipe.base.suite
    ));
    let mut packages: Vec<String> = recipe.packages.clone();
    packages.push(arch_recipe.kernel.clone());
    packages.extend(arch_recipe.bootloader.iter().cloned());
    if let Some(p) = profile {
        packages.extend(p.packages_add());
    }
    let cache = opts.cache_dir.join("os-debs").join(&arch_recipe.debian);
    let mirror = opts
        .mirror
        .clone()
        .unwrap_or_else(|| recipe.base.mirror.clone());
    tree::bootstrap(
        steps,
        recipe,
        &arch_recipe.debian,
        &mirror,
        &packages,
        &cache,
        &root,
        opts.drivers.as_ref(),
    )?;

    if let Some(d) = &opts.drivers {
        steps.begin(&format!(
            "driver set {} from suite {} (checked by the agent)",
            d.set.name, d.set.suite
        ));
        super::drivers::verify_tree(steps, agent, &d.set, &root, work)?;
    }

    steps.begin("agent, first-boot units and identity left to the node");
    tree::install_agent(steps, recipe, agent, &root)?;
    tree::leave_identity_to_first_boot(steps, &root)?;

    steps.begin(&match profile {
        Some(p) => format!("hardening profile {}", p.name),
        None => "no hardening profile".to_string(),
    });
    if let Some(p) = profile {
        let applied = p.apply(&root)?;
        steps.note(&format!(
            "{} files written, {} permissions set, {} commands run, answering {} rules",
            applied.files.len(),
            applied.permissions.len(),
            applied.commands,
            applied.rules.len()
        ));
    }
    tree::drop_build_records(steps, &root)?;

    steps.begin("partition table, fstab and bootloader configuration");
    let mounts: Vec<Mount> = profile
        .map(|p| {
            p.mounts()
                .iter()
                .map(|m| Mount {
                    path: m.path.clone(),
                    size_mib: m.size_mib,
                    options: m.options.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let table = layout::plan(&Want {
        seed: name,
        arch,
        disk_mib: recipe.build.disk_size_mib,
        bios_boot_mib: arch_recipe
            .firmware
            .contains(&Firmware::Bios)
            .then_some(recipe.layout.bios_boot_mib),
        esp_mib: recipe.layout.esp_mib,
        mounts: &mounts,
        root_min_mib: recipe.layout.root_min_mib,
        root_options: &recipe.layout.root_options,
    })?;
    let cmdline = kernel_cmdline(recipe, arch_recipe.console.as_str(), profile, &table);
    let extra_fstab: Vec<String> = profile
        .map(|p| {
            p.fstab()
                .iter()
                .map(|l| format!("{} {} {} {} 0 0", l.spec, l.path, l.fstype, l.options))
                .collect()
        })
        .unwrap_or_default();
    tree::write_boot_config(
        steps,
        recipe,
        &arch_recipe.console,
        &cmdline,
        &table,
        &extra_fstab,
        &root,
    )?;
    let kernel = tree::kernel_info(steps, &root, &cmdline)?;

    steps.begin("package list (SPDX 2.3 SBOM)");
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status"))
        .map_err(steps.io("cannot read the image's dpkg status"))?;
    let installed = sbom::parse_status(&status).map_err(|e| steps.check(e.to_string()))?;
    let created = manifest::rfc3339(epoch);
    let tool = format!("provisioner-{}", env!("CARGO_PKG_VERSION"));
    let doc = sbom::spdx(name, "debian-12", &created, &tool, &installed);
    let sbom_path = opts.out.join(format!("{name}.spdx.json"));
    let sbom_text = serde_json::to_string_pretty(&doc).map_err(|e| steps.check(e.to_string()))?;
    std::fs::write(&sbom_path, sbom_text + "\n").map_err(steps.io("cannot write the SBOM"))?;
    steps.note(&format!("{} packages", installed.len()));

    steps.begin("grade (OpenSCAP, Lynis)");
    let grade = if opts.grade {
        let g = crate::image::grade::grade(
            &root,
            &crate::image::grade::GradeOptions::new(&opts.cache_dir),
        )
        .map_err(|e| steps.check(format!("grading failed: {e}")))?;
        steps.note(&manifest::grade_summary(&g));
        Some(g)
    } else {
        steps.note("skipped (--no-grade)");
        None
    };

    steps.begin("file times clamped, tree split into its filesystems");
    tree::clamp_times(&root, epoch).map_err(steps.io("cannot clamp file times"))?;
    // GRUB's modules, before /usr may go to its own filesystem.
    let grub_lib = work.join("grub-lib");
    tree::copy_tree(&root.join("usr/lib/grub"), &grub_lib)
        .map_err(steps.io("cannot copy GRUB's modules"))?;
    let sources =
        tree::split(&root, work, &table, epoch).map_err(steps.io("cannot split the tree"))?;

    steps.begin(&format!(
        "{} MiB raw disk: GPT and filesystems",
        recipe.build.disk_size_mib
    ));
    let raw = opts.out.join(format!("{name}.raw"));
    disk::create(steps, &raw, &table, &sources, epoch)?;

    steps.begin(&format!(
        "bootloader ({})",
        firmware_names(&arch_recipe.firmware)
    ));
    disk::install_grub(
        steps,
        &raw,
        &table,
        arch,
        &arch_recipe.firmware,
        &grub_lib,
        &work.join("grub"),
        epoch,
    )?;

    steps.begin(&format!("compress (zstd -{})", recipe.build.zstd_level));
    let zst = opts.out.join(format!("{name}.raw.zst"));
    let _ = std::fs::remove_file(&zst);
    steps.pipe(
        Command::new("zstd")
            .args(["-q", "-T0", &format!("-{}", recipe.build.zstd_level), "-o"])
            .arg(&zst),
        &raw,
    )?;

    steps.begin("block map (bmaptool), manifest and signature");
    let bmap = opts.out.join(format!("{name}.bmap"));
    let _ = std::fs::remove_file(&bmap);
    steps.run(
        Command::new("bmaptool")
            .args(["create", "-o"])
            .arg(&bmap)
            .arg(&raw),
    )?;
    let mapped = manifest::mapped_bytes(&bmap).map_err(|e| steps.check(e))?;
    let seconds = steps.finish();
    let digest =
        |p: &Path| FileDigest::of(p).map_err(steps.io(format!("cannot hash {}", p.display())));
    let m = ImageManifest {
        format: manifest::FORMAT,
        name: name.to_string(),
        recipe: recipe.name.clone(),
        recipe_version: recipe.version.clone(),
        architecture: arch,
        firmware: arch_recipe.firmware.clone(),
        source_date_epoch: epoch,
        raw: digest(&raw)?,
        compressed: digest(&zst)?,
        bmap: digest(&bmap)?,
        mapped_bytes: mapped,
        sbom: digest(&sbom_path)?,
        packages: installed.len(),
        kernel,
        partitions: table.partitions.clone(),
        disk_guid: table.disk_guid.clone(),
        hardening: profile.map(|p| p.name.clone()),
        grade,
        build_seconds: seconds,
        drivers: opts.drivers.as_ref().map(|d| d.set.clone()),
    };
    manifest::write_signed(&opts.out, &m, key).map_err(|e| steps.check(e.to_string()))?;
    Ok((m, seconds))
}

fn firmware_names(f: &[Firmware]) -> String {
    f.iter()
        .map(|f| match f {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI",
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// root by PARTUUID, the consoles, the hardening profile's parameters, the recipe's.
fn kernel_cmdline(
    recipe: &Recipe,
    console: &str,
    profile: Option<&Profile>,
    table: &Table,
) -> String {
    let mut words = vec![
        format!("root=PARTUUID={}", table.root().partuuid.to_lowercase()),
        "console=tty0".to_string(),
        format!("console={console}"),
    ];
    if let Some(p) = profile {
        words.extend(p.kernel_cmdline());
    }
    words.extend(recipe.kernel.cmdline.iter().cloned());
    words.join(" ")
}

/// The agent for the image's architecture: `--agent`, else where the discovery builder
/// finds it (beside this executable, or cargo's cross-build folder).
fn agent_binary(opts: &OsBuildOptions) -> Result<PathBuf, OsBuildError> {
    let target = crate::image::Target::of(opts.arch);
    let no_agent = |path: PathBuf| OsBuildError::NoAgent {
        arch: opts.arch,
        path,
        target: if target.is_host() {
            ""
        } else {
            " --target aarch64-unknown-linux-gnu"
        },
    };
    let path = match &opts.agent {
        Some(p) => p.clone(),
        None => crate::image::default_agent(&target)
            .map_err(|_| no_agent(PathBuf::from(crate::image::AGENT_NAME)))?,
    };
    let bytes = std::fs::read(&path).map_err(|_| no_agent(path.clone()))?;
    let machine = object::read::File::parse(&*bytes).map(|f| object::Object::architecture(&f));
    let ok = matches!(
        (opts.arch, machine),
        (Arch::X86_64, Ok(object::Architecture::X86_64))
            | (Arch::Arm64, Ok(object::Architecture::Aarch64))
    );
    if !ok {
        return Err(OsBuildError::AgentArch {
            path,
            arch: opts.arch,
        });
    }
    Ok(path)
}
