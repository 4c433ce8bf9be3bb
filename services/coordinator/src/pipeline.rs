//! The leader's write pipeline: changes queue in decision order and go to the log
//! in records of many changes (group commit), and their effects (events, node
//! notices, the reply) run in log order once each append is acknowledged — nothing
//! is acknowledged to a client before it is in the log. Each acknowledged record
//! also goes to the leader's own replica, which does not read it back from the log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_protocol::{AgentsDigest, Assignment, ShoalError, UnassignReply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::append::{AppendError, Appender, LogTarget, Pending};
use crate::log::Feeding;
use crate::metrics::CoordinatorMetrics;
use crate::notifier::Notifier;
use crate::record::{Change, Changes, LogRecord};

/// What to answer once the change is in the log.
pub enum Reply {
    None,
    Assign(oneshot::Sender<Result<Assignment, ShoalError>>, Assignment),
    Unassign(
        oneshot::Sender<Result<UnassignReply, ShoalError>>,
        UnassignReply,
    ),
    /// Signals that everything before it has been written (true) or not (false).
    Idle(oneshot::Sender<bool>),
}

impl Reply {
    fn succeed(self) {
        match self {
            Reply::None => {}
            Reply::Assign(tx, a) => drop(tx.send(Ok(a))),
            Reply::Unassign(tx, r) => drop(tx.send(Ok(r))),
            Reply::Idle(tx) => drop(tx.send(true)),
        }
    }

    /// Answers with `e` (nothing was written).
    pub fn refuse(self, e: ShoalError) {
        match self {
            Reply::None => warn!(error = %e, "change not made"),
            Reply::Assign(tx, _) => drop(tx.send(Err(e))),
            Reply::Unassign(tx, _) => drop(tx.send(Err(e))),
            Reply::Idle(tx) => drop(tx.send(false)),
        }
    }

    fn fail(self) {
        let e = || {
            ShoalError::not_leader(
                "this coordinator lost the leadership before the change was written: retry",
            )
        };
        match self {
            Reply::None => {}
            Reply::Assign(tx, _) => drop(tx.send(Err(e()))),
            Reply::Unassign(tx, _) => drop(tx.send(Err(e()))),
            Reply::Idle(tx) => drop(tx.send(false)),
        }
    }
}

/// A `sync` to send a node once everything decided before it is in the log: the
/// agents the leader has it running at that point.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSync {
    pub node_id: String,
    pub agents: Vec<String>,
    pub digest: AgentsDigest,
    pub epoch: u64,
}

/// A change and its encoding (made once, when the leader decided it).
struct Encoded {
    change: Change,
    bytes: Bytes,
}

/// What the leader hands the writer, in decision order.
enum Input {
    Change(Box<Encoded>, Reply),
    Barrier(Reply),
    Sync(NodeSync),
}

/// What the writer hands the collector, in log order.
enum Item {
    Append {
        pending: Pending,
        changes: Vec<Change>,
        replies: Vec<Reply>,
        /// Frees an in-flight slot once the append is acknowledged.
        slot: OwnedSemaphorePermit,
        sent_at: Instant,
    },
    Barrier(Reply),
    Sync(NodeSync),
}

/// Changes in one log record at most; a record also ends where it would outgrow the
/// server's max payload.
const MAX_BATCH: usize = 256;
/// Appends in flight at once. While they are out, new changes queue and go out
/// together in the next record: group commit, so under load one append (and one
/// delivery to each tail and to the history consumer) carries many changes, and
/// with no load a change goes out at once.
const IN_FLIGHT: usize = 2;

pub struct Pipeline {
    inputs: mpsc::UnboundedSender<Input>,
    failed: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
    /// Bytes one log record may take.
    budget: usize,
}

