//! `shipshape`: the command line. It parses arguments, calls the library crates, and turns
//! their results into output and exit codes (0 success, 1 the thing asked for failed, 2 usage).

mod up;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// A GitOps-driven, Kubernetes-style cluster in one binary.
#[derive(Parser)]
#[command(name = "shipshape", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check manifests the way the API server would, without a cluster.
    ///
    /// Reads files and folders (YAML with `---` documents, JSON, `kind: List`), reports every
    /// problem as `FILE:LINE: Kind ns/name: field.path: what is wrong`, and exits 1 if there is
    /// any. Folders directly under a PATH are applications.
    Validate {
        /// Files or folders to check.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Start the cluster on the desired state in a Git repository.
    Up(up::UpArgs),
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Lines for people.
    Text,
    /// One JSON document for tools.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { paths, output } => validate::run(&paths, output),
        Command::Up(args) => up::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("shipshape: {error:#}");
            ExitCode::from(1)
        }
    }
}
