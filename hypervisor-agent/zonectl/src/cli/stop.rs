//! `zonectl stop NAME` and `zonectl destroy NAME`

use attestation_proto::control::{DestroyZoneRequest, StopZoneRequest};

use super::client::{block_on, connect, explain};
use super::format::{OutputFormat, print_json};
use super::{GlobalArgs, show};

/// Runs `zonectl stop`.
pub fn stop(g: &GlobalArgs, name: String) -> anyhow::Result<i32> {
    block_on(async move {
        let mut client = connect(&g.socket()).await?;
        if g.output == OutputFormat::Table {
            eprintln!("stopping {name}...");
        }
        let zone = client.stop_zone(StopZoneRequest { name }).await.map_err(explain)?.into_inner().zone.unwrap_or_default();
        match g.output {
            OutputFormat::Json => print_json(&show::json(&zone))?,
            OutputFormat::Table => println!("{}", show::table(std::slice::from_ref(&zone))),
        }
        Ok(0)
    })
}

/// Runs `zonectl destroy`.
pub fn destroy(g: &GlobalArgs, name: String) -> anyhow::Result<i32> {
    block_on(async move {
        let mut client = connect(&g.socket()).await?;
        if g.output == OutputFormat::Table {
            eprintln!("destroying {name}...");
        }
        client.destroy_zone(DestroyZoneRequest { name: name.clone() }).await.map_err(explain)?;
        match g.output {
            OutputFormat::Json => print_json(&serde_json::json!({ "name": name, "destroyed": true }))?,
            OutputFormat::Table => println!("{name} destroyed"),
        }
        Ok(0)
    })
}
