//! The assignment history in Postgres: embedded migrations, idempotent batched
//! inserts (unique log sequence and event id), and the `history` query.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, PoolConfig, Runtime, Timeouts};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use shoal_protocol::{
    AssignmentAction, HistoryCursor, HistoryEntry, HistoryReply, HistoryRequest, ShoalError,
};
use tokio_postgres::NoTls;
use tokio_postgres::types::Json;

use crate::error::Error;
use crate::record::{Change, Explanation};

/// Why the history database did not do what was asked (logged and answered after
/// "history database: ").
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("no connection: {0}")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("{what}: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("migration {version} ({name}): {source}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Names the statement a Postgres error came from.
fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> HistoryError {
    move |source| HistoryError::Query { what, source }
}

/// Embedded migrations, applied in order, each once.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "assignment_history",
        include_str!("../migrations/0001_assignment_history.sql"),
    ),
    (
        2,
        "batched_log_records",
        include_str!("../migrations/0002_batched_log_records.sql"),
    ),
];

/// Rows per INSERT statement, bounding one statement's size.
const ROWS_PER_INSERT: usize = 1_000;

/// Serialises concurrent replicas migrating the same database.
const MIGRATION_LOCK: i64 = 0x5_40A1_0001;

const DEFAULT_LIMIT: u32 = 100;

/// One history row: a change, the sequence of its log record and its position
/// in that record.
#[derive(Clone, Debug)]
pub struct Row {
    pub log_seq: u64,
    pub log_index: u32,
    pub change: Change,
}

pub struct HistoryStore {
    pool: Pool,
    /// Counts every operation that failed.
    errors: Counter,
}

impl HistoryStore {
    /// A pool for `url`; nothing connects until first use. Failed operations are
    /// counted in `errors`.
    pub fn new(url: &str, errors: Counter) -> Result<HistoryStore, Error> {
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(url.to_string());
        let wait = Some(Duration::from_secs(2));
        cfg.pool = Some(PoolConfig {
            max_size: 8,
            timeouts: Timeouts {
                wait,
                create: wait,
                recycle: wait,
            },
            ..PoolConfig::default()
        });
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(Error::Postgres)?;
        Ok(HistoryStore { pool, errors })
    }

    /// `result`, its error counted.
    fn counted<T>(&self, result: Result<T, HistoryError>) -> Result<T, HistoryError> {
        if result.is_err() {
            self.errors.inc();
        }
        result
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, HistoryError> {
        self.pool.get().await.map_err(HistoryError::Pool)
    }

    /// Applies the migrations not applied yet.
    pub async fn migrate(&self) -> Result<(), HistoryError> {
        self.counted(self.apply_migrations().await)
    }

    async fn apply_migrations(&self) -> Result<(), HistoryError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(query("starting the migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(query("taking the migration lock"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS shoal_schema_migrations (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(query("creating the migrations table"))?;
        let applied: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM shoal_schema_migrations",
                &[],
            )
            .await
            .map_err(query("reading the applied migrations"))?
            .get(0);
        for (version, name, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > applied) {
            tx.batch_execute(sql)
                .await
                .map_err(|source| HistoryError::Migration {
                    version: *version,
                    name,
                    source,
                })?;
            tx.execute(
                "INSERT INTO shoal_schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await
            .map_err(query("recording a migration"))?;
            tracing::info!(version, name, "applied history migration");
        }
        tx.commit()
            .await
            .map_err(query("committing the migrations"))
    }

    /// Inserts `rows` (in statements of up to [`ROWS_PER_INSERT`]); rows already
    /// present are skipped. Returns how many were new.
    pub async fn insert(&self, rows: &[Row]) -> Result<u64, HistoryError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.counted(self.insert_rows(rows).await)
    }

    async fn insert_rows(&self, rows: &[Row]) -> Result<u64, HistoryError> {
        let client = self.client().await?;
        let mut inserted = 0;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            inserted += insert_chunk(&client, chunk).await?;
        }
        Ok(inserted)
    }

    /// A page of the rows matching `req`, newest first; when the page is full, its
    /// `next` is where the older rows go on.
    pub async fn page(&self, req: &HistoryRequest) -> Result<HistoryReply, ShoalError> {
        let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
        let history = self.query(req, limit).await?;
        let full = history.len() >= limit as usize;
        Ok(HistoryReply {
            count: history.len(),
            next: history.last().filter(|_| full).map(HistoryCursor::of),
            history,
        })
    }

