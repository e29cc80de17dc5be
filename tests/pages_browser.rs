//! The status pages in a real browser (Debian's headless chromium, over CDP) against the
//! appliance on loopback with a seeded store:
//! - the overview shows every rack and the failed node first, and follows a node's change of
//!   state live (server-sent events), without reloading;
//! - an operator signs in with an admin token (a Secure, HttpOnly cookie), holds a node with
//!   a button, and the hold is a transition with the operator as its actor; without the
//!   session, or without the form's CSRF value, nothing changes;
//! - a technician ticks a checklist step, the appliance ticks the steps a booting node shows,
//!   both survive the appliance being killed and started again, and a tick is undone only
//!   with a reason, in the audit trail;
//! - the checklist prints on A4 (nothing wider than the paper, forms hidden);
//! - reached by a host name, the sign-in goes over HTTPS;
//! - a node whose DMI serial is `<script>alert(1)</script>` shows it as text.
//!
//! `screenshots_for_docs` (ignored; `just screenshots`) writes the pictures in docs/.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::time::Duration;

use browser::{click, eval, fill, open, print_a4, screenshot, tab, text, wait_until};
use common::require_tools;
use common::site::{
    Site, boot, burned_in, fetch, h100_report, inspect, site, site_seeded, site_with,
};

const MATCHED: &str = "52:54:00:10:00:01";
const SECOND: &str = "52:54:00:10:00:02";
const STRANGER: &str = "52:54:00:ee:00:99";
const HOSTILE: &str = "<script>alert(1)</script>";
/// How long a live page may take to show a change: "within seconds".
const LIVE: Duration = Duration::from_secs(10);

fn plan() -> String {
    format!(
        "site,row,rack,u,serial,mac,sku\n\
         lab,r1,a01,10,,{MATCHED},qemu-lab\n\
         lab,r1,a01,12,SN-QEMU-2,,qemu-lab\n\
         lab,r1,a02,10,SN-B200-1,,hgx-b200\n\
         lab,r2,b07,5,SN-QEMU-3,,qemu-lab\n"
    )
}

fn ready() {
    require_tools(&[("curl", "curl"), ("chromium", "chromium")]);
}

/// An admin token made on the site's store.
fn token(s: &Site, name: &str) -> String {
    s.cli(&["token", "create", name])
}

