//! The mesh protocol's generated types, for the mesh_frame target (which
//! compiles the daemon's codec file itself).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../node/proto/lifeline_mesh.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../node/proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
