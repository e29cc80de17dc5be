//! Vendor repositories built the way vendors build them, by tools that are not ours: GnuPG
//! keys and signatures, `dpkg-deb` packages, `dpkg-scanpackages` / `apt-ftparchive` indexes
//! and Releases. Flat like NVIDIA's CUDA repository, or `dists/` + `pool/` like AWS's Neuron
//! repository. And stock apt, configured privately, to read what the appliance publishes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What building vendor repositories and reading them with apt needs (program, package).
pub const TOOLS: &[(&str, &str)] = &[
    ("gpg", "gnupg"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-scanpackages", "dpkg-dev"),
    ("apt-ftparchive", "apt-utils"),
    ("apt-get", "apt"),
    ("curl", "curl"),
];

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vendor's signing key in a GnuPG home of its own.
pub struct VendorKey {
    pub home: PathBuf,
    /// The exported public key (binary, as vendors ship `*-keyring.gpg`).
    pub public: PathBuf,
    pub fingerprint: String,
    /// `--faked-system-time` for every signature (an expired key signs in the past).
    pub faked_time: Option<String>,
}

impl VendorKey {
    /// A new key: `algo` as GnuPG names it (`rsa3072`, `ed25519`), valid for `expire`
    /// (`1y`, `1d`), made at `faked_time` if given (`20261101T000000`).
    pub fn new(dir: &Path, uid: &str, algo: &str, expire: &str, faked_time: Option<&str>) -> Self {
        let home = dir.join(format!("gnupg-{}", uid.split_whitespace().next().unwrap()));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let mut gen_key = gpg(&home, faked_time);
        gen_key.args(["--quick-gen-key", uid, algo, "sign", expire]);
        run(&mut gen_key);
        let listing = run(gpg(&home, faked_time).args(["--with-colons", "--list-keys"]));
        let fingerprint = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("a fingerprint")
            .to_string();
        let public = dir.join(format!("{}.gpg", fingerprint));
        run(gpg(&home, faked_time)
            .args(["--export", "-o"])
            .arg(&public)
            .arg(&fingerprint));
        VendorKey {
            home,
            public,
            fingerprint,
            faked_time: faked_time.map(str::to_string),
        }
    }

    /// `gpg` in this key's home, non-interactive (with the key's faked time, if any).
    pub fn gpg(&self) -> Command {
        gpg(&self.home, self.faked_time.as_deref())
    }

    /// `InRelease` beside `release` (clear-signed).
    pub fn clearsign(&self, release: &Path) {
        let out = release.with_file_name("InRelease");
        let _ = std::fs::remove_file(&out);
        run(gpg(&self.home, self.faked_time.as_deref())
            .args(["--digest-algo", "SHA512", "--clearsign", "-o"])
            .arg(&out)
            .arg(release));
    }

    /// `Release.gpg` beside `release` (detached, armored).
    pub fn detach_sign(&self, release: &Path) {
        let out = release.with_file_name("Release.gpg");
        let _ = std::fs::remove_file(&out);
        run(gpg(&self.home, self.faked_time.as_deref())
            .args(["--digest-algo", "SHA512", "--armor", "--detach-sign", "-o"])
            .arg(&out)
            .arg(release));
    }
}

fn gpg(home: &Path, faked_time: Option<&str>) -> Command {
    let mut c = Command::new("gpg");
    c.arg("--homedir").arg(home).args([
        "--batch",
        "--yes",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    if let Some(t) = faked_time {
        c.args(["--faked-system-time", t, "--ignore-time-conflict"]);
    }
    c
}

/// One package to build.
#[derive(Clone, Debug)]
pub struct Pkg {
    pub name: &'static str,
    pub version: &'static str,
    pub arch: &'static str,
    pub depends: &'static str,
    /// A `postinst` (run chrootless under `DPKG_ROOT` in the tests); `@UPSTREAM@` becomes
    /// the upstream part of the version.
    pub postinst: &'static str,
    /// Empty files the package installs, besides its doc file.
    pub files: &'static [&'static str],
}

pub const fn pkg(name: &'static str, version: &'static str, depends: &'static str) -> Pkg {
    Pkg {
        name,
        version,
        arch: "amd64",
        depends,
        postinst: "",
        files: &[],
    }
}

/// Builds `p` into `dir` with `dpkg-deb`; returns the file. The payload is a small file
/// naming the package, so different versions differ.
pub fn build_deb(dir: &Path, p: &Pkg) -> PathBuf {
    let tree = dir.join(format!(".tree-{}-{}", p.name, p.version));
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    let doc = tree.join("usr/share/doc").join(p.name);
    std::fs::create_dir_all(&doc).unwrap();
    std::fs::write(doc.join("VERSION"), format!("{} {}\n", p.name, p.version)).unwrap();
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Test Vendor <vendor@example.test>\nDescription: synthetic {}\n",
        p.name, p.version, p.arch, p.name
    );
    if !p.depends.is_empty() {
        control.push_str(&format!("Depends: {}\n", p.depends));
    }
    std::fs::write(tree.join("DEBIAN/control"), control).unwrap();
    if !p.postinst.is_empty() {
        let upstream = p.version.rsplit_once('-').map_or(p.version, |(u, _)| u);
        let script = tree.join("DEBIAN/postinst");
        std::fs::write(&script, p.postinst.replace("@UPSTREAM@", upstream)).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    for f in p.files {
        let path = tree.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join(format!("{}_{}_{}.deb", p.name, p.version, p.arch));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&tree)
        .arg(&out));
    std::fs::remove_dir_all(&tree).unwrap();
    out
}

/// A flat repository in `dir` (CUDA's layout): the packages, `Packages` and `Packages.gz`
/// by `dpkg-scanpackages`, `Release` by `apt-ftparchive`, signed by `key` as `InRelease`
/// (`inrelease`) or `Release.gpg`. `edit` may change the Release text before it is signed.
pub fn flat_repo(
    dir: &Path,
    pkgs: &[Pkg],
    key: &VendorKey,
    inrelease: bool,
    edit: impl Fn(String) -> String,
) {
    for p in pkgs {
        build_deb(dir, p);
    }
    let packages = run(Command::new("dpkg-scanpackages")
        .args(["--multiversion", ".", "/dev/null"])
        .current_dir(dir));
    std::fs::write(dir.join("Packages"), &packages).unwrap();
    run(Command::new("gzip")
        .args(["-9kn", "Packages"])
        .current_dir(dir));
    release(dir, "cuda", key, inrelease, edit);
}

/// A `dists/SUITE/` + `pool/` repository in `dir` (Neuron's layout).
pub fn dists_repo(
    dir: &Path,
    suite: &str,
    pkgs: &[Pkg],
    key: &VendorKey,
    inrelease: bool,
    edit: impl Fn(String) -> String,
) {
    for p in pkgs {
        let first = &p.name[..1];
        build_deb(&dir.join("pool/main").join(first).join(p.name), p);
    }
    let binary = dir.join("dists").join(suite).join("main/binary-amd64");
    std::fs::create_dir_all(&binary).unwrap();
    let packages = run(Command::new("apt-ftparchive")
        .args(["packages", "pool"])
        .current_dir(dir));
    std::fs::write(binary.join("Packages"), &packages).unwrap();
    run(Command::new("gzip")
        .args(["-9kn", "Packages"])
        .current_dir(&binary));
    // Debian's and reprepro's mirrors keep an unsigned Release per component and architecture,
    // which the signed one lists.
    std::fs::write(
        binary.join("Release"),
        format!("Archive: {suite}\nComponent: main\nArchitecture: amd64\n"),
    )
    .unwrap();
    release(&dir.join("dists").join(suite), suite, key, inrelease, edit);
}

fn release(
    dir: &Path,
    suite: &str,
    key: &VendorKey,
    inrelease: bool,
    edit: impl Fn(String) -> String,
) {
    let text = run(Command::new("apt-ftparchive")
        .args([
            "-o",
            "APT::FTPArchive::Release::Origin=Test Vendor",
            "-o",
            &format!("APT::FTPArchive::Release::Suite={suite}"),
            "-o",
            "APT::FTPArchive::Release::Architectures=amd64",
            "release",
            ".",
        ])
        .current_dir(dir));
    std::fs::write(dir.join("Release"), edit(text)).unwrap();
    if inrelease {
        key.clearsign(&dir.join("Release"));
    } else {
        key.detach_sign(&dir.join("Release"));
    }
}

/// Stock apt with a configuration of its own in `root`: nothing of the host's apt setup is
/// read (APT_CONFIG), and its only source is `source`, checked with `keyring`.
pub struct Apt {
    pub root: PathBuf,
    config: PathBuf,
}

impl Apt {
    pub fn new(root: &Path, source: &str, keyring: &Path) -> Self {
        for d in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
            "var/log/apt",
            "download",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
        std::fs::write(
            root.join("etc/apt/sources.list"),
            format!("deb [signed-by={}] {source}\n", keyring.display()),
        )
        .unwrap();
        let config = root.join("apt.conf");
        std::fs::write(
            &config,
            format!(
                "Dir \"{r}/\";\nDir::State::status \"{r}/var/lib/dpkg/status\";\nAPT::Architecture \"amd64\";\nAPT::Architectures {{ \"amd64\"; }};\nAcquire::Languages \"none\";\nAPT::Sandbox::User \"root\";\nDebug::NoLocking \"true\";\nAcquire::Retries \"0\";\nAcquire::http::Timeout \"20\";\n",
                r = root.display()
            ),
        )
        .unwrap();
        Apt {
            root: root.to_path_buf(),
            config,
        }
    }

    /// Makes apt install into `root` itself, as into an image's tree: dpkg runs with
    /// `--root` and maintainer scripts run chrootless, with `DPKG_ROOT` set.
    pub fn installing_into_root(self) -> Self {
        let mut conf = std::fs::read_to_string(&self.config).unwrap();
        conf.push_str(&format!(
            "DPkg::Options {{ \"--root={r}\"; \"--force-script-chrootless\"; \"--force-not-root\"; }};\nDPkg::Use-Pty \"false\";\n",
            r = self.root.display()
        ));
        std::fs::write(&self.config, conf).unwrap();
        self
    }

    /// `apt-mark ARGS` with this configuration.
    pub fn mark(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("apt-mark")
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C")
            .args(args)
            .output()
            .expect("run apt-mark");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// `apt-cache ARGS` with this configuration: what it printed (it must succeed).
    pub fn cache(&self, args: &[&str]) -> String {
        run(Command::new("apt-cache")
            .env("APT_CONFIG", &self.config)
            .args(args))
    }

    /// `apt-get ARGS`: whether it succeeded, and what it said.
    pub fn get(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("apt-get")
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C")
            .args(["-q", "-y"])
            .args(args)
            .current_dir(self.root.join("download"))
            .output()
            .expect("run apt-get");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}