/// The node page of `mac`, by the API's id.
fn node_id(s: &Site, mac: &str) -> i64 {
    let page = fetch(&format!("{}/api/v1/nodes/{mac}", s.base), &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    let v: serde_json::Value = serde_json::from_str(&page.body).expect("JSON");
    v["id"].as_i64().expect("an id")
}

/// Signs in through the login form, then lands on `next`.
fn sign_in(tab: &headless_chrome::Tab, s: &Site, admin: &str, next: &str) {
    open(tab, &format!("{}/login?next={next}", s.base));
    fill(tab, "input[name=token]", admin);
    click(tab, "form.login button");
    wait_until(
        tab,
        &format!(
            "location.pathname === {} && !!document.querySelector('nav form')",
            serde_json::to_string(next).unwrap()
        ),
        LIVE,
        "signed in and back",
    );
}

/// Starts the open checklist page's checklist on `rack_type`, as `by`.
fn start_checklist(t: &headless_chrome::Tab, rack_type: &str, by: &str) {
    eval(
        t,
        &format!(
            "document.querySelector('select[name=rack_type]').value = {}",
            serde_json::to_string(rack_type).unwrap()
        ),
    );
    fill(t, "form.start input[name=by]", by);
    click(t, "form.start button");
    wait_until(
        t,
        "!!document.querySelector('table.steps')",
        LIVE,
        "started",
    );
}

/// Ticks the first open step a person may tick, as `by`; returns the step's row id.
fn tick_next_open(t: &headless_chrome::Tab, by: &str) -> String {
    let step = eval(
        t,
        "document.querySelector('tr.open form.tick').closest('tr').id",
    );
    let step = step.as_str().expect("an open step").to_string();
    fill(t, &format!("#{step} input[name=by]"), by);
    click(t, &format!("#{step} form.tick button"));
    wait_until(
        t,
        &format!("document.getElementById('{step}').classList.contains('ticked')"),
        LIVE,
        "the tick",
    );
    step
}

#[test]
#[cfg_attr(
    not(all(tool = "curl", tool = "chromium")),
    ignore = "needs curl, chromium (the packages .ci/run installs)"
)]
fn the_overview_shows_every_rack_and_the_failed_node_first_and_follows_changes_live() {
    ready();
    let s = site(&plan());
    assert_eq!(inspect(&s.base, MATCHED, "SN-QEMU-1"), "inspected");
    assert_eq!(inspect(&s.base, STRANGER, HOSTILE), "failed");
    let b = browser::launch();
    let t = tab(&b);
    open(&t, &format!("{}/", s.base));
    wait_until(
        &t,
        "document.body.dataset.live === 'yes'",
        LIVE,
        "the page listens",
    );
    let racks = text(&t, "main");
    for rack in ["a01", "a02", "b07"] {
        assert!(racks.contains(rack), "rack {rack} on the overview: {racks}");
    }
    let first = text(&t, "#attention tbody tr");
    assert!(
        first.contains(STRANGER) && first.contains("not in the rack plan"),
        "the failed node first: {first}"
    );
    // The hostile serial is text on the node page: no script of its own ran or exists.
    let id = node_id(&s, STRANGER);
    let n = tab(&b);
    open(&n, &format!("{}/nodes/{id}", s.base));
    assert!(text(&n, "#facts").contains(HOSTILE));
    assert_eq!(
        eval(&n, "document.querySelectorAll('script').length"),
        1,
        "only the page's own live.js"
    );

    // Back to the overview's tab: a page out of sight stops listening, and listens again
    // when it is seen.
    n.close(true).expect("close the node's tab");
    t.activate().expect("the overview's tab in front");
    wait_until(
        &t,
        "document.body.dataset.live === 'yes'",
        LIVE,
        "the page listens again",
    );

    // A node changes state behind the open page: it follows without a reload.
    eval(&t, "window.stillTheSamePage = true");
    let admin = token(&s, "ops");
    let held = fetch(
        &format!("{}/api/v1/nodes/{MATCHED}/actions", s.base),
        &[
            "-H",
            &format!("Authorization: Bearer {admin}"),
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"action": "hold"}"#,
        ],
    );
    assert_eq!(held.status, 200, "{}", held.body);
    let took = wait_until(
        &t,
        &format!(
            "document.querySelector('#attention') !== null && \
             document.querySelector('#attention').innerText.includes({})",
            serde_json::to_string(MATCHED).unwrap()
        ),
        LIVE,
        "the held node appears among those that need a person",
    );
    eprintln!("the overview showed the hold after {took:?}");
    assert_eq!(
        eval(&t, "window.stillTheSamePage === true"),
        true,
        "not reloaded"
    );
}

#[test]
#[cfg_attr(
    not(all(tool = "curl", tool = "chromium")),
    ignore = "needs curl, chromium (the packages .ci/run installs)"
)]
fn an_operator_signs_in_holds_a_node_and_the_hold_is_recorded_with_the_operator() {
    ready();
    let s = site(&plan());
    assert_eq!(inspect(&s.base, MATCHED, "SN-QEMU-1"), "inspected");
    let id = node_id(&s, MATCHED);
    let admin = token(&s, "ops");
    let b = browser::launch();
    let t = tab(&b);

    // Read-only without a session: no buttons, a way to sign in.
    open(&t, &format!("{}/nodes/{id}", s.base));
    assert_eq!(
        eval(&t, "document.querySelectorAll('#actions form').length"),
        0
    );
    assert!(text(&t, "#actions").contains("Log in"));

    // A wrong token is refused on the form itself.
    open(&t, &format!("{}/login", s.base));
    fill(&t, "input[name=token]", "not-a-token");
    click(&t, "form.login button");
    wait_until(
        &t,
        "document.body.innerText.includes('unknown admin token')",
        LIVE,
        "the refusal",
    );

    sign_in(&t, &s, &admin, &format!("/nodes/{id}"));
    let cookies = t.get_cookies().expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name == "__Host-provisioner_session")
        .expect("the session cookie");
    assert!(session.secure && session.http_only, "{session:?}");
    assert_eq!(eval(&t, "document.cookie"), "", "scripts cannot read it");

    click(&t, "#actions button[value=hold]");
    wait_until(
        &t,
        "document.querySelector('#state') && document.querySelector('#state').innerText.includes('held')",
        LIVE,
        "the node is held",
    );
    let timeline = text(&t, "#timeline");
    assert!(
        timeline.contains("inspected → held") && timeline.contains("operator:ops"),
        "the hold with its actor: {timeline}"
    );
    // Only what the state allows is offered now: release, not hold.
    assert_eq!(
        eval(
            &t,
            "!!document.querySelector('#actions button[value=release]')"
        ),
        true
    );
    assert_eq!(
        eval(
            &t,
            "!!document.querySelector('#actions button[value=hold]')"
        ),
        false
    );

    // Without a session, or with the session but without the form's CSRF value, a posted
    // action changes nothing.
    let url = format!("{}/nodes/{id}/actions", s.base);
    let anonymous = fetch(&url, &["--data", "action=release&csrf=x"]);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let cookie = format!("Cookie: __Host-provisioner_session={}", session.value);
    let forged = fetch(
        &url,
        &["-H", &cookie, "--data", "action=release&csrf=forged"],
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    let api = fetch(&format!("{}/api/v1/nodes/{id}", s.base), &[]);
    assert!(api.body.contains("\"state\":\"held\""), "{}", api.body);

    // The token is deleted: its session ends with it, and the page is read-only again.
    assert!(s.cli(&["token", "delete", "ops"]).contains("deleted"));
    open(&t, &format!("{}/nodes/{id}", s.base));
    assert_eq!(
        eval(&t, "document.querySelectorAll('#actions form').length"),
        0
    );
    assert!(text(&t, "nav").contains("Log in"));
}

