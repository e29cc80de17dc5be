//! Installing through the API, in process on the appliance's router: an inspected node whose
//! plan row (or SKU) names an imported image goes to installing on its own; the root device
//! hints choose exactly one of its disks or fail it naming the candidates; its agent is told
//! the image's URLs (served, with the digests the instruction names), the disk and a fresh
//! credential; a node that boots again before its disk is written starts over in the
//! discovery image; a written disk makes it boot its disk; a failed write fails it with the
//! stage and the numbers; a retired or reprovisioned node's agent wipes the disk it was given
//! at its next discovery boot, and a retired one is then only told to stay off.

mod common;

use common::images::{NAME, staged_image};
use common::inproc::App;
use serde_json::{Value, json};
use sha2::Digest;

const ROW_IMAGE: &str = "52:54:00:1a:00:01";
const TWO_MATCH: &str = "52:54:00:1a:00:02";
const NO_IMAGE: &str = "52:54:00:1a:00:03";
const FAILS: &str = "52:54:00:1a:00:04";
const INCOMPLETE: &str = "52:54:00:1a:00:05";

fn plan() -> String {
    format!(
        "site,row,rack,u,serial,mac,sku,image,root_device
lab,r1,a01,10,,{ROW_IMAGE},qemu-lab,{NAME},serial=DISK-B
lab,r1,a01,11,,{TWO_MATCH},qemu-lab,{NAME},size=>=10
lab,r1,a01,12,,{NO_IMAGE},qemu-lab,,
lab,r1,a01,13,,{FAILS},qemu-lab,{NAME},
lab,r1,a01,14,,{INCOMPLETE},qemu-lab,{NAME},
"
    )
}

/// The appliance with the plan and the small signed image imported into its library.
fn start() -> App {
    App::seeded(
        &plan(),
        |data| {
            let staged = data.join("../staged");
            staged_image(data, &staged);
            provisioner::image::os::library::import(data, &staged).expect("the image imports");
        },
        "",
    )
}

/// What the agent reports: 2 GiB, one NIC, two disks with serials.
fn facts(mac: &str) -> Value {
    let mut f = common::inproc::lab_facts(mac);
    f.cpu.arch = Some("x86_64".into());
    for (name, gib, serial) in [("vda", 20u64, "DISK-A"), ("vdb", 40, "DISK-B")] {
        f.disks.push(provisioner_protocol::Disk {
            name: name.into(),
            size_bytes: gib << 30,
            serial: Some(serial.into()),
            ..Default::default()
        });
    }
    serde_json::to_value(f).unwrap()
}

