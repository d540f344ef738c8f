//! Compiles the mesh and control protocols with protox (pure Rust), so no
//! system `protoc` is needed; the control API's gRPC code comes from tonic.
//! Installs the web app's libraries from npm, as `web/package-lock.json`
//! pins them, into `OUT_DIR` (once per change of the lock), for
//! `src/web/assets.rs` to build into the binary.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn Error>> {
    let protos = ["proto/lifeline_mesh.proto", "proto/lifeline_control.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    web_libraries()
}

/// The files of npm packages the app serves, as `src/web/assets.rs` names them.
const LIBRARY_FILES: [&str; 3] = [
    "leaflet/dist/leaflet.js",
    "leaflet/dist/leaflet.css",
    "pmtiles/dist/pmtiles.js",
];

fn web_libraries() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("web-npm");
    std::fs::create_dir_all(&out)?;
    let lock = std::fs::read("web/package-lock.json")?;
    let stamp = out.join("installed.lock");
    let installed = std::fs::read(&stamp).is_ok_and(|s| s == lock)
        && LIBRARY_FILES
            .iter()
            .all(|f| out.join("node_modules").join(f).exists());
    if installed {
        return Ok(());
    }
    std::fs::copy("web/package.json", out.join("package.json"))?;
    std::fs::copy("web/package-lock.json", out.join("package-lock.json"))?;
    let status = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--prefer-offline",
            "--loglevel=error",
        ])
        .current_dir(&out)
        .status()
        .map_err(|e| {
            format!(
                "the web app's map libraries come from npm, pinned by node/web/package-lock.json, \
                 and npm cannot run ({e}): install Node.js and npm (`make setup` does), then \
                 build again"
            )
        })?;
    if !status.success() {
        return Err(format!(
            "`npm ci` for the web app's libraries failed in {} (see above): is the npm registry \
             reachable? Once they are installed, builds need no network",
            out.display()
        )
        .into());
    }
    for f in LIBRARY_FILES {
        if !Path::new(&out).join("node_modules").join(f).exists() {
            return Err(
                format!("npm installed no {f}: is node/web/package-lock.json right?").into(),
            );
        }
    }
    std::fs::write(&stamp, &lock)?;
    Ok(())
}
