//! `zonectl policy suggest NAME`: a verifier policy admitting a running zone.

use attestation_proto::control::GetZoneRequest;
use attestation_proto::launch::LaunchRecord;
use attestation_proto::policy::Policy;
use clap::Subcommand;

use super::GlobalArgs;
use super::client::{block_on, connect, explain};

/// `zonectl policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print a policy (TOML) that admits this zone's kernel, initrd and cmdline.
    Suggest {
        /// Zone name.
        name: String,
    },
}

/// Runs `zonectl policy`.
pub fn run(g: &GlobalArgs, cmd: PolicyCommand) -> anyhow::Result<i32> {
    let PolicyCommand::Suggest { name } = cmd;
    let zone = block_on(async {
        let mut client = connect(&g.socket()).await?;
        Ok(client.get_zone(GetZoneRequest { name: name.clone() }).await.map_err(explain)?.into_inner().zone.unwrap_or_default())
    })?;
    let m = zone.measurement.ok_or_else(|| anyhow::anyhow!("zone {name} has no measurement (it was never launched)"))?;
    let record = LaunchRecord::decode(&m.launch_record)?;
    print!("{}", Policy::admitting(&record).to_toml());
    Ok(0)
}
