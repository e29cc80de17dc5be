//! The status pages, read in process from the appliance's router: a node that matched its slot
//! and one that is not in the plan (with a hostile DMI serial), the overview, a rack, a node,
//! an unknown node, and the size of a site of 720 slots.

mod common;

use common::inproc::App;
use common::site::{burned_in, h100_report};

fn site(plan: &str) -> App {
    App::start(plan, "")
}

const MATCHED: &str = "52:54:00:10:00:01";
const STRANGER: &str = "52:54:00:ee:00:99";
const HOSTILE: &str = "<script>alert(1)</script>";

/// The node's number, from the overview's or a rack's link to it.
fn node_link<'a>(page: &'a str, mac: &str) -> &'a str {
    let at = page
        .find(&format!(">{mac}</a>"))
        .unwrap_or_else(|| panic!("no link to {mac}"));
    let start = page[..at].rfind("href=\"").expect("a link") + "href=\"".len();
    let end = start + page[start..].find('"').expect("the link ends");
    &page[start..end]
}

#[test]
fn overview_rack_and_node_pages() {
    let s = site(&format!(
        "site,row,rack,u,serial,mac,sku\n\
         lab,r1,a01,10,,{MATCHED},qemu-lab\n\
         lab,r1,a01,20,SN-B200-1,,hgx-b200\n\
         lab,r2,b07,5,SN-QEMU-2,,qemu-lab\n"
    ));
    assert_eq!(s.inspect(MATCHED, "SN-QEMU-1"), "inspected");
    assert_eq!(s.inspect(STRANGER, HOSTILE), "failed");

    let overview = s.html("/");
    // The people's list comes before anything else on the page, the failed node in it.
    let attention = overview.find("Needs a person (1)").expect("attention list");
    let counts = overview.find("Nodes by state").expect("counts");
    assert!(attention < counts);
    let listed = &overview[attention..counts];
    assert!(listed.contains(STRANGER), "{listed}");
    assert!(listed.contains("failed at inspecting: not in the rack plan"));
    assert!(listed.contains("not in any slot"));
    assert!(!listed.contains(MATCHED));
    for rack in [
        "href=\"/racks/lab/r1/a01\">a01</a>",
        "href=\"/racks/lab/r2/b07\">b07</a>",
    ] {
        assert!(overview.contains(rack), "no {rack}");
    }
    for count in [
        "inspected: 1",
        "failed: 1",
        "enrolled: 0",
        "empty: 2",
        "2 nodes, 3 planned slots",
    ] {
        assert!(overview.contains(count), "no `{count}`");
    }
    // The matched node is coloured in its rack's elevation, above nothing but U10's gap.
    assert!(overview.contains("class=\"st-inspected\""));
    assert!(!overview.contains(HOSTILE));

    let rack = s.html("/racks/lab/r1/a01");
    let u20 = rack.find("<th>U20</th>").expect("U20");
    let u10 = rack.find("<th>U10</th>").expect("U10");
    assert!(u20 < u10, "the top of the rack comes first");
    // The positions the plan does not name are shown, down to U1.
    let gap = rack
        .find("<th>U19–U11</th>")
        .expect("the gap between U20 and U10");
    assert!(u20 < gap && gap < u10);
    assert!(rack[u10..].contains("<th>U9–U1</th>"));
    assert!(rack[u20..u10].contains("SN-B200-1") && rack[u20..u10].contains("hgx-b200"));
    assert!(rack[u20..u10].contains("empty"));
    let lower = &rack[u10..];
    assert!(
        lower.contains(&format!("<td>{MATCHED}</td>")),
        "expected MAC"
    );
    assert!(lower.contains(&format!(">{MATCHED}</a>")), "actual node");
    assert!(lower.contains(">inspected</td>"));
    assert!(rack.contains("no checklist started"));

    let link = node_link(&overview, STRANGER).to_string();
    let node = s.html(&link);
    // askama writes `<` and `>` as numeric references (`&#60;`, not `&lt;`): the same text.
    let serial = node.find("<th>Serial</th>").expect("the serial's row");
    assert!(
        node[serial..]
            .starts_with("<th>Serial</th><td>&#60;script&#62;alert(1)&#60;/script&#62;</td>"),
        "{}",
        &node[serial..]
    );
    assert!(!node.contains("<script>alert(1)"));
    assert!(node.contains("not in the rack plan"));
    assert!(node.contains("2.0 GiB"));
    assert!(node.contains("inspecting → failed"), "timeline");

    let matched = s.html(node_link(&rack, MATCHED));
    assert!(matched.contains("href=\"/racks/lab/r1/a01\">lab/r1/a01/U10</a>"));
    assert!(matched.contains("SN-QEMU-1"));
    assert!(matched.contains("No burn-in yet."));

    // The page's print stylesheet hides the navigation.
    assert!(overview.contains("@media print{nav,.noprint{display:none!important}"));

    for missing in [
        "/nodes/4242",
        "/nodes/52:54:00:00:00:00",
        "/racks/lab/r9/zz",
    ] {
        let page = s.get(missing);
        assert_eq!(page.status, 404, "{missing}");
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert!(page.body.contains("Not found"), "{}", page.body);
    }
}

