//! The `lifeline` command end to end against a running devnet: real daemons,
//! real chain. Messages and receipts, an SOS and its acknowledgement, a name
//! registered and resolved, a role certified, a CAP alert published on one
//! node and listed on another, a fourth authority voted in and sealing, and
//! every error a person can hit, each with a clear message and a non-zero
//! exit. Finally the devnet stops on SIGTERM, with a watcher still attached,
//! and leaves no process behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fails, http_get, lifeline, ok};
use serde_json::Value;

const FLOOD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/examples/flood-alert.xml"
);
const FLOOD_ID: &str = "DE-SN-LZ-2026-1121-001";

struct Net {
    info: Value,
    child: Child,
    log: PathBuf,
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Net {
    fn node(&self, name: &str) -> PathBuf {
        self.info["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| PathBuf::from(n["dir"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("the devnet has no node {name}: {}", self.info))
    }

    fn id(&self, name: &str) -> String {
        self.info["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .unwrap()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn sorted_fields(xml: &str) -> Vec<(String, String)> {
    let mut f = lifeline_consensus::cap::cap_fields(xml).unwrap();
    f.sort();
    f
}

/// Publishes, on `authority`, every CAP test alert (consensus/tests/cap): a
/// bilingual geocode-only storm warning, a wireless fire alert (two
/// polygons, public text in parameters, embedded media, no `<expires>`),
/// the specification's examples, a "threat over" Update, and last a Cancel
/// without `<info>`; reads each back on `reader` and compares it with the
/// original field by field.
fn agency_alerts(authority: &Path, reader: &Path, tmp: &Path) {
    const STORM: &str = "urn:oid:2.49.0.1.124.2036.11.21.1";
    const FIRE: &str = "IPAWS-2036-0042";
    const CANCEL: &str = "urn:oid:2.49.0.1.124.2036.11.21.2";
    let (storm, storm_xml) = common::cap_alert_in_force("bilingual-geocode-only", tmp);
    let published = json(authority, &["alert", "publish", storm.to_str().unwrap()]);
    assert_eq!(
        published["not_carried"],
        serde_json::json!([]),
        "{published}"
    );
    assert!(published["block"].as_u64().is_some(), "{published}");
    let (fire, fire_xml) = common::cap_alert_in_force("wea-polygons-media", tmp);
    let published = json(authority, &["alert", "publish", fire.to_str().unwrap()]);
    let dropped = published["not_carried"].to_string();
    assert!(dropped.contains("<derefUri>"), "{published}");

    // The nodes have a shape for Ottawa's code, none for Gatineau's: in
    // Ottawa the storm is placed by its shape; elsewhere Gatineau's area
    // is known by code only, so it is listed and said so.
    let storm_near = |point: &str| {
        let out = ok(
            run(reader, &["--json", "alerts", "--near", point]),
            "alerts",
        );
        out.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|a| a["identifier"] == STORM)
    };
    let in_ottawa = eventually(
        "the storm warning reaching the reader",
        Duration::from_secs(20),
        || storm_near("45.42,-75.69"),
    );
    assert_eq!(in_ottawa["area_by_code_only"], false, "{in_ottawa}");
    assert_eq!(in_ottawa["language"], "en-CA", "{in_ottawa}");
    // In the other language its issuer wrote.
    let french = ok(
        run(
            reader,
            &["--json", "alerts", "--lang", "fr", "--near", "45.42,-75.69"],
        ),
        "alerts --lang fr",
    );
    assert!(
        french.contains("avertissement de temp\u{ea}te hivernale en vigueur"),
        "{french}"
    );
    let elsewhere = storm_near("60.0,-100.0").expect("listed: Gatineau's shape is unknown");
    assert_eq!(elsewhere["area_by_code_only"], true, "{elsewhere}");
    eventually(
        "the fire alert reaching the reader",
        Duration::from_secs(20),
        || {
            let out = ok(
                run(reader, &["--json", "alerts", "--near", "34.15,-117.25"]),
                "alerts",
            );
            out.contains(FIRE).then_some(())
        },
    );
    let mut published = vec![(STORM.to_owned(), storm_xml), (FIRE.to_owned(), fire_xml)];
    // The specification's examples, and a "threat over" Update naming
    // alerts this chain never carried.
    for name in [
        "oasis-a2-thunderstorm",
        "oasis-a3-earthquake-update",
        "threat-over-update",
    ] {
        let (file, xml) = common::cap_alert_in_force(name, tmp);
        ok(
            run(authority, &["alert", "publish", file.to_str().unwrap()]),
            name,
        );
        let id = lifeline_consensus::cap::from_cap_xml(&xml)
            .unwrap()
            .alert
            .identifier;
        published.push((id, xml));
    }
    for (id, original) in &published {
        let cap = eventually(
            "the alert reaching the reader",
            Duration::from_secs(20),
            || {
                let out = run(reader, &["alert", "show", id, "--cap"]);
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            },
        );
        assert_eq!(sorted_fields(&cap), sorted_fields(original), "{id}:\n{cap}");
    }
    let shown = ok(run(reader, &["alert", "show", STORM]), "alert show");
    assert!(
        shown.contains("[fr-CA]") && shown.contains("Évitez de voyager"),
        "{shown}"
    );

    let (cancel, cancel_xml) = common::cap_alert_in_force("cancel-without-info", tmp);
    ok(
        run(authority, &["alert", "publish", cancel.to_str().unwrap()]),
        "publish a Cancel",
    );
    eventually(
        "the Cancel reaching the reader",
        Duration::from_secs(20),
        || {
            let out = ok(run(reader, &["--json", "alerts"]), "alerts");
            (!out.contains(STORM)).then_some(())
        },
    );
    let cap = ok(
        run(reader, &["alert", "show", CANCEL, "--cap"]),
        "alert show --cap",
    );
    assert_eq!(sorted_fields(&cap), sorted_fields(&cancel_xml), "{cap}");
}

fn run(dir: &Path, args: &[&str]) -> Output {
    lifeline(dir).args(args).output().unwrap()
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = lifeline(dir).arg("--json").args(args).output().unwrap();
    serde_json::from_str(&ok(out, &args.join(" "))).unwrap()
}

fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start(root: &Path) -> Net {
    let dir = root.join("net");
    let log = root.join("devnet.out");
    let child = Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args(["devnet", "--nodes", "5", "--authorities", "3", "--dir"])
        .arg(&dir)
        // Shapes for one of the two region codes of the storm warning
        // in consensus/tests/cap.
        .arg("--geocode-shapes")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ottawa.geojson"
        ))
        .env_remove("LIFELINE_CONTROL_SOCKET")
        .env_remove("LIFELINE_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(root.join("devnet.err")).unwrap())
        .spawn()
        .unwrap();
    let mut net = Net {
        info: Value::Null,
        child,
        log,
    };
    let info_path = dir.join("devnet.json");
    let deadline = Instant::now() + Duration::from_secs(180);
    while !info_path.exists() {
        if let Some(status) = net.child.try_wait().unwrap() {
            panic!(
                "the devnet stopped ({status}) before it was ready:\n{}\n{}",
                net.output(),
                std::fs::read_to_string(root.join("devnet.err")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the devnet was not ready in 180 s:\n{}",
            net.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(100));
    net.info = serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    net
}

#[test]
fn the_lifeline_command_against_a_devnet() {
    let root = tempfile::tempdir().unwrap();
    let net = start(root.path());
    let tour = net.output();
    // The tour itself: an SOS over several hops, acknowledged; a message by name.
    for line in [
        "reached fire-brigade in",
        "ana sees it after",
        "delivered, receipt back",
    ] {
        assert!(
            tour.contains(line),
            "the tour did not show {line:?}:\n{tour}"
        );
    }
    let (civil, fire, ana) = (
        net.node("civil-protection"),
        net.node("fire-brigade"),
        net.node("ana"),
    );

    // Each node took its web app's port itself; `lifeline status` and
    // devnet.json say where, and the app answers there.
    for node in net.info["nodes"].as_array().unwrap() {
        let dir = PathBuf::from(node["dir"].as_str().unwrap());
        let url = node["web"].as_str().unwrap();
        assert_eq!(json(&dir, &["status"])["web"], serde_json::json!([url]));
        let addr = url
            .strip_prefix("http://")
            .and_then(|a| a.strip_suffix('/'))
            .unwrap_or_else(|| panic!("not a web app URL: {url}"));
        assert_eq!(http_get(addr, "/").0, 200, "{url}");
    }

    // A message by name, with its receipt, and in the recipient's inbox.
    ok(
        run(
            &civil,
            &[
                "send",
                "--to",
                "ana",
                "--wait",
                "20s",
                "Bridge closed, use the ferry",
            ],
        ),
        "send by name",
    );
    let inbox = lifeline(&ana).args(["--json", "inbox"]).output().unwrap();
    let inbox = ok(inbox, "inbox");
    let entry: Value = inbox
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|m| m["text"] == "Bridge closed, use the ferry")
        .unwrap_or_else(|| panic!("the message is not in ana's inbox:\n{inbox}"));
    assert_eq!(entry["from"], net.id("civil-protection"));

    // An SOS from ana, seen by the fire brigade, acknowledged back to ana.
    let sos = ok(
        run(
            &ana,
            &[
                "sos",
                "--lat",
                "51.336",
                "--lon",
                "12.33",
                "Cellar flooding, two people",
            ],
        ),
        "sos",
    );
    let sos = sos.trim().to_owned();
    eventually(
        "the SOS reaching the fire brigade",
        Duration::from_secs(20),
        || {
            let out = ok(run(&fire, &["--json", "inbox"]), "inbox");
            out.lines()
                .any(|l| l.contains(&sos) && l.contains("\"sos\""))
                .then_some(())
        },
    );
    ok(
        run(&fire, &["sos", "ack", &sos, "--note", "Team 3 on the way"]),
        "sos ack",
    );
    eventually(
        "the acknowledgement reaching ana",
        Duration::from_secs(20),
        || {
            let s = json(&ana, &["message", "status", &sos]);
            // Who acknowledged, by the chain: the fire brigade is an authority.
            (s["status"] == "acknowledged"
                && s["receipts"].to_string().contains("Team 3 on the way")
                && s["receipts"].to_string().contains("authority"))
            .then_some(())
        },
    );

    // Register a name (the devnet left one node off the chain) and resolve it elsewhere.
    let newcomer = net.info["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["registered"] == false)
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .expect("the devnet leaves one node unregistered");
    let newcomer_dir = net.node(&newcomer);
    fails(
        run(&civil, &["identity", "show", &newcomer]),
        "no identity named",
    );
    ok(
        run(
            &newcomer_dir,
            &["identity", "register", &newcomer, "--wait", "30s"],
        ),
        "register",
    );
    let shown = eventually(
        "the new name reaching civil-protection",
        Duration::from_secs(20),
        || {
            let out = lifeline(&civil)
                .args(["--json", "identity", "show", &newcomer])
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
        },
    );
    assert_eq!(shown["id"], net.id(&newcomer));
    fails(
        run(
            &newcomer_dir,
            &["identity", "register", "again", "--wait", "5s"],
        ),
        "already registered",
    );

    // An authority certifies a role by name; anyone sees it.
    ok(
        run(
            &civil,
            &["certify", &newcomer, "medic", "--until", "2030-01-01"],
        ),
        "certify",
    );
    eventually(
        "the role reaching ana's node",
        Duration::from_secs(20),
        || {
            let shown = json(&ana, &["identity", "show", &newcomer]);
            (shown["roles"][0]["role"] == "medic").then_some(())
        },
    );

    // A CAP alert published on one node, listed near its area on another,
    // and written back out as CAP.
    ok(run(&civil, &["alert", "publish", FLOOD]), "alert publish");
    eventually(
        "the alert reaching ana's node",
        Duration::from_secs(20),
        || {
            let out = ok(
                run(&ana, &["--json", "alerts", "--near", "51.335,12.33"]),
                "alerts",
            );
            out.contains(FLOOD_ID).then_some(())
        },
    );
    let elsewhere = ok(
        run(&ana, &["--json", "alerts", "--near", "48.1,11.5"]),
        "alerts",
    );
    assert!(
        !elsewhere.contains(FLOOD_ID),
        "an alert listed far outside its area"
    );
    let cap = ok(
        run(&ana, &["alert", "show", FLOOD_ID, "--cap"]),
        "alert show --cap",
    );
    assert!(
        cap.contains("<identifier>DE-SN-LZ-2026-1121-001</identifier>"),
        "{cap}"
    );
    assert!(cap.contains("<scope>Public</scope>"), "{cap}");
    let written = root.path().join("again.xml");
    std::fs::write(&written, &cap).unwrap();
    // The written alert is valid CAP: publishing it again is refused only as a duplicate.
    fails(
        run(&civil, &["alert", "publish", written.to_str().unwrap()]),
        "already on the chain",
    );

    // Alerts as agencies write them, each read back on another node and
    // compared field by field with the original.
    agency_alerts(&civil, &ana, root.path());

    // Vote ana in as a fourth authority; she then seals blocks.
    fails(
        run(&ana, &["chain", "vote", "add", "ana"]),
        "not an authority",
    );
    ok(run(&civil, &["chain", "vote", "add", "ana"]), "vote");
    ok(run(&fire, &["chain", "vote", "add", "ana"]), "vote");
    let ana_id = net.id("ana");
    eventually("ana becoming an authority", Duration::from_secs(30), || {
        let s = json(&ana, &["chain", "status"]);
        (s["authorities"].as_array().unwrap().len() == 4 && s["is_authority"] == true).then_some(())
    });
    eventually("a block sealed by ana", Duration::from_secs(30), || {
        let head = json(&ana, &["chain", "status"])["head"]["number"]
            .as_u64()
            .unwrap();
        (head.saturating_sub(8)..=head)
            .find(|&b| json(&ana, &["chain", "block", &b.to_string()])["signer"] == ana_id.as_str())
    });

    // Every error a person can hit: a clear message and a non-zero exit.
    fails(
        run(&civil, &["send", "--to", "anna", "hello"]),
        "Did you mean",
    );
    fails(
        run(&civil, &["send", "--to", "nobody-at-all", "hello"]),
        "identity list",
    );
    fails(
        run(
            &civil,
            &["certify", "ana", "medic", "--until", "31/12/2030"],
        ),
        "is not a date",
    );
    fails(
        run(
            &civil,
            &["certify", "ana", "medic", "--until", "2001-01-01"],
        ),
        "in the past",
    );
    fails(
        run(
            &net.node("shelter-north"),
            &["certify", "ana", "medic", "--until", "30days"],
        ),
        "not one",
    );
    let bad = root.path().join("bad.xml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(FLOOD)
            .unwrap()
            .replace("<status>Exercise</status>", "<status>Real</status>"),
    )
    .unwrap();
    fails(
        run(&civil, &["alert", "publish", bad.to_str().unwrap()]),
        "line 8, <status>: is \"Real\"; CAP 1.2 allows Actual",
    );
    // With --json, the error is JSON too, naming the element, line and rule.
    let out = lifeline(&civil)
        .args(["--json", "alert", "publish", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&error["element"], &error["line"], &error["rule"]),
        (
            &Value::from("status"),
            &Value::from(8),
            &Value::from("CAP 1.2")
        ),
        "{error}"
    );
    fails(
        run(&civil, &["alert", "publish", "/no/such/alert.xml"]),
        "cannot read",
    );
    fails(run(&civil, &["alert", "show", "no-such-alert"]), "no alert");
    fails(
        run(
            root.path(),
            &["--control-socket", "/nonexistent/control.sock", "status"],
        ),
        "no lifeline node is running",
    );
    let wrong = lifeline(&ana)
        .env("LIFELINE_PASSPHRASE", "not the passphrase")
        .args(["key", "show"])
        .output()
        .unwrap();
    fails(wrong, "passphrase");
    ok(
        run(
            &civil,
            &["revoke", "shelter-north", "--reason", "device stolen"],
        ),
        "revoke",
    );
    fails(
        run(&civil, &["send", "--to", "shelter-north", "hello"]),
        "revoked",
    );

    // Shell completions.
    for (shell, marker) in [
        ("bash", "_lifeline()"),
        ("zsh", "#compdef lifeline"),
        ("fish", "complete -c lifeline"),
    ] {
        let out = ok(run(root.path(), &["completions", shell]), "completions");
        assert!(out.contains(marker), "{shell} completions lack {marker:?}");
        assert!(
            out.contains("devnet") && out.contains("certify"),
            "{shell}: commands missing"
        );
    }

    // SIGTERM with a watcher attached: the devnet and all its nodes stop.
    let mut watcher = lifeline(&ana)
        .args(["inbox", "--watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pids: Vec<u64> = net.info["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["pid"].as_u64().unwrap())
        .collect();
    let mut net = net;
    let stopped_at = Instant::now();
    assert!(
        Command::new("kill")
            .arg(net.child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let status = eventually("the devnet stopping", Duration::from_secs(20), || {
        net.child.try_wait().unwrap()
    });
    assert!(status.success(), "the devnet exited with {status}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "stopping took {:?}: a node waited for the watcher",
        stopped_at.elapsed()
    );
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "node process {pid} outlived the devnet"
        );
    }
    eventually("the watcher ending", Duration::from_secs(10), || {
        watcher.try_wait().unwrap()
    });
}
