//! The coordinator binary: parses its flags and runs the service (see the library).

use shoal_coordinator::{Config, run};
use shoal_protocol::ServiceKind;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg: Config = shoal_runtime::settings::parse();
    let common = cfg.common.clone();
    let name =
        shoal_protocol::connection::service(ServiceKind::Coordinator, &common.instance_id()?);
    shoal_runtime::main(
        &common,
        ServiceKind::Coordinator,
        &name,
        |client, shutdown| run(cfg, client, shutdown),
    )
    .await
}
