//! The lifecycle through its API, driven in process on the appliance's router: agent tokens
//! bound to the node and the boot (missing, forged, replayed and foreign ones refused and
//! recorded, changing nothing), inspection reports matched against an imported rack plan,
//! operator actions behind an admin token, and a step that times out failing its node.

mod common;

use common::inproc::{App, Resp};
use serde_json::{Value, json};

const A: &str = "52:54:00:aa:00:01";
const B: &str = "52:54:00:bb:00:02";
const D: &str = "52:54:00:dd:00:04";

const PLAN: &str = "\
site,row,rack,u,serial,mac,sku
lab,r1,a01,10,,52:54:00:aa:00:01,qemu-lab
lab,r1,a01,20,SN-D,,hgx-b200
";

/// `provisioner ARGS` (the CLI on the same store): (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::appliance())
        .args(args)
        .output()
        .expect("run provisioner");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The appliance, in process, with the rack plan imported and `config` as its file.
fn start(config: &str) -> App {
    App::start(PLAN, config)
}

fn data(f: &App) -> String {
    f.data().display().to_string()
}

fn status_body(r: Resp) -> (u16, String) {
    (r.status, r.body)
}

fn report(f: &App, token: Option<&str>, mac: &str, facts: &Value) -> (u16, String) {
    status_body(f.report(token, mac, facts))
}

fn post_json(f: &App, token: Option<&str>, path: &str, body: &str) -> (u16, String) {
    status_body(f.post_json(path, token, body))
}

/// The agent asks what to do next, with `auth` as its Authorization header.
fn next(f: &App, auth: Option<&str>, mac: &str) -> (u16, String) {
    let path = format!("/api/v1/agent/next?mac={mac}");
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    status_body(f.call("GET", &path, &headers, ""))
}

fn script(f: &App, mac: &str) -> String {
    f.get(&format!("/boot/{}.ipxe", mac.replace(':', "-"))).body
}

/// Facts as the agent sends them: `gpus` NVIDIA GPUs, `mib` of memory, one NIC.
fn facts(mac: &str, serial: &str, gpus: usize, mib: u64) -> Value {
    let mut f: Value = serde_json::to_value(provisioner_protocol::Facts::default()).unwrap();
    f["dmi"]["product_serial"] = json!(serial);
    f["memory"]["total_bytes"] = json!(mib << 20);
    f["nics"] = json!([{ "name": "eth0", "mac": mac, "driver": "virtio_net",
        "pci_address": "0000:00:03.0", "speed_mbps": null, "carrier": true }]);
    let gpu_addrs: Vec<String> = (0..gpus)
        .map(|i| format!("0000:{:02x}:00.0", 0x18 + i))
        .collect();
    f["pci"] = json!(
        gpu_addrs
            .iter()
            .map(|a| json!({ "address": a, "vendor": 0x10de,
        "device": 0x2901, "subsystem_vendor": null, "subsystem_device": null,
        "class": 0x030200, "driver": null, "link": null }))
            .collect::<Vec<_>>()
    );
    f["gpus"] = json!(gpu_addrs);
    f
}

fn node(f: &App, id: &str) -> Value {
    f.get_json(&format!("/api/v1/nodes/{id}"))
}

