use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = shoal_cli::Cli::parse_args();
    let json = cli.json;
    match shoal_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json => {
            let error = serde_json::json!({ "error": shoal_cli::Failure::of(&e) });
            eprintln!("{error}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