#[test]
#[cfg_attr(
    not(all(tool = "curl", tool = "chromium")),
    ignore = "needs curl, chromium (the packages .ci/run installs)"
)]
fn checklist_ticks_by_people_and_by_the_appliance_survive_a_restart_and_print_on_a4() {
    ready();
    let mut s = site(&plan());
    let admin = token(&s, "ops");
    let b = browser::launch();
    let t = tab(&b);
    let page = "/racks/lab/r1/a01/checklist";
    sign_in(&t, &s, &admin, page);

    // Start the rack's checklist from the page.
    start_checklist(&t, "hgx-b200-air", "alice");

    // Alice ticks the first step.
    let step = tick_next_open(&t, "alice");
    assert!(text(&t, &format!("#{step}")).contains("Ticked by alice (token ops)"));

    // A node boots and is matched to U10 while the page is open: the appliance ticks its
    // steps, and the page shows them without a reload.
    eval(&t, "window.stillTheSamePage = true");
    let seen = "Array.from(document.querySelectorAll('tr.seen')).length";
    assert_eq!(eval(&t, seen), 0);
    assert_eq!(inspect(&s.base, MATCHED, "SN-QEMU-1"), "inspected");
    wait_until(
        &t,
        "Array.from(document.querySelectorAll('tr.seen')).some(r => r.innerText.includes('network-booted'))",
        LIVE,
        "the appliance's tick of the booted node",
    );
    assert_eq!(
        eval(&t, "window.stillTheSamePage === true"),
        true,
        "not reloaded"
    );

    // The appliance is killed and started again: every tick is still there.
    s.restart();
    open(&t, &format!("{}{page}", s.base));
    assert!(text(&t, &format!("#{step}")).contains("Ticked by alice (token ops)"));
    assert!(
        eval(&t, seen).as_u64().unwrap_or(0) >= 2,
        "pxe-booted and serial-matches"
    );
    assert!(text(&t, "#audit").contains("alice"));

    // A tick is undone only with a reason, and the undoing is in the audit trail.
    let second = tick_next_open(&t, "bob");
    click(&t, &format!("#{second} details summary"));
    fill(&t, &format!("#{second} details input[name=by]"), "carol");
    fill(
        &t,
        &format!("#{second} details input[name=reason]"),
        "cable tray not bonded",
    );
    click(&t, &format!("#{second} details button"));
    wait_until(
        &t,
        &format!("document.getElementById('{second}').classList.contains('open')"),
        LIVE,
        "the tick undone",
    );
    let audit = text(&t, "#audit");
    assert!(
        audit.contains("carol (token ops)") && audit.contains("cable tray not bonded"),
        "{audit}"
    );

    // On paper: nothing wider than A4, the forms gone, a signature line per open step.
    let printed = print_a4(&t);
    assert!(
        printed.scroll_width <= printed.printable_width,
        "{} px wide, A4 prints {} px",
        printed.scroll_width,
        printed.printable_width
    );
    assert!(
        (2..=20).contains(&printed.pages),
        "{} pages of A4",
        printed.pages
    );
    assert!(printed.pdf.starts_with(b"%PDF"));
    // Signed out, the same page offers no forms.
    click(&t, "nav form button");
    wait_until(
        &t,
        "!document.querySelector('nav form')",
        LIVE,
        "signed out",
    );
    open(&t, &format!("{}{page}", s.base));
    assert_eq!(eval(&t, "document.querySelectorAll('main form').length"), 0);
}

