//! The agent's command-line flags, parsed by hand: the binary goes into every discovery
//! image, and an argument parser would be most of its size.

use std::path::{Path, PathBuf};

pub const USAGE: &str = "\
usage: provisioner-agent [--once | --burn-in PLAN | --write-image PLAN --to DEVICE |
                          --installed RECORD | --verify-drivers SET [--kernel K]]
                         [--root DIR] [--cmdline FILE] [--really-power-off]

Reports this node's facts to the provisioning appliance named on the kernel command line
(provisioner.url, provisioner.mac, provisioner.token), then does what the appliance says.

  --once              print the facts as JSON on stdout and exit
  --burn-in PLAN      run the burn-in PLAN (a JSON file, as `provisioner burnin plan SKU`
                      prints it) on this machine, print the report as JSON on stdout and
                      exit; judge it with `provisioner burnin judge`. Nothing is sent
  --write-image PLAN  write the OS image of PLAN (an install plan as JSON, as the appliance
  --to DEVICE         gives it in `next`) to DEVICE, a disk or a file, as an install does:
                      wiped, mapped ranges only, read back, first MiB last. The plan's disk
                      is not checked: DEVICE is. Prints the summary as JSON; nothing is sent
  --installed RECORD  run as the installed system's agent: RECORD (the installer's
                      /etc/provisioner/node.json) names the appliance and holds the
                      node's credential; says what was booted, then does what the
                      appliance says (burn-in, reboot) and keeps checking in
  --verify-drivers SET  check the driver SET (JSON, as `provisioner drivers show SET`
                      prints it) on this system, or on the tree at --root DIR (an
                      image being built: packages, holds, modules; no live checks); prints
                      the report as JSON; exits 1 if a check failed
  --kernel K          the kernel release to check modules for (default: the running one, or
                      the one kernel under --root)
  --root DIR          read sysfs and procfs under DIR instead of / (a recorded tree); the
                      boot interface is then left alone, DIR not being this machine's
  --cmdline FILE      read the kernel command line from FILE instead of /proc/cmdline
  --really-power-off  power off or reboot when told to. Without it the agent does so only
                      from the initramfs or as PID 1; elsewhere it says what it would do
                      and exits
  --help              this text";

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub once: bool,
    pub burn_in: Option<PathBuf>,
    /// `--write-image PLAN --to DEVICE`.
    pub write_image: Option<(PathBuf, PathBuf)>,
    /// `--installed RECORD`.
    pub installed: Option<PathBuf>,
    /// `--verify-drivers SET`.
    pub verify_drivers: Option<PathBuf>,
    /// `--kernel K`.
    pub kernel: Option<String>,
    pub root: PathBuf,
    pub cmdline: PathBuf,
    pub really_power_off: bool,
    pub help: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            once: false,
            burn_in: None,
            write_image: None,
            installed: None,
            verify_drivers: None,
            kernel: None,
            root: PathBuf::from("/"),
            cmdline: PathBuf::from("/proc/cmdline"),
            really_power_off: false,
            help: false,
        }
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ArgsError {
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("--write-image and --to go together")]
    WriteImageAlone,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, ArgsError> {
        let mut options = Options::default();
        let (mut write_plan, mut write_to): (Option<PathBuf>, Option<PathBuf>) = (None, None);
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--once" => options.once = true,
                "--really-power-off" => options.really_power_off = true,
                "--help" | "-h" => options.help = true,
                "--burn-in" => {
                    options.burn_in = Some(
                        args.next()
                            .ok_or(ArgsError::MissingValue("--burn-in"))?
                            .into(),
                    )
                }
                "--write-image" => {
                    write_plan = Some(
                        args.next()
                            .ok_or(ArgsError::MissingValue("--write-image"))?
                            .into(),
                    )
                }
                "--to" => {
                    write_to = Some(args.next().ok_or(ArgsError::MissingValue("--to"))?.into())
                }
                "--installed" => {
                    options.installed = Some(
                        args.next()
                            .ok_or(ArgsError::MissingValue("--installed"))?
                            .into(),
                    )
                }
                "--verify-drivers" => {
                    options.verify_drivers = Some(
                        args.next()
                            .ok_or(ArgsError::MissingValue("--verify-drivers"))?
                            .into(),
                    )
                }
                "--kernel" => {
                    options.kernel = Some(args.next().ok_or(ArgsError::MissingValue("--kernel"))?)
                }
                "--root" => {
                    options.root = args.next().ok_or(ArgsError::MissingValue("--root"))?.into()
                }
                "--cmdline" => {
                    options.cmdline = args
                        .next()
                        .ok_or(ArgsError::MissingValue("--cmdline"))?
                        .into()
                }
                _ => return Err(ArgsError::Unknown(arg)),
            }
        }
        options.write_image = match (write_plan, write_to) {
            (Some(plan), Some(to)) => Some((plan, to)),
            (None, None) => None,
            _ => return Err(ArgsError::WriteImageAlone),
        };
        Ok(options)
    }

    /// Whether the facts come from this machine, whose interfaces the agent may configure.
    pub fn live(&self) -> bool {
        self.root == Path::new("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, ArgsError> {
        Options::parse(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn write_image_needs_its_device() {
        let o = parse(&["--write-image", "p.json", "--to", "/dev/vdb"]).unwrap();
        assert_eq!(
            o.write_image,
            Some((PathBuf::from("p.json"), PathBuf::from("/dev/vdb")))
        );
        assert_eq!(
            parse(&["--write-image", "p.json"]),
            Err(ArgsError::WriteImageAlone)
        );
        assert_eq!(parse(&["--to", "x"]), Err(ArgsError::WriteImageAlone));
        let o = parse(&["--installed", "/etc/provisioner/node.json"]).unwrap();
        assert_eq!(
            o.installed,
            Some(PathBuf::from("/etc/provisioner/node.json"))
        );
        assert_eq!(
            parse(&["--installed"]),
            Err(ArgsError::MissingValue("--installed"))
        );
        assert_eq!(
            parse(&["--write-image"]),
            Err(ArgsError::MissingValue("--write-image"))
        );
    }

    #[test]
    fn defaults_read_this_machine() {
        let options = parse(&[]).unwrap();
        assert_eq!(options, Options::default());
        assert!(options.live());
        assert!(!options.really_power_off);
    }

    #[test]
    fn flags_and_values() {
        let options = parse(&["--once", "--root", "tree", "--cmdline", "c.txt"]).unwrap();
        assert!(options.once);
        assert_eq!(options.root, PathBuf::from("tree"));
        assert_eq!(options.cmdline, PathBuf::from("c.txt"));
        assert!(!options.live());
        let options = parse(&["--burn-in", "plan.json"]).unwrap();
        assert_eq!(options.burn_in, Some(PathBuf::from("plan.json")));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(parse(&["--root"]), Err(ArgsError::MissingValue("--root")));
        assert_eq!(
            parse(&["--burn-in"]),
            Err(ArgsError::MissingValue("--burn-in"))
        );
        assert_eq!(
            parse(&["--onec"]),
            Err(ArgsError::Unknown("--onec".to_string()))
        );
    }
}
