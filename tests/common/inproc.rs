//! The appliance in this process, for the API and page tests: the router `up` serves, driven
//! with `tower::ServiceExt::oneshot` on requests built here, over a store in a temporary folder
//! with a rack plan imported. Nothing needs installing; `restart` opens the same store again as
//! a restarted appliance would.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use provisioner::app::Appliance;
use provisioner::config::{Config, FileConfig, Overrides};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A response: status, Content-Type, headers and body.
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

pub struct App {
    pub dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    app: Option<Appliance>,
    shutdown: CancellationToken,
    config: String,
    discovery: bool,
}

type Seed<'a> = Box<dyn FnOnce(&std::path::Path) + 'a>;

/// The peer requests come from unless a test names another.
pub const PEER: &str = "127.0.0.1:40000";

impl App {
    /// The appliance with `plan` (CSV) imported, `config` as its provisioner.toml, and a
    /// discovery image (a stand-in kernel and initrd).
    pub fn start(plan: &str, config: &str) -> App {
        Self::open(Some((plan, Box::new(|_| {}))), config, true)
    }

    /// Like `start`, with `seed` run on the data directory after the plan's import, before the
    /// appliance opens.
    pub fn seeded(plan: &str, seed: impl FnOnce(&std::path::Path), config: &str) -> App {
        Self::open(Some((plan, Box::new(seed))), config, true)
    }

    /// The appliance with no rack plan and no discovery image.
    pub fn bare() -> App {
        Self::open(None, "", false)
    }

    fn open(plan: Option<(&str, Seed<'_>)>, config: &str, discovery: bool) -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some((plan, seed)) = plan {
            super::site::import(plan, dir.path());
            seed(&dir.path().join("data"));
        }
        std::fs::write(dir.path().join("vmlinuz"), vec![7u8; 4096]).unwrap();
        std::fs::write(dir.path().join("initrd.img"), vec![7u8; 1024]).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let mut app = App {
            dir,
            rt,
            app: None,
            shutdown: CancellationToken::new(),
            config: config.to_string(),
            discovery,
        };
        app.open_appliance();
        app
    }

    fn open_appliance(&mut self) {
        let p = |n: &str| self.dir.path().join(n);
        let file = FileConfig::from_toml(&self.config, &p("provisioner.toml")).expect("config");
        let config = Config::merge(
            file,
            Overrides {
                data_dir: Some(p("data")),
                firmware_dir: Some(p("no-firmware")),
                offline: true,
                discovery_kernel: self.discovery.then(|| p("vmlinuz")),
                discovery_initrd: self.discovery.then(|| p("initrd.img")),
                ..Overrides::default()
            },
        )
        .expect("config");
        self.shutdown = CancellationToken::new();
        let token = self.shutdown.clone();
        self.app = Some(
            self.rt
                .block_on(Appliance::open(config, 8080, None, token))
                .expect("the appliance opens"),
        );
    }

    /// The appliance stops (its tasks drain, its store closes) and opens again on its store.
    pub fn restart(&mut self) {
        self.close();
        self.open_appliance();
    }

    fn close(&mut self) {
        self.shutdown.cancel();
        if let Some(app) = self.app.take() {
            self.rt.block_on(app.close());
        }
    }

    /// The live feed the pages follow: every change told after this call.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<provisioner::lifecycle::Change> {
        self.app.as_ref().expect("open").boot.lifecycle.changes()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `provisioner ARGS --data-dir DATA`, which must succeed; its stdout, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        super::cli(&self.data(), args)
    }

    /// One request through the router, from `peer`.
    pub fn request(&self, req: Request<Body>, peer: &str) -> Resp {
        let mut req = req;
        // As every HTTP/1.1 client sends it: the address it reached the appliance at.
        if !req.headers().contains_key("host") {
            req.headers_mut()
                .insert("host", "10.99.0.1:8080".parse().expect("a header value"));
        }
        let peer: SocketAddr = peer.parse().expect("a peer address");
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let router = self.app.as_ref().expect("open").router();
        self.rt.block_on(async move {
            let resp = router.oneshot(req).await.expect("the router answers");
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
                .await
                .expect("the body");
            Resp {
                status,
                content_type,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        })
    }

    /// `method path` with `headers` and `body`, from the default peer.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.request(b.body(Body::from(body.to_string())).unwrap(), PEER)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[], "")
    }

    /// GET `path`, which must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.json()
    }

    /// GET `path`, which must answer 200 with a page.
    pub fn html(&self, path: &str) -> String {
        let r = self.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.content_type, "text/html; charset=utf-8", "{path}");
        r.body
    }

    /// POST JSON `body` to `path`, with an admin or agent `token` when given.
    pub fn post_json(&self, path: &str, token: Option<&str>, body: &str) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        self.call("POST", path, &headers, body)
    }

    /// The node fetches its boot script (and so is `inspecting`); returns its agent token.
    pub fn boot(&self, mac: &str) -> String {
        let script = self.get(&format!("/boot/{}.ipxe", mac.replace(':', "-")));
        assert_eq!(script.status, 200, "{}", script.body);
        script
            .body
            .split_whitespace()
            .find_map(|w| w.strip_prefix("provisioner.token="))
            .unwrap_or_else(|| panic!("no agent token in:\n{}", script.body))
            .to_string()
    }

    /// The node's agent reports `facts` on `token`: the response.
    pub fn report(&self, token: Option<&str>, mac: &str, facts: &Value) -> Resp {
        let body = serde_json::json!({ "mac": mac, "facts": facts }).to_string();
        self.post_json(provisioner_protocol::PATH_INSPECTION, token, &body)
    }

    /// The node boots and reports a serial and 2 GiB; returns the state it is put in.
    pub fn inspect(&self, mac: &str, serial: &str) -> String {
        let token = self.boot(mac);
        let mut facts = lab_facts(mac);
        facts.dmi.product_serial = Some(serial.to_string());
        let reply = self.report(Some(&token), mac, &serde_json::to_value(facts).unwrap());
        assert!(
            (200..300).contains(&reply.status),
            "inspection of {mac}: {} {}",
            reply.status,
            reply.body
        );
        reply.json()["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.close();
    }
}

/// A lab node's facts as its agent reports them: 2 GiB and one NIC, `eth0` with `mac`.
pub fn lab_facts(mac: &str) -> provisioner_protocol::Facts {
    let mut facts = provisioner_protocol::Facts::default();
    facts.memory.total_bytes = 2 << 30;
    facts.nics.push(provisioner_protocol::Nic {
        name: "eth0".into(),
        mac: mac.into(),
        driver: None,
        pci_address: None,
        speed_mbps: None,
        carrier: Some(true),
    });
    facts
}
