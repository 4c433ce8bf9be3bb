//! The whole control plane's metrics in one OpenMetrics text: every running
//! instance is found through `$SRV.PING` (the services are NATS micro services),
//! asked on its metrics subject, and its samples labelled `instance` and `service`.
//! What the HTTP gateway serves at `/metrics`.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::Client;
use shoal_protocol::{ClientError, ServiceKind, ShoalClient, Subjects};
use tracing::debug;

use super::exposition::{ExpositionError, merge};

/// The services whose instances serve their metrics on NATS. Announcers serve
/// theirs over HTTP alone (`--metrics-listen`): NATS permissions may confine a
/// node to its own subjects, and a large fleet would make every gather ask
/// thousands of them.
pub const CONTROL_PLANE: [ServiceKind; 3] = [
    ServiceKind::Registry,
    ServiceKind::Balancer,
    ServiceKind::Coordinator,
];

/// What [`gather`] asks, and how long it waits.
#[derive(Clone, Debug)]
pub struct GatherOptions {
    /// The services whose instances are asked.
    pub services: Vec<ServiceKind>,
    /// How long answers to `$SRV.PING` are collected: an instance that answers
    /// later is not found this time.
    pub discovery: Duration,
    /// How long each instance may take to send its metrics.
    pub timeout: Duration,
}

impl Default for GatherOptions {
    fn default() -> GatherOptions {
        GatherOptions {
            services: CONTROL_PLANE.to_vec(),
            discovery: Duration::from_millis(250),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Why gathering could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("finding the running instances: {0}")]
    Discover(#[source] ClientError),
    #[error("merging the instances' metrics: {0}")]
    Merge(#[source] ExpositionError),
}

/// Why one instance's metrics are missing from a gather.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error(transparent)]
    Request(#[from] ClientError),
    #[error("its metrics are not OpenMetrics text: {0}")]
    NotOpenMetrics(#[source] ExpositionError),
}

/// One instance found, and whether its metrics are in the text.
#[derive(Debug)]
pub struct Scrape {
    pub service: ServiceKind,
    pub instance_id: String,
    pub outcome: Result<(), ScrapeError>,
}

/// One gather's result.
#[derive(Debug)]
pub struct Gathered {
    /// Every instance's samples, labelled `instance="<id>"` and
    /// `service="<registry|balancer|coordinator|announcer>"`, each family declared
    /// once, with `shoal_up` (1 for an instance that answered, 0 for one found
    /// that did not), and a single `# EOF` at the end.
    pub text: String,
    /// Every instance found, by service and id.
    pub scrapes: Vec<Scrape>,
}

/// Finds every running instance of `options.services` and merges their metrics.
/// An instance that does not answer is reported in [`Gathered::scrapes`] and as
/// `shoal_up 0`, and the others are still served; only NATS refusing the discovery
/// request itself is an error.
pub async fn gather(
    client: &Client,
    subjects: &Subjects,
    options: &GatherOptions,
) -> Result<Gathered, GatherError> {
    let shoal = ShoalClient::new(client.clone(), subjects.clone()).with_timeout(options.timeout);
    let found = discover(&shoal, options)
        .await
        .map_err(GatherError::Discover)?;
    let asked = found.iter().map(|(service, id)| {
        let shoal = &shoal;
        async move {
            let text = shoal.metrics(*service, id).await?;
            let labels: &[(&str, &str)] = &[("instance", id), ("service", service.token())];
            // Checked and labelled one by one, so one bad answer spoils only itself.
            merge([(labels, text.as_str())]).map_err(ScrapeError::NotOpenMetrics)
        }
    });
    let answers = futures::future::join_all(asked).await;
    let mut scrapes = Vec::with_capacity(found.len());
    let mut parts = Vec::with_capacity(2 * found.len());
    for ((service, instance_id), answer) in found.into_iter().zip(answers) {
        let labels: &[(&str, &str)] = &[("instance", &instance_id), ("service", service.token())];
        let up = if answer.is_ok() { UP } else { DOWN };
        parts.push(merge([(labels, up)]).map_err(GatherError::Merge)?);
        let outcome = match answer {
            Ok(text) => {
                parts.push(text);
                Ok(())
            }
            Err(e) => {
                // An instance stopping between discovery and the request has no
                // responders: not worth a warning.
                debug!(service = %service, instance_id = %instance_id, error = %e, "instance's metrics missing from the gather");
                Err(e)
            }
        };
        scrapes.push(Scrape {
            service,
            instance_id,
            outcome,
        });
    }
    let none: &[(&str, &str)] = &[];
    let text = merge(parts.iter().map(|p| (none, p.as_str()))).map_err(GatherError::Merge)?;
    Ok(Gathered { text, scrapes })
}

/// `shoal_up` for an instance that answered, and for one that did not.
const UP: &str = "# HELP shoal_up 1 if the instance answered its metrics request in this gather, 0 if it was found through $SRV.PING but did not.\n\
    # TYPE shoal_up gauge\n\
    shoal_up 1\n\
    # EOF\n";
const DOWN: &str = "# HELP shoal_up 1 if the instance answered its metrics request in this gather, 0 if it was found through $SRV.PING but did not.\n\
    # TYPE shoal_up gauge\n\
    shoal_up 0\n\
    # EOF\n";

/// Every instance of `options.services` that answers `$SRV.PING.<service>` within
/// `options.discovery`, by service and instance id, each once. Each service is
/// pinged by name: the announcers of a large fleet do not answer a gather that
/// leaves them out.
async fn discover(
    shoal: &ShoalClient,
    options: &GatherOptions,
) -> Result<BTreeSet<(ServiceKind, String)>, ClientError> {
    let pings = options
        .services
        .iter()
        .map(|service| shoal.discover(Some(service.service_name()), options.discovery));
    let mut found = BTreeSet::new();
    for (service, answered) in options
        .services
        .iter()
        .zip(futures::future::join_all(pings).await)
    {
        for instance in answered? {
            found.insert((*service, instance.instance_id));
        }
    }
    Ok(found)
}
