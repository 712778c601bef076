//! `zonectl image build`: reproducible zone initramfs images.

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
    }
}
