//! `zonectl logs NAME [-f] [--console]` and `zonectl console NAME`

use std::io::Write;

use attestation_proto::control::{LogSource, ReadLogsRequest};

use super::GlobalArgs;
use super::client::{block_on, connect, explain};
use super::format::OutputFormat;

/// Streams a zone's workload output (or console) to stdout.
pub fn run(g: &GlobalArgs, name: String, follow: bool, console: bool) -> anyhow::Result<i32> {
    let json = g.output == OutputFormat::Json;
    block_on(async move {
        let mut client = connect(&g.socket()).await?;
        let source = if console { LogSource::Console } else { LogSource::Workload };
        let mut stream = client
            .read_logs(ReadLogsRequest { name: name.clone(), source: source as i32, follow })
            .await
            .map_err(explain)?
            .into_inner();
        let mut all = Vec::new();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.message().await.map_err(explain)? {
            if json {
                all.extend_from_slice(&chunk.data);
            } else {
                out.write_all(&chunk.data)?;
                out.flush()?;
            }
        }
        if json {
            super::format::print_json(&serde_json::json!({
                "name": name,
                "source": if console { "console" } else { "workload" },
                "text": String::from_utf8_lossy(&all),
            }))?;
        }
        Ok(0)
    })
}
