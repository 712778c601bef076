//! `zonectl inspect NAME`

use attestation_proto::control::GetZoneRequest;

use super::client::{block_on, connect, explain};
use super::format::{OutputFormat, print_json};
use super::{GlobalArgs, show};

/// Runs `zonectl inspect`.
pub fn run(g: &GlobalArgs, name: String) -> anyhow::Result<i32> {
    block_on(async move {
        let mut client = connect(&g.socket()).await?;
        let zone = client.get_zone(GetZoneRequest { name }).await.map_err(explain)?.into_inner().zone.unwrap_or_default();
        match g.output {
            OutputFormat::Json => print_json(&show::json(&zone))?,
            OutputFormat::Table => print!("{}", show::details(&zone)),
        }
        Ok(0)
    })
}
