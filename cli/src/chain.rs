//! `lifeline chain ...`: the Proof-of-Authority chain.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use std::time::SystemTime;

use lifeline_consensus::conformance::{self, Case, Report};
use lifeline_consensus::genesis::GenesisFile;
use lifeline_crypto::NodeId;

use crate::{Context as Ctx, authority};

/// Largest vote-replay file read.
const MAX_REPLAY_FILE: u64 = 64 * 1024 * 1024;

/// `lifeline chain` subcommands.
#[derive(Subcommand, Debug)]
pub enum ChainCommand {
    /// The running node's chain: head, finalized block, authorities
    Status,
    /// One block of the running node's canonical chain
    Block {
        /// Its number
        number: u64,
    },
    /// Where a transaction is: pending, in a block, final
    Tx {
        /// The hash a chain command printed
        hash: String,
    },
    /// Vote, as an authority, to add or drop an authority
    #[command(
        subcommand,
        after_help = "A vote rides in this authority's next block. When more than half of \
                      the authorities have voted the same way, the change takes effect.\n\n\
                      Examples:\n  lifeline chain vote add 'Red Cross Leipzig'\n  \
                      lifeline chain vote drop 12D3KooW..."
    )]
    Vote(authority::VoteCommand),
    /// Make a genesis file for a new network: its first authorities and parameters
    #[command(
        after_help = "Every node of the network must use the same file.\n\nExample:\n  \
                            lifeline chain genesis --authority 12D3KooW... --authority 12D3KooW... \
                            --out genesis.toml"
    )]
    Genesis {
        /// An authority's id (give --authority once per authority)
        #[arg(long = "authority", value_name = "ID", required = true)]
        authorities: Vec<String>,
        /// Blocks between epoch checkpoints
        #[arg(long, default_value_t = 30_000)]
        epoch: u64,
        /// Least seconds between blocks
        #[arg(long, default_value_t = 5)]
        period_secs: u64,
        /// Most seconds without a block (empty "heartbeat" blocks keep finality moving)
        #[arg(long, default_value_t = 60)]
        heartbeat_secs: u64,
        /// Write the file here instead of standard output
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Overwrite FILE if it exists
        #[arg(long)]
        force: bool,
    },
    /// Run a vote-replay conformance file through the real chain code
    #[command(
        after_help = "Prints one JSON line per case. Exit status: 0 when every case ran \
                            (and, with --check, matched), 1 when --check found a mismatch, \
                            2 when the file is not valid input.\n\nExample:\n  lifeline chain replay \
                            vote-replay.json --check"
    )]
    Replay {
        /// The vote-replay file (a JSON array of cases)
        file: PathBuf,
        /// Compare each outcome with the case's `expect` and fail on any mismatch
        #[arg(long)]
        check: bool,
    },
}

/// Runs a `lifeline chain` subcommand.
pub fn run(ctx: &Ctx, command: ChainCommand) -> Result<ExitCode> {
    match command {
        ChainCommand::Status => authority::chain_status(ctx).map(|()| ExitCode::SUCCESS),
        ChainCommand::Block { number } => {
            authority::chain_block(ctx, number).map(|()| ExitCode::SUCCESS)
        }
        ChainCommand::Tx { hash } => authority::chain_tx(ctx, hash).map(|()| ExitCode::SUCCESS),
        ChainCommand::Vote(vote) => authority::chain_vote(ctx, vote).map(|()| ExitCode::SUCCESS),
        ChainCommand::Replay { file, check } => replay(&file, check),
        ChainCommand::Genesis {
            authorities,
            epoch,
            period_secs,
            heartbeat_secs,
            out,
            force,
        } => {
            let mut ids = Vec::with_capacity(authorities.len());
            for text in &authorities {
                let id: NodeId = text
                    .parse()
                    .with_context(|| format!("--authority {text:?} is not a lifeline id"))?;
                ids.push(id);
            }
            let mut file = GenesisFile::new(&ids, SystemTime::now());
            file.epoch = epoch;
            file.period_secs = period_secs;
            file.heartbeat_secs = heartbeat_secs;
            let genesis = file.to_genesis().context("cannot make this genesis")?;
            let text = file.to_toml()?;
            match out {
                Some(path) => {
                    write_new_file(&path, text.as_bytes(), force)?;
                    eprintln!(
                        "Wrote {} (genesis hash {}).",
                        path.display(),
                        genesis.hash()
                    );
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes `bytes` to `path`, refusing to replace an existing file unless `force`.
fn write_new_file(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{} already exists; nothing was written. Choose another file or add --force",
            path.display()
        ),
        _ => anyhow::Error::new(e).context(format!("cannot write {}", path.display())),
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_cases(file: &Path) -> Result<Vec<Case>> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    anyhow::ensure!(
        size <= MAX_REPLAY_FILE,
        "{} is {size} bytes; vote-replay files are limited to {MAX_REPLAY_FILE}",
        file.display()
    );
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a vote-replay file (a JSON array of cases, see VOTE-REPLAY.md)",
            file.display()
        )
    })
}

fn replay(file: &Path, check: bool) -> Result<ExitCode> {
    let cases = match read_cases(file) {
        Ok(cases) => cases,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut mismatches = 0usize;
    let mut out = std::io::stdout().lock();
    for case in &cases {
        let outcome = conformance::run(case);
        let report = Report {
            name: case.name.clone(),
            outcome: outcome.clone(),
        };
        let line = serde_json::to_string(&report)?;
        if let Err(e) = writeln!(out, "{line}") {
            // A closed pipe (`| head`) means the reader has seen enough.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e).context("cannot write the replay report");
        }
        if check {
            match &case.expect {
                Some(expected) if *expected == outcome => {}
                Some(expected) => {
                    mismatches += 1;
                    eprintln!(
                        "mismatch: {:?}: expected {}, got {}",
                        case.name,
                        serde_json::to_string(expected)?,
                        serde_json::to_string(&outcome)?
                    );
                }
                None => {
                    mismatches += 1;
                    eprintln!(
                        "mismatch: {:?}: the case has no `expect` to check against",
                        case.name
                    );
                }
            }
        }
    }
    if check {
        eprintln!(
            "{} passed, {mismatches} failed",
            cases.len().saturating_sub(mismatches)
        );
    }
    Ok(if mismatches > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
