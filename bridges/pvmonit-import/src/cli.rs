//! The `pvbus import-pvmonit` subcommand.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// `pvbus import-pvmonit` (its help text is on the subcommand, in the pvbus binary).
#[derive(Debug, clap::Args)]
pub struct Cli {
    /// PvMonit's configuration (usually /opt/PvMonit/config.yaml).
    #[arg(value_name = "CONFIG_YAML")]
    pub file: PathBuf,
    /// Write the pvbus configuration here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace the --output file if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn main(cli: Cli) -> Result<()> {
    let yaml = std::fs::read_to_string(&cli.file)
        .with_context(|| format!("cannot read {}", cli.file.display()))?;
    let source = cli.file.display().to_string();
    let imported =
        crate::import(&yaml, &source).with_context(|| format!("in {}", cli.file.display()))?;
    match &cli.output {
        Some(path) => {
            if path.exists() && !cli.force {
                bail!("{} exists: pass --force to replace it", path.display());
            }
            std::fs::write(path, &imported.toml)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => std::io::stdout()
            .write_all(imported.toml.as_bytes())
            .context("cannot write to standard output")?,
    }
    eprintln!(
        "imported {} relays and {} VE.Direct devices; {} settings not carried over (listed at the end{})",
        imported.relays,
        imported.devices,
        imported.left_out.len(),
        match &cli.output {
            Some(path) => format!(" of {}", path.display()),
            None => String::new(),
        }
    );
    Ok(())
}
