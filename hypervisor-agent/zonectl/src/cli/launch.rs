//! `zonectl launch NAME [--kernel K] [--initrd I | --image REF] [--cmdline C] [--vcpus N] [--memory MiB] [--scratch-mib MiB] [-- CMD…]`
//!
//! With `--image`, the zone's command runs in the image's root (from the
//! image store, verity-protected): the image's entrypoint followed by the
//! arguments after `--`, or by the image's cmd when none are given, with the
//! image's environment, working directory and user.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use attestation_proto::control::{LaunchZoneRequest, WaitZoneRequest, ZoneSpec};
use clap::Args;

use super::client::{block_on, connect, explain};
use super::format::{OutputFormat, print_json};
use super::{GlobalArgs, show};

/// Arguments of `zonectl launch`.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Zone name: 1-63 characters of a-z, 0-9 and '-'.
    pub name: String,
    /// Kernel (default: the daemon's defaults.kernel).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initramfs (default: the daemon's defaults.initrd).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Run the command in this image's root (a name or digest from `zonectl image ls`).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    #[command(flatten)]
    pub store: super::image::StoreArgs,
    /// Kernel command line (default: the daemon's defaults.cmdline).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// vCPUs.
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// A writable scratch disk of this many MiB, created empty for the zone
    /// and removed with it (virtio-blk; in the zone the disk whose
    /// /sys/block/vdX/serial is "scratch").
    #[arg(long, value_name = "MiB")]
    pub scratch_mib: Option<u64>,
    /// A network interface (eth0 in the zone) on the daemon's zone network:
    /// a routed /31 from its [network] pool, or an address from the CNI
    /// network its [cni] table names; the addresses in the measured launch
    /// (`zonectl inspect` shows them).
    #[arg(long)]
    pub net: bool,
    /// Forward a host TCP port to a port of the zone, `[HOST_ADDRESS:]HOST_PORT:ZONE_PORT`
    /// (repeatable; implies --net). The daemon listens on the host port while the zone runs.
    #[arg(long, value_name = "[ADDR:]HOST:ZONE", value_parser = attestation_proto::zone::parse_publish)]
    pub publish: Vec<(std::net::Ipv4Addr, u16, u16)>,
    /// Return as soon as the VMM runs instead of waiting for zone-guest.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the zone to be ready (seconds).
    #[arg(long, default_value_t = 300)]
    pub wait_timeout: u32,
    /// The zone's command (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// The image root `reference` names in the store, and the zone's command:
/// the image's entrypoint, then `args` (or the image's cmd if there are none).
pub fn image_root(
    store: &super::image::StoreArgs,
    reference: &str,
    args: Vec<String>,
) -> anyhow::Result<(attestation_proto::control::ImageRoot, Vec<String>)> {
    let store = store.store();
    let r = store.resolve(reference)?;
    let p = &r.process;
    let mut command = p.entrypoint.clone().unwrap_or_default();
    if args.is_empty() {
        command.extend(p.cmd.clone().unwrap_or_default());
    } else {
        command.extend(args);
    }
    if command.is_empty() {
        anyhow::bail!("the image {reference} has no entrypoint or cmd; give the command after --");
    }
    let root = attestation_proto::control::ImageRoot {
        path: store.rootfs(&r)?.display().to_string(),
        digest: r.digest.clone(),
        format: r.format.clone(),
        data_blocks: r.verity.data_blocks,
        hash_start_block: r.verity.hash_start_block,
        verity_root: r.verity.root.clone(),
        verity_salt: r.verity.salt.clone(),
        env: p.env.clone().unwrap_or_default(),
        workdir: p.working_dir.clone(),
        user: p.user.clone(),
    };
    Ok((root, command))
}

fn absolute(p: Option<PathBuf>) -> anyhow::Result<String> {
    Ok(match p {
        Some(p) => std::path::absolute(&p)?.display().to_string(),
        None => String::new(),
    })
}

/// Runs `zonectl launch`.
pub fn run(g: &GlobalArgs, args: LaunchArgs) -> anyhow::Result<i32> {
    block_on(async move {
        let mut client = connect(&g.socket()).await?;
        let started = Instant::now();
        let (image, command) = match &args.image {
            Some(reference) => {
                let (root, command) = image_root(&args.store, reference, args.command)?;
                (Some(root), command)
            }
            None => (None, args.command),
        };
        let spec = ZoneSpec {
            kernel: absolute(args.kernel)?,
            initrd: absolute(args.initrd)?,
            cmdline: args.cmdline.unwrap_or_default(),
            vcpus: args.vcpus.unwrap_or(0),
            memory_mib: args.memory.unwrap_or(0),
            command,
            scratch_mib: args.scratch_mib.unwrap_or(0),
            image,
            network: (args.net || !args.publish.is_empty()).then(|| attestation_proto::control::ZoneNetwork {
                publish: args
                    .publish
                    .iter()
                    .map(|&(a, h, z)| attestation_proto::control::PublishedPort {
                        host_address: a.to_string(),
                        host_port: u32::from(h),
                        zone_port: u32::from(z),
                    })
                    .collect(),
                ..Default::default()
            }),
        };
        if args.vcpus == Some(0) || args.memory == Some(0) || args.scratch_mib == Some(0) {
            anyhow::bail!("--vcpus, --memory and --scratch-mib must be at least 1");
        }
        let mut zone = client
            .launch_zone(LaunchZoneRequest { name: args.name.clone(), spec: Some(spec) })
            .await
            .map_err(explain)?
            .into_inner()
            .zone
            .unwrap_or_default();
        if !args.no_wait {
            let progress = g.output == OutputFormat::Table;
            let deadline = started + Duration::from_secs(u64::from(args.wait_timeout));
            while matches!(show::state(&zone), "creating" | "booting") && Instant::now() < deadline {
                if progress {
                    eprint!("\rlaunching {}: {} ({:.1}s)   ", args.name, show::state(&zone), started.elapsed().as_secs_f64());
                    let _ = std::io::stderr().flush();
                }
                zone = client
                    .wait_zone(WaitZoneRequest { name: args.name.clone(), timeout_ms: 1000 })
                    .await
                    .map_err(explain)?
                    .into_inner()
                    .zone
                    .unwrap_or_default();
            }
            if progress {
                eprintln!("\rlaunching {}: {} ({:.1}s)   ", args.name, show::state(&zone), started.elapsed().as_secs_f64());
            }
        }
        match g.output {
            OutputFormat::Json => print_json(&show::json(&zone))?,
            OutputFormat::Table => println!("{}", show::table(std::slice::from_ref(&zone))),
        }
        Ok(match show::state(&zone) {
            "failed" => 1,
            "booting" if !args.no_wait => {
                eprintln!("zonectl: {} is still booting after {}s; check `zonectl logs {} --console`", args.name, args.wait_timeout, args.name);
                1
            }
            _ => 0,
        })
    })
}
