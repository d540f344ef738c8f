//! Compiles the mesh and control protocols with protox (pure Rust), so no
//! system `protoc` is needed; the control API's gRPC code comes from tonic.

use std::error::Error;

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
    Ok(())
}