#[test]
fn agent_tokens_are_bound_to_the_node_and_the_boot() {
    let f = start("");
    let a1 = f.boot(A);
    let a2 = f.boot(A); // the node booted again: a1 is now an earlier boot's token
    let b1 = f.boot(B);
    assert_ne!(a1, a2);
    let a_facts = facts(A, "SN-A", 0, 2048);

    // Every bad token is refused, recorded, and changes nothing.
    let cases: [(Option<&str>, u16, &str); 4] = [
        (None, 401, "no agent token"),
        (Some("forged-0123456789"), 401, "unknown agent token"),
        (Some(&a1), 403, "earlier boot"),
        (Some(&b1), 403, "another node"),
    ];
    for (token, want, says) in cases {
        let (code, body) = report(&f, token, A, &a_facts);
        assert_eq!(code, want, "{token:?}: {body}");
        assert!(body.contains(says), "{token:?}: {body}");
        let n = node(&f, A);
        assert_eq!(n["state"]["state"], "inspecting", "{n:#}");
        assert!(n["facts"].is_null(), "{n:#}");
        assert_eq!(n["timeline"].as_array().unwrap().len(), 2, "{n:#}");
    }
    let (code, _) = next(&f, None, A);
    assert_eq!(code, 401, "next without a token");
    // A node cannot be told what to do on another's token either.
    let (code, _) = next(&f, Some(&format!("Bearer {b1}")), A);
    assert_eq!(code, 403);
    let (code, body) = post_json(&f, Some(&a2), "/api/v1/agent/inspection", "{not json");
    assert_eq!(code, 400, "{body}");

    // The token of this boot works, once.
    let (code, body) = report(&f, Some(&a2), A, &a_facts);
    assert_eq!(code, 202, "{body}");
    let n = node(&f, A);
    assert_eq!(n["state"]["state"], "inspected", "{n:#}");
    assert_eq!(n["slot"], "lab/r1/a01/U10");
    assert_eq!(n["facts"]["memory"]["total_bytes"], 2048u64 << 20);
    let timeline = n["timeline"].as_array().unwrap().clone();
    let steps: Vec<String> = timeline
        .iter()
        .map(|t| {
            format!(
                "{}->{} by {}",
                t["from"].as_str().unwrap(),
                t["to"].as_str().unwrap(),
                t["actor"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "(new)->discovered by appliance",
            "discovered->inspecting by appliance",
            "inspecting->inspected by agent"
        ]
    );
    let (code, body) = report(&f, Some(&a2), A, &facts(A, "SN-A", 8, 9999));
    assert_eq!(code, 403, "a replayed report: {body}");
    let n = node(&f, A);
    assert_eq!(n["timeline"].as_array().unwrap().len(), 3);
    assert_eq!(n["facts"]["memory"]["total_bytes"], 2048u64 << 20);

    // The refusals are on the node's record, with why.
    let refusals: Vec<String> = n["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refusals.len(), 7, "{refusals:#?}");
    assert!(refusals[6].contains("already carried"), "{refusals:#?}");

    // Inspected, and no image for its slot: the agent is told to power off, and why.
    let (code, body) = next(&f, Some(&format!("Bearer {a2}")), A);
    assert_eq!(code, 200, "{body}");
    let next: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(next["action"], "power_off");
    let why = next["reason"].as_str().unwrap();
    assert!(why.contains("lab/r1/a01/U10"), "{why}");
    assert!(why.contains("no OS image"), "{why}");

    // B is in no slot; D is in a B200 slot with no GPUs: both fail, saying why.
    let (code, _) = report(&f, Some(&b1), B, &facts(B, "SN-B", 0, 2048));
    assert_eq!(code, 202);
    let n = node(&f, B);
    assert_eq!(n["state"]["state"], "failed");
    assert_eq!(n["state"]["step"], "inspecting");
    assert_eq!(
        n["state"]["reason"],
        "not in the rack plan: no slot lists serial SN-B or MAC 52:54:00:bb:00:02"
    );
    let d1 = f.boot(D);
    let (code, _) = report(&f, Some(&d1), D, &facts(D, "SN-D", 0, 4096));
    assert_eq!(code, 202);
    let reason = node(&f, D)["state"]["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("slot lab/r1/a01/U20 expects hgx-b200"),
        "{reason}"
    );
    assert!(reason.contains("0 GPUs (wanted 8)"), "{reason}");
    assert!(
        reason.contains("4096 MiB memory (wanted at least 1048576)"),
        "{reason}"
    );

    // A failed node that network-boots is told why and waits; it gets no kernel.
    let script = script(&f, D);
    assert!(script.contains("failed at inspecting"), "{script}");
    assert!(!script.contains("kernel "), "{script}");

    // The list shows all three with their states.
    let list = f.get_json("/api/v1/nodes");
    let state_of = |mac: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|n| n["mac"] == mac)
            .map(|n| n["state"].clone())
    };
    assert_eq!(state_of(A), Some(json!("inspected")));
    assert_eq!(state_of(B), Some(json!("failed")));
    assert_eq!(state_of(D), Some(json!("failed")));
}

fn act(f: &App, token: Option<&str>, id: &str, body: &str) -> (u16, String) {
    post_json(f, token, &format!("/api/v1/nodes/{id}/actions"), body)
}

#[test]
fn operator_actions_need_an_admin_token_and_follow_the_lifecycle() {
    let f = start("");
    let (ok, token, stderr) = cli(&["token", "create", "alice", "--data-dir", &data(&f)]);
    assert!(ok, "{stderr}");
    let token = token.trim().to_string();
    assert_eq!(token.len(), 64);
    let (ok, _, stderr) = cli(&["token", "create", "alice", "--data-dir", &data(&f)]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    // Only its hash is stored.
    let db = std::fs::read(f.dir.path().join("data/provisioner.db")).unwrap_or_default();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token itself is in the store"
    );

    let a = f.boot(A);
    let (code, _) = report(&f, Some(&a), A, &facts(A, "SN-A", 0, 2048));
    assert_eq!(code, 202);
    let id = node(&f, A)["id"].as_i64().unwrap().to_string();

    let hold = r#"{"action":"hold"}"#;
    assert_eq!(act(&f, None, &id, hold).0, 401);
    assert_eq!(act(&f, Some("not-a-token"), &id, hold).0, 401);
    assert_eq!(node(&f, A)["state"]["state"], "inspected");

    let (code, body) = act(&f, Some(&token), &id, hold);
    assert_eq!(code, 200, "{body}");
    let n = node(&f, A);
    assert_eq!(n["state"]["state"], "held");
    assert_eq!(n["state"]["from"]["state"], "inspected");
    let script = script(&f, A);
    assert!(script.contains("held (from inspected)"), "{script}");
    assert!(
        !script.contains("provisioner.token"),
        "a held node gets no token: {script}"
    );
    assert_eq!(act(&f, Some(&token), &id, hold).0, 409, "held twice");

    let (code, _) = act(&f, Some(&token), A, r#"{"action":"release"}"#);
    assert_eq!(code, 200, "by MAC as well as by number");
    assert_eq!(node(&f, A)["state"]["state"], "inspected");

    let (code, body) = act(&f, Some(&token), &id, r#"{"action":"retire"}"#);
    assert_eq!(code, 200, "{body}");
    let n = node(&f, A);
    assert_eq!(n["state"]["state"], "retired");
    assert!(
        n["slot"].is_null(),
        "a retired node gives up its slot: {n:#}"
    );
    let (code, body) = act(&f, Some(&token), &id, r#"{"action":"reprovision"}"#);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("retired"), "{body}");
    assert_eq!(act(&f, Some(&token), &id, r#"{"action":"explode"}"#).0, 400);
    assert_eq!(act(&f, Some(&token), "9999", hold).0, 404);

    let last = node(&f, A)["timeline"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["actor"], "operator:alice");
    assert_eq!(last["to"], "retired");

    // A node held while inspecting: its agent's valid report is not taken, and changes nothing.
    let b = f.boot(B);
    assert_eq!(act(&f, Some(&token), B, hold).0, 200);
    let (code, body) = report(&f, Some(&b), B, &facts(B, "SN-B", 0, 2048));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("held"), "{body}");
    let n = node(&f, B);
    assert_eq!(n["state"]["state"], "held");
    assert!(n["facts"].is_null());
    let (code, body) = next(&f, Some(&format!("bearer {b}")), B);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"wait\""), "{body}");
    // Released, it is inspecting again and the same boot's token may report.
    assert_eq!(act(&f, Some(&token), B, r#"{"action":"release"}"#).0, 200);
    assert_eq!(report(&f, Some(&b), B, &facts(B, "SN-B", 0, 2048)).0, 202);
}

#[test]
fn a_step_that_runs_past_its_timeout_fails_the_node() {
    let f =
        start("[lifecycle]\nsweep_every = \"100ms\"\n[lifecycle.timeouts]\ninspecting = \"1s\"\n");
    f.boot(B);
    assert_eq!(node(&f, B)["state"]["state"], "inspecting");
    let metrics = f.get("/metrics").body;
    assert!(
        metrics.contains("nodes{state=\"inspecting\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("nodes{state=\"failed\"} 0"), "{metrics}");
    // Timeouts are checked every 100 ms here: wait, bounded, for the check to pass.
    let failed = common::wait_for(std::time::Duration::from_secs(30), || {
        let n = node(&f, B);
        (n["state"]["state"] == "failed").then_some(n)
    })
    .expect("the node never timed out");
    assert_eq!(failed["state"]["step"], "inspecting");
    assert_eq!(failed["state"]["reason"], "inspecting timed out after 1s");
    let last = failed["timeline"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["actor"], "appliance");
}

#[test]
fn a_bad_plan_is_refused_and_a_held_slot_cannot_vanish() {
    let f = start("");
    let bad = f.dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "site,row,rack,u,serial,mac,sku\nlab,r1,a01,10,,zz,qemu-lab\n",
    )
    .unwrap();
    let (ok, _, stderr) = cli(&[
        "plan",
        "import",
        bad.to_str().unwrap(),
        "--data-dir",
        &data(&f),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("line 2: `zz` is not a MAC address"),
        "{stderr}"
    );

    let a = f.boot(A);
    assert_eq!(report(&f, Some(&a), A, &facts(A, "SN-A", 0, 2048)).0, 202);
    let smaller = f.dir.path().join("smaller.toml");
    std::fs::write(
        &smaller,
        "[[slot]]\nsite = \"lab\"\nrow = \"r1\"\nrack = \"a01\"\nu = 20\nserial = \"SN-D\"\nsku = \"hgx-b200\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = cli(&[
        "plan",
        "import",
        smaller.to_str().unwrap(),
        "--data-dir",
        &data(&f),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("slot lab/r1/a01/U10 is held by node 52:54:00:aa:00:01"),
        "{stderr}"
    );
    assert_eq!(node(&f, A)["slot"], "lab/r1/a01/U10");
}

#[test]
fn without_a_discovery_image_a_node_is_told_so_and_does_not_start_inspecting() {
    let f = App::bare();
    let r = f.get(&format!("/boot/{}.ipxe", A.replace(':', "-")));
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("no discovery image is configured"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("provisioner.token"), "{}", r.body);
    let n = node(&f, A);
    assert_eq!(n["state"]["state"], "discovered", "{n:#}");
}

/// A rack's installation checklist: started and ticked from the command line and the API, an
/// undo needs a reason, the appliance ticks what it saw (the slot's node booted and matched),
/// and every tick survives a restart.
#[test]
fn a_rack_checklist_is_ticked_by_people_and_by_what_the_appliance_saw() {
    let mut f = start("");
    let data = data(&f);
    let rack = "lab/r1/a01";
    let (ok, _, stderr) = cli(&[
        "checklist",
        "start",
        rack,
        "--type",
        "hgx-b200-air",
        "--by",
        "alice",
        "--data-dir",
        &data,
    ]);
    assert!(ok, "{stderr}");
    let url = "/api/v1/racks/lab/r1/a01/checklist";
    let view = f.get_json(url);
    let steps = view["steps"].as_array().unwrap().clone();
    let first = |pred: &dyn Fn(&Value) -> bool| {
        steps
            .iter()
            .find(|s| pred(s))
            .map(|s| s["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let rack_step = first(&|s| s["slot"].is_null());
    let slot_step = first(&|s| !s["slot"].is_null() && s["auto"] == false);
    let pxe_step = steps
        .iter()
        .find(|s| s["auto"] == true && s["slot"] == "lab/r1/a01/U10")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(view["done"], 0);

    // A technician at a terminal.
    let (ok, _, stderr) = cli(&[
        "checklist",
        "tick",
        rack,
        &rack_step,
        "--by",
        "bob",
        "--data-dir",
        &data,
    ]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(&[
        "checklist",
        "tick",
        rack,
        &slot_step,
        "--by",
        "bob",
        "--data-dir",
        &data,
    ]);
    assert!(
        !ok && stderr.contains("is per slot: name one of lab/r1/a01/U10"),
        "{stderr}"
    );

    // And over the API, with an admin token.
    let (_, token, _) = cli(&["token", "create", "floor", "--data-dir", &data]);
    let token = token.trim();
    let body = format!(r#"{{"step":"{slot_step}","slot":"lab/r1/a01/U20","by":"carol"}}"#);
    assert_eq!(post_json(&f, None, &format!("{url}/ticks"), &body).0, 401);
    let (code, body_text) = post_json(&f, Some(token), &format!("{url}/ticks"), &body);
    assert_eq!(code, 200, "{body_text}");
    let auto = format!(r#"{{"step":"{pxe_step}","slot":"lab/r1/a01/U10","by":"carol"}}"#);
    assert_eq!(
        post_json(&f, Some(token), &format!("{url}/ticks"), &auto).0,
        409
    );
    let undo = format!(r#"{{"step":"{rack_step}","by":"carol","reason":""}}"#);
    let (code, text) = post_json(&f, Some(token), &format!("{url}/unticks"), &undo);
    assert_eq!(code, 400, "an undo needs a reason: {text}");
    // A change needs the person's name, not only the token's.
    let nameless = format!(r#"{{"step":"{rack_step}","by":"  "}}"#);
    let (code, text) = post_json(&f, Some(token), &format!("{url}/ticks"), &nameless);
    assert_eq!(code, 400, "a tick needs a name: {text}");
    assert!(text.contains("needs the name of who did it"), "{text}");
    let (code, text) = post_json(
        &f,
        Some(token),
        "/api/v1/racks/lab/r2/b01/checklist",
        r#"{"rack_type":"hgx-b200-air","by":""}"#,
    );
    assert_eq!(code, 400, "a start needs a name: {text}");
    assert!(text.contains("needs the name of who did it"), "{text}");

    // The appliance ticks the slot's boot once its node booted and matched.
    let a = f.boot(A);
    assert_eq!(report(&f, Some(&a), A, &facts(A, "SN-A", 0, 2048)).0, 202);
    let view = f.get_json(url);
    let seen = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == pxe_step.as_str() && s["slot"] == "lab/r1/a01/U10")
        .cloned()
        .unwrap();
    assert_eq!(seen["status"], "seen", "{seen:#}");
    assert!(seen["evidence"].as_str().unwrap().contains(A), "{seen:#}");
    assert!(seen["link"].as_str().unwrap().starts_with("/api/v1/nodes/"));

    // Ticks survive a restart; an undo with a reason is in the audit trail.
    f.restart();
    let view = f.get_json(url);
    let status_of = |id: &str, slot: Option<&str>| {
        view["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id && s["slot"].as_str() == slot)
            .map(|s| (s["status"].clone(), s["by"].clone()))
            .unwrap()
    };
    assert_eq!(status_of(&rack_step, None), (json!("ticked"), json!("bob")));
    assert_eq!(
        status_of(&slot_step, Some("lab/r1/a01/U20")),
        (json!("ticked"), json!("carol (token floor)"))
    );
    let undo = format!(r#"{{"step":"{rack_step}","by":"carol","reason":"wrong rack"}}"#);
    let (code, text) = post_json(&f, Some(token), &format!("{url}/unticks"), &undo);
    assert_eq!(code, 200, "{text}");
    let view: Value = serde_json::from_str(&text).unwrap();
    let last = view["audit"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["action"], "untick");
    assert_eq!(last["detail"], format!("{rack_step}: wrong rack"));

    // The customer's record, as CSV.
    let (code, csv) = status_body(f.get(&format!("{url}?format=csv")));
    assert_eq!(code, 200);
    assert!(csv.starts_with("rack,rack_type,version,group,step,slot,status,by_or_evidence,at\n"));
    assert!(
        csv.contains(&format!(
            ",{slot_step},lab/r1/a01/U20,ticked,carol (token floor),"
        )),
        "{csv}"
    );
    // And at the terminal.
    let (ok, text, _) = cli(&["checklist", "show", rack, "--data-dir", &data]);
    assert!(
        ok && text.contains("[=] node 52:54:00:aa:00:01 network-booted"),
        "{text}"
    );
}

/// A checklist change is one action whichever door it comes through: the API and the command
/// line take the same request the same way (an empty slot is none), the API's change reaches
/// the live pages as the pages' own does, and a rack name is checked at every door.
#[test]
fn a_checklist_change_is_the_same_action_from_every_door() {
    let f = start("");
    let data = data(&f);
    let rack = "lab/r1/a01";
    let (ok, _, stderr) = cli(&[
        "checklist",
        "start",
        rack,
        "--type",
        "hgx-b200-air",
        "--by",
        "alice",
        "--data-dir",
        &data,
    ]);
    assert!(ok, "{stderr}");
    let url = "/api/v1/racks/lab/r1/a01/checklist";
    let view = f.get_json(url);
    let rack_steps: Vec<String> = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["slot"].is_null() && s["auto"] == false)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(rack_steps.len() >= 2, "{view:#}");
    let (_, token, _) = cli(&["token", "create", "floor", "--data-dir", &data]);
    let token = token.trim();

    // Over the API, an empty slot on a rack-wide step is no slot, as on the pages; the live
    // pages of the rack hear of it.
    let mut feed = f.changes();
    let body = format!(r#"{{"step":"{}","slot":"","by":"carol"}}"#, rack_steps[0]);
    let (code, text) = post_json(&f, Some(token), &format!("{url}/ticks"), &body);
    assert_eq!(code, 200, "{text}");
    let told = feed
        .try_recv()
        .expect("the API's tick is told to the live pages");
    assert_eq!(told.rack.as_deref(), Some(rack));
    assert_eq!(told.state, None);

    // At the terminal, the same.
    let (ok, _, stderr) = cli(&[
        "checklist",
        "tick",
        rack,
        &rack_steps[1],
        "--slot",
        "",
        "--by",
        "bob",
        "--data-dir",
        &data,
    ]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(&[
        "checklist",
        "tick",
        rack,
        &rack_steps[1],
        "--by",
        "bob",
        "--data-dir",
        &data,
    ]);
    assert!(!ok && stderr.contains("is already ticked"), "{stderr}");
    let view = f.get_json(url);
    let ticked = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "ticked")
        .count();
    assert_eq!(ticked, 2, "{view:#}");

    // A rack that cannot be a rack is refused at each door, before anything is looked up.
    let bad = "/api/v1/racks/lab/r1/a%0101/checklist";
    let (code, text) = status_body(f.get(bad));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("is not a rack"), "{text}");
    let (ok, _, stderr) = cli(&["checklist", "show", "lab/r1", "--data-dir", &data]);
    assert!(!ok && stderr.contains("is not a rack"), "{stderr}");
}
