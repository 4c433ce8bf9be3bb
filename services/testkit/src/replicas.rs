//! Talking to several replicas of a service over NATS: ask any one of them, ask
//! all of them, or wait until they all give the same answer.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rand::Rng;
use serde_json::Value;

use crate::wait::wait_for;

/// Longest a single round of requests in [`wait_all_agree`] may take, so one
/// replica that does not answer cannot use up the whole deadline at once.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `body` as JSON to `subject` and parses the reply as JSON (an error
/// envelope `{"error": ...}` is returned as a value, not as an `Err`).
pub async fn request_json(
    client: &async_nats::Client,
    subject: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Value> {
    let payload = serde_json::to_vec(body)?;
    let message =
        tokio::time::timeout(timeout, client.request(subject.to_string(), payload.into()))
            .await
            .map_err(|_| anyhow!("no reply on {subject} within {timeout:?}"))?
            .with_context(|| format!("request on {subject}"))?;
    serde_json::from_slice(&message.payload).with_context(|| {
        format!(
            "reply on {subject} is not JSON: {}",
            String::from_utf8_lossy(&message.payload)
        )
    })
}

/// [`request_json`] on one of `subjects` picked at random; returns its index too.
pub async fn request_random(
    client: &async_nats::Client,
    subjects: &[String],
    body: &Value,
    timeout: Duration,
) -> Result<(usize, Value)> {
    if subjects.is_empty() {
        bail!("no replica subjects to choose from");
    }
    let i = rand::rng().random_range(0..subjects.len());
    Ok((i, request_json(client, &subjects[i], body, timeout).await?))
}

/// [`request_json`] on every subject at once; the replies in `subjects` order.
pub async fn request_all(
    client: &async_nats::Client,
    subjects: &[String],
    body: &Value,
    timeout: Duration,
) -> Result<Vec<Value>> {
    let requests = subjects
        .iter()
        .map(|subject| request_json(client, subject, body, timeout));
    futures::future::join_all(requests)
        .await
        .into_iter()
        .collect()
}

/// Whether `reply` is Shoal's error envelope `{"error": ...}`.
pub fn is_error_envelope(reply: &Value) -> bool {
    reply
        .as_object()
        .is_some_and(|object| object.contains_key("error"))
}

/// Asks every replica until all answer, none with an error envelope, and their
/// `normalize`d replies are equal; returns that common (normalized) reply. The
/// error at the deadline shows what each replica last said.
pub async fn wait_all_agree<F>(
    what: &str,
    client: &async_nats::Client,
    subjects: &[String],
    body: &Value,
    deadline: Duration,
    normalize: F,
) -> Result<Value>
where
    F: Fn(&Value) -> Value,
{
    if subjects.is_empty() {
        bail!("no replica subjects to ask");
    }
    let last_round = Mutex::new(String::from("no round of requests finished"));
    let last_round_ref = &last_round;
    let normalize = &normalize;
    let timeout = ROUND_TIMEOUT.min(deadline);
    let result = wait_for(what, deadline, || async move {
        let replies = futures::future::join_all(
            subjects
                .iter()
                .map(|subject| request_json(client, subject, body, timeout)),
        )
        .await;
        let (agreed, report) = judge(subjects, &replies, normalize);
        *last_round_ref.lock().unwrap_or_else(|p| p.into_inner()) = report;
        agreed
    })
    .await;
    result.map_err(|e| {
        let report = last_round.lock().unwrap_or_else(|p| p.into_inner()).clone();
        anyhow!("{e:#}; the replicas last answered:\n{report}")
    })
}

/// The agreed value if there is one, and a line per replica for the error report.
fn judge<F>(
    subjects: &[String],
    replies: &[Result<Value>],
    normalize: &F,
) -> (Option<Value>, String)
where
    F: Fn(&Value) -> Value,
{
    let mut report = Vec::new();
    let mut normalized = Vec::new();
    for (subject, reply) in subjects.iter().zip(replies) {
        match reply {
            Ok(value) if is_error_envelope(value) => {
                report.push(format!("  {subject}: error envelope {value}"))
            }
            Ok(value) => {
                let n = normalize(value);
                report.push(format!("  {subject}: {n}"));
                normalized.push(n);
            }
            Err(e) => report.push(format!("  {subject}: {e:#}")),
        }
    }
    let agreed = (normalized.len() == subjects.len()
        && normalized.windows(2).all(|w| w[0] == w[1]))
    .then(|| normalized.swap_remove(0));
    (agreed, report.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subjects(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("svc.{i}")).collect()
    }

    #[test]
    fn agreement_needs_every_reply_equal_and_no_errors() {
        let id = |v: &Value| v.clone();
        let (agreed, _) = judge(
            &subjects(2),
            &[Ok(json!({"a": 1})), Ok(json!({"a": 1}))],
            &id,
        );
        assert_eq!(agreed, Some(json!({"a": 1})));

        let (agreed, report) = judge(
            &subjects(2),
            &[Ok(json!({"a": 1})), Ok(json!({"a": 2}))],
            &id,
        );
        assert_eq!(agreed, None);
        assert!(
            report.contains("svc.0: {\"a\":1}") && report.contains("svc.1: {\"a\":2}"),
            "{report}"
        );

        let envelope = json!({"error": {"code": "x"}});
        let (agreed, report) = judge(&subjects(2), &[Ok(envelope.clone()), Ok(envelope)], &id);
        assert_eq!(agreed, None);
        assert!(report.contains("error envelope"), "{report}");

        let (agreed, report) = judge(&subjects(2), &[Ok(json!(1)), Err(anyhow!("no reply"))], &id);
        assert_eq!(agreed, None);
        assert!(report.contains("svc.1: no reply"), "{report}");
    }

    #[test]
    fn normalization_hides_allowed_differences() {
        let drop_node = |v: &Value| {
            let mut v = v.clone();
            v.as_object_mut().map(|o| o.remove("node"));
            v
        };
        let replies = [
            Ok(json!({"n": 5, "node": "a"})),
            Ok(json!({"n": 5, "node": "b"})),
        ];
        assert_eq!(
            judge(&subjects(2), &replies, &drop_node).0,
            Some(json!({"n": 5}))
        );
    }
}
