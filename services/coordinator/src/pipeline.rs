//! The leader's write pipeline: changes are sent to the log back to back, and their
//! effects (events, node notices, the reply) run in log order once each append is
//! acknowledged — nothing is acknowledged to a client before it is in the log.

use async_nats::jetstream::context::PublishAckFuture;
use chrono::Utc;
use shoal_protocol::{AgentAction, AgentNotice, Assignment, ShoalError, Subjects, UnassignReply};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::log::Appender;
use crate::record::{Change, LogRecord};

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

enum Item {
    Append {
        want: u64,
        ack: PublishAckFuture,
        change: Box<Change>,
        reply: Reply,
    },
    Barrier(Reply),
}

/// Publishes what follows a written change: the assignment event (the balancer
/// counts agents from these) and start/stop notices to the nodes.
#[derive(Clone)]
pub struct Notifier {
    pub client: async_nats::Client,
    pub subjects: Subjects,
}

impl Notifier {
    async fn publish<T: serde::Serialize>(&self, subject: String, message: &T) {
        let Ok(body) = serde_json::to_vec(message) else {
            return;
        };
        if let Err(e) = self.client.publish(subject, body.into()).await {
            debug!(error = %e, "event not published");
        }
    }

    pub async fn changed(&self, c: &Change) {
        self.publish(self.subjects.coordinator_event(&c.agent_name), &c.event())
            .await;
        let notice = |action, node_id: &str| AgentNotice {
            action,
            agent_name: c.agent_name.clone(),
            node_id: node_id.to_string(),
            epoch: c.epoch,
            at: Utc::now(),
        };
        if let Some(previous) = &c.previous_node_id {
            // An orphan still waiting for a node has not left its old one yet.
            if (c.node_id.is_some() || c.action == shoal_protocol::AssignmentAction::Unassigned)
                && c.node_id.as_ref() != Some(previous)
            {
                self.publish(
                    self.subjects.node_agents(previous),
                    &notice(AgentAction::Stop, previous),
                )
                .await;
            }
        }
        if let Some(node) = &c.node_id {
            self.publish(
                self.subjects.node_agents(node),
                &notice(AgentAction::Start, node),
            )
            .await;
        }
    }
}

pub struct Pipeline {
    appender: Appender,
    items: mpsc::UnboundedSender<Item>,
    collector: tokio::task::JoinHandle<()>,
}

impl Pipeline {
    pub fn new(appender: Appender, notifier: Notifier) -> Pipeline {
        let (tx, rx) = mpsc::unbounded_channel();
        let failed = appender.failed();
        let collector = tokio::spawn(collect(rx, failed, notifier));
        Pipeline {
            appender,
            items: tx,
            collector,
        }
    }

    /// Cancelled once an append failed: the term must end.
    pub fn failed(&self) -> CancellationToken {
        self.appender.failed()
    }

    /// Sends `change` to the log; `reply` runs once it is acknowledged.
    pub async fn append(&mut self, change: Change, reply: Reply) {
        if self.appender.failed().is_cancelled() {
            reply.fail();
            return;
        }
        let record = LogRecord::Change(change);
        let LogRecord::Change(change) = &record else {
            unreachable!()
        };
        match self.appender.send(&record).await {
            Ok((want, ack)) => {
                let item = Item::Append {
                    want,
                    ack,
                    change: Box::new(change.clone()),
                    reply,
                };
                if let Err(mpsc::error::SendError(Item::Append { reply, .. })) =
                    self.items.send(item)
                {
                    reply.fail();
                }
            }
            Err(e) => {
                warn!(error = %e, "append not sent");
                reply.fail();
            }
        }
    }

    /// Runs `reply` after everything already sent.
    pub fn after_pending(&self, reply: Reply) {
        if let Err(mpsc::error::SendError(Item::Barrier(reply))) =
            self.items.send(Item::Barrier(reply))
        {
            reply.fail();
        }
    }

    /// Waits until everything sent so far is written and its effects have run;
    /// false if something failed.
    pub async fn idle(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.after_pending(Reply::Idle(tx));
        rx.await.unwrap_or(false)
    }

    /// Waits for the pending appends and their effects.
    pub async fn finish(self) {
        drop(self.items);
        let _ = self.collector.await;
    }
}

async fn collect(
    mut items: mpsc::UnboundedReceiver<Item>,
    failed: CancellationToken,
    notifier: Notifier,
) {
    while let Some(item) = items.recv().await {
        match item {
            Item::Barrier(reply) if failed.is_cancelled() => reply.fail(),
            Item::Barrier(reply) => reply.succeed(),
            Item::Append { reply, .. } if failed.is_cancelled() => reply.fail(),
            Item::Append {
                want,
                ack,
                change,
                reply,
            } => match ack.await {
                Ok(ack) if ack.sequence == want => {
                    notifier.changed(&change).await;
                    reply.succeed();
                }
                outcome => {
                    let error = match outcome {
                        Ok(ack) => format!("appended at {} instead of {want}", ack.sequence),
                        Err(e) => e.to_string(),
                    };
                    warn!(seq = want, error, "fenced append refused, stepping down");
                    failed.cancel();
                    reply.fail();
                }
            },
        }
    }
}
