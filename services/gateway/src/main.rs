//! The gateway binary: parses its flags and runs the service (see the library).

use shoal_gateway::{Config, run};
use shoal_protocol::ServiceKind;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg: Config = shoal_runtime::settings::parse();
    cfg.check()?;
    let common = cfg.common.clone();
    let name = shoal_protocol::connection::service(ServiceKind::Gateway, &common.instance_id()?);
    shoal_runtime::main(&common, ServiceKind::Gateway, &name, |client, shutdown| {
        run(cfg, client, shutdown)
    })
    .await
}
