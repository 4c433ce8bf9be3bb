//! The announcer binary: parses its flags and runs the service (see the library).

use shoal_announcer::{Config, run};
use shoal_protocol::ServiceKind;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg: Config = shoal_runtime::settings::parse();
    let common = cfg.common.clone();
    // The registry maps NATS disconnect advisories to nodes through this name.
    let name = shoal_protocol::connection::node(&cfg.node_id());
    shoal_runtime::main(
        &common,
        ServiceKind::Announcer,
        &name,
        |client, shutdown| run(cfg, client, shutdown),
    )
    .await
}
