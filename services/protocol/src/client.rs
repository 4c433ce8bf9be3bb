//! A small client for Shoal's request/reply endpoints, reused by the CLI, the
//! loadtest and the tests: request with a timeout, typed replies, error envelopes as
//! `ShoalError`, and retries while there are no responders or no leader yet.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::RequestErrorKind;
use async_nats::service::NATS_SERVICE_ERROR_CODE;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::subjects::{Endpoint, ServiceKind, Subjects};
use crate::types::{
    Empty, balancer::*, coordinator::*, history::*, node::Node, rebalance::*, registry::*,
};
use crate::{ErrorCode, ShoalError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error envelope.
    #[error(transparent)]
    Service(#[from] ShoalError),
    #[error("nothing is answering on {subject}: is the service running?")]
    NoResponders { subject: String },
    #[error("no reply on {subject} within {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("reply on {subject} could not be read: {source}")]
    BadReply {
        subject: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("reply on {subject} is not UTF-8 text: {source}")]
    NotText {
        subject: String,
        #[source]
        source: std::string::FromUtf8Error,
    },
    #[error("request on {subject} could not be encoded: {source}")]
    Encode {
        subject: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("request on {subject} failed: {source}")]
    Nats {
        subject: String,
        #[source]
        source: async_nats::RequestError,
    },
}

impl ClientError {
    /// A short name for counting errors by kind (`not_found`, `timeout`, …).
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Service(e) => e.code.as_str(),
            ClientError::NoResponders { .. } => "no_responders",
            ClientError::Timeout { .. } => "timeout",
            ClientError::BadReply { .. } | ClientError::NotText { .. } => "bad_reply",
            ClientError::Encode { .. } => "encode",
            ClientError::Nats { .. } => "nats",
        }
    }

    pub fn service_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Service(e) => Some(e.code),
            _ => None,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            ClientError::Service(e) => e.code.is_retryable(),
            ClientError::NoResponders { .. } => true,
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ShoalClient {
    nats: async_nats::Client,
    subjects: Subjects,
    timeout: Duration,
    retry_for: Duration,
}

impl ShoalClient {
    /// Per-request timeout 2 s; retries on no responders / not_leader / unavailable
    /// for up to 5 s.
    pub fn new(nats: async_nats::Client, subjects: Subjects) -> ShoalClient {
        ShoalClient {
            nats,
            subjects,
            timeout: Duration::from_secs(2),
            retry_for: Duration::from_secs(5),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> ShoalClient {
        self.timeout = timeout;
        self
    }

    /// How long to keep retrying retryable failures; zero disables retries.
    pub fn with_retry_for(mut self, retry_for: Duration) -> ShoalClient {
        self.retry_for = retry_for;
        self
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// Request on the endpoint's shared subject (one replica answers).
    pub async fn call<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        request: &Req,
    ) -> Result<Rep, ClientError> {
        self.call_subject(&self.subjects.endpoint(endpoint), request)
            .await
    }

    /// Request on one named replica.
    pub async fn call_direct<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        instance_id: &str,
        request: &Req,
    ) -> Result<Rep, ClientError> {
        self.call_subject(&self.subjects.direct(endpoint, instance_id), request)
            .await
    }

    pub async fn call_subject<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
    ) -> Result<Rep, ClientError> {
        let payload = bytes::Bytes::from(serde_json::to_vec(request).map_err(|source| {
            ClientError::Encode {
                subject: subject.to_string(),
                source,
            }
        })?);
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.once(subject, payload.clone()).await {
                Err(e) if e.retryable() && Instant::now() + backoff < deadline => {
                    tracing::debug!(subject, error = %e, "retrying request");
                    // Backoff between attempts, not synchronisation: the next attempt
                    // is a fresh request.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
                result => return result,
            }
        }
    }

    async fn once<Rep: DeserializeOwned>(
        &self,
        subject: &str,
        payload: bytes::Bytes,
    ) -> Result<Rep, ClientError> {
        let message = self.send(subject, payload).await?;
        decode_reply(subject, message.headers.as_ref(), &message.payload)
    }

    /// One instance's Prometheus metrics, as OpenMetrics text; asked once, without
    /// retries (a scrape is repeated by its scraper).
    pub async fn metrics(
        &self,
        service: ServiceKind,
        instance_id: &str,
    ) -> Result<String, ClientError> {
        self.call_text(&self.subjects.metrics(service, instance_id))
            .await
    }

