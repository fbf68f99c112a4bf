//! The `chatops` CLI binary: parse, run, exit with the subcommand's code.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = chatops::cli::Cli::parse();
    let code = match chatops::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chatops: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
