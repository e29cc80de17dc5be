//! An OS image recipe (`images/NAME.toml`, format 1): the base, the packages, the kernel and
//! bootloader of each architecture, the hardening profile, the partition layout and the
//! agent. Parsed strictly: an unknown key is an error, so a typo cannot silently build a
//! different image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The recipe format this build understands.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read the recipe {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid recipe: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: recipe format {found} is not the {FORMAT} this build reads")]
    Format { path: PathBuf, found: u32 },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("no recipe {name}: looked for {tried}")]
    NotFound { name: String, tried: String },
    #[error("recipe {recipe} has no architecture {arch} (it has: {have})")]
    NoArch {
        recipe: String,
        arch: Arch,
        have: String,
    },
}

/// A node architecture: the one the boot plane reads from kernel headers, so an image and
/// the discovery image of a node name it alike (`x86_64`, `arm64`).
pub use crate::boot::KernelArch as Arch;

/// How a firmware finds the bootloader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    /// Legacy BIOS (SeaBIOS): MBR boot code and GRUB's core in a BIOS boot partition.
    Bios,
    /// UEFI (OVMF, AAVMF): GRUB at the ESP's removable path.
    Uefi,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub format: u32,
    pub name: String,
    pub version: String,
    pub description: String,
    pub packages: Vec<String>,
    pub base: Base,
    pub build: Build,
    pub arch: BTreeMap<Arch, ArchRecipe>,
    pub kernel: Kernel,
    pub layout: Layout,
    pub agent: AgentRecipe,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub distribution: String,
    pub suite: String,
    pub mirror: String,
    pub security_mirror: Option<String>,
    pub variant: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// SOURCE_DATE_EPOCH: every time in the image.
    pub epoch: u64,
    pub disk_size_mib: u64,
    pub zstd_level: i32,
    /// `images/hardening/NAME.toml`.
    pub hardening: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchRecipe {
    /// Debian's name for it (`amd64`, `arm64`).
    pub debian: String,
    pub kernel: String,
    pub bootloader: Vec<String>,
    pub firmware: Vec<Firmware>,
    pub console: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    pub cmdline: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub esp_mib: u64,
    pub bios_boot_mib: u64,
    pub root_min_mib: u64,
    pub root_options: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecipe {
    pub path: String,
    pub unit: String,
}

/// A package name as Debian allows it (policy 5.6.1), so nothing else reaches a command line.
fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// A name that can be a file name and part of a URL.
pub fn is_image_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl Recipe {
    /// Reads and checks a recipe file.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Recipe::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Recipe, RecipeError> {
        #[derive(Deserialize)]
        struct Head {
            format: Option<u32>,
        }
        let parse_err = |e: toml::de::Error| RecipeError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let head: Head = toml::from_str(text).map_err(parse_err)?;
        let found = head.format.unwrap_or(0);
        if found != FORMAT {
            return Err(RecipeError::Format {
                path: path.to_path_buf(),
                found,
            });
        }
        let recipe: Recipe = toml::from_str(text).map_err(parse_err)?;
        recipe.check().map_err(|what| RecipeError::Invalid {
            path: path.to_path_buf(),
            what,
        })?;
        Ok(recipe)
    }

    fn check(&self) -> Result<(), String> {
        if !is_image_name(&self.name) {
            return Err(format!("name {:?} is not a plain name", self.name));
        }
        if !is_image_name(&self.version) {
            return Err(format!("version {:?} is not a plain version", self.version));
        }
        let mut names: Vec<&String> = self.packages.iter().collect();
        for a in self.arch.values() {
            names.push(&a.kernel);
            names.extend(&a.bootloader);
            if !is_package_name(&a.debian) {
                return Err(format!("architecture name {:?} is not Debian's", a.debian));
            }
            if a.firmware.is_empty() {
                return Err("an architecture boots on no firmware".into());
            }
        }
        if let Some(bad) = names.iter().find(|p| !is_package_name(p)) {
            return Err(format!("{bad:?} is not a Debian package name"));
        }
        if self.arch.is_empty() {
            return Err("no [arch.*] table: the recipe builds for no architecture".into());
        }
        for url in std::iter::once(&self.base.mirror).chain(&self.base.security_mirror) {
            if !(url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with("file:/"))
                || url.chars().any(|c| c.is_whitespace())
            {
                return Err(format!("mirror {url:?} is not an http(s) or file URL"));
            }
        }
        if !is_package_name(&self.base.suite) || !is_package_name(&self.base.variant) {
            return Err("suite and variant must be plain names".into());
        }
        if let Some(h) = &self.build.hardening
            && !is_image_name(h)
        {
            return Err(format!("hardening profile {h:?} is not a plain name"));
        }
        if !(1..=19).contains(&self.build.zstd_level) {
            return Err(format!(
                "zstd_level {} is not 1..=19",
                self.build.zstd_level
            ));
        }
        if self.layout.esp_mib < 40 {
            // FAT32 with 512-byte clusters needs 65,525 clusters.
            return Err("esp_mib under 40 cannot hold a FAT32 filesystem".into());
        }
        if !self.agent.path.starts_with("/usr/") || !is_image_name(&self.agent.unit) {
            return Err("the agent goes under /usr and its unit needs a plain name".into());
        }
        let cmdline_ok = |s: &String| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic());
        if !self.kernel.cmdline.iter().all(cmdline_ok) {
            return Err("a kernel parameter is empty or has spaces or control characters".into());
        }
        Ok(())
    }

    /// The recipe's part for one architecture.
    pub fn arch(&self, arch: Arch) -> Result<&ArchRecipe, RecipeError> {
        self.arch.get(&arch).ok_or_else(|| RecipeError::NoArch {
            recipe: self.name.clone(),
            arch,
            have: self
                .arch
                .keys()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The name the built image goes by: `debian12-hardened-1.0.0-x86_64`.
    pub fn image_name(&self, arch: Arch) -> String {
        format!("{}-{}-{}", self.name, self.version, arch)
    }

    /// The name of the image with driver set `set` built in.
    pub fn image_name_with(&self, arch: Arch, set: &str) -> String {
        format!("{}-{}-{set}-{}", self.name, self.version, arch)
    }
}

/// Finds `RECIPE`: a path to a `.toml` file, or a name in `images/` beside the executable's
/// workspace or the current directory.
pub fn find(name_or_path: &str) -> Result<PathBuf, RecipeError> {
    let direct = PathBuf::from(name_or_path);
    if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
        return Ok(direct);
    }
    let file = format!("{name_or_path}.toml");
    let candidates = images_dirs().into_iter().map(|d| d.join(&file));
    let tried: Vec<PathBuf> = candidates.collect();
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| RecipeError::NotFound {
            name: name_or_path.to_string(),
            tried: tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The hardening profile `NAME`: `images/hardening/NAME.toml` where recipes are found.
pub fn find_profile(name: &str) -> Result<PathBuf, RecipeError> {
    let file = format!("{name}.toml");
    let tried: Vec<PathBuf> = images_dirs()
        .into_iter()
        .map(|d| d.join("hardening").join(&file))
        .collect();
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| RecipeError::NotFound {
            name: format!("hardening profile {name}"),
            tried: tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Where recipes and hardening profiles are looked for: `./images`, then the source tree this
/// binary was built from.
pub fn images_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("images")];
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
    if built_from.is_dir() {
        dirs.push(built_from);
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../../images/debian12-hardened.toml");

    fn shipped() -> Recipe {
        Recipe::parse(Path::new("debian12-hardened.toml"), SHIPPED).unwrap()
    }

    #[test]
    fn the_shipped_recipe_builds_both_architectures() {
        let r = shipped();
        assert_eq!(r.name, "debian12-hardened");
        assert_eq!(r.arch(Arch::X86_64).unwrap().debian, "amd64");
        assert_eq!(r.arch(Arch::Arm64).unwrap().firmware, vec![Firmware::Uefi]);
        assert_eq!(
            r.arch(Arch::X86_64).unwrap().firmware,
            vec![Firmware::Bios, Firmware::Uefi]
        );
        assert_eq!(r.image_name(Arch::Arm64), "debian12-hardened-1.0.0-arm64");
    }

    #[test]
    fn a_typo_or_a_wrong_format_is_refused_with_the_file_named() {
        let typo = SHIPPED.replace("zstd_level", "zstd_levle");
        let e = Recipe::parse(Path::new("r.toml"), &typo).unwrap_err();
        assert!(
            e.to_string().contains("r.toml") && e.to_string().contains("zstd_levle"),
            "{e}"
        );
        let v2 = SHIPPED.replace("format = 1", "format = 2");
        assert!(matches!(
            Recipe::parse(Path::new("r.toml"), &v2),
            Err(RecipeError::Format { found: 2, .. })
        ));
    }

    #[test]
    fn nothing_but_package_names_reaches_a_command_line() {
        for evil in ["\"--root=/\"", "\"a b\"", "\"x;rm\"", "\"Upper\""] {
            let text = SHIPPED.replace("\"sudo\"", evil);
            let e = Recipe::parse(Path::new("r.toml"), &text).unwrap_err();
            assert!(matches!(e, RecipeError::Invalid { .. }), "{evil}: {e}");
        }
        let text = SHIPPED.replace("http://deb.debian.org/debian\"", "ftp://x\"");
        assert!(Recipe::parse(Path::new("r.toml"), &text).is_err());
    }

    #[test]
    fn architectures_parse_in_both_spellings() {
        assert_eq!("amd64".parse::<Arch>(), Ok(Arch::X86_64));
        assert_eq!("aarch64".parse::<Arch>(), Ok(Arch::Arm64));
        assert!("riscv64".parse::<Arch>().is_err());
        let only_x86 = SHIPPED.split("[arch.arm64]").next().unwrap().to_string()
            + &SHIPPED[SHIPPED.find("[kernel]").unwrap()..];
        let r = Recipe::parse(Path::new("r.toml"), &only_x86).unwrap();
        let e = r.arch(Arch::Arm64).unwrap_err();
        assert!(e.to_string().contains("x86_64"), "{e}");
    }
}