impl Pipeline {
    /// `budget`: the bytes one log record may take (under the server's max payload).
    /// Appends are confirmed (sent again while unanswered) for as long as `term`
    /// lasts, and for `grace` after it ends; each confirmed record goes to `feeding`.
    pub fn new(
        appender: Appender,
        notifier: Notifier,
        feeding: Feeding,
        budget: usize,
        term: CancellationToken,
        grace: Duration,
        metrics: Arc<CoordinatorMetrics>,
    ) -> Pipeline {
        let (tx, rx) = mpsc::unbounded_channel();
        let failed = appender.failed();
        let confirm = Confirm {
            target: appender.target(),
            term,
            grace,
            metrics,
        };
        let writer = tokio::spawn(write(rx, appender, notifier, feeding, budget, confirm));
        Pipeline {
            inputs: tx,
            failed,
            writer,
            budget,
        }
    }

    /// Encodes `change` for the log: refused if it cannot be encoded or would not fit
    /// in a log record by itself (nothing then changes).
    pub fn encode(&self, change: &Change) -> Result<Bytes, ShoalError> {
        let bytes = change
            .encode()
            .map_err(|e| ShoalError::internal(format!("the change could not be encoded: {e}")))?;
        if bytes.len() > self.budget {
            return Err(ShoalError::bad_request(format!(
                "the change for {:?} would be {} bytes, more than one message to the NATS server may carry ({} bytes): send fewer or shorter labels",
                change.agent_name,
                bytes.len(),
                self.budget
            ))
            .with_details(serde_json::json!({ "agent_name": change.agent_name, "change_bytes": bytes.len() })));
        }
        Ok(bytes)
    }

    /// Cancelled once an append failed: the term must end.
    pub fn failed(&self) -> CancellationToken {
        self.failed.clone()
    }

    /// Queues `change` (encoded by [`Pipeline::encode`]) for the log; `reply` runs
    /// once it is acknowledged.
    pub fn append(&self, change: Change, bytes: Bytes, reply: Reply) {
        if self.failed.is_cancelled() {
            return reply.fail();
        }
        let input = Input::Change(Box::new(Encoded { change, bytes }), reply);
        if let Err(mpsc::error::SendError(Input::Change(_, reply))) = self.inputs.send(input) {
            reply.fail();
        }
    }

    /// Sends `sync` after everything already queued is in the log.
    pub fn sync(&self, sync: NodeSync) {
        let _ = self.inputs.send(Input::Sync(sync));
    }

    /// Runs `reply` after everything already queued.
    pub fn after_pending(&self, reply: Reply) {
        if let Err(mpsc::error::SendError(Input::Barrier(reply))) =
            self.inputs.send(Input::Barrier(reply))
        {
            reply.fail();
        }
    }

    /// Waits until everything queued so far is written and its effects have run;
    /// false if something failed.
    pub async fn idle(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.after_pending(Reply::Idle(tx));
        rx.await.unwrap_or(false)
    }

    /// Waits for the pending appends and their effects.
    pub async fn finish(self) {
        drop(self.inputs);
        let _ = self.writer.await;
    }
}