fn next(f: &App, token: &str, mac: &str) -> Value {
    let auth = format!("Bearer {token}");
    let r = f.call(
        "GET",
        &format!("/api/v1/agent/next?mac={mac}"),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn node(f: &App, mac: &str) -> Value {
    f.get_json(&format!("/api/v1/nodes/{mac}"))
}

fn script(f: &App, mac: &str) -> String {
    f.get(&format!("/boot/{}.ipxe", mac.replace(':', "-"))).body
}

fn install_report(f: &App, token: &str, mac: &str, outcome: Value) -> (u16, String) {
    let body = json!({
        "mac": mac, "image": NAME, "outcome": outcome,
        "written_bytes": 200_000, "received_bytes": 1_000, "seconds": 1.5
    });
    let r = f.post_json(
        provisioner_protocol::PATH_INSTALL,
        Some(token),
        &body.to_string(),
    );
    (r.status, r.body)
}

/// GET a URL of the instruction on the router: its body's sha256.
fn sha_of_url(f: &App, url: &str) -> String {
    let path = url
        .strip_prefix("http://10.99.0.1:8080")
        .unwrap_or_else(|| panic!("{url} is not under the address the agent reached"));
    let r = f.get(path);
    assert_eq!(r.status, 200, "{url}");
    // Bodies are read as text by the harness: only the small test files go through here.
    hex::encode(sha2::Sha256::digest(r.body.as_bytes()))
}

#[test]
fn an_inspected_node_with_an_image_is_installed_on_the_disk_its_hints_choose() {
    let f = start();
    let token = f.boot(ROW_IMAGE);
    let r = f.report(Some(&token), ROW_IMAGE, &facts(ROW_IMAGE));
    assert_eq!(r.status, 202, "{}", r.body);
    let n = node(&f, ROW_IMAGE);
    assert_eq!(n["state"]["state"], "installing", "{n}");
    assert_eq!(n["state"]["written"], false);
    let causes: Vec<&str> = n["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["cause"].as_str().unwrap())
        .collect();
    assert!(
        causes
            .iter()
            .any(|c| c.contains(NAME) && c.contains("vdb") && c.contains("serial=DISK-B")),
        "{causes:?}"
    );

    // The instruction: the image and its block map under the address the agent reached, the
    // disk the hints chose, first-boot settings and a credential made for this instruction.
    let i = next(&f, &token, ROW_IMAGE);
    assert_eq!(i["action"], "install", "{i}");
    let plan = &i["plan"];
    assert_eq!(plan["image"], NAME);
    assert_eq!(plan["disk"]["name"], "vdb");
    assert_eq!(plan["disk"]["serial"], "DISK-B");
    assert_eq!(plan["first_boot"]["hostname"], "lab-r1-a01-u10");
    assert_eq!(plan["first_boot"]["ntp"], json!(["10.99.0.1"]));
    let credential = plan["first_boot"]["credential"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(credential.len(), 64);
    assert_eq!(
        sha_of_url(&f, plan["bmap_url"].as_str().unwrap()),
        plan["bmap_sha256"].as_str().unwrap()
    );
    let image = f.get(
        plan["url"]
            .as_str()
            .unwrap()
            .strip_prefix("http://10.99.0.1:8080")
            .unwrap(),
    );
    assert_eq!(image.status, 200);
    assert_eq!(
        image.headers["etag"].to_str().unwrap().trim_matches('"'),
        plan["sha256"].as_str().unwrap(),
        "the image is served under its digest"
    );
    let again = next(&f, &token, ROW_IMAGE);
    assert_ne!(
        again["plan"]["first_boot"]["credential"].as_str().unwrap(),
        credential,
        "each instruction makes a new credential"
    );

    // It boots again before its disk is written (a power loss): the discovery image again,
    // with a new token, and the same install.
    let script1 = script(&f, ROW_IMAGE);
    assert!(script1.contains("provisioner.token="), "{script1}");
    let token = f.boot(ROW_IMAGE);
    assert_eq!(next(&f, &token, ROW_IMAGE)["action"], "install");

    // Written and read back: it boots its disk from now on, and is told to reboot.
    let (code, body) = install_report(&f, &token, ROW_IMAGE, json!({ "result": "written" }));
    assert_eq!(code, 202, "{body}");
    let n = node(&f, ROW_IMAGE);
    assert_eq!(n["state"]["written"], true, "{n}");
    assert_eq!(next(&f, &token, ROW_IMAGE)["action"], "reboot");
    let local = script(&f, ROW_IMAGE);
    assert!(
        local.contains("boots from its own disk") && !local.contains("provisioner.token"),
        "{local}"
    );
    // A second report of the same write changes nothing.
    let (code, body) = install_report(&f, &token, ROW_IMAGE, json!({ "result": "written" }));
    assert_eq!(code, 409, "{body}");
    // Nor does a forged token.
    let (code, _) = install_report(&f, "forged", ROW_IMAGE, json!({ "result": "written" }));
    assert_eq!(code, 401);
}

#[test]
fn hints_that_match_two_disks_fail_the_node_naming_both() {
    let f = start();
    let token = f.boot(TWO_MATCH);
    let r = f.report(Some(&token), TWO_MATCH, &facts(TWO_MATCH));
    assert_eq!(r.status, 202, "{}", r.body);
    let n = node(&f, TWO_MATCH);
    assert_eq!(n["state"]["state"], "failed", "{n}");
    assert_eq!(n["state"]["step"], "installing");
    let reason = n["state"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("vda") && reason.contains("vdb") && reason.contains("DISK-A"),
        "{reason}"
    );
    assert_eq!(next(&f, &token, TWO_MATCH)["action"], "power_off");
}

#[test]
fn a_node_without_an_image_stays_inspected_and_powers_off_saying_why() {
    let f = start();
    let token = f.boot(NO_IMAGE);
    let r = f.report(Some(&token), NO_IMAGE, &facts(NO_IMAGE));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(node(&f, NO_IMAGE)["state"]["state"], "inspected");
    let i = next(&f, &token, NO_IMAGE);
    assert_eq!(i["action"], "power_off", "{i}");
    let why = i["reason"].as_str().unwrap();
    assert!(
        why.contains("no OS image") && why.contains("qemu-lab"),
        "{why}"
    );
    // Powered on again, it boots the discovery image, and its agent is told the same.
    let token = f.boot(NO_IMAGE);
    let i = next(&f, &token, NO_IMAGE);
    assert_eq!(i["action"], "power_off", "{i}");
    assert_eq!(node(&f, NO_IMAGE)["state"]["state"], "inspected");
}

#[test]
fn a_failed_write_fails_the_node_with_the_stage_and_the_numbers() {
    let f = start();
    let token = f.boot(FAILS);
    let r = f.report(Some(&token), FAILS, &facts(FAILS));
    assert_eq!(r.status, 202, "{}", r.body);
    // No hints: the smallest disk of at least 4 GiB.
    assert_eq!(next(&f, &token, FAILS)["plan"]["disk"]["name"], "vda");
    let why = "read-back of range 0-1 MiB: sha256 00 expected 11";
    let (code, body) = install_report(
        &f,
        &token,
        FAILS,
        json!({ "result": "failed", "stage": "read-back", "reason": why }),
    );
    assert_eq!(code, 202, "{body}");
    let n = node(&f, FAILS);
    assert_eq!(n["state"]["state"], "failed");
    assert_eq!(n["state"]["step"], "installing");
    let reason = n["state"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("read-back") && reason.contains(why),
        "{reason}"
    );
    let s = script(&f, FAILS);
    assert!(!s.contains("provisioner.token"), "a failed node waits: {s}");
}

/// Boots, reports and writes `mac`'s disk; returns the boot's token and the credential its
/// installed system got.
fn written(f: &App, mac: &str) -> (String, String) {
    let token = f.boot(mac);
    let r = f.report(Some(&token), mac, &facts(mac));
    assert_eq!(r.status, 202, "{}", r.body);
    let i = next(f, &token, mac);
    assert_eq!(i["action"], "install");
    let (code, body) = install_report(f, &token, mac, json!({ "result": "written" }));
    assert_eq!(code, 202, "{body}");
    let credential = i["plan"]["first_boot"]["credential"].as_str().unwrap();
    (token, credential.to_string())
}

/// The installed system's first call, with `auth` as its bearer.
fn installed(f: &App, auth: &str, mac: &str, kernel: &str) -> (u16, String) {
    let m: Value = serde_json::from_slice(
        &std::fs::read(f.data().join(format!("images/os/{NAME}/image.json"))).unwrap(),
    )
    .unwrap();
    let body = json!({ "mac": mac, "image": NAME, "raw_sha256": m["raw"]["sha256"],
        "kernel_release": kernel });
    let r = f.post_json(
        provisioner_protocol::PATH_INSTALLED,
        Some(auth),
        &body.to_string(),
    );
    (r.status, r.body)
}

#[test]
fn the_installed_system_reports_with_its_own_credential_and_then_burns_in() {
    let f = start();
    let (token, credential) = written(&f, ROW_IMAGE);
    // The discovery boot's token is not the installed system's.
    let (code, body) = installed(&f, &token, ROW_IMAGE, "6.1.0-0-amd64");
    assert!(code == 401 || code == 409, "{code} {body}");
    // Another node's MAC with this credential is refused.
    let (code, body) = installed(&f, &credential, NO_IMAGE, "6.1.0-0-amd64");
    assert_eq!(code, 403, "{body}");
    // Asking next before saying what it booted: told to say it first.
    assert_eq!(next(&f, &credential, ROW_IMAGE)["action"], "wait");
    let (code, body) = installed(&f, &credential, ROW_IMAGE, "6.1.0-0-amd64");
    assert_eq!(code, 202, "{body}");
    let n = node(&f, ROW_IMAGE);
    assert_eq!(n["state"]["state"], "burning_in", "{n}");
    // Its burn-in is asked for with the same credential, from its own disk.
    assert_eq!(next(&f, &credential, ROW_IMAGE)["action"], "burn_in");
    assert!(script(&f, ROW_IMAGE).contains("boots from its own disk"));
}

#[test]
fn an_enrolled_installed_system_checks_in_and_is_neither_rebooted_nor_reinstalled() {
    let f = start();
    let (_, credential) = written(&f, ROW_IMAGE);
    let (code, body) = installed(&f, &credential, ROW_IMAGE, "6.1.0-0-amd64");
    assert_eq!(code, 202, "{body}");
    assert_eq!(next(&f, &credential, ROW_IMAGE)["action"], "burn_in");
    // The qemu-lab SKU's burn-in: one disk read, well over its 10 MB/s.
    let report = json!({ "mac": ROW_IMAGE, "devices": [{
        "id": "vdb", "kind": "disk", "measurements": {
            "sequential_read": { "value": 180.0, "unit": "MB/s", "attempt": 1 } },
        "counters": {}, "xids": [] }] });
    let r = f.post_json(
        provisioner_protocol::PATH_BURNIN,
        Some(&credential),
        &report.to_string(),
    );
    assert!(
        r.status == 200 || r.status == 202,
        "{} {}",
        r.status,
        r.body
    );
    let n = node(&f, ROW_IMAGE);
    assert_eq!(n["state"]["state"], "enrolled", "{n}");
    for _ in 0..3 {
        let i = next(&f, &credential, ROW_IMAGE);
        assert_eq!(i["action"], "wait", "{i}");
        assert!(i["reason"].as_str().unwrap().contains("enrolled"), "{i}");
    }
    assert_eq!(node(&f, ROW_IMAGE)["state"]["state"], "enrolled");
    // Powered on again, it boots its disk, not the installer, and says so: taken, and it
    // stays enrolled with nothing refused.
    assert!(script(&f, ROW_IMAGE).contains("boots from its own disk"));
    let (code, body) = installed(&f, &credential, ROW_IMAGE, "6.1.0-0-amd64");
    assert_eq!(code, 202, "{body}");
    let n = node(&f, ROW_IMAGE);
    assert_eq!(n["state"]["state"], "enrolled", "{n}");
    assert_eq!(n["refusals"].as_array().map_or(0, Vec::len), 0, "{n}");
}

#[test]
fn an_installed_system_that_booted_another_kernel_fails_naming_both() {
    let f = start();
    let (_, credential) = written(&f, ROW_IMAGE);
    let (code, body) = installed(&f, &credential, ROW_IMAGE, "6.1.0-99-amd64");
    assert_eq!(code, 202, "{body}");
    let n = node(&f, ROW_IMAGE);
    assert_eq!(n["state"]["state"], "failed", "{n}");
    let reason = n["state"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("6.1.0-99-amd64") && reason.contains("6.1.0-0-amd64"),
        "{reason}"
    );
}

#[test]
fn a_credential_stops_standing_when_the_node_is_retired() {
    let f = start();
    let admin = f.cli(&["token", "create", "alice"]);
    let (_, credential) = written(&f, ROW_IMAGE);
    act(&f, &admin, ROW_IMAGE, "retire");
    let (code, body) = installed(&f, &credential, ROW_IMAGE, "6.1.0-0-amd64");
    assert_eq!(code, 401, "{body}");
}

fn act(f: &App, admin: &str, mac: &str, action: &str) {
    let r = f.post_json(
        &format!("/api/v1/nodes/{mac}/actions"),
        Some(admin),
        &json!({ "action": action }).to_string(),
    );
    assert!((200..300).contains(&r.status), "{action}: {}", r.body);
}

#[test]
fn a_retired_node_boots_once_more_to_wipe_the_disk_it_was_given_then_stays_off() {
    let f = start();
    let admin = f.cli(&["token", "create", "alice"]);
    written(&f, ROW_IMAGE);
    act(&f, &admin, ROW_IMAGE, "retire");
    let n = node(&f, ROW_IMAGE);
    assert_eq!(
        n["state"],
        json!({ "state": "retired", "wiped": false }),
        "{n}"
    );

    // Its next network boot: the discovery image, whose agent is told to wipe that disk.
    let token = f.boot(ROW_IMAGE);
    let i = next(&f, &token, ROW_IMAGE);
    assert_eq!(i["action"], "wipe", "{i}");
    assert_eq!(i["disk"]["name"], "vdb");
    assert_eq!(i["disk"]["serial"], "DISK-B");
    assert_eq!(i["image"], NAME);

    // A failed wipe is not asked again in this boot; the node is told to power off, saying so.
    let (code, body) = install_report(
        &f,
        &token,
        ROW_IMAGE,
        json!({ "result": "failed", "stage": "wipe", "reason": "EIO at 0" }),
    );
    assert_eq!(code, 202, "{body}");
    let i = next(&f, &token, ROW_IMAGE);
    assert_eq!(i["action"], "power_off", "{i}");
    assert!(i["reason"].as_str().unwrap().contains("EIO at 0"), "{i}");
    assert_eq!(node(&f, ROW_IMAGE)["state"]["wiped"], false);

    // The next boot tries again, and a wipe done ends it: only "stay off" from then on.
    let token = f.boot(ROW_IMAGE);
    assert_eq!(next(&f, &token, ROW_IMAGE)["action"], "wipe");
    let (code, body) = install_report(&f, &token, ROW_IMAGE, json!({ "result": "wiped" }));
    assert_eq!(code, 202, "{body}");
    assert_eq!(node(&f, ROW_IMAGE)["state"]["wiped"], true);
    assert_eq!(next(&f, &token, ROW_IMAGE)["action"], "power_off");
    let s = script(&f, ROW_IMAGE);
    assert!(
        !s.contains("provisioner.token"),
        "a wiped retired node boots nothing: {s}"
    );
    // A second wipe report changes nothing.
    let (code, _) = install_report(&f, &token, ROW_IMAGE, json!({ "result": "wiped" }));
    assert_eq!(code, 409);
}

#[test]
fn a_reprovisioned_node_wipes_its_old_disk_before_it_reports_again() {
    let f = start();
    let admin = f.cli(&["token", "create", "alice"]);
    written(&f, ROW_IMAGE);
    act(&f, &admin, ROW_IMAGE, "reprovision");
    let token = f.boot(ROW_IMAGE);
    assert_eq!(node(&f, ROW_IMAGE)["state"]["state"], "inspecting");
    let i = next(&f, &token, ROW_IMAGE);
    assert_eq!(i["action"], "wipe", "{i}");
    let (code, body) = install_report(&f, &token, ROW_IMAGE, json!({ "result": "wiped" }));
    assert_eq!(code, 202, "{body}");
    assert_eq!(next(&f, &token, ROW_IMAGE)["action"], "report");
    // And it is installed again, with a new install.
    let r = f.report(Some(&token), ROW_IMAGE, &facts(ROW_IMAGE));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(next(&f, &token, ROW_IMAGE)["action"], "install");
}

#[test]
fn a_retired_node_that_never_had_a_disk_written_is_only_told_to_stay_off() {
    let f = start();
    let admin = f.cli(&["token", "create", "alice"]);
    let token = f.boot(NO_IMAGE);
    let r = f.report(Some(&token), NO_IMAGE, &facts(NO_IMAGE));
    assert_eq!(r.status, 202, "{}", r.body);
    act(&f, &admin, NO_IMAGE, "retire");
    let token = f.boot(NO_IMAGE);
    assert_eq!(next(&f, &token, NO_IMAGE)["action"], "power_off");
    assert_eq!(node(&f, NO_IMAGE)["state"]["wiped"], true);
}

/// An image with a driver set built in: the SKU's set must be the image's before it installs;
/// burning in starts with the node checking the set on its running system; the report is kept
/// with the install (and shown by the API); a failed check fails the node with its words.
#[test]
fn an_image_with_drivers_is_checked_on_the_node_before_burn_in() {
    use provisioner_protocol::drivers::DriverSet;
    let set = DriverSet {
        name: "debian-nvidia-535".into(),
        vendor: "nvidia".into(),
        driver: "535.261.03".into(),
        suite: "debian-nvidia-535-1".into(),
        packages: [("nvidia-kernel-dkms".to_string(), "535.261.03-1".to_string())].into(),
        sha256: [("nvidia-kernel-dkms".to_string(), "ab".repeat(32))].into(),
        modules: vec!["nvidia-current".into()],
        services: vec![],
        devices: 0,
        module_signer: None,
    };
    let conf = tempfile::tempdir().unwrap();
    let drivers = conf.path().join("drivers.toml");
    std::fs::write(
        &drivers,
        "version = 1\n[set.debian-nvidia-535]\ndescription = \"t\"\nvendor = \"nvidia\"\ndriver = \"535.261.03\"\nsuite = \"debian-nvidia-535-1\"\nfabric = \"none\"\nskus = [\"qemu-lab\"]\n[set.debian-nvidia-535.packages]\nnvidia-kernel-dkms = \"535.261.03-1\"\n",
    )
    .unwrap();
    let config = format!(
        "[lifecycle]\ndrivers = {:?}\n",
        drivers.display().to_string()
    );
    let with_set = set.clone();
    let f = App::seeded(
        &plan(),
        move |data| {
            let staged = data.join("../staged");
            common::images::staged_image_with(data, &staged, Some(with_set));
            provisioner::image::os::library::import(data, &staged).expect("the image imports");
        },
        &config,
    );
    let (_, credential) = written(&f, ROW_IMAGE);
    let (code, body) = installed(&f, &credential, ROW_IMAGE, "6.1.0-0-amd64");
    assert_eq!(code, 202, "{body}");
    // Asked to check its drivers first, with the set its image carries.
    let i = next(&f, &credential, ROW_IMAGE);
    assert_eq!(i["action"], "verify_drivers", "{i}");
    assert_eq!(i["set"]["packages"]["nvidia-kernel-dkms"], "535.261.03-1");
    let report = |outcome: &str, detail: &str| {
        json!({ "mac": ROW_IMAGE, "report": { "set": "debian-nvidia-535", "kernel": "6.1.0-0-amd64",
            "checks": [
                { "check": "packages", "outcome": "pass", "detail": "1 packages at their pinned versions" },
                { "check": "held", "outcome": "pass", "detail": "held" },
                { "check": "module nvidia-current", "outcome": outcome, "detail": detail },
                { "check": "apt", "outcome": "pass", "detail": "from the appliance only" },
                { "check": "devices", "outcome": "cannot_validate", "detail": "cannot validate devices: no nvidia device" }
            ],
            "installed": [ { "package": "nvidia-kernel-dkms", "version": "535.261.03-1", "sha256": "ab".repeat(32) } ] } })
            .to_string()
    };
    // A report of another set, or from the discovery token, is refused and changes nothing.
    let other = report("pass", "x").replace("\"set\":\"debian-nvidia-535\"", "\"set\":\"other\"");
    let r = f.post_json(
        provisioner_protocol::PATH_DRIVERS,
        Some(&credential),
        &other,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let r = f.post_json(
        provisioner_protocol::PATH_DRIVERS,
        Some(&credential),
        &report("pass", "signed"),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let n = node(&f, ROW_IMAGE);
    assert_eq!(
        n["state"]["state"], "burning_in",
        "cannot_validate is not a failure: {n}"
    );
    assert_eq!(
        n["drivers"]["report"]["installed"][0]["sha256"],
        "ab".repeat(32)
    );
    // Checked: on to burn-in.
    assert_eq!(next(&f, &credential, ROW_IMAGE)["action"], "burn_in");

    // Another node whose module is missing fails, with the check's words.
    let (_, credential) = written(&f, FAILS);
    assert_eq!(installed(&f, &credential, FAILS, "6.1.0-0-amd64").0, 202);
    assert_eq!(next(&f, &credential, FAILS)["action"], "verify_drivers");
    let failing = report("fail", "no nvidia-current module for kernel 6.1.0-0-amd64")
        .replace(ROW_IMAGE, FAILS);
    let r = f.post_json(
        provisioner_protocol::PATH_DRIVERS,
        Some(&credential),
        &failing,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let n = node(&f, FAILS);
    assert_eq!(n["state"]["state"], "failed", "{n}");
    let detail = n["detail"].as_str().unwrap();
    assert!(
        detail.contains(
            "module nvidia-current failed: no nvidia-current module for kernel 6.1.0-0-amd64"
        ),
        "{detail}"
    );

    // One whose report leaves out checks the set needs fails, naming them: a report that
    // says less is not a pass.
    let (_, credential) = written(&f, INCOMPLETE);
    assert_eq!(
        installed(&f, &credential, INCOMPLETE, "6.1.0-0-amd64").0,
        202
    );
    assert_eq!(
        next(&f, &credential, INCOMPLETE)["action"],
        "verify_drivers"
    );
    let short = json!({ "mac": INCOMPLETE, "report": { "set": "debian-nvidia-535",
        "kernel": "6.1.0-0-amd64", "installed": [],
        "checks": [ { "check": "packages", "outcome": "pass", "detail": "1 packages" } ] } });
    let r = f.post_json(
        provisioner_protocol::PATH_DRIVERS,
        Some(&credential),
        &short.to_string(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let n = node(&f, INCOMPLETE);
    assert_eq!(n["state"]["state"], "failed", "{n}");
    let detail = n["detail"].as_str().unwrap();
    assert!(
        detail.contains("lacks the checks held, module nvidia-current, apt"),
        "{detail}"
    );
}
