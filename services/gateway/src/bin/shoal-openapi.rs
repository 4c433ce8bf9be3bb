//! Writes the gateway's OpenAPI document, or checks the committed one for drift.
//!
//!     shoal-openapi write [FILE]   write it (default: schemas/openapi.json)
//!     shoal-openapi check [FILE]   exit 1 when FILE differs from what the routes build

use std::path::PathBuf;
use std::process::ExitCode;

use shoal_gateway::openapi;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let file = args.next().map(PathBuf::from).unwrap_or_else(default_file);
    match command.as_str() {
        "write" => match openapi::write(&file) {
            Ok(()) => {
                println!("wrote {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: could not write {}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        "check" => match openapi::check(&file) {
            Ok(true) => {
                println!("{} matches the gateway's routes", file.display());
                ExitCode::SUCCESS
            }
            Ok(false) => {
                eprintln!(
                    "{} differs from what the gateway's routes build",
                    file.display()
                );
                eprintln!(
                    "regenerate with: cargo run -p shoal-gateway --bin shoal-openapi -- write"
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: could not read {}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: shoal-openapi write|check [FILE]   (FILE defaults to the workspace's schemas/openapi.json)"
            );
            ExitCode::from(2)
        }
    }
}

fn default_file() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/openapi.json"
    ))
}
