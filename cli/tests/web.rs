//! The web app in a real browser against real daemons: Debian's chromium,
//! driven by playwright-core from `web/pages.mjs` (Node.js).
//!
//! Three nodes: `ana` (a person, app on loopback), `bea` (a medic whose
//! app is offered on the LAN, behind pairing) and `civil` (the authority).
//! The script pairs bea's browser (refused first, with guidance); ana
//! registers her name from her Me page; civil certifies bea as a medic and
//! publishes alerts from its Authority page (a CAP file, a CAP file that
//! breaks a rule, and its own form); ana's page sends a message to bea by
//! registered name, which arrives in bea's page and shows delivered in
//! ana's; an SOS with a position from ana's page is acknowledged from
//! bea's, and ana's shows "help is coming" with bea's certified role; the
//! alerts show in ana's Alerts page, and the SOS and the alerts' shapes on
//! bea's map. Every page is photographed
//! at phone and desktop width (into `CARGO_TARGET_DIR/web-screenshots`);
//! no request may leave the machine and the console must stay clean.
//!
//! Needs chromium (`make setup` installs it) and Node.js with npm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, free_port, genesis_of, lifeline, ok};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A PMTiles (version 3) archive holding one raster tile, `png`, for the
/// whole world at zoom 0: what an operator's map file is, at its smallest.
fn one_tile_pmtiles(png: &[u8]) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    // The root directory, uncompressed: one entry (tile id 0, run 1, its
    // length, offset 0 written as 0 + 1).
    let mut dir = Vec::new();
    for v in [1, 0, 1, png.len() as u64, 1] {
        varint(v, &mut dir);
    }
    let metadata = b"{}";
    let (dir_at, meta_at) = (127u64, 127 + dir.len() as u64);
    let tiles_at = meta_at + metadata.len() as u64;
    let mut out = b"PMTiles\x03".to_vec();
    for v in [
        dir_at,
        dir.len() as u64,
        meta_at,
        metadata.len() as u64,
        tiles_at, // no leaf directories
        0,
        tiles_at,
        png.len() as u64,
        1, // addressed tiles
        1, // tile entries
        1, // tile contents
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    // Clustered; internal and tile compression none; PNG; zooms 0 to 0.
    out.extend_from_slice(&[1, 1, 1, 2, 0, 0]);
    for v in [-1_800_000_000i32, -850_000_000, 1_800_000_000, 850_000_000] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(0);
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    assert_eq!(out.len(), 127);
    out.extend_from_slice(&dir);
    out.extend_from_slice(metadata);
    out.extend_from_slice(png);
    out
}

#[test]
fn people_message_call_for_help_and_read_alerts_in_the_browser() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `make setup` installs Debian's chromium for the browser tests"
    );
    let scripts = common::npm_packages("web", &["pages.mjs"]);
    let root = tempfile::tempdir().unwrap();
    let mut civil = Daemon::new(root.path(), "civil");
    let mut ana = Daemon::new(root.path(), "ana");
    let mut bea = Daemon::new(root.path(), "bea");
    let genesis = genesis_of(root.path(), std::slice::from_ref(&civil));
    for d in [&ana, &bea] {
        std::fs::copy(&genesis, d.dir.join("genesis.toml")).unwrap();
    }
    let web = |d: &mut Daemon, addr: String| {
        d.args.extend(["--web".into(), addr.clone()]);
        format!("http://127.0.0.1:{}/", addr.rsplit(':').next().unwrap())
    };
    let civil_url = web(&mut civil, format!("127.0.0.1:{}", free_port()));
    // Civil's map draws over an offline tile file.
    let tiles = root.path().join("world.pmtiles");
    let png = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tile.png")).unwrap();
    std::fs::write(&tiles, one_tile_pmtiles(&png)).unwrap();
    civil.args.push("--web-tiles".into());
    civil.args.push(tiles.to_str().unwrap().into());
    let ana_url = web(&mut ana, format!("127.0.0.1:{}", free_port()));
    // On every address: a browser must pair, even one on this machine.
    let bea_url = web(&mut bea, format!("0.0.0.0:{}", free_port()));
    // Bea's node knows the shape of Ottawa's region code, so her map draws
    // the storm warning given by code only.
    bea.args.push("--geocode-shapes".into());
    bea.args
        .push(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ottawa.geojson").into());
    civil.start();
    for d in [&mut ana, &mut bea] {
        d.bootstrap = vec![civil.addr()];
        d.start();
    }
    ana.wait_for_route(&bea, Duration::from_secs(30));
    bea.wait_for_route(&ana, Duration::from_secs(30));

    // Bea registers by the command line; ana registers from her page,
    // and civil certifies bea from its Authority page (in the script).
    ok(
        lifeline(&bea.dir)
            .args(["identity", "register", "bea", "--wait", "30s"])
            .output()
            .unwrap(),
        "identity register",
    );
    // One alert by the command line, given by region codes only; one with
    // two polygons from civil's page as a file, and one that breaks a CAP
    // rule.
    let (storm, _) = common::cap_alert_in_force("bilingual-geocode-only", root.path());
    ok(
        lifeline(&civil.dir)
            .args(["alert", "publish", "--wait", "30s"])
            .arg(&storm)
            .output()
            .unwrap(),
        "alert publish",
    );
    let (fire, fire_xml) = common::cap_alert_in_force("wea-polygons-media", root.path());
    let broken = root.path().join("broken.xml");
    std::fs::write(
        &broken,
        fire_xml.replace("<status>Actual</status>", "<status>Real</status>"),
    )
    .unwrap();

    let code = ok(
        lifeline(&bea.dir).args(["web", "pair"]).output().unwrap(),
        "web pair",
    );
    let shots = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
        .join("web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(scripts.join("pages.mjs"))
        .env("CHROMIUM", CHROMIUM)
        .env("ANA_URL", &ana_url)
        .env("BEA_URL", &bea_url)
        .env("CIVIL_URL", &civil_url)
        .env("FIRE_FILE", &fire)
        .env("BROKEN_FILE", &broken)
        .env("BEA_CODE", code.trim())
        .env("SHOTS", &shots)
        .output()
        .expect("cannot run node; `make setup` installs Node.js");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\nana's log:\n{}\nbea's log:\n{}",
        ana.log(),
        bea.log()
    );
    assert!(stdout.contains("all browser checks passed"), "{stdout}");
}
