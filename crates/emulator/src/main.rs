//! `defender-emulator`: the Defender API emulator as a program.

use clap::Parser;
use defender_emulator::{serve_until_ctrl_c, CredentialArgs, EmulatorArgs};

/// An offline emulator of the Microsoft Defender APIs (Defender XDR, Defender for
/// Endpoint, Microsoft Graph security), with the real limits and 429 bodies.
#[derive(Debug, Parser)]
#[command(name = "defender-emulator", version)]
struct Cli {
    #[command(flatten)]
    args: EmulatorArgs,
    #[command(flatten)]
    credentials: CredentialArgs,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = serve_until_ctrl_c(cli.credentials.apply(cli.args.into_builder())).await {
        eprintln!("defender-emulator: {e}");
        std::process::exit(1);
    }
}
