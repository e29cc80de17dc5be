//! `provisioner lab` as the install lab tests run it: the hardened image and the discovery
//! image built for the lab's appliance, a lab over a folder (a second one over the same folder
//! is a power cycle), and what the tests read back from its summary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{appliance, firmware_dir, read, target_dir, wait_for};

/// The tools the install lab tests need besides [`super::IMAGE_TOOLS`], with their packages.
pub const INSTALL_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu"),
    ("ssh-keygen", "openssh-client"),
    ("nft", "nftables"),
];

/// The lab, stopped with SIGINT (it then removes its namespace and nodes) if the test ends
/// while it still runs.
pub struct LabProcess(pub std::process::Child);

impl Drop for LabProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            if wait_for(Duration::from_secs(30), || self.0.try_wait().ok().flatten()).is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
}

/// The images an install lab needs, built under `tmp`.
pub struct Images {
    /// The hardened image's name, in the lab appliance's library (`tmp/lab/data`).
    pub name: String,
    /// `vmlinuz` and `initrd.img` of the discovery image.
    pub discovery: PathBuf,
}

/// What every install lab test starts from: its tools checked (see [`super::require`]), a
/// temporary folder, and the images built for the lab over `TMP/lab` ([`build_images`]).
pub fn prepare() -> Option<(tempfile::TempDir, Images)> {
    super::require(super::IMAGE_TOOLS);
    super::require(INSTALL_TOOLS);
    let tmp = tempfile::tempdir().unwrap();
    let images = build_images(tmp.path())?;
    Some((tmp, images))
}

/// The hardened x86_64 image for the lab that will run over `tmp/lab`, and the discovery
/// image. The hardened image is built once per appliance and agent build (a folder under
/// target/os-image-cache/lab-images named by both binaries' sha256, the packages cached
/// beside it) and imported into each lab's library after its appliance trusts the builder's
/// key, as an operator carries an image from a staging appliance: CI builds it once for all
/// the install lab tests. `None` (skipped, said why) where the agent cannot be built.
pub fn build_images(tmp: &Path) -> Option<Images> {
    let agent = super::agent_binary()?;
    let built = hardened_image(&agent);
    let lab_data = tmp.join("lab/data");
    // The lab's appliance serves the driver suite the image was built from, as the site's
    // appliance would: its nodes' apt sources name it.
    import_driver_bundle(&lab_data);
    let public = tmp.join("builder.pub");
    let key = super::cli(&built.join("data"), &["key", "show"]) + "\n";
    std::fs::write(&public, key).unwrap();
    super::cli(&lab_data, &["key", "trust", public.to_str().unwrap()]);
    super::cli(
        &lab_data,
        &["image", "import", built.join("out").to_str().unwrap()],
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(built.join("out/image.json")).unwrap()).unwrap();
    let discovery = tmp.join("discovery");
    let out = Command::new(appliance())
        .args(["image", "build-discovery", "--out"])
        .arg(&discovery)
        .arg("--data-dir")
        .arg(tmp.join("discovery-data"))
        .arg("--agent")
        .arg(&agent)
        .arg("--deb-cache")
        .arg(target_dir().join("debs"))
        .output()
        .expect("run provisioner image build-discovery");
    assert!(
        out.status.success(),
        "build-discovery failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Images {
        name: manifest["name"].as_str().unwrap().to_string(),
        discovery,
    })
}