/// An operator who reaches the appliance by a name, not loopback: over plain HTTP the browser
/// would drop the `Secure` cookie after the token crossed the network in clear, so the login
/// page sends them to HTTPS (the appliance's own certificate), where the sign-in holds. Without
/// HTTPS the login page says why it cannot work.
#[test]
#[cfg_attr(
    not(all(tool = "curl", tool = "chromium")),
    ignore = "needs curl, chromium (the packages .ci/run installs)"
)]
fn by_name_the_sign_in_goes_over_https() {
    ready();
    let s = site_with(&plan(), |_| {}, &["--https-listen", "127.0.0.1:0"]);
    let admin = token(&s, "ops");
    let port = |base: &str| base.rsplit(':').next().unwrap().to_string();
    let (http_port, https_port) = (port(&s.base), port(s.https.as_deref().unwrap()));
    assert!(
        s.dir.path().join("data/tls/cert.pem").exists(),
        "made its certificate"
    );
    let b = browser::launch_with(&[
        "--host-resolver-rules=MAP appliance.test 127.0.0.1",
        // The certificate is the appliance's own, which this browser has not been told to trust.
        "--ignore-certificate-errors",
    ]);
    let t = tab(&b);
    open(
        &t,
        &format!("http://appliance.test:{http_port}/login?next=/racks/lab/r1/a01"),
    );
    wait_until(
        &t,
        &format!(
            "location.origin === 'https://appliance.test:{https_port}' && !!document.querySelector('form.login')"
        ),
        LIVE,
        "sent to HTTPS",
    );
    fill(&t, "input[name=token]", &admin);
    click(&t, "form.login button");
    wait_until(
        &t,
        "location.pathname === '/racks/lab/r1/a01' && !!document.querySelector('nav form')",
        LIVE,
        "signed in over HTTPS",
    );
    assert!(text(&t, "nav").contains("Signed in: ops"));

    // Without HTTPS, by name: the page says so rather than fail in silence.
    let plain = site(&plan());
    let t = tab(&b);
    open(
        &t,
        &format!("http://appliance.test:{}/login", port(&plain.base)),
    );
    assert!(
        text(&t, "main").contains("came over plain HTTP"),
        "{}",
        text(&t, "main")
    );
}

/// The pictures of docs/screenshots, from a seeded site: `just screenshots`.
#[test]
#[ignore = "writes docs/screenshots; run by `just screenshots`"]
fn screenshots_for_docs() {
    ready();
    let ids: Vec<String> = (0..8)
        .map(|i| format!("0000:{:02x}:00.0", 0x18 + i))
        .collect();
    let plan = format!(
        "{}dc1,r1,h01,10,SN-H100-1,,hgx-h100\ndc1,r1,h01,20,SN-H100-2,,hgx-h100\n",
        plan()
    );
    // The real H100 report, without the VM's disks that refused to be read: healthy nodes.
    let healthy = |mac: &str| {
        let mut r = h100_report(mac, &ids);
        r.devices.retain(|d| d.cannot_validate.is_none());
        r
    };
    let mut s = site_seeded(&plan, |data| {
        for (mac, serial) in [
            ("52:54:00:20:00:01", "SN-H100-1"),
            ("52:54:00:20:00:02", "SN-H100-2"),
        ] {
            burned_in(data, mac, serial, &healthy(mac));
        }
    });
    assert_eq!(inspect(&s.base, MATCHED, "SN-QEMU-1"), "inspected");
    assert_eq!(inspect(&s.base, STRANGER, HOSTILE), "failed");
    boot(&s.base, SECOND);
    let admin = token(&s, "ops");
    let b = browser::launch();
    let t = tab(&b);
    sign_in(&t, &s, &admin, "/racks/dc1/r1/h01/checklist");
    start_checklist(&t, "hgx-b200-air", "alice");
    for _ in 0..3 {
        tick_next_open(&t, "alice");
    }
    s.restart();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&out).expect("docs/screenshots");
    let h100 = node_id(&s, "52:54:00:20:00:02");
    for (name, path, width, full) in [
        ("overview.png", "/".to_string(), 1280, false),
        ("rack.png", "/racks/dc1/r1/h01".to_string(), 1280, false),
        ("node-burn-in.png", format!("/nodes/{h100}"), 1280, true),
        (
            "checklist.png",
            "/racks/dc1/r1/h01/checklist".to_string(),
            1280,
            false,
        ),
        (
            "checklist-tablet.png",
            "/racks/dc1/r1/h01/checklist".to_string(),
            800,
            false,
        ),
    ] {
        open(&t, &format!("{}{path}", s.base));
        std::fs::write(out.join(name), screenshot(&t, width, 900, full)).expect("write");
    }
    open(&t, &format!("{}/racks/dc1/r1/h01/checklist", s.base));
    std::fs::write(out.join("checklist-print.pdf"), print_a4(&t).pdf).expect("write");
}
