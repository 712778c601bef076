//! Compiles SPIRE's plugin protocol (`proto/`): go-plugin's broker,
//! controller and stdio services, SPIRE's Init and Config services and the
//! server- and agent-side NodeAttestor. Servers only: SPIRE is the client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/plugin/goplugin.proto",
        "proto/spire/service/private/init/v1/init.proto",
        "proto/spire/service/common/config/v1/config.proto",
        "proto/spire/plugin/server/nodeattestor/v1/nodeattestor.proto",
        "proto/spire/plugin/agent/nodeattestor/v1/nodeattestor.proto",
    ];
    tonic_prost_build::configure().build_server(true).build_client(true).compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