/// A rack plan at `tmp/plan.csv` with one slot per lab node (by MAC, in tap order), each
/// installing `image` on the disk `hints[i]` chooses.
pub fn plan(tmp: &Path, image: &str, hints: &[&str]) -> PathBuf {
    let mut csv = String::from("site,row,rack,u,serial,mac,sku,image,root_device\n");
    for (i, hint) in hints.iter().enumerate() {
        csv.push_str(&format!(
            "lab,r1,a01,{},,52:54:00:99:00:{i:02x},qemu-lab,{image},{hint}\n",
            10 + 2 * i
        ));
    }
    let path = tmp.join("plan.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Trusts Debian's archive key and imports the real driver bundle (Debian 12's NVIDIA 535,
/// [`super::debian_driver`]) into the appliance whose data is `data`: suite
/// `debian-nvidia-535-1`.
pub fn import_driver_bundle(data: &Path) {
    let bundle = super::debian_driver::bundle();
    super::cli(data, &["repo", "trust", super::debian_driver::KEYRING]);
    let said = super::cli(
        data,
        &[
            "repo",
            "import",
            bundle.to_str().unwrap(),
            "--name",
            "debian-nvidia-535",
        ],
    );
    assert!(said.contains(super::debian_driver::SUITE), "{said}");
}

/// `drivers.toml` with the lab's driver set, and a configuration naming it, in `dir`.
pub fn drivers_config(dir: &Path) -> PathBuf {
    let drivers = dir.join("drivers.toml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&drivers, super::debian_driver::drivers_toml()).unwrap();
    let config = dir.join("drivers-provisioner.toml");
    std::fs::write(
        &config,
        format!(
            "[lifecycle]\ndrivers = {:?}\n",
            drivers.display().to_string()
        ),
    )
    .unwrap();
    config
}

/// The folder (`data/`, `out/`) where the hardened image of this appliance and `agent`, with
/// the lab's driver set (Debian 12's NVIDIA 535, built by DKMS for the image's kernel), was
/// built, building it if it is not there; older builds are removed.
fn hardened_image(agent: &Path) -> PathBuf {
    let cache = target_dir().join("os-image-cache");
    let root = cache.join("lab-images");
    let key = super::sha256(Path::new(appliance()))[..16].to_string()
        + "-"
        + &super::sha256(agent)[..16]
        + "-"
        + super::debian_driver::SET;
    let dir = root.join(&key);
    if dir.join("out/image.json").is_file() {
        eprintln!(
            "MEASURED image build: none, built before ({})",
            dir.display()
        );
        return dir;
    }
    std::fs::create_dir_all(&root).unwrap();
    for old in std::fs::read_dir(&root).unwrap().flatten() {
        let _ = std::fs::remove_dir_all(old.path());
    }
    // Built beside, then renamed: a build cut short is never taken for a whole one.
    let partial = root.join(format!("{key}.partial"));
    import_driver_bundle(&partial.join("data"));
    let config = drivers_config(&partial);
    let started = Instant::now();
    let built = Command::new(appliance())
        .args(["image", "build", "debian12-hardened", "--arch", "x86_64"])
        .args(["--drivers", super::debian_driver::SET, "--config"])
        .arg(&config)
        .arg("--agent")
        .arg(agent)
        .arg("--data-dir")
        .arg(partial.join("data"))
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--out")
        .arg(partial.join("out"))
        .output()
        .expect("run provisioner image build");
    assert!(
        built.status.success(),
        "image build failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    eprintln!(
        "MEASURED image build: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    std::fs::rename(&partial, &dir).unwrap();
    dir
}

/// A configuration with an operator's SSH key (made with ssh-keygen under `tmp`) and the
/// lab's driver sets.
pub fn operator_config(tmp: &Path) -> PathBuf {
    let key = tmp.join("operator");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "operator@lab", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    // The lab's driver set: its SKU's nodes install only an image built with it.
    let drivers = tmp.join("drivers.toml");
    std::fs::write(&drivers, super::debian_driver::drivers_toml()).unwrap();
    let config = tmp.join("provisioner.toml");
    std::fs::write(
        &config,
        format!(
            "[lifecycle]\nssh_authorized_keys = [{:?}]\ndrivers = {:?}\n",
            public.trim(),
            drivers.display().to_string()
        ),
    )
    .unwrap();
    config
}

/// One `provisioner lab` over `dir`.
pub struct LabRun<'a> {
    pub dir: &'a Path,
    pub images: &'a Images,
    pub plan: &'a Path,
    pub config: &'a Path,
    /// `--node` specs, in tap order.
    pub nodes: &'a [&'a str],
    pub until: &'a str,
    pub limit: u64,
}

impl LabRun<'_> {
    /// Starts the lab; [`Self::finish`] waits for it.
    pub fn start(&self) -> LabProcess {
        let out = self.dir.with_extension("out");
        let file = std::fs::File::create(&out).unwrap();
        let mut cmd = Command::new(appliance());
        cmd.args(["lab", "--timeout", &self.limit.to_string(), "--dir"])
            .arg(self.dir)
            .arg("--firmware-dir")
            .arg(firmware_dir())
            .arg("--discovery-kernel")
            .arg(self.images.discovery.join("vmlinuz"))
            .arg("--discovery-initrd")
            .arg(self.images.discovery.join("initrd.img"))
            .arg("--plan")
            .arg(self.plan)
            .args(["--until", self.until]);
        for spec in self.nodes {
            cmd.args(["--node", spec]);
        }
        cmd.env("PROVISIONER_CONFIG", self.config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        LabProcess(cmd.spawn().expect("start provisioner lab"))
    }

    /// Waits for the lab to end (every node showed `until` or powered off), which must be a
    /// success; its summary.
    pub fn finish(&self, mut lab: LabProcess) -> serde_json::Value {
        let status = wait_for(Duration::from_secs(self.limit + 120), || {
            lab.0.try_wait().ok().flatten()
        });
        let text = read(&self.dir.with_extension("out"));
        assert!(
            status.is_some_and(|s| s.success()),
            "provisioner lab failed or overran:\n{text}\n{}",
            read(&self.dir.join("appliance.log"))
        );
        serde_json::from_slice(&std::fs::read(self.dir.join("summary.json")).unwrap()).unwrap()
    }

    pub fn run(&self) -> serde_json::Value {
        let lab = self.start();
        self.finish(lab)
    }
}

/// Whether a sparse file holds any data at all (SEEK_DATA finds none in a file never written).
pub fn never_written(path: &Path) -> bool {
    let f = std::fs::File::open(path).unwrap();
    matches!(
        nix::unistd::lseek(&f, 0, nix::unistd::Whence::SeekData),
        Err(nix::errno::Errno::ENXIO)
    )
}

/// The states a node's timeline went through, repeats folded.
pub fn states(api: &serde_json::Value) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for t in api["timeline"].as_array().unwrap() {
        let to = t["to"].as_str().unwrap().to_string();
        if seen.last() != Some(&to) {
            seen.push(to);
        }
    }
    seen
}

/// Sovereignty: every packet node `i` sent went to the appliance or stayed on the segment
/// (ARP, link-local multicast); none to any other destination.
pub fn only_to_the_appliance(summary: &serde_json::Value, i: usize) {
    let t = &summary[i]["traffic"];
    eprintln!("MEASURED node {i} traffic: {t}");
    assert!(
        t["to_appliance"].as_u64().is_some_and(|n| n > 0),
        "node {i}: no packets counted: {t}"
    );
    assert_eq!(
        t["elsewhere"], 0,
        "node {i} sent packets to destinations other than the appliance: {t}"
    );
}

/// Each phase's time from node `i`'s timeline (power-on to the first state, then state to
/// state), printed; power-on to the last state in seconds.
pub fn phases(summary: &serde_json::Value, i: usize) -> f64 {
    let node = &summary[i];
    let on = node["powered_on_ms"].as_i64().unwrap();
    let mut last = on;
    let mut phases = Vec::new();
    for t in node["api"]["timeline"].as_array().unwrap() {
        let at = t["at_ms"].as_i64().unwrap();
        phases.push(format!(
            "{} +{:.0} s",
            t["to"].as_str().unwrap(),
            (at - last) as f64 / 1000.0
        ));
        last = at;
    }
    let total = (last - on) as f64 / 1000.0;
    eprintln!(
        "MEASURED node {i} ({}): power-on to {} {total:.0} s; {}",
        node["firmware"],
        node["api"]["state"]["state"],
        phases.join(", ")
    );
    total
}

/// The PID in `DIR/NAME.pid` the lab wrote (the appliance's, or a node's QEMU).
pub fn pid(dir: &Path, name: &str) -> nix::unistd::Pid {
    let text = read(&dir.join(format!("{name}.pid")));
    nix::unistd::Pid::from_raw(text.trim().parse().expect("a PID the lab wrote"))
}
