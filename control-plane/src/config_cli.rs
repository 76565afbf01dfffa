//! `gatehouse-cp config export | import | diff`: the declarative configuration commands.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::Context;

use crate::declarative;
use crate::store::Store;

/// How `export` writes the document.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// Writes the store's configuration.
///
/// # Errors
/// A database failure, or the output cannot be written.
pub async fn export(store: &Store, output: Option<&Path>, format: Format) -> anyhow::Result<()> {
    let doc = declarative::export(store).await?;
    let text = match format {
        Format::Yaml => yaml_serde::to_string(&doc)?,
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&doc)?),
    };
    match output {
        Some(path) => {
            gatehouse_shared::private_fs::write(path, text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// A declarative file, read and parsed (YAML or JSON), not yet validated.
fn read(file: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(declarative::parse(&text)?)
}

/// Reads, parses and validates a file against the Admin API's rules, with a progress bar on
/// a terminal for large files.
async fn target(store: &Store, file: &Path) -> anyhow::Result<declarative::Target> {
    let doc = read(file)?;
    let bar = indicatif::ProgressBar::new(0);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("validating {bar:40} {pos}/{len} entities ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = |done: usize, total: usize| {
        if total >= 500 {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    };
    let target = declarative::plan(Some(store), &doc, Some(&report)).await;
    bar.finish_and_clear();
    target.with_context(|| format!("{} is not valid", file.display()))
}

/// Prints the configuration set a DB-less data plane serves from `file` (JSON), numbered
/// `revision`: the data plane runs this in a child process, which validates with the Admin
/// API's rules and exits, so neither that code nor its memory stays in the data plane.
///
/// # Errors
/// The file cannot be read or is not valid.
pub async fn compile(file: &Path, revision: i64) -> anyhow::Result<()> {
    let doc = read(file)?;
    let set = declarative::config_set(&doc, revision).await?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &set).context("cannot write the configuration")?;
    std::io::Write::flush(&mut out).context("cannot write the configuration")
}

/// Prints what importing `file` would change.
///
/// # Errors
/// An invalid file, or a database failure.
pub async fn diff(store: &Store, file: &Path) -> anyhow::Result<()> {
    let target = target(store, file).await?;
    print!("{}", declarative::diff(store, &target).await?.summary());
    Ok(())
}

/// Makes the store hold exactly the file's configuration.
///
/// # Errors
/// An invalid file (the store is then unchanged), or a database failure.
pub async fn import(store: &Store, file: &Path, dry_run: bool) -> anyhow::Result<()> {
    let target = target(store, file).await?;
    if dry_run {
        print!("{}", declarative::diff(store, &target).await?.summary());
        println!("dry run: nothing changed");
        return Ok(());
    }
    let (diff, revision) = declarative::import(store, &target).await?;
    print!("{}", diff.summary());
    match revision {
        Some(r) => println!("imported {} entities as revision {r}", target.len()),
        None => println!("nothing to change: the store already holds this configuration"),
    }
    Ok(())
}