#[test]
fn a_site_of_720_slots_stays_small() {
    let mut plan = String::from("site,row,rack,u,serial,mac,sku\n");
    for rack in 0..10u32 {
        for u in 1..=72u32 {
            plan.push_str(&format!(
                "dc1,row{},rack{rack:02},{u},,02:00:00:00:{rack:02x}:{u:02x},qemu-lab\n",
                rack / 5
            ));
        }
    }
    let s = site(&plan);
    // A few nodes, so the elevations have colours and the people's list has entries.
    for i in 1..=3u32 {
        s.inspect(&format!("52:54:00:ff:00:{i:02x}"), &format!("SN-{i}"));
    }
    s.inspect("02:00:00:00:00:01", "SN-RACK00-U1");

    let overview = s.html("/");
    eprintln!("overview of 720 slots: {} bytes", overview.len());
    assert!(
        overview.len() < 1_000_000,
        "{} bytes for 720 slots",
        overview.len()
    );
    assert!(overview.contains("Needs a person (3)"));
    assert!(overview.contains("720 planned slots"));
    for rack in 0..10 {
        assert!(
            overview.contains(&format!(">rack{rack:02}</a>")),
            "rack{rack:02}"
        );
    }
    assert_eq!(overview.matches("<i class=\"st-empty\"").count(), 719);

    let rack = s.html("/racks/dc1/row0/rack00");
    assert_eq!(rack.matches("<tr class=\"slot\">").count(), 72);
}

const H100_A: &str = "52:54:00:20:00:01";
const H100_B: &str = "52:54:00:20:00:02";
/// A GPU whose id a hostile agent made up.
const HOSTILE_GPU: &str = "0000:1f:00.0<script>alert(1)</script>";

/// The chart whose title is `title`, from its `<svg` to its `</svg>`.
fn chart<'a>(page: &'a str, title: &str) -> &'a str {
    let at = page
        .find(&format!("<title>{title}</title>"))
        .unwrap_or_else(|| panic!("no chart `{title}`"));
    let start = page[..at].rfind("<svg").expect("its <svg");
    let end = at + page[at..].find("</svg>").expect("its </svg>");
    &page[start..end]
}

#[test]
fn the_node_page_charts_its_latest_burn_in() {
    let gpus = |last: &str| -> Vec<String> {
        (0..7)
            .map(|i| format!("0000:{:02x}:00.0", 0x18 + i))
            .chain([last.to_string()])
            .collect()
    };
    let s = App::seeded(
        "site,row,rack,u,serial,mac,sku\n\
         lab,r1,h01,10,SN-H100-1,,hgx-h100\n\
         lab,r1,h01,14,SN-H100-2,,hgx-h100\n",
        |data| {
            // The first node's eight GPUs are the second's cohort.
            burned_in(
                data,
                H100_A,
                "SN-H100-1",
                &h100_report(H100_A, &gpus("0000:1f:00.0")),
            );
            burned_in(
                data,
                H100_B,
                "SN-H100-2",
                &h100_report(H100_B, &gpus(HOSTILE_GPU)),
            );
        },
        "",
    );
    let page = s.html(&format!("/nodes/{H100_B}"));
    let profiles = provisioner::burnin::profile::Profiles::parse(
        provisioner::burnin::profile::SHIPPED_PROFILES,
    )
    .unwrap();
    let floor = |check: &str| {
        profiles.by_sku["hgx-h100"]
            .floors
            .iter()
            .find(|f| f.name == check)
            .unwrap_or_else(|| panic!("no floor for {check}"))
            .min
    };
    // The real card copied 2.89 TB/s and multiplied at 710 TFLOP/s (p50); so did the cohort.
    for (title, check, median) in [
        ("hbm_copy, TB/s", "hbm_copy", "2.89"),
        ("gemm_bf16_p50, TFLOP/s", "gemm_bf16_p50", "710"),
    ] {
        let svg = chart(&page, title);
        assert!(
            svg.contains(&format!(">floor {}</text>", floor(check))),
            "{svg}"
        );
        assert!(
            svg.contains(&format!(">cohort median {median}</text>")),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect ").count(), 8, "a bar per GPU: {svg}");
        assert!(!svg.contains("#c62828"), "no bar under its floor: {svg}");
    }
    let temperature = chart(&page, "GPU temperature, °C");
    assert_eq!(temperature.matches("<polyline ").count(), 8);
    let power = chart(&page, "GPU power, W");
    assert!(power.contains(">limit 700 W</text>"), "{power}");
    // The made-up id is text inside the charts, never markup.
    let hbm = chart(&page, "hbm_copy, TB/s");
    assert!(
        hbm.contains("<title>0000:1f:00.0&lt;script&gt;alert(1)&lt;/script&gt;: 2.89 TB/s</title>"),
        "{hbm}"
    );
    assert!(!page.contains("<script>alert(1)"));
    assert!(!page.contains("NaN"));
}

/// The overview is rendered once per change and served from memory until the next: a new
/// node's state, and a plan imported while the appliance runs, both show at once.
#[test]
fn the_cached_overview_follows_states_and_a_new_plan() {
    let s = site(&format!(
        "site,row,rack,u,serial,mac,sku\nlab,r1,a01,10,,{MATCHED},qemu-lab\n"
    ));
    let first = s.html("/");
    assert_eq!(first, s.html("/"), "the same page twice");
    assert!(first.contains("0 nodes, 1 planned slots"), "{first}");

    assert_eq!(s.inspect(MATCHED, "SN-QEMU-1"), "inspected");
    let after = s.html("/");
    assert!(after.contains("1 nodes, 1 planned slots"), "{after}");

    let plan = s.dir.path().join("plan2.csv");
    std::fs::write(
        &plan,
        format!("site,row,rack,u,serial,mac,sku\nlab,r1,a01,10,,{MATCHED},qemu-lab\nlab,r3,z99,1,SN-NEW,,qemu-lab\n"),
    )
    .unwrap();
    s.cli(&["plan", "import", plan.to_str().unwrap()]);
    let replanned = s.html("/");
    assert!(replanned.contains(">z99</a>"), "the new rack: {replanned}");
    assert!(replanned.contains("2 planned slots"), "{replanned}");
}
