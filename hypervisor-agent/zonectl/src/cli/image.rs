//! `zonectl image build`: reproducible zone initramfs images.
//! `zonectl image import / ls / rm`: OCI images as measured, verity-protected
//! zone roots in the local image store.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::format::{OutputFormat, print_json};
use crate::image;

/// Image subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image from a recipe (images/*.toml) into a cpio archive.
    Build(BuildArgs),
    /// Import an OCI image archive (skopeo `oci-archive:`, `docker save`) as a zone root.
    Import(ImportArgs),
    /// Pull an image from an OCI registry and import it (loopback registries over HTTP).
    Pull(PullArgs),
    /// List the images in the store.
    Ls(StoreArgs),
    /// Remove an image from the store.
    Rm {
        /// Name, `sha256:<digest>` or a unique digest prefix (12+ hex digits).
        reference: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the image store is.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The image store (default: $ZONE_IMAGE_STORE, /var/lib/zone-attestor/images
    /// for root, ~/.local/share/zone-attestor/images otherwise).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

impl StoreArgs {

    /// The store these arguments name.
    pub fn store(&self) -> image::oci::store::Store {
        image::oci::store::Store::new(self.store.clone().unwrap_or_else(image::oci::store::Store::default_root))
    }
}

/// Arguments of `zonectl image import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The OCI image layout archive (a tar of oci-layout, index.json, blobs/).
    pub archive: PathBuf,
    /// Name the image (default: the name the archive gives it, if any).
    #[arg(long)]
    pub name: Option<String>,
    /// Refuse layers expanding to more than this many MiB of files in all.
    #[arg(long, value_name = "MiB", default_value_t = 16384)]
    pub max_size_mib: u64,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `zonectl image pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: registry/repository:tag or …@sha256:digest.
    pub reference: String,
    /// Name the image (default: the reference).
    #[arg(long)]
    pub name: Option<String>,
    /// A registry (host[:port]) to speak plain HTTP to, besides loopback ones (repeatable).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_http: Vec<String>,
    /// Give up on a registry that does not answer for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
    /// Authenticate as this user (to the registry, or to the token service it names).
    #[arg(long, value_name = "NAME", requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password (or an access token) for --username from stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Refuse layers expanding to more than this many MiB of files in all.
    #[arg(long, value_name = "MiB", default_value_t = 16384)]
    pub max_size_mib: u64,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The password for `--username`: stdin's first line.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!password.is_empty(), "--password-stdin: stdin gave an empty password");
    Ok(password)
}

/// Progress on stderr: one line per layer, then the writing step.
struct StderrProgress {
    started: std::time::Instant,
}

impl image::oci::Progress for StderrProgress {
    fn layer(&mut self, index: usize, count: usize, bytes: u64) {
        eprintln!(
            "[{:>6.1}s] layer {}/{count}: {:.1} MiB",
            self.started.elapsed().as_secs_f64(),
            index + 1,
            bytes as f64 / (1 << 20) as f64
        );
    }
    fn writing(&mut self, files: usize) {
        eprintln!("[{:>6.1}s] writing the root file system ({files} entries) and its verity hash tree", self.started.elapsed().as_secs_f64());
    }
}

fn print_record(g: &super::GlobalArgs, r: &image::oci::store::ImageRecord, extra: serde_json::Value) -> anyhow::Result<()> {
    match g.output {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(r)?;
            if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            print_json(&v)?;
        }
        OutputFormat::Table => {
            println!("image      {}", r.digest);
            println!("names      {}", if r.names.is_empty() { "-".into() } else { r.names.join(", ") });
            println!("rootfs     {} ({} bytes, {} layers)", r.format, r.size, r.layers);
            println!("verity     {}", r.verity.root);
        }
    }
    Ok(())
}

/// Arguments of `zonectl image build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The recipe file.
    pub recipe: PathBuf,
    /// Where to write the archive.
    #[arg(long, short = 'O')]
    pub out: PathBuf,
    /// A named input the recipe references as ${NAME}: NAME=PATH (repeatable).
    #[arg(long = "input", value_name = "NAME=PATH")]
    pub inputs: Vec<String>,
}

/// Runs `zonectl image …`.
pub fn run(g: &super::GlobalArgs, cmd: ImageCommand) -> anyhow::Result<i32> {
    match cmd {
        ImageCommand::Build(args) => {
            let mut inputs = HashMap::new();
            for kv in &args.inputs {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--input `{kv}` is not NAME=PATH"))?;
                inputs.insert(k.to_owned(), PathBuf::from(v));
            }
            let built = image::build(&args.recipe, &inputs, &args.out)?;
            match g.output {
                OutputFormat::Json => print_json(&built)?,
                OutputFormat::Table => {
                    println!("{}  sha256:{}  {} bytes  {} entries", built.path.display(), built.sha256, built.size, built.entries)
                }
            }
            Ok(0)
        }
        ImageCommand::Import(args) => {
            let store = args.store.store();
            let limits = image::oci::layers::Limits {
                max_bytes: args.max_size_mib.saturating_mul(1 << 20),
                ..image::oci::layers::Limits::default()
            };
            let mut progress = StderrProgress { started: std::time::Instant::now() };
            let (record, converted) = image::oci::import(&args.archive, args.name.as_deref(), &store, limits, &mut progress)
                .with_context(|| format!("cannot import {}", args.archive.display()))?;
            if !converted {
                eprintln!("already in the store; not converted again");
            }
            print_record(g, &record, serde_json::json!({ "converted": converted, "rootfs": store.rootfs(&record)? }))?;
            Ok(0)
        }
        ImageCommand::Pull(args) => {
            let store = args.store.store();
            let limits = image::oci::layers::Limits {
                max_bytes: args.max_size_mib.saturating_mul(1 << 20),
                ..image::oci::layers::Limits::default()
            };
            std::fs::create_dir_all(store.root()).with_context(|| format!("cannot create the image store {}", store.root().display()))?;
            let download = tempfile::Builder::new().prefix("pull-").tempdir_in(store.root())?;
            let mut progress = StderrProgress { started: std::time::Instant::now() };
            let credentials = match &args.username {
                Some(user) => Some((user.clone(), read_password()?)),
                None => None,
            };
            let opts = image::oci::pull::PullOptions {
                insecure_http: args.insecure_http.clone(),
                timeout: std::time::Duration::from_secs(args.timeout.max(1)),
                credentials,
            };
            let reference = args.reference.clone();
            let dir = download.path().to_owned();
            eprintln!("pulling {reference}");
            super::client::block_on(async {
                image::oci::pull::pull(&reference, &dir, &opts, &mut progress).await.map_err(anyhow::Error::from)
            })
            .with_context(|| format!("cannot pull {}", args.reference))?;
            let archive = image::oci::archive::OciArchive::open_dir(download.path())?;
            let name = args.name.clone().unwrap_or_else(|| args.reference.clone());
            let (record, converted) = image::oci::import_from(archive, Some(&name), &store, limits, &mut progress)
                .with_context(|| format!("cannot import {}", args.reference))?;
            if !converted {
                eprintln!("already in the store; not converted again");
            }
            print_record(g, &record, serde_json::json!({ "converted": converted, "rootfs": store.rootfs(&record)? }))?;
            Ok(0)
        }
        ImageCommand::Ls(args) => {
            let images = args.store().list()?;
            match g.output {
                OutputFormat::Json => print_json(&images)?,
                OutputFormat::Table => {
                    println!("{:<30}  {:<19}  {:>10}  VERITY ROOT", "NAME", "DIGEST", "SIZE");
                    for r in &images {
                        let name = if r.names.is_empty() { "-".to_owned() } else { r.names.join(",") };
                        println!("{name:<30}  {:<19}  {:>10}  {}", &r.digest[..19.min(r.digest.len())], r.size, &r.verity.root[..16.min(r.verity.root.len())]);
                    }
                }
            }
            Ok(0)
        }
        ImageCommand::Rm { reference, store } => {
            let r = store.store().remove(&reference)?;
            eprintln!("removed {}", r.digest);
            Ok(0)
        }
    }
}
