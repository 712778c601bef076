//! `zonectl measure`: the digests a zone will be measured with, computed
//! offline (no daemon, no TPM), e.g. in CI to write a verifier policy.

use std::path::PathBuf;

use attestation_proto::launch::sha256_hex;
use attestation_proto::policy::{POLICY_VERSION, Policy, Rule};
use clap::Args;
use serde_json::json;

use super::GlobalArgs;
use super::format::{OutputFormat, print_json};
use attestation_proto::launch::Artifact;
use sha2::{Digest, Sha256};
use zone_vmm::boot::cmdline::{DEFAULT_ZONE_CMDLINE, boot_cmdline};

use crate::image;

/// Arguments of `zonectl measure`.
#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// Kernel (ELF vmlinux).
    #[arg(long)]
    pub kernel: PathBuf,
    /// Initramfs.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line as given to `zonectl launch --cmdline` (default:
    /// the daemon's built-in default).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// An image root (as `zonectl launch --image`): a name or digest in the
    /// image store, or an OCI archive (converted into a temporary store).
    #[arg(long, value_name = "REF|ARCHIVE")]
    pub image: Option<String>,
    #[command(flatten)]
    pub store: super::image::StoreArgs,
    /// A scratch disk, as `zonectl launch --scratch-mib` (it adds a device).
    #[arg(long, value_name = "MiB")]
    pub scratch_mib: Option<u64>,
    /// A network interface, as `zonectl launch --net` (it adds a device and
    /// the `zone.net=` parameter, whose value, the address the daemon's pool
    /// assigns at launch, policies do not name).
    #[arg(long)]
    pub net: bool,
    /// Print a policy file admitting these digests for zones matching NAME (`*` wildcards).
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// The zone's command, as given to `zonectl launch -- CMD…`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// SHA-256 of a file, streamed.
fn digest_file(what: &str, path: &std::path::Path) -> anyhow::Result<Artifact> {
    use anyhow::Context;
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read the {what} {}", path.display()))?;
    anyhow::ensure!(file.metadata()?.is_file(), "the {what} {} is not a regular file", path.display());
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher).with_context(|| format!("cannot read the {what} {}", path.display()))?;
    Ok(Artifact { path: path.display().to_string(), size, sha256: hex::encode(hasher.finalize()) })
}

/// Runs `zonectl measure`.
pub fn run(g: &GlobalArgs, args: MeasureArgs) -> anyhow::Result<i32> {
    let kernel = digest_file("kernel", &args.kernel)?;
    let initrd = args.initrd.as_deref().map(|p| digest_file("initramfs", p)).transpose()?;
    let mut cmdline = args.cmdline.unwrap_or_else(|| DEFAULT_ZONE_CMDLINE.to_owned());
    if args.net {
        // Where the daemon puts it, with the value elided as policies match it.
        cmdline = format!("{cmdline} {}=", attestation_proto::zone::NET_PARAM);
    }
    let mut command = args.command;
    let mut image = None;
    // Kept until the end: a converted archive's temporary store.
    let mut _converted = None;
    if let Some(reference) = &args.image {
        let store = if std::path::Path::new(reference).is_file() {
            let dir = tempfile::tempdir()?;
            let store = image::oci::store::Store::new(dir.path().to_owned());
            let (rec, _) = image::oci::import(
                std::path::Path::new(reference),
                None,
                &store,
                image::oci::layers::Limits::default(),
                &mut image::oci::Quiet,
            )?;
            _converted = Some(dir);
            (super::image::StoreArgs { store: Some(store.root().to_owned()) }, rec.digest)
        } else {
            (super::image::StoreArgs { store: args.store.store.clone() }, reference.clone())
        };
        let (root, cmd) = super::launch::image_root(&store.0, &store.1, command)?;
        command = cmd;
        let verity = attestation_proto::launch::Verity {
            data_blocks: root.data_blocks,
            hash_start_block: root.hash_start_block,
            root: root.verity_root.clone(),
            salt: root.verity_salt.clone(),
        };
        let process = attestation_proto::zone::ImageProcess {
            fstype: root.format.clone(),
            env: root.env.clone(),
            workdir: root.workdir.clone(),
            user: root.user.clone(),
        };
        cmdline = zone_vmm::boot::cmdline::with_image(&cmdline, &verity, &process)?;
        image = Some((root.digest.trim_start_matches("sha256:").to_owned(), verity.root));
    }
    // Exactly the line the daemon measures (with --net, up to the zone.net=
    // value): the vsock, the image root's disk, the scratch disk and the
    // network interface declared.
    let devices = 1 + u32::from(image.is_some()) + u32::from(args.scratch_mib.is_some_and(|m| m > 0)) + u32::from(args.net);
    let loaded = boot_cmdline(&cmdline, &command, devices)?;
    let cmdline_sha256 = sha256_hex(loaded.as_bytes());
    let initrd_sha256 = initrd.as_ref().map_or_else(|| "none".to_owned(), |i| i.sha256.clone());
    if let Some(name) = args.policy {
        let policy = Policy {
            version: POLICY_VERSION,
            allow: vec![Rule {
                name,
                kernel_sha256: vec![kernel.sha256],
                initrd_sha256: vec![initrd_sha256],
                cmdline_sha256: vec![cmdline_sha256],
                image_sha256: image.iter().map(|i| i.0.clone()).collect(),
                rootfs_verity: image.iter().map(|i| i.1.clone()).collect(),
                network: Vec::new(),
            }],
        };
        Policy::parse(&policy.to_toml())?;
        print!("{}", policy.to_toml());
        return Ok(0);
    }
    match g.output {
        OutputFormat::Json => print_json(&json!({
            "kernel": kernel,
            "initrd": initrd,
            "cmdline": loaded,
            "cmdline_sha256": cmdline_sha256,
            "image_sha256": image.as_ref().map(|i| &i.0),
            "rootfs_verity": image.as_ref().map(|i| &i.1),
        }))?,
        OutputFormat::Table => {
            println!("kernel   sha256:{}  {} ({} bytes)", kernel.sha256, kernel.path, kernel.size);
            match &initrd {
                Some(i) => println!("initrd   sha256:{}  {} ({} bytes)", i.sha256, i.path, i.size),
                None => println!("initrd   none"),
            }
            println!("cmdline  sha256:{cmdline_sha256}  {loaded:?}");
            if let Some((digest, root)) = &image {
                println!("image    sha256:{digest}");
                println!("verity   {root}");
            }
        }
    }
    Ok(0)
}
