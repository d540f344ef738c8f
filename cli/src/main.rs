//! `lifeline`: the command people, operators and authorities type.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod armor;
mod chain;
mod keys;
mod passphrase;
mod paths;
mod sim;

/// lifeline: an emergency mesh network node.
#[derive(Parser, Debug)]
#[command(
    name = "lifeline",
    version,
    about = "lifeline: end-to-end encrypted messages over an emergency mesh network",
    after_help = "Start with `lifeline key generate`. Passphrases come from --passphrase-file, \
                  LIFELINE_PASSPHRASE, or a prompt."
)]
struct Cli {
    /// Where lifeline keeps its data [default: $XDG_DATA_HOME/lifeline]
    #[arg(long, global = true, env = "LIFELINE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Read the keystore passphrase from the first line of FILE
    #[arg(
        long,
        global = true,
        env = "LIFELINE_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage this device's identity and keys
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Seal a message to a contact card, end to end (works offline)
    Seal(keys::SealArgs),
    /// Open a sealed envelope addressed to you (works offline)
    Open(keys::OpenArgs),
    /// The Proof-of-Authority chain
    #[command(subcommand)]
    Chain(chain::ChainCommand),
    /// The simulator: the real router on thousands of virtual nodes
    #[command(subcommand)]
    Sim(sim::SimCommand),
}

/// What every command needs to know.
pub struct Context {
    /// The data folder.
    pub data_dir: PathBuf,
    /// `--passphrase-file`, if given.
    pub passphrase_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli {
        data_dir,
        passphrase_file,
        command,
    } = cli;
    // Only commands that touch keys need the data folder.
    let ctx = || -> anyhow::Result<Context> {
        Ok(Context {
            data_dir: paths::data_dir(data_dir.clone())?,
            passphrase_file: passphrase_file.clone(),
        })
    };
    match command {
        Command::Key(command) => keys::run(&ctx()?, command)?,
        Command::Seal(args) => keys::seal(&ctx()?, args)?,
        Command::Open(args) => keys::open(&ctx()?, args)?,
        Command::Chain(command) => return chain::run(command),
        Command::Sim(command) => return sim::run(command),
    }
    Ok(ExitCode::SUCCESS)
}
