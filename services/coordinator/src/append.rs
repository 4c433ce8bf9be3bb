//! The leader's appends to the fenced log. Each carries the sequence the log must
//! end at (`Nats-Expected-Last-Sequence`), so a deposed leader's appends are refused
//! once a newer leader has written its epoch-start, and a name (`Nats-Msg-Id`), so
//! an append whose answer was lost can be sent again without being stored twice.
//!
//! An answer is lost when the log's stream changes leader (a nats-server stopping
//! or crashing) while the append is in flight. Rather than wait out the JetStream
//! timeout and end the term, [`LogTarget::confirm`] sends the append again every
//! [`RESEND_AFTER`] until the log says where it is: stored where it had to be,
//! or taken by another writer (fenced).

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use shoal_protocol::Subjects;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::record::LogRecord;

/// Why an append was not stored where it had to be.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("encoding the record: {0}")]
    Encode(#[source] crate::record::RecordError),
    /// The log did not end where this writer expected: another leader appended (an
    /// epoch-start record), so this writer is fenced.
    #[error("refused by the log: {0}")]
    Refused(#[source] PublishError),
    #[error("appended at {got} instead of {want}")]
    Misplaced { got: u64, want: u64 },
    /// Could not be sent at all (the connection is closed).
    #[error("not sent: {0}")]
    NotSent(#[source] PublishError),
    /// Sent (and sent again) without the log saying whether it stored it: the log
    /// may be without a leader for a while.
    #[error("no answer for record {want} in {waited:?}")]
    Unanswered { want: u64, waited: Duration },
}

impl AppendError {
    /// True when another writer has appended since: this writer is fenced, not just
    /// unlucky.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            AppendError::Refused(_) | AppendError::Misplaced { .. }
        )
    }
}

/// How long an append may go unanswered before it is sent again. Far above an
/// append's round trip under load (a few ms), far below the JetStream timeout.
pub const RESEND_AFTER: Duration = Duration::from_millis(200);

/// Where appends go and how one is confirmed; cheap to clone, so a pipeline's
/// writer and collector share it.
#[derive(Clone)]
pub struct LogTarget {
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
}

/// An append sent and not yet confirmed: what sending it again needs.
pub struct Pending {
    /// The sequence it must get.
    pub want: u64,
    id: String,
    payload: Bytes,
    ack: AckFuture,
}

/// The answer to one send of an append.
type AckFuture = <PublishAckFuture as IntoFuture>::IntoFuture;

/// Appends records with the expected last sequence, pipelined: each append expects
/// the sequence the previous one will get, so throughput is not one round trip per
/// record. The first failure fences the writer for good.
pub struct Appender {
    target: LogTarget,
    /// The sequence the stream's last message must have for the next append.
    expected: u64,
    failed: CancellationToken,
    /// Names this writer's appends (`{prefix}.{seq}`): unique to this writer, so a
    /// resent copy is recognised as its own and no other writer's.
    prefix: String,
}

impl Appender {
    /// A writer whose first append must follow record `last_seq`.
    pub fn new(
        js: jetstream::Context,
        stream: stream::Stream,
        subjects: &Subjects,
        last_seq: u64,
    ) -> Appender {
        Appender {
            target: LogTarget {
                js,
                stream,
                subject: subjects.coordinator_log(),
            },
            expected: last_seq,
            failed: CancellationToken::new(),
            prefix: crate::record::new_event_id(),
        }
    }

    /// What confirms this writer's appends.
    pub fn target(&self) -> LogTarget {
        self.target.clone()
    }

    /// Cancelled once an append has been refused or could not be sent.
    pub fn failed(&self) -> CancellationToken {
        self.failed.clone()
    }

    /// Sends one encoded record; [`LogTarget::confirm`] awaits where it is stored.
    pub async fn send(&mut self, payload: Bytes) -> Result<Pending, AppendError> {
        let want = self.expected + 1;
        let id = format!("{}.{want}", self.prefix);
        match self.target.publish(&id, want, payload.clone()).await {
            Ok(ack) => {
                self.expected = want;
                Ok(Pending {
                    want,
                    id,
                    payload,
                    ack: ack.into_future(),
                })
            }
            Err(e) => {
                self.failed.cancel();
                Err(AppendError::NotSent(e))
            }
        }
    }

    /// Sends and confirms one record (the epoch-start), giving up after `patience`.
    pub async fn append_now(
        &mut self,
        record: &LogRecord,
        patience: Duration,
    ) -> Result<u64, AppendError> {
        let payload = record.encode().map_err(AppendError::Encode)?;
        let pending = self.send(payload).await?;
        let result = self
            .target
            .confirm_until(pending, &mut [], tokio::time::sleep(patience))
            .await;
        if result.is_err() {
            self.failed.cancel();
        }
        result
    }
}

