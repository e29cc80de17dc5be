//! A real driver bundle: Debian 12's NVIDIA 535 driver (`nvidia-kernel-dkms` 535.261.03, its
//! GSP firmware, `nvidia-smi`) and the contrib and non-free packages it needs, carried in the
//! way an operator would carry a vendor's repository: Debian's signed `InRelease` for bookworm,
//! the `Packages` indexes it vouches for, and the `.deb` files under `pool/`. Fetched with
//! stock apt under a private configuration (the host's apt setup is not read or changed),
//! kept in `target/driver-bundle/` between runs, keyed by the set.
//!
//! Debian 12 packages only the proprietary module (`nvidia-open-kernel-dkms` is not in
//! bookworm): fine for the lab's set, whose SKU has no Blackwell GPU.

use std::path::{Path, PathBuf};

/// The set's packages at their versions: the driver and everything of contrib and non-free
/// it pulls in (main's come from the image's own Debian mirror).
pub const PACKAGES: &[(&str, &str)] = &[
    ("nvidia-kernel-dkms", "535.261.03-1"),
    ("nvidia-kernel-support", "535.261.03-1"),
    ("firmware-nvidia-gsp", "535.261.03-1"),
    ("nvidia-smi", "535.261.03-1"),
    ("libnvidia-ml1", "535.261.03-1"),
    ("nvidia-alternative", "535.261.03-1"),
    ("nvidia-legacy-check", "535.261.03-1"),
    ("nvidia-modprobe", "535.161.07-1~deb12u1"),
    ("nvidia-kernel-common", "20220217+3~deb12u1"),
    ("nvidia-installer-cleanup", "20220217+3~deb12u1"),
    ("glx-alternative-nvidia", "1.2.2"),
    ("glx-alternative-mesa", "1.2.2"),
    ("glx-diversions", "1.2.2"),
    ("update-glx", "1.2.2"),
];

pub const SET: &str = "debian-nvidia-535";
pub const SUITE: &str = "debian-nvidia-535-1";
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const COMPONENTS: [&str; 3] = ["contrib", "non-free", "non-free-firmware"];

/// `drivers.toml` with the lab's set for the `qemu-lab` SKU.
pub fn drivers_toml() -> String {
    let mut s = format!(
        "version = 1\n[set.{SET}]\ndescription = \"Debian 12's NVIDIA 535 driver: the virtual rack's real driver\"\nvendor = \"nvidia\"\ndriver = \"535.261.03\"\nsuite = \"{SUITE}\"\nfabric = \"none\"\nskus = [\"qemu-lab\"]\nmodules = [\"nvidia-current\", \"nvidia-current-uvm\"]\n[set.{SET}.packages]\n"
    );
    for (p, v) in PACKAGES {
        s.push_str(&format!("{p} = \"{v}\"\n"));
    }
    s
}

/// The bundle folder, fetched if it is not cached yet.
pub fn bundle() -> PathBuf {
    let cache = super::target_dir().join("driver-bundle");
    let dir = cache.join(SUITE);
    if dir.join("dists/bookworm/InRelease").is_file() {
        return dir;
    }
    let work = cache.join(format!("{SUITE}.partial"));
    let _ = std::fs::remove_dir_all(&work);
    // Stock apt, configured privately: the host's apt setup is not read or changed.
    let apt = super::vendor::Apt::new(
        &work.join("apt"),
        "http://deb.debian.org/debian bookworm main contrib non-free non-free-firmware",
        Path::new(KEYRING),
    );
    let (ok, said) = apt.get(&["update"]);
    assert!(ok, "apt-get update: {said}");
    let lists = apt.root.join("var/lib/apt/lists");
    let prefix = "deb.debian.org_debian_dists_bookworm_";
    let dists = work.join("bundle/dists/bookworm");
    std::fs::create_dir_all(&dists).unwrap();
    std::fs::copy(
        lists.join(format!("{prefix}InRelease")),
        dists.join("InRelease"),
    )
    .unwrap();
    for c in COMPONENTS {
        let to = dists.join(c).join("binary-amd64");
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(
            lists.join(format!("{prefix}{c}_binary-amd64_Packages")),
            to.join("Packages"),
        )
        .unwrap();
    }
    // Each package where its Filename puts it, as on the mirror.
    let fetch = apt.root.join("download");
    let wanted: Vec<String> = PACKAGES.iter().map(|(p, v)| format!("{p}={v}")).collect();
    let mut args = vec!["download"];
    args.extend(wanted.iter().map(String::as_str));
    let (ok, said) = apt.get(&args);
    assert!(ok, "apt-get download: {said}");
    for (p, v) in PACKAGES {
        let shown = apt.cache(&["show", &format!("{p}={v}")]);
        let filename = shown
            .lines()
            .find_map(|l| l.strip_prefix("Filename: "))
            .unwrap_or_else(|| panic!("no Filename for {p} {v}"))
            .to_string();
        let got = std::fs::read_dir(&fetch)
            .unwrap()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{p}_"))
            })
            .unwrap_or_else(|| panic!("apt-get download fetched no {p}"))
            .path();
        let to = work.join("bundle").join(&filename);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::rename(&got, &to).unwrap();
    }
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::rename(work.join("bundle"), &dir).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    dir
}
