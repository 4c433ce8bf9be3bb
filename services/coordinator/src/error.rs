//! Errors that stop the coordinator (request failures are `ShoalError` replies).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("nats: {0}")]
    Nats(String),
    #[error("jetstream: {0}")]
    JetStream(String),
    #[error("postgres: {0}")]
    Postgres(String),
}

impl Error {
    pub fn nats(e: impl std::fmt::Display) -> Error {
        Error::Nats(e.to_string())
    }
    pub fn js(e: impl std::fmt::Display) -> Error {
        Error::JetStream(e.to_string())
    }
}