/// Takes queued changes as records to the log, at most [`IN_FLIGHT`] at a time, each
/// at most [`MAX_BATCH`] changes and `budget` bytes.
async fn write(
    mut inputs: mpsc::UnboundedReceiver<Input>,
    mut appender: Appender,
    notifier: Notifier,
    feeding: Feeding,
    budget: usize,
    confirm: Confirm,
) {
    let failed = appender.failed();
    let (items, collected) = mpsc::unbounded_channel();
    let confirm = Arc::new(confirm);
    let collector = tokio::spawn(collect(
        collected,
        failed.clone(),
        notifier,
        feeding,
        confirm.clone(),
    ));
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut next = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let input = match next.take() {
            Some(input) => input,
            None => match inputs.recv().await {
                Some(input) => input,
                None => break,
            },
        };
        let (first, first_reply) = match input {
            Input::Barrier(reply) => {
                let _ = items.send(Item::Barrier(reply));
                continue;
            }
            Input::Sync(sync) => {
                let _ = items.send(Item::Sync(sync));
                continue;
            }
            Input::Change(change, reply) => (*change, reply),
        };
        let mut size = first.bytes.len();
        let (mut changes, mut replies) = (vec![first], vec![first_reply]);
        while changes.len() < MAX_BATCH {
            match inputs.try_recv() {
                Ok(Input::Change(change, reply)) if size + 1 + change.bytes.len() <= budget => {
                    size += 1 + change.bytes.len();
                    changes.push(*change);
                    replies.push(reply);
                }
                // A change that would not fit, a barrier or a sync: the next record.
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        if failed.is_cancelled() {
            replies.into_iter().for_each(Reply::fail);
            continue;
        }
        let encoded: Vec<Bytes> = changes.iter().map(|c| c.bytes.clone()).collect();
        let sent_at = Instant::now();
        match appender.send(LogRecord::of_encoded(&encoded)).await {
            Ok(pending) => {
                confirm.metrics.append_batch.observe(changes.len() as f64);
                let item = Item::Append {
                    pending,
                    changes: changes.into_iter().map(|c| c.change).collect(),
                    replies,
                    slot,
                    sent_at,
                };
                if let Err(mpsc::error::SendError(Item::Append { replies, .. })) = items.send(item)
                {
                    replies.into_iter().for_each(Reply::fail);
                }
            }
            Err(e) => {
                confirm.metrics.nats_errors.inc();
                warn!(error = %e, changes = changes.len(), bytes = size, "append not sent");
                replies.into_iter().for_each(Reply::fail);
            }
        }
    }
    drop(items);
    let _ = collector.await;
}

/// How long the collector keeps confirming appends.
struct Confirm {
    target: LogTarget,
    /// Confirms while this lasts...
    term: CancellationToken,
    /// ...and for this long after.
    grace: Duration,
    metrics: Arc<CoordinatorMetrics>,
}

impl Confirm {
    /// Confirms `pending`; `later` are the appends sent after it.
    async fn confirm(
        &self,
        pending: Pending,
        later: &mut [&mut Pending],
    ) -> Result<u64, AppendError> {
        let term_over = async {
            self.term.cancelled().await;
            tokio::time::sleep(self.grace).await;
        };
        self.target.confirm_until(pending, later, term_over).await
    }
}

/// Confirms each append in log order, then publishes its effects, hands it to the
/// leader's replica and answers.
async fn collect(
    mut items: mpsc::UnboundedReceiver<Item>,
    failed: CancellationToken,
    notifier: Notifier,
    feeding: Feeding,
    confirm: Arc<Confirm>,
) {
    // What the writer has sent that is not confirmed yet, in log order.
    let mut queue = VecDeque::new();
    loop {
        if queue.is_empty() {
            match items.recv().await {
                Some(item) => queue.push_back(item),
                None => break,
            }
        }
        while let Ok(item) = items.try_recv() {
            queue.push_back(item);
        }
        let Some(item) = queue.pop_front() else {
            break;
        };
        match item {
            Item::Barrier(reply) if failed.is_cancelled() => reply.fail(),
            Item::Barrier(reply) => reply.succeed(),
            Item::Sync(_) if failed.is_cancelled() => {}
            Item::Sync(sync) => notifier.sync(&sync).await,
            Item::Append { replies, .. } if failed.is_cancelled() => {
                replies.into_iter().for_each(Reply::fail)
            }
            Item::Append {
                pending,
                changes,
                replies,
                slot,
                sent_at,
            } => {
                let want = pending.want;
                let mut later: Vec<&mut Pending> = queue
                    .iter_mut()
                    .filter_map(|item| match item {
                        Item::Append { pending, .. } => Some(pending),
                        _ => None,
                    })
                    .collect();
                match confirm.confirm(pending, &mut later).await {
                    Ok(seq) => {
                        confirm
                            .metrics
                            .append_seconds
                            .observe(sent_at.elapsed().as_secs_f64());
                        drop(slot);
                        notifier.written(&changes).await;
                        feeding.feed(seq, LogRecord::Changes(Changes { changes }));
                        replies.into_iter().for_each(Reply::succeed);
                    }
                    Err(e) => {
                        if !e.is_fenced() {
                            confirm.metrics.nats_errors.inc();
                        }
                        warn!(seq = want, fenced = e.is_fenced(), error = %e, "append not stored, stepping down");
                        failed.cancel();
                        replies.into_iter().for_each(Reply::fail);
                    }
                }
            }
        }
    }
}
