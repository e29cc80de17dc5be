//! One status per kind of error, whichever front door is asked: the same refusal through the
//! JSON API and through the pages' forms gets the same HTTP status (`http/error.rs` maps each
//! kind once). Driven in process on the appliance's router.

mod common;

use common::inproc::App;

const PLAN: &str = "site,row,rack,u,serial,mac,sku\nlab,r1,a01,10,,52:54:00:aa:00:01,qemu-lab\n";
const CHECKLIST: &str = "/api/v1/racks/lab/r1/a01/checklist";
const PAGE: &str = "/racks/lab/r1/a01/checklist";

/// Signs in on the pages with an admin token: (the session cookie, the forms' CSRF value).
fn sign_in(app: &App, token: &str) -> (String, String) {
    let r = app.call(
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("token={token}"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let page = app.call("GET", PAGE, &[("cookie", &cookie)], "");
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("no form on the page: {}", page.body))
        .to_string();
    (cookie, csrf)
}

/// A page form posted with the session.
fn form(app: &App, cookie: &str, path: &str, body: &str) -> u16 {
    app.call(
        "POST",
        path,
        &[
            ("cookie", cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        body,
    )
    .status
}

#[test]
fn the_api_and_the_pages_answer_each_kind_with_one_status() {
    let app = App::start(PLAN, "");
    let token = app.cli(&["token", "create", "ops"]);
    let (cookie, csrf) = sign_in(&app, &token);

    // Not found: the rack has no checklist yet.
    let api = app.post_json(
        &format!("{CHECKLIST}/ticks"),
        Some(&token),
        r#"{"step":"rack-position","by":"bob"}"#,
    );
    let page = form(
        &app,
        &cookie,
        &format!("{PAGE}/ticks"),
        &format!("csrf={csrf}&step=rack-position&by=bob"),
    );
    assert_eq!((api.status, page), (404, 404), "{}", api.body);

    app.cli(&[
        "checklist",
        "start",
        "lab/r1/a01",
        "--type",
        "hgx-b200-air",
        "--by",
        "alice",
    ]);
    // Bad request: a step the checklist does not have (the pages said 409 before).
    let api = app.post_json(
        &format!("{CHECKLIST}/ticks"),
        Some(&token),
        r#"{"step":"no-such-step","by":"bob"}"#,
    );
    let page = form(
        &app,
        &cookie,
        &format!("{PAGE}/ticks"),
        &format!("csrf={csrf}&step=no-such-step&by=bob"),
    );
    assert_eq!((api.status, page), (400, 400), "{}", api.body);

    // Conflict: a step ticked twice.
    let tick = r#"{"step":"rack-position","by":"bob"}"#;
    assert_eq!(
        app.post_json(&format!("{CHECKLIST}/ticks"), Some(&token), tick)
            .status,
        200
    );
    let api = app.post_json(&format!("{CHECKLIST}/ticks"), Some(&token), tick);
    let page = form(
        &app,
        &cookie,
        &format!("{PAGE}/ticks"),
        &format!("csrf={csrf}&step=rack-position&by=bob"),
    );
    assert_eq!((api.status, page), (409, 409), "{}", api.body);

    // Unauthorized: no credential at all.
    let api = app.post_json("/api/v1/nodes/1/actions", None, r#"{"action":"hold"}"#);
    let page = app
        .call(
            "POST",
            "/nodes/1/actions",
            &[("content-type", "application/x-www-form-urlencoded")],
            "action=hold&csrf=x",
        )
        .status;
    assert_eq!((api.status, page), (401, 401), "{}", api.body);

    // Forbidden: a credential that does not allow it (another node's agent token; a form
    // that is not this session's).
    let a = app.boot("52:54:00:aa:00:01");
    let api = app.call(
        "GET",
        "/api/v1/agent/next?mac=52:54:00:bb:00:02",
        &[("authorization", &format!("Bearer {a}"))],
        "",
    );
    let page = form(&app, &cookie, "/nodes/1/actions", "action=hold&csrf=stale");
    assert_eq!((api.status, page), (403, 403), "{}", api.body);

    // Not found and conflict for a node's action.
    let api = app.post_json(
        "/api/v1/nodes/4242/actions",
        Some(&token),
        r#"{"action":"hold"}"#,
    );
    let page = form(
        &app,
        &cookie,
        "/nodes/4242/actions",
        &format!("action=hold&csrf={csrf}"),
    );
    assert_eq!((api.status, page), (404, 404), "{}", api.body);
    assert_eq!(
        app.post_json(
            "/api/v1/nodes/1/actions",
            Some(&token),
            r#"{"action":"hold"}"#
        )
        .status,
        200
    );
    let api = app.post_json(
        "/api/v1/nodes/1/actions",
        Some(&token),
        r#"{"action":"hold"}"#,
    );
    let page = form(
        &app,
        &cookie,
        "/nodes/1/actions",
        &format!("action=hold&csrf={csrf}"),
    );
    assert_eq!((api.status, page), (409, 409), "{}", api.body);
}
