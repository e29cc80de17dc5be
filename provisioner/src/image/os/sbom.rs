//! The image's package list as an SBOM: SPDX 2.3 JSON (the format of ISO/IEC 5962, read by
//! the scanners a security team runs: Trivy, Grype, Dependency-Track), one package per
//! installed Debian package with its Package URL, made from the image's own dpkg status file.

use serde::{Deserialize, Serialize};
use serde_json::json;

/// One installed package, as dpkg's status file records it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub source: Option<String>,
    pub maintainer: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SbomError {
    #[error("dpkg status paragraph {0} has no {1}")]
    Missing(usize, &'static str),
    #[error("the dpkg status lists no installed package")]
    Empty,
}

/// The packages whose `Status` is `install ok installed`, sorted by name.
pub fn parse_status(text: &str) -> Result<Vec<InstalledPackage>, SbomError> {
    let mut out = Vec::new();
    for (i, para) in text.split("\n\n").enumerate() {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        if para.trim().is_empty() {
            continue;
        }
        if field("Status").as_deref() != Some("install ok installed") {
            continue;
        }
        let name = field("Package").ok_or(SbomError::Missing(i, "Package"))?;
        out.push(InstalledPackage {
            version: field("Version").ok_or(SbomError::Missing(i, "Version"))?,
            architecture: field("Architecture").ok_or(SbomError::Missing(i, "Architecture"))?,
            // `Source: name (version)` when the source version differs.
            source: field("Source").map(|s| s.split(' ').next().unwrap_or(&s).to_string()),
            maintainer: field("Maintainer"),
            name,
        });
    }
    if out.is_empty() {
        return Err(SbomError::Empty);
    }
    out.sort();
    Ok(out)
}

/// Characters SPDX allows in an SPDXID: letters, digits, `.` and `-`.
fn spdx_id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Package URL (purl) of a Debian package: `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12`.
pub fn purl(p: &InstalledPackage, distro: &str) -> String {
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace(':', "%3A")
            .replace('+', "%2B")
    };
    let mut q = format!("arch={}&distro={distro}", p.architecture);
    if let Some(src) = &p.source
        && src != &p.name
    {
        q += &format!("&upstream={}", enc(src));
    }
    format!("pkg:deb/debian/{}@{}?{q}", p.name, enc(&p.version))
}

/// The SPDX 2.3 document for an image named `image`, created at `created` (RFC 3339, the
/// build's SOURCE_DATE_EPOCH so the document is as reproducible as the image).
pub fn spdx(
    image: &str,
    distro: &str,
    created: &str,
    tool: &str,
    packages: &[InstalledPackage],
) -> serde_json::Value {
    let root_id = format!("SPDXRef-Image-{}", spdx_id_part(image));
    let mut spdx_packages = vec![json!({
        "SPDXID": root_id,
        "name": image,
        "versionInfo": image,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "Organization: provisioner appliance",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": root_id,
    })];
    for p in packages {
        let id = format!(
            "SPDXRef-Package-deb-{}-{}",
            spdx_id_part(&p.name),
            spdx_id_part(&p.architecture)
        );
        let supplier = p
            .maintainer
            .as_deref()
            .map(|m| format!("Organization: {}", m.replace(['(', ')'], "")))
            .unwrap_or_else(|| "NOASSERTION".to_string());
        spdx_packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "supplier": supplier,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(p, distro),
            }],
        }));
        relationships.push(json!({
            "spdxElementId": root_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image,
        "documentNamespace": format!("https://provisioner.invalid/spdx/{image}"),
        "creationInfo": { "created": created, "creators": [format!("Tool: {tool}")] },
        "packages": spdx_packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nPriority: optional\n\
Architecture: amd64\nMulti-Arch: same\nSource: glibc\nVersion: 2.36-9+deb12u13\n\
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>\nDescription: GNU C Library\n two lines\n\n\
Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n\
Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u13\n";

    #[test]
    fn installed_packages_only_sorted_by_name() {
        let p = parse_status(STATUS).unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "libc6"]);
        assert_eq!(p[1].source.as_deref(), Some("glibc"));
        assert_eq!(
            parse_status("Package: x\nStatus: purge ok not-installed\n"),
            Err(SbomError::Empty)
        );
        assert!(matches!(
            parse_status("Package: x\nStatus: install ok installed\n"),
            Err(SbomError::Missing(0, "Version"))
        ));
    }

    #[test]
    fn every_package_is_in_the_spdx_document_with_its_purl() {
        let p = parse_status(STATUS).unwrap();
        let doc = spdx(
            "img-1-x86_64",
            "debian-12",
            "2025-12-01T00:00:00Z",
            "provisioner-0.1.0",
            &p,
        );
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        let pkgs = doc["packages"].as_array().unwrap();
        assert_eq!(pkgs.len(), 3);
        let libc = &pkgs[2];
        assert_eq!(libc["SPDXID"], "SPDXRef-Package-deb-libc6-amd64");
        assert_eq!(
            libc["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u13?arch=amd64&distro=debian-12&upstream=glibc"
        );
        assert_eq!(doc["relationships"].as_array().unwrap().len(), 3);
    }
}
