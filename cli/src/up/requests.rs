//! What `shoal stop|start|restart <instance>` asks of the running `shoal up`: one
//! line (`stop node-2`) over a Unix socket in its run directory, answered with one
//! line of JSON. `shoal up` starts and stops its own children, so one started again
//! is still its own: `status` shows it, `down` stops it, its log goes on.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// What is asked of one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Stop,
    Start,
    Restart,
}

impl Action {
    fn parse(word: &str) -> Option<Action> {
        match word {
            "stop" => Some(Action::Stop),
            "start" => Some(Action::Start),
            "restart" => Some(Action::Restart),
            _ => None,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Restart => "restart",
        }
    }
}

/// The answer: where the instance stands now, or why nothing was done.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub instance: String,
    /// `running` or `stopped`.
    pub status: String,
    pub pid: u32,
    pub message: String,
}

/// One request, handed to the loop that owns the children.
pub struct Request {
    pub action: Action,
    pub instance: String,
    pub reply: oneshot::Sender<Result<Outcome, String>>,
}

/// Listens at `path` (a stale socket of a run that ended is replaced).
pub fn listen(path: &Path) -> anyhow::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))
}

/// Answers connections until the listener fails or `requests` is closed.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Request>) {
    while let Ok((stream, _)) = listener.accept().await {
        let requests = requests.clone();
        tokio::spawn(async move {
            let _ = answer(stream, &requests).await;
        });
    }
}

async fn answer(stream: UnixStream, requests: &mpsc::Sender<Request>) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let mut words = line.split_whitespace();
    let outcome = match (words.next().and_then(Action::parse), words.next()) {
        (Some(action), Some(instance)) => {
            let (reply, answered) = oneshot::channel();
            let request = Request {
                action,
                instance: instance.to_string(),
                reply,
            };
            match requests.send(request).await {
                Ok(()) => answered
                    .await
                    .unwrap_or_else(|_| Err("shoal up is stopping".to_string())),
                Err(_) => Err("shoal up is stopping".to_string()),
            }
        }
        _ => Err(format!(
            "not a request: {:?} (stop|start|restart <instance>)",
            line.trim()
        )),
    };
    let body = match outcome {
        Ok(done) => serde_json::json!({ "ok": done }),
        Err(why) => serde_json::json!({ "error": why }),
    };
    write.write_all(format!("{body}\n").as_bytes()).await?;
    Ok(())
}

/// Asks the `shoal up` listening at `path` to `action` `instance`.
pub async fn ask(path: &Path, action: Action, instance: &str) -> anyhow::Result<Outcome> {
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "no running `shoal up` answers at {} — start the control plane with `shoal up`",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{} {instance}\n", action.word()).as_bytes())
        .await?;
    let mut line = String::new();
    // A stop waits for the process to exit (up to 10 s before it is killed).
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        BufReader::new(read).read_line(&mut line),
    )
    .await
    .context("shoal up did not answer within 30 s")??;
    let answer: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("shoal up answered {line:?}"))?;
    if let Some(why) = answer["error"].as_str() {
        anyhow::bail!("{why}");
    }
    serde_json::from_value(answer["ok"].clone()).context("reading shoal up's answer")
}
