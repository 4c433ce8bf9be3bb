use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = shoal_cli::Cli::parse_args();
    match shoal_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
