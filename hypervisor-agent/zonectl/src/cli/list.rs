//! `zonectl list`

use attestation_proto::control::ListZonesRequest;

use super::client::{block_on, connect, explain};
use super::format::{OutputFormat, print_json};
use super::{GlobalArgs, show};

/// Runs `zonectl list`.
pub fn run(g: &GlobalArgs) -> anyhow::Result<i32> {
    block_on(async move {
        let mut client = connect(&g.socket()).await?;
        let zones = client.list_zones(ListZonesRequest {}).await.map_err(explain)?.into_inner().zones;
        match g.output {
            OutputFormat::Json => print_json(&zones.iter().map(show::json).collect::<Vec<_>>())?,
            OutputFormat::Table => println!("{}", show::table(&zones)),
        }
        Ok(0)
    })
}