impl LogTarget {
    async fn publish(
        &self,
        id: &str,
        want: u64,
        payload: Bytes,
    ) -> Result<PublishAckFuture, PublishError> {
        let publish = PublishMessage::build()
            .payload(payload)
            .message_id(id)
            .expected_last_sequence(want - 1);
        self.js.send_publish(self.subject.clone(), publish).await
    }

    /// Waits until the log says where `pending` is: `Ok(want)` once it is stored at
    /// the sequence it needed, an error once it is fenced. `later` are the appends
    /// sent after it, still unconfirmed. When `pending` is left without an answer
    /// for [`RESEND_AFTER`], or was refused because a record before it had been
    /// lost, it is sent again with the same name and expected sequence (JetStream
    /// drops a copy of a message it already stored), and so is each of `later`, in
    /// order: they would otherwise be refused in turn, each behind the one before.
    /// Never gives up by itself; callers bound it.
    pub async fn confirm(
        &self,
        mut pending: Pending,
        later: &mut [&mut Pending],
    ) -> Result<u64, AppendError> {
        let want = pending.want;
        let started = Instant::now();
        let mut attempts = 1u32;
        loop {
            let asked = tokio::time::Instant::now();
            let pause = match tokio::time::timeout(RESEND_AFTER, &mut pending.ack).await {
                Ok(Ok(stored)) if stored.sequence == want => {
                    if attempts > 1 {
                        info!(
                            seq = want,
                            attempts,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            duplicate = stored.duplicate,
                            "append confirmed after sending it again"
                        );
                    }
                    return Ok(want);
                }
                Ok(Ok(stored)) => {
                    return Err(AppendError::Misplaced {
                        got: stored.sequence,
                        want,
                    });
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Either this append is already stored (a copy resent after it
                    // landed, on a log that checks the sequence before the name),
                    // another writer took its place, or it was refused while a
                    // record before it was missing; that one is stored by now (they
                    // are confirmed in order), so this one can go again at once.
                    match self.holder_of(want, &pending.id).await {
                        Some(Holder::This) => return Ok(want),
                        Some(Holder::Other) => return Err(AppendError::Refused(e)),
                        Some(Holder::Nobody) => false,
                        None => true,
                    }
                }
                Ok(Err(e)) => {
                    debug!(seq = want, error = %e, "append not stored, sending it again");
                    true
                }
                Err(_) => false,
            };
            if pause {
                // At most one send per RESEND_AFTER while the log is unavailable.
                tokio::time::sleep_until(asked + RESEND_AFTER).await;
            }
            attempts += 1;
            debug!(
                seq = want,
                attempts,
                later = later.len(),
                "sending an append again"
            );
            self.resend(&mut pending).await?;
            for p in later.iter_mut() {
                self.resend(p).await?;
            }
        }
    }

    async fn resend(&self, pending: &mut Pending) -> Result<(), AppendError> {
        let again = self
            .publish(&pending.id, pending.want, pending.payload.clone())
            .await
            .map_err(AppendError::NotSent)?;
        pending.ack = again.into_future();
        Ok(())
    }

    /// [`LogTarget::confirm`] until `give_up` completes, then [`AppendError::Unanswered`].
    pub async fn confirm_until(
        &self,
        pending: Pending,
        later: &mut [&mut Pending],
        give_up: impl Future<Output = ()>,
    ) -> Result<u64, AppendError> {
        let want = pending.want;
        let started = Instant::now();
        tokio::select! {
            confirmed = self.confirm(pending, later) => confirmed,
            _ = give_up => Err(AppendError::Unanswered { want, waited: started.elapsed() }),
        }
    }

    /// Who wrote record `seq`; None if the log could not say.
    async fn holder_of(&self, seq: u64, id: &str) -> Option<Holder> {
        let read = tokio::time::timeout(RESEND_AFTER, self.stream.get_raw_message(seq)).await;
        match read.ok()? {
            Ok(message) => {
                let name = message
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.as_str());
                Some(if name == Some(id) {
                    Holder::This
                } else {
                    Holder::Other
                })
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Some(Holder::Nobody),
            Err(e) => {
                debug!(seq, error = %e, "cannot read a log record back");
                None
            }
        }
    }
}

/// Who holds a sequence in the log.
enum Holder {
    This,
    Other,
    Nobody,
}
