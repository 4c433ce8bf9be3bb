//! The kinds of error several services share: a flag they cannot run with, NATS
//! refusing a connection, a subscription or a publish, JetStream refusing to open or
//! follow a bucket or a stream. Each service's own error type wraps these next to its
//! own kinds. Every kind keeps its cause: it says what was being done, shows the cause
//! after a colon, and hands it out as its `source`.

use std::borrow::Cow;
use std::path::PathBuf;

use shoal_protocol::ShoalError;

/// A flag (or a combination of flags) a service cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value clap cannot check on its own; the message names the flag.
    #[error("{0}")]
    Invalid(String),
    /// A value the wire contract refuses (an instance id, a subject prefix, a node's
    /// identity); the message names the field.
    #[error("{what}: {}", source.message)]
    Refused {
        what: &'static str,
        #[source]
        source: ShoalError,
    },
    #[error("reading NATS credentials file {}: {source}", path.display())]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--nats-url {urls:?} is not a valid NATS URL list: {source}")]
    NatsUrl {
        urls: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--log-level {level:?} is neither a level nor a tracing directive list")]
    LogLevel {
        level: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
}

impl ConfigError {
    pub fn invalid(message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid(message.into())
    }
}

/// Why a NATS connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Options(#[from] ConfigError),
    #[error("connecting to NATS: {0}")]
    Nats(#[source] async_nats::ConnectError),
}

/// A core NATS operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("publishing on {subject}: {source}")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::PublishError,
    },
    #[error("flushing to NATS: {0}")]
    Flush(#[source] async_nats::client::FlushError),
    #[error("registering {service} as a NATS micro service: {source}")]
    Service {
        service: &'static str,
        #[source]
        source: async_nats::Error,
    },
    #[error("adding the endpoint {subject}: {source}")]
    Endpoint {
        subject: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("stopping the NATS micro service: {0}")]
    StopService(#[source] async_nats::Error),
}

impl NatsError {
    pub fn subscribe(subject: impl Into<String>, source: async_nats::SubscribeError) -> NatsError {
        NatsError::Subscribe {
            subject: subject.into(),
            source,
        }
    }

    pub fn publish(subject: impl Into<String>, source: async_nats::PublishError) -> NatsError {
        NatsError::Publish {
            subject: subject.into(),
            source,
        }
    }
}

/// A JetStream request (a KV bucket, a stream, a consumer, an object store) that
/// failed: what was being done, and the client's error.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct JetStreamError {
    what: Cow<'static, str>,
    #[source]
    source: async_nats::Error,
}

impl JetStreamError {
    pub fn new(
        what: impl Into<Cow<'static, str>>,
        source: impl Into<async_nats::Error>,
    ) -> JetStreamError {
        JetStreamError {
            what: what.into(),
            source: source.into(),
        }
    }

    /// What was being done.
    pub fn what(&self) -> &str {
        &self.what
    }
}

/// Names what a JetStream call was doing when it failed:
/// `store.watch_with_history(">").await.jetstream("watching shoal_members")?`.
pub trait JetStreamContext<T> {
    fn jetstream(self, what: impl Into<Cow<'static, str>>) -> Result<T, JetStreamError>;
}

impl<T, E> JetStreamContext<T> for Result<T, E>
where
    E: Into<async_nats::Error>,
{
    fn jetstream(self, what: impl Into<Cow<'static, str>>) -> Result<T, JetStreamError> {
        self.map_err(|source| JetStreamError::new(what, source))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn errors_say_what_failed_and_keep_the_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let e: Result<(), _> = Err(cause);
        let e = e.jetstream("opening the bucket shoal_members").unwrap_err();
        assert_eq!(e.to_string(), "opening the bucket shoal_members: timed out");
        assert_eq!(e.source().unwrap().to_string(), "timed out");

        let refused = ConfigError::Refused {
            what: "--instance-id",
            source: ShoalError::bad_request("instance_id \"a b\" is not an id"),
        };
        assert_eq!(
            refused.to_string(),
            "--instance-id: instance_id \"a b\" is not an id"
        );
        assert!(refused.source().is_some());
    }
}
