use super::*;

/// A root with Debian's account files and a stray apt source, as the image has them.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let w = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    w(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n_chrony:x:100:101::/var/lib/chrony:/usr/sbin/nologin\n",
    );
    w("etc/shadow", "root:*:20423:0:99999:7:::\n");
    w("etc/group", "root:x:0:\nsudo:x:27:\nusers:x:100:\n");
    w("etc/gshadow", "root:*::\nsudo:*::\n");
    w(
        "etc/hosts",
        "127.0.0.1\tlocalhost\n127.0.1.1\tbuildhost\n::1\t\tlocalhost\n",
    );
    w(
        "etc/apt/sources.list.d/debian.sources",
        "Types: deb\nURIs: http://deb.debian.org/debian\n",
    );
    w("etc/apt/sources.list.d/keep.txt", "not a source\n");
    dir
}

fn first_boot(keys: &[&str]) -> FirstBoot {
    FirstBoot {
        hostname: "lab-r1-a01-u10".into(),
        ssh_authorized_keys: keys.iter().map(|k| k.to_string()).collect(),
        ntp: vec!["10.99.0.1".into()],
        apt_sources: vec![
            "deb [signed-by=/etc/apt/keyrings/provisioner-archive.asc] http://10.99.0.1:8080/repo cuda-580-1 main".into(),
        ],
        apt_keyring: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxjMEaQ==\n-----END PGP PUBLIC KEY BLOCK-----\n".into(),
        credential: "c".repeat(43),
    }
}

fn record() -> NodeRecord {
    NodeRecord {
        url: "http://10.99.0.1:8080".into(),
        mac: "52:54:00:99:00:00".parse().unwrap(),
        credential: "c".repeat(43),
        image: "debian12-hardened-1.0.0-x86_64".into(),
        raw_sha256: "ab".repeat(32),
        hostname: "lab-r1-a01-u10".into(),
    }
}

fn text(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel)).unwrap()
}

fn mode(root: &Path, rel: &str) -> u32 {
    fs::metadata(root.join(rel)).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_node_gets_its_name_its_record_and_only_the_sites_time_and_packages() {
    let dir = tree();
    let root = dir.path();
    let written = configure(root, &first_boot(&[]), &record(), 20_500).unwrap();
    assert!(written.contains(&"/etc/provisioner/node.json".to_string()));
    assert_eq!(text(root, "etc/hostname"), "lab-r1-a01-u10\n");
    let hosts = text(root, "etc/hosts");
    assert!(hosts.contains("127.0.1.1\tlab-r1-a01-u10\n"), "{hosts}");
    assert!(!hosts.contains("buildhost") && hosts.contains("127.0.0.1\tlocalhost"));

    let back: NodeRecord = serde_json::from_str(&text(root, RECORD)).unwrap();
    assert_eq!(back, record());
    assert_eq!(mode(root, RECORD), 0o600, "the credential is root's only");
    assert_eq!(mode(root, "etc/provisioner"), 0o700);

    let chrony = text(root, "etc/chrony/chrony.conf");
    assert!(chrony.contains("server 10.99.0.1 iburst\n"), "{chrony}");
    assert!(!chrony.contains("pool"), "no public pool: {chrony}");
    let apt = text(root, "etc/apt/sources.list");
    assert!(apt.contains(
        "deb [signed-by=/etc/apt/keyrings/provisioner-archive.asc] http://10.99.0.1:8080/repo cuda-580-1 main\n"
    ));
    assert!(text(root, APT_KEYRING).starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert!(!root.join("etc/apt/sources.list.d/debian.sources").exists());
    assert!(root.join("etc/apt/sources.list.d/keep.txt").exists());
    // No keys, no account.
    assert!(!text(root, "etc/passwd").contains("admin"));
    assert!(!root.join("etc/sudoers.d").exists());
}

#[test]
fn operator_keys_make_an_admin_account_once() {
    let dir = tree();
    let root = dir.path();
    let keys = [
        "ssh-ed25519 AAAAC3Nza one@ops",
        "ssh-ed25519 AAAAC3Nzb two@ops",
    ];
    configure(root, &first_boot(&keys), &record(), 20_500).unwrap();
    // Twice: a reinstall of a disk that kept its files must not add the account again.
    configure(root, &first_boot(&keys), &record(), 20_501).unwrap();
    let passwd = text(root, "etc/passwd");
    assert_eq!(
        passwd.lines().filter(|l| l.starts_with("admin:")).count(),
        1,
        "one account: {passwd}"
    );
    assert!(passwd.contains("admin:x:1000:1000:Provisioner operator:/home/admin:/bin/bash\n"));
    assert!(text(root, "etc/shadow").contains("admin:*:20500:0:99999:7:::\n"));
    let group = text(root, "etc/group");
    assert!(group.contains("sudo:x:27:admin\n"), "{group}");
    assert_eq!(group.matches("admin:x:1000:").count(), 1, "{group}");
    let gshadow = text(root, "etc/gshadow");
    assert!(gshadow.contains("sudo:*::admin\n") && gshadow.contains("admin:!::\n"));
    assert_eq!(
        text(root, "etc/ssh/authorized_keys/admin"),
        "ssh-ed25519 AAAAC3Nza one@ops\nssh-ed25519 AAAAC3Nzb two@ops\n"
    );
    let sshd = text(root, "etc/ssh/sshd_config.d/60-provisioner.conf");
    assert!(sshd.contains("AuthorizedKeysFile /etc/ssh/authorized_keys/%u"));
    assert_eq!(mode(root, "etc/sudoers.d/60-provisioner-admin"), 0o440);
    assert_eq!(mode(root, "etc/shadow"), 0o640);
    assert!(text(root, "etc/tmpfiles.d/provisioner-admin.conf").contains("d /home/admin 0700"));
}

#[test]
fn a_taken_id_is_skipped() {
    let dir = tree();
    let root = dir.path();
    let passwd = text(root, "etc/passwd") + "someone:x:1000:1000::/home/someone:/bin/sh\n";
    fs::write(root.join("etc/passwd"), passwd).unwrap();
    configure(root, &first_boot(&["ssh-ed25519 AAAA k"]), &record(), 1).unwrap();
    assert!(text(root, "etc/passwd").contains("admin:x:1001:1001:"));
}

#[test]
fn lines_that_would_inject_configuration_are_refused_before_anything_is_written() {
    for fb in [
        FirstBoot {
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA k\nadmin2 ALL".into()],
            ..first_boot(&[])
        },
        FirstBoot {
            ntp: vec!["10.0.0.1 iburst\npool evil.example".into()],
            ..first_boot(&[])
        },
        FirstBoot {
            hostname: "../../etc/x".into(),
            ..first_boot(&[])
        },
        FirstBoot {
            apt_sources: vec![" ".into()],
            ..first_boot(&[])
        },
        FirstBoot {
            apt_keyring: String::new(),
            ..first_boot(&[])
        },
    ] {
        let dir = tree();
        let err = configure(dir.path(), &fb, &record(), 1).unwrap_err();
        assert!(matches!(err, FirstBootError::Refused(_)), "{err}");
        assert!(!dir.path().join(RECORD).exists(), "nothing written: {err}");
        assert_eq!(
            text(dir.path(), "etc/hosts").matches("buildhost").count(),
            1
        );
    }
}