    /// The text answer of an endpoint that replies with text rather than JSON (a
    /// metrics endpoint), asked once with an empty body; an error envelope is an
    /// error.
    pub async fn call_text(&self, subject: &str) -> Result<String, ClientError> {
        let message = self.send(subject, bytes::Bytes::new()).await?;
        flagged_error(message.headers.as_ref(), &message.payload)?;
        String::from_utf8(message.payload.to_vec()).map_err(|source| ClientError::NotText {
            subject: subject.to_string(),
            source,
        })
    }

    async fn send(
        &self,
        subject: &str,
        payload: bytes::Bytes,
    ) -> Result<async_nats::Message, ClientError> {
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(self.timeout));
        self.nats
            .send_request(subject.to_string(), request)
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => ClientError::NoResponders {
                    subject: subject.to_string(),
                },
                RequestErrorKind::TimedOut => ClientError::Timeout {
                    subject: subject.to_string(),
                    timeout: self.timeout,
                },
                _ => ClientError::Nats {
                    subject: subject.to_string(),
                    source: e,
                },
            })
    }

    pub async fn list_nodes(&self, req: &ListNodesRequest) -> Result<NodeList, ClientError> {
        self.call(Endpoint::RegistryNodesList, req).await
    }
    pub async fn get_node(&self, id: &str) -> Result<Node, ClientError> {
        self.call(Endpoint::RegistryNodesGet, &NodeIdRequest { id: id.into() })
            .await
    }
    pub async fn register_node(
        &self,
        req: &RegisterNodeRequest,
    ) -> Result<NodeChangeReply, ClientError> {
        self.call(Endpoint::RegistryNodesRegister, req).await
    }
    pub async fn unregister_node(&self, id: &str) -> Result<NodeChangeReply, ClientError> {
        self.call(
            Endpoint::RegistryNodesUnregister,
            &NodeIdRequest { id: id.into() },
        )
        .await
    }
    pub async fn drain_node(&self, id: &str) -> Result<Node, ClientError> {
        self.call(
            Endpoint::RegistryNodesDrain,
            &NodeIdRequest { id: id.into() },
        )
        .await
    }
    pub async fn undrain_node(&self, id: &str) -> Result<Node, ClientError> {
        self.call(
            Endpoint::RegistryNodesUndrain,
            &NodeIdRequest { id: id.into() },
        )
        .await
    }
    pub async fn registry_stats(&self) -> Result<RegistryStats, ClientError> {
        self.call(Endpoint::RegistryStats, &Empty {}).await
    }
    pub async fn select(&self, req: &SelectRequest) -> Result<SelectReply, ClientError> {
        self.call(Endpoint::BalancerSelect, req).await
    }
    pub async fn select_batch(
        &self,
        req: &SelectBatchRequest,
    ) -> Result<SelectBatchReply, ClientError> {
        self.call(Endpoint::BalancerSelectBatch, req).await
    }
    /// Every node matching `filter`, page after page.
    pub async fn list_all_nodes(
        &self,
        filter: &ListNodesRequest,
    ) -> Result<Vec<Node>, ClientError> {
        let mut request = filter.clone();
        let mut all = Vec::new();
        loop {
            let page = self.list_nodes(&request).await?;
            all.extend(page.nodes);
            match page.next {
                Some(next) => request.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Every assignment matching `filter`, fetched in pages of 2,000.
    pub async fn list_all_assignments(
        &self,
        filter: &ListAssignmentsRequest,
    ) -> Result<Vec<Assignment>, ClientError> {
        self.list_all_assignments_on(None, filter).await
    }

    /// The running agents by node: what each node should be running.
    pub async fn running_by_node(&self) -> Result<BTreeMap<String, BTreeSet<String>>, ClientError> {
        let running = ListAssignmentsRequest {
            status: Some(AssignmentStatus::Running),
            ..ListAssignmentsRequest::default()
        };
        let mut by_node: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for a in self.list_all_assignments(&running).await? {
            by_node.entry(a.node_id).or_default().insert(a.agent_name);
        }
        Ok(by_node)
    }

    /// As [`Self::list_all_assignments`], from one named coordinator replica (every
    /// page from the same one), or from any with `None`.
    pub async fn list_all_assignments_on(
        &self,
        instance: Option<&str>,
        filter: &ListAssignmentsRequest,
    ) -> Result<Vec<Assignment>, ClientError> {
        let mut request = ListAssignmentsRequest {
            limit: Some(2_000),
            ..filter.clone()
        };
        let mut all = Vec::new();
        loop {
            let page: AssignmentList = match instance {
                Some(id) => {
                    self.call_direct(Endpoint::CoordinatorAssignmentsList, id, &request)
                        .await?
                }
                None => self.list_assignments(&request).await?,
            };
            all.extend(page.assignments);
            match page.next {
                Some(next) => request.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    pub async fn get_strategy(&self) -> Result<StrategyMessage, ClientError> {
        self.call(Endpoint::BalancerStrategyGet, &Empty {}).await
    }
    pub async fn set_strategy(&self, strategy: Strategy) -> Result<StrategyMessage, ClientError> {
        self.call(Endpoint::BalancerStrategySet, &StrategyMessage { strategy })
            .await
    }
    pub async fn balancer_stats(&self) -> Result<BalancerStats, ClientError> {
        self.call(Endpoint::BalancerStats, &Empty {}).await
    }
    pub async fn rebalance_status(&self) -> Result<RebalanceStatus, ClientError> {
        self.call(Endpoint::CoordinatorRebalanceGet, &Empty {})
            .await
    }
    pub async fn set_rebalance(
        &self,
        update: &RebalanceUpdate,
    ) -> Result<RebalanceStatus, ClientError> {
        self.call(Endpoint::CoordinatorRebalanceSet, update).await
    }
    /// One rebalance round now (only the leader answers), or its plan (`dry_run`).
    pub async fn rebalance_now(&self, dry_run: bool) -> Result<RebalanceReport, ClientError> {
        self.call(
            Endpoint::CoordinatorRebalanceNow,
            &RebalanceNowRequest { dry_run },
        )
        .await
    }
    /// Fills in a `request_id` when there is none, so the retries this client makes
    /// cannot assign twice.
    pub async fn assign(&self, req: &AssignRequest) -> Result<Assignment, ClientError> {
        let mut req = req.clone();
        req.request_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
        self.call(Endpoint::CoordinatorAssign, &req).await
    }
    /// Assigns as a careful client does, until acknowledged or `deadline` passes:
    /// every attempt carries the same `request_id`, so retrying through timeouts,
    /// dropped connections and leader changes cannot assign twice. A refusal
    /// (anything but `not_leader` or `unavailable`) is returned at once.
    pub async fn assign_acknowledged(
        &self,
        req: &AssignRequest,
        deadline: Duration,
    ) -> Result<Assignment, ClientError> {
        let mut req = req.clone();
        req.request_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
        until_acknowledged(deadline, || self.assign(&req)).await
    }
    /// Unassigns under a fresh `request_id`, so the retries this client makes
    /// cannot answer `not_found` for an unassign that took.
    pub async fn unassign(&self, agent_name: &str) -> Result<UnassignReply, ClientError> {
        self.unassign_request(&UnassignRequest {
            agent_name: agent_name.into(),
            request_id: None,
        })
        .await
    }
    /// Unassigns as [`Self::assign_acknowledged`] assigns: one `request_id` for
    /// every attempt, until acknowledged or `deadline` passes.
    pub async fn unassign_acknowledged(
        &self,
        req: &UnassignRequest,
        deadline: Duration,
    ) -> Result<UnassignReply, ClientError> {
        let mut req = req.clone();
        req.request_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
        until_acknowledged(deadline, || self.unassign_request(&req)).await
    }
    /// Fills in a `request_id` when there is none; a caller retrying on its own
    /// gives the same one each time.
    pub async fn unassign_request(
        &self,
        req: &UnassignRequest,
    ) -> Result<UnassignReply, ClientError> {
        let mut req = req.clone();
        req.request_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
        self.call(Endpoint::CoordinatorUnassign, &req).await
    }
    /// Fills in a `request_id` when there is none, so the retries this client makes
    /// cannot move twice.
    pub async fn move_agent(&self, req: &MoveRequest) -> Result<Assignment, ClientError> {
        let mut req = req.clone();
        req.request_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
        self.call(Endpoint::CoordinatorMove, &req).await
    }
    pub async fn get_assignment(&self, agent_name: &str) -> Result<Assignment, ClientError> {
        self.call(
            Endpoint::CoordinatorAssignmentsGet,
            &AgentNameRequest {
                agent_name: agent_name.into(),
            },
        )
        .await
    }
    pub async fn list_assignments(
        &self,
        req: &ListAssignmentsRequest,
    ) -> Result<AssignmentList, ClientError> {
        self.call(Endpoint::CoordinatorAssignmentsList, req).await
    }
    pub async fn leader(&self) -> Result<LeaderReply, ClientError> {
        self.call(Endpoint::CoordinatorLeaderGet, &Empty {}).await
    }
    /// `leader.get` asked of one coordinator replica, on its own subject: what it
    /// knows of the lease, and whether it leads (no responders: it is gone).
    pub async fn leader_of(&self, coordinator_id: &str) -> Result<LeaderReply, ClientError> {
        self.call_direct(Endpoint::CoordinatorLeaderGet, coordinator_id, &Empty {})
            .await
    }
    pub async fn promote(&self, coordinator_id: &str) -> Result<PromoteReply, ClientError> {
        self.call(
            Endpoint::CoordinatorLeaderPromote,
            &PromoteRequest {
                coordinator_id: coordinator_id.into(),
            },
        )
        .await
    }
    pub async fn history(&self, req: &HistoryRequest) -> Result<HistoryReply, ClientError> {
        self.call(Endpoint::CoordinatorHistory, req).await
    }
    pub async fn cluster_stats(&self) -> Result<ClusterStats, ClientError> {
        self.call(Endpoint::CoordinatorStats, &Empty {}).await
    }

    /// Why `placed`'s node: the `candidates` of its history row (the balancer's
    /// strategy, the node it chose and the candidates it scored). The history trails
    /// the log by moments, so this asks again for up to `wait`; `None` for a pinned
    /// agent (the balancer did not choose), or when no row came in time.
    pub async fn placement_candidates(
        &self,
        placed: &Assignment,
        wait: Duration,
    ) -> Option<serde_json::Value> {
        let request = HistoryRequest {
            agent_name: Some(placed.agent_name.clone()),
            limit: Some(5),
            ..Default::default()
        };
        let deadline = Instant::now() + wait;
        loop {
            let rows = self.history(&request).await.ok()?.history;
            let row = rows.into_iter().find(|h| {
                h.action == AssignmentAction::Assigned
                    && h.node_id.as_deref() == Some(placed.node_id.as_str())
            });
            if let Some(row) = row {
                return row.candidates;
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Between reads of a history that trails the log by moments.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads a reply: an error envelope (by its headers, or its shape) or a `Rep`.
pub fn decode_reply<Rep: DeserializeOwned>(
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> Result<Rep, ClientError> {
    flagged_error(headers, payload)?;
    serde_json::from_slice(payload).map_err(|e| match ShoalError::from_reply(None, payload) {
        Some(service_error) => ClientError::Service(service_error),
        None => ClientError::BadReply {
            subject: subject.to_string(),
            source: e,
        },
    })
}

/// The error envelope of a reply its headers flag as an error (`Nats-Service-Error-Code`).
fn flagged_error(
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> Result<(), ClientError> {
    let flagged = headers.is_some_and(|h| h.get(NATS_SERVICE_ERROR_CODE).is_some());
    match flagged
        .then(|| ShoalError::from_reply(headers, payload))
        .flatten()
    {
        Some(e) => Err(ClientError::Service(e)),
        None => Ok(()),
    }
}

/// Repeats `attempt` (which must carry the same `request_id` each time) through
/// timeouts, dropped connections and `not_leader`/`unavailable` until it is answered
/// or `deadline` passes; a refusal is returned at once.
async fn until_acknowledged<T, Fut>(
    deadline: Duration,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, ClientError>
where
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let until = Instant::now() + deadline;
    loop {
        match attempt().await {
            Err(e)
                if Instant::now() < until
                    && (e.retryable()
                        || matches!(e, ClientError::Timeout { .. } | ClientError::Nats { .. })) => {
            }
            answer => return answer,
        }
    }
}
