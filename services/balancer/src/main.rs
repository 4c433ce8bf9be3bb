//! The balancer binary: parses its flags and runs the service (see the library).

use shoal_balancer::{Config, run};
use shoal_protocol::ServiceKind;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg: Config = shoal_runtime::settings::parse();
    let common = cfg.common.clone();
    let name = shoal_protocol::connection::service(ServiceKind::Balancer, &common.instance_id()?);
    shoal_runtime::main(&common, ServiceKind::Balancer, &name, |client, shutdown| {
        run(cfg, client, shutdown)
    })
    .await
}