    /// At most `limit` rows matching `req`, newest first.
    async fn query(
        &self,
        req: &HistoryRequest,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, ShoalError> {
        let unavailable = |e: HistoryError| {
            self.errors.inc();
            ShoalError::unavailable(format!("history database: {e}"))
        };
        let client = self.client().await.map_err(unavailable)?;
        let limit = i64::from(limit);
        let before_seq = req.before.map(|c| c.log_seq as i64);
        let before_index = req.before.map(|c| c.log_index as i32);
        let rows = client
            .query(
                "SELECT log_seq, event_id, agent_name, node_id, previous_node_id, action, reason, \
                 leader_id, epoch, at, candidates, log_index FROM assignment_history \
                 WHERE ($1::text IS NULL OR agent_name = $1) \
                 AND ($2::text IS NULL OR node_id = $2 OR previous_node_id = $2) \
                 AND ($3::timestamptz IS NULL OR at >= $3) \
                 AND ($4::timestamptz IS NULL OR at < $4) \
                 AND ($6::bigint IS NULL OR (log_seq, log_index) < ($6, $7::integer)) \
                 ORDER BY log_seq DESC, log_index DESC LIMIT $5",
                &[
                    &req.agent_name,
                    &req.node_id,
                    &req.since,
                    &req.until,
                    &limit,
                    &before_seq,
                    &before_index,
                ],
            )
            .await
            .map_err(|e| unavailable(query("querying the history")(e)))?;
        rows.iter()
            .map(|row| {
                let action: String = row.get(5);
                let action: AssignmentAction = serde_json::from_value(Value::String(action))
                    .map_err(|e| ShoalError::internal(format!("history row: {e}")))?;
                Ok(HistoryEntry {
                    log_seq: row.get::<_, i64>(0) as u64,
                    log_index: row.get::<_, i32>(11) as u32,
                    event_id: row.get(1),
                    agent_name: row.get(2),
                    node_id: row.get(3),
                    previous_node_id: row.get(4),
                    action,
                    reason: row.get(6),
                    leader_id: row.get(7),
                    epoch: row.get::<_, i64>(8) as u64,
                    at: row.get(9),
                    candidates: row.get(10),
                })
            })
            .collect()
    }
}

/// One statement for any number of rows, prepared once per connection: the rows go
/// as one array per column. (A statement of `VALUES` rows differs with each batch's
/// size, so Postgres parsed and planned each one afresh.)
const INSERT_ROWS: &str = "INSERT INTO assignment_history (log_seq, log_index, event_id, \
     agent_name, node_id, previous_node_id, action, reason, leader_id, epoch, at, candidates) \
     SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::timestamptz[], \
     $12::jsonb[]) ON CONFLICT DO NOTHING";

async fn insert_chunk(
    client: &deadpool_postgres::Object,
    rows: &[Row],
) -> Result<u64, HistoryError> {
    let statement = client
        .prepare_cached(INSERT_ROWS)
        .await
        .map_err(query("preparing the history insert"))?;
    let c = Columns::of(rows);
    client
        .execute(
            &statement,
            &[
                &c.log_seq,
                &c.log_index,
                &c.event_id,
                &c.agent_name,
                &c.node_id,
                &c.previous_node_id,
                &c.action,
                &c.reason,
                &c.leader_id,
                &c.epoch,
                &c.at,
                &c.candidates,
            ],
        )
        .await
        .map_err(query("inserting history rows"))
}

/// The rows' values, one array per column.
#[derive(Default)]
struct Columns<'a> {
    log_seq: Vec<i64>,
    log_index: Vec<i32>,
    event_id: Vec<&'a str>,
    agent_name: Vec<&'a str>,
    node_id: Vec<Option<&'a str>>,
    previous_node_id: Vec<Option<&'a str>>,
    action: Vec<&'static str>,
    reason: Vec<&'a str>,
    leader_id: Vec<&'a str>,
    epoch: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    candidates: Vec<Option<Json<&'a Explanation>>>,
}

impl<'a> Columns<'a> {
    fn of(rows: &'a [Row]) -> Columns<'a> {
        let mut c = Columns::default();
        for r in rows {
            let ch = &r.change;
            c.log_seq.push(r.log_seq as i64);
            c.log_index.push(r.log_index as i32);
            c.event_id.push(&ch.event_id);
            c.agent_name.push(&ch.agent_name);
            c.node_id.push(ch.node_id.as_deref());
            c.previous_node_id.push(ch.previous_node_id.as_deref());
            c.action.push(ch.action.as_str());
            c.reason.push(&ch.reason);
            c.leader_id.push(&ch.leader_id);
            c.epoch.push(ch.epoch as i64);
            c.at.push(ch.at);
            c.candidates.push(ch.candidates.as_ref().map(Json));
        }
        c
    }
}
