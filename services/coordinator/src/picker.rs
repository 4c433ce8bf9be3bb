//! The leader's picks from the balancer, batched: picks asked for while a batch is
//! in flight go out together as one `select.batch` request, so a burst of assigns
//! costs a few round trips instead of one each.

use std::sync::Arc;

use shoal_protocol::{
    ClientError, ErrorCode, SelectBatchRequest, SelectOutcome, SelectRequest, ShoalClient,
    ShoalError, Strategy, size,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::debug;

use crate::record::Explanation;

/// Picks in one request at most; a batch also ends where the request would outgrow
/// the server's max payload (selections carry labels of up to ~25 KB).
const MAX_BATCH: usize = 128;
/// Batches in flight at once: while they are out, new picks queue and form the
/// next batch.
const IN_FLIGHT: usize = 2;

/// The balancer's choice for one selection.
#[derive(Clone, Debug)]
pub struct Pick {
    pub node_id: String,
    pub why: Explanation,
}

/// A selection asked for, and where its pick goes.
pub type Waiting = (SelectRequest, oneshot::Sender<Result<Pick, ShoalError>>);

#[derive(Clone)]
pub struct Picker {
    tx: mpsc::UnboundedSender<Waiting>,
}

impl Picker {
    /// Starts the batching task; it ends once every clone of the picker is dropped.
    pub fn spawn(peers: ShoalClient) -> Picker {
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = size::budget(peers.nats().server_info().max_payload);
        tokio::spawn(batch_picks(rx, peers, budget));
        Picker { tx }
    }

    /// A picker whose picks the caller makes: each selection asked for arrives on
    /// the receiver with the sender for its answer.
    #[cfg(test)]
    pub fn scripted() -> (Picker, mpsc::UnboundedReceiver<Waiting>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Picker { tx }, rx)
    }

    pub async fn pick(&self, request: SelectRequest) -> Result<Pick, ShoalError> {
        let (tx, rx) = oneshot::channel();
        let gone = || ShoalError::unavailable("the coordinator is stopping");
        self.tx.send((request, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Picks for every request, in order (they travel in as few batches as fit).
    pub async fn pick_all(&self, requests: Vec<SelectRequest>) -> Vec<Result<Pick, ShoalError>> {
        futures::future::join_all(requests.into_iter().map(|r| self.pick(r))).await
    }
}

async fn batch_picks(mut rx: mpsc::UnboundedReceiver<Waiting>, peers: ShoalClient, budget: usize) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut next = None;
    loop {
        // Wait for a free slot before taking picks: while both are busy the picks
        // pile up in the channel and leave together.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match next.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut used = size::encoded_len(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(waiting) => {
                    let len = size::encoded_len(&waiting.0) + 1;
                    if used + len > budget {
                        next = Some(waiting);
                        break;
                    }
                    used += len;
                    batch.push(waiting);
                }
                Err(_) => break,
            }
        }
        let peers = peers.clone();
        tokio::spawn(async move {
            let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let results = select_batch(&peers, requests).await;
            drop(permit);
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        });
    }
}

/// One `select.batch` request; a balancer that does not serve it (an older
/// version) is asked one selection at a time.
async fn select_batch(
    peers: &ShoalClient,
    selections: Vec<SelectRequest>,
) -> Vec<Result<Pick, ShoalError>> {
    let n = selections.len();
    let request = SelectBatchRequest { selections };
    // No retry on no-responders here: the one-by-one path below retries, and also
    // serves a balancer that is restarting.
    let quick = peers.clone().with_retry_for(std::time::Duration::ZERO);
    let mut reply = quick.select_batch(&request).await;
    if matches!(&reply, Err(ClientError::Service(e)) if e.code == ErrorCode::Unavailable) {
        // A balancer still loading membership: worth the retries.
        reply = peers.select_batch(&request).await;
    }
    match reply {
        Ok(reply) if reply.results.len() == n => reply.results.into_iter().map(pick).collect(),
        Ok(reply) => {
            let e = ShoalError::internal(format!(
                "the balancer answered {} picks for {n}",
                reply.results.len()
            ));
            vec![Err(e); n]
        }
        Err(ClientError::NoResponders { .. }) => {
            debug!("no balancer answers select.batch; selecting one by one");
            let singles = request.selections.iter().map(|r| async move {
                pick(SelectOutcome::new(
                    peers.select(r).await.map_err(balancer_error),
                ))
            });
            futures::future::join_all(singles).await
        }
        Err(e) => vec![Err(balancer_error(e)); n],
    }
}

fn pick(outcome: SelectOutcome) -> Result<Pick, ShoalError> {
    if let Some(e) = outcome.error {
        return Err(e);
    }
    let node_id = outcome
        .node_id
        .ok_or_else(|| ShoalError::internal("the balancer's pick names no node"))?;
    Ok(Pick {
        why: Explanation {
            strategy: outcome.strategy.unwrap_or(Strategy::LeastLoaded),
            chosen: node_id.clone(),
            candidates: outcome.candidates,
        },
        node_id,
    })
}

pub fn balancer_error(e: ClientError) -> ShoalError {
    match e {
        ClientError::Service(e) => e,
        ClientError::NoResponders { .. } => ShoalError::unavailable("no balancer is answering"),
        e => ShoalError::unavailable(format!("balancer: {e}")),
    }
}
