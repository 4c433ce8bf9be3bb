//! Generates `schemas/` from the protocol types, or checks it for drift.
//!
//!   shoal-schemas write [DIR]   write every schema and asyncapi.yaml (default: schemas/)
//!   shoal-schemas check [DIR]   exit 1 and list the files that differ

use std::path::PathBuf;
use std::process::ExitCode;

use shoal_protocol::catalogue::{check_schemas, write_schemas};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let dir = args.next().map(PathBuf::from).unwrap_or_else(default_dir);
    match command.as_str() {
        "write" => match write_schemas(&dir) {
            Ok(()) => {
                println!("wrote schemas to {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: could not write {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
        "check" => match check_schemas(&dir) {
            Ok(drift) if drift.is_empty() => {
                println!("schemas in {} match the protocol types", dir.display());
                ExitCode::SUCCESS
            }
            Ok(drift) => {
                eprintln!("schema drift in {}:", dir.display());
                for line in drift {
                    eprintln!("  {line}");
                }
                eprintln!(
                    "regenerate with: cargo run -p shoal-protocol --bin shoal-schemas -- write"
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: could not read {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: shoal-schemas write|check [DIR]   (DIR defaults to the workspace's schemas/)"
            );
            ExitCode::from(2)
        }
    }
}

fn default_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))
}
