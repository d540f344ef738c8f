//! `lifeline`: the command people, operators and authorities type.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod authority;
mod chain;
mod devnet;
mod keys;
mod net;
mod node;
mod passphrase;
mod paths;
mod sim;

/// lifeline: an emergency mesh network node.
#[derive(Parser, Debug)]
#[command(
    name = "lifeline",
    version,
    about = "lifeline: end-to-end encrypted messages over an emergency mesh network",
    after_help = "Try it: `lifeline devnet` runs a local network of real nodes.\n\
                  Then: `lifeline key generate`, `lifeline node`, `lifeline send --to NAME TEXT`.\n\
                  Passphrases come from --passphrase-file, LIFELINE_PASSPHRASE, or a prompt.\n\
                  Guides: docs/keys.md, docs/operators.md, docs/authorities.md."
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
    /// The running node's control socket [default: control.sock in the data folder]
    #[arg(
        long,
        global = true,
        env = "LIFELINE_CONTROL_SOCKET",
        value_name = "PATH"
    )]
    control_socket: Option<PathBuf>,
    /// The control API on loopback TCP (HOST:PORT): where `lifeline node` also serves
    /// it, and where other commands reach it instead of the socket
    #[arg(
        long,
        global = true,
        env = "LIFELINE_CONTROL_TCP",
        value_name = "ADDR",
        conflicts_with = "control_socket"
    )]
    control_tcp: Option<String>,
    /// The token for --control-tcp (the node's control.token) [env: LIFELINE_CONTROL_TOKEN holds
    /// the token itself]
    #[arg(
        long,
        global = true,
        env = "LIFELINE_CONTROL_TOKEN_FILE",
        value_name = "FILE"
    )]
    control_token_file: Option<PathBuf>,
    /// Print JSON instead of text (for scripts)
    #[arg(long, global = true)]
    json: bool,
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
    /// Run this node: the daemon that joins the mesh
    Node(Box<node::NodeArgs>),
    /// This node: id, peers, routes, custody, chain
    Status,
    /// Connected neighbours
    Peers,
    /// Where messages to each known destination go next
    Routes,
    /// Send an end-to-end encrypted message
    Send(net::SendArgs),
    /// Call for help: an SOS to everyone in reach, ahead of all other traffic
    Sos(net::SosArgs),
    /// Messages received by this node
    Inbox(net::InboxArgs),
    /// Messages sent from this node
    #[command(subcommand)]
    Message(net::MessageCommand),
    /// The web app: pair a phone or laptop with this node
    #[command(subcommand)]
    Web(net::WebCommand),
    /// Your identity on the chain: register a name, look someone up
    #[command(subcommand)]
    Identity(authority::IdentityCommand),
    /// Official alerts in force (publish them with `lifeline alert publish`)
    Alerts(authority::AlertsArgs),
    /// Publish or show one official alert (CAP 1.2)
    #[command(subcommand)]
    Alert(authority::AlertCommand),
    /// Vouch, as an authority, that someone holds a role until a date
    Certify(authority::CertifyArgs),
    /// Revoke a key: your own (lost device), or anyone's as an authority
    Revoke(authority::RevokeArgs),
    /// The Proof-of-Authority chain: status, blocks, votes, genesis, replay
    #[command(subcommand)]
    Chain(chain::ChainCommand),
    /// A local network of real nodes on this machine, to try lifeline out
    Devnet(devnet::DevnetArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    #[command(after_help = "Examples:\n  \
        lifeline completions bash > /etc/bash_completion.d/lifeline\n  \
        lifeline completions zsh > \"${fpath[1]}/_lifeline\"\n  \
        lifeline completions fish > ~/.config/fish/completions/lifeline.fish")]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
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
    /// `--control-socket`, if given.
    pub control_socket: Option<PathBuf>,
    /// `--control-tcp`, if given.
    pub control_tcp: Option<String>,
    /// `--control-token-file`, if given.
    pub control_token_file: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            if json {
                println!("{}", error_json(&error));
            }
            ExitCode::FAILURE
        }
    }
}

/// An error as `--json` gives it: the message, and for a CAP document the
/// element, line and whose rule it breaks.
fn error_json(error: &anyhow::Error) -> serde_json::Value {
    let mut out = serde_json::json!({ "error": format!("{error:#}") });
    if let Some(c) = error.downcast_ref::<lifeline_consensus::cap::CapError>() {
        out["element"] = c.element.clone().into();
        out["line"] = c.line.into();
        out["rule"] = c.rule.to_string().into();
        out["problem"] = c.message.clone().into();
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli {
        data_dir,
        passphrase_file,
        control_socket,
        control_tcp,
        control_token_file,
        json,
        command,
    } = cli;
    // Only commands that touch keys need the data folder.
    let ctx = || -> anyhow::Result<Context> {
        Ok(Context {
            data_dir: paths::data_dir(data_dir.clone())?,
            passphrase_file: passphrase_file.clone(),
            control_socket: control_socket.clone(),
            control_tcp: control_tcp.clone(),
            control_token_file: control_token_file.clone(),
            json,
        })
    };
    match command {
        Command::Key(command) => keys::run(&ctx()?, command)?,
        Command::Seal(args) => keys::seal(&ctx()?, args)?,
        Command::Open(args) => keys::open(&ctx()?, args)?,
        Command::Node(args) => node::run(&ctx()?, *args)?,
        Command::Status => net::status(&ctx()?)?,
        Command::Peers => net::peers(&ctx()?)?,
        Command::Routes => net::routes(&ctx()?)?,
        Command::Web(command) => net::web(&ctx()?, command)?,
        Command::Send(args) => net::send(&ctx()?, args)?,
        Command::Sos(args) => net::sos(&ctx()?, args)?,
        Command::Inbox(args) => net::inbox(&ctx()?, args)?,
        Command::Message(command) => net::message(&ctx()?, command)?,
        Command::Identity(command) => authority::identity(&ctx()?, command)?,
        Command::Alerts(args) => authority::alerts(&ctx()?, args)?,
        Command::Alert(command) => authority::alert(&ctx()?, command)?,
        Command::Certify(args) => authority::certify(&ctx()?, args)?,
        Command::Revoke(args) => authority::revoke(&ctx()?, args)?,
        Command::Chain(command) => return chain::run(&ctx()?, command),
        Command::Devnet(args) => return devnet::run(args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "lifeline", &mut std::io::stdout());
        }
        Command::Sim(command) => return sim::run(command),
    }
    Ok(ExitCode::SUCCESS)
}
