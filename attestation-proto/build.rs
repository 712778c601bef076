//! Compiles the `.proto` files under `proto/` (protoc from Debian's
//! `protobuf-compiler`). Service stubs are generated only with the `grpc`
//! feature, so the messages and the verifier stay free of tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let protos = ["proto/zone/v1/common.proto", "proto/zone/v1/control.proto", "proto/zone/guest/v1/agent.proto", "proto/zone/evidence/v1/evidence.proto", "proto/zone/spire/v1/spire.proto"];
    if std::process::Command::new(std::env::var("PROTOC").unwrap_or_else(|_| "protoc".into()))
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("protoc not found: install it with `apt-get install protobuf-compiler` (scripts/setup.sh does)".into());
    }
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .build_transport(false)
        .compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
