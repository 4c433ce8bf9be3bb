//! The registry binary: parses its flags and runs the service (see the library).

use shoal_protocol::ServiceKind;
use shoal_registry::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg: Config = shoal_runtime::settings::parse();
    if cfg.print_heartbeat_mapping {
        let subjects = cfg.common.subjects()?;
        print!(
            "{}",
            shoal_protocol::partition::heartbeat_mapping_config(
                &subjects,
                cfg.heartbeat_partitions
            )
        );
        return Ok(());
    }
    let common = cfg.common.clone();
    let name = shoal_protocol::connection::service(ServiceKind::Registry, &common.instance_id()?);
    shoal_runtime::main(&common, ServiceKind::Registry, &name, |client, shutdown| {
        run(cfg, client, shutdown)
    })
    .await
}
