//! Debian's headless chromium, driven over CDP (`headless_chrome`), for the page tests. Each
//! test gets its own browser and profile folder; dropping it ends the browser's whole process
//! tree (by PID, waited for) and removes the folder, even when the test fails. Every wait is
//! bounded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Emulation;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::protocol::cdp::Runtime::RemoteObjectSubtype;
use headless_chrome::types::PrintToPdfOptions;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// A4 in inches, and the margin chromium prints with.
pub const A4_INCHES: (f64, f64) = (210.0 / 25.4, 297.0 / 25.4);
pub const MARGIN_INCHES: f64 = 0.4;

pub struct TestBrowser {
    browser: Option<Browser>,
    profile: PathBuf,
}

impl std::ops::Deref for TestBrowser {
    type Target = Browser;
    fn deref(&self) -> &Browser {
        self.browser.as_ref().expect("until dropped")
    }
}

impl Drop for TestBrowser {
    fn drop(&mut self) {
        let Some(b) = self.browser.take() else { return };
        let tree = b.get_process_id().map(descendants).unwrap_or_default();
        // Closes over CDP, then kills and waits for the main process.
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tree.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        for pid in tree.iter().filter(|p| alive(**p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

static PROFILES: AtomicUsize = AtomicUsize::new(0);

/// A headless chromium with its own profile (as root: no sandbox).
pub fn launch() -> TestBrowser {
    launch_with(&[])
}

/// Like `launch`, with more chromium flags.
pub fn launch_with(args: &[&str]) -> TestBrowser {
    let chromium = crate::common::which("chromium").expect("chromium (apt-get install chromium)");
    let profile = std::env::temp_dir().join(format!(
        "provisioner-chromium-{}-{}",
        std::process::id(),
        PROFILES.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&profile).expect("a profile folder");
    let options = LaunchOptions::default_builder()
        .path(Some(chromium))
        .sandbox(false)
        .headless(true)
        .window_size(Some((1280, 900)))
        .user_data_dir(Some(profile.clone()))
        .args(args.iter().map(std::ffi::OsStr::new).collect())
        // Also each call's reply timeout: generous for a busy two-core machine.
        .idle_browser_timeout(Duration::from_secs(120))
        .build()
        .expect("launch options");
    let browser = Browser::new(options).expect("launch chromium");
    TestBrowser {
        browser: Some(browser),
        profile,
    }
}

/// A new tab whose waits give up after 30 s.
pub fn tab(browser: &TestBrowser) -> std::sync::Arc<Tab> {
    let tab = browser.new_tab().expect("a tab");
    tab.set_default_timeout(Duration::from_secs(30));
    tab
}

pub fn open(tab: &Tab, url: &str) {
    tab.navigate_to(url)
        .and_then(|t| t.wait_until_navigated())
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
}

/// The value of a JavaScript expression (objects: `JSON.stringify` them in the expression).
pub fn eval(tab: &Tab, js: &str) -> serde_json::Value {
    let r = tab
        .evaluate(js, true)
        .unwrap_or_else(|e| panic!("evaluate {js}: {e}"));
    if matches!(r.subtype, Some(RemoteObjectSubtype::Error)) {
        panic!("{js} threw: {:?}", r.description);
    }
    r.value.unwrap_or(serde_json::Value::Null)
}

pub fn text(tab: &Tab, selector: &str) -> String {
    let js = format!(
        "(() => {{ const e = document.querySelector({}); return e ? e.innerText : null; }})()",
        serde_json::to_string(selector).expect("a string")
    );
    eval(tab, &js).as_str().unwrap_or_default().to_string()
}

/// Waits until the JavaScript expression `js` is true, at most `limit`; panics with `what`.
pub fn wait_until(tab: &Tab, js: &str, limit: Duration, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        if tab
            .evaluate(js, false)
            .ok()
            .and_then(|r| r.value)
            .and_then(|v| v.as_bool())
            == Some(true)
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?} (page: {})",
            text(tab, "main").chars().take(2000).collect::<String>()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sets the value of the form field `selector` and says so to the page (`input` event).
pub fn fill(tab: &Tab, selector: &str, value: &str) {
    let js = format!(
        "(() => {{ const e = document.querySelector({}); if (!e) return false; e.value = {};
           e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
        serde_json::to_string(selector).expect("a string"),
        serde_json::to_string(value).expect("a string")
    );
    assert_eq!(
        eval(tab, &js),
        serde_json::Value::Bool(true),
        "no {selector}"
    );
}

pub fn click(tab: &Tab, selector: &str) {
    tab.find_element(selector)
        .and_then(|e| e.click().map(|_| ()))
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

fn viewport(tab: &Tab, width: u32, height: u32) {
    tab.call_method(Emulation::SetDeviceMetricsOverride {
        width,
        height,
        device_scale_factor: 1.0,
        mobile: false,
        scale: None,
        screen_width: None,
        screen_height: None,
        position_x: None,
        position_y: None,
        dont_set_visible_size: None,
        screen_orientation: None,
        viewport: None,
        display_feature: None,
        device_posture: None,
    })
    .expect("set the viewport");
}

fn media(tab: &Tab, media: &str) {
    tab.call_method(Emulation::SetEmulatedMedia {
        media: Some(media.into()),
        features: None,
    })
    .expect("emulate the media");
}

/// How the page prints on A4: the widest thing's width in CSS px against the printable width
/// (chromium shrinks a page that is too wide rather than cut it, so this is measured in print
/// media on a viewport as wide as the paper), and the pages of the PDF.
pub struct Printed {
    pub scroll_width: u64,
    pub printable_width: u64,
    pub pages: usize,
    pub pdf: Vec<u8>,
}

pub fn print_a4(tab: &Tab) -> Printed {
    let (w, h) = A4_INCHES;
    let printable_width = ((w - 2.0 * MARGIN_INCHES) * 96.0).floor() as u64;
    media(tab, "print");
    viewport(tab, printable_width as u32, 1000);
    let scroll_width = eval(tab, "document.documentElement.scrollWidth")
        .as_u64()
        .expect("a width");
    tab.call_method(Emulation::ClearDeviceMetricsOverride(None))
        .expect("clear the viewport");
    let pdf = tab
        .print_to_pdf(Some(PrintToPdfOptions {
            paper_width: Some(w),
            paper_height: Some(h),
            margin_top: Some(MARGIN_INCHES),
            margin_bottom: Some(MARGIN_INCHES),
            margin_left: Some(MARGIN_INCHES),
            margin_right: Some(MARGIN_INCHES),
            print_background: Some(true),
            prefer_css_page_size: Some(true),
            ..Default::default()
        }))
        .expect("print to PDF");
    media(tab, "");
    // A page object is `/Type /Page`, not `/Type /Pages` (the tree).
    let pages = pdf
        .windows(11)
        .enumerate()
        .filter(|(i, w)| *w == b"/Type /Page" && pdf.get(i + 11) != Some(&b's'))
        .count();
    Printed {
        scroll_width,
        printable_width,
        pages,
        pdf,
    }
}

/// A PNG of the page at `width` × `height` CSS px (the whole page when `full`).
pub fn screenshot(tab: &Tab, width: u32, height: u32, full: bool) -> Vec<u8> {
    viewport(tab, width, height);
    if full {
        let h = eval(tab, "document.documentElement.scrollHeight")
            .as_u64()
            .unwrap_or(u64::from(height));
        viewport(tab, width, h.clamp(u64::from(height), 6000) as u32);
    }
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("a screenshot");
    tab.call_method(Emulation::ClearDeviceMetricsOverride(None))
        .expect("clear the viewport");
    png
}

/// `root` and every process under it, from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            if let Some(ppid) = after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// The process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rfind(')').is_some_and(|i| !s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}
