//! Persistent state (sqlx, migrations embedded at build time): sessions,
//! their background processes, their event log and their conversation
//! history, in SQLite at `<data_dir>/crogia.db` (the default) or in
//! PostgreSQL (`[store] url`), through one set of queries written in the
//! SQL both understand (`$1` parameters, `ON CONFLICT`, `RETURNING`).
//!
//! SQLite's journal is WAL with `synchronous = NORMAL`: a committed write
//! survives the process being killed at any moment (what this server
//! promises); only a power loss may drop the last transactions, never
//! corrupting the file. PostgreSQL gives the same with its defaults.
//!
//! Event numbers are given out by the database, in the transaction that
//! stores the events, so writers on several servers sharing one PostgreSQL
//! never reuse a number nor leave a gap.

use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};

use crate::config::StoreConfig;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Failed(String),
    /// A write made under a [`Lease`] was refused: another server took the
    /// session over since (or it was deleted).
    #[error(
        "this server no longer holds the session's lease: another server took the session over"
    )]
    Fenced,
}

impl StoreError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// Whether a write was refused because its lease was lost.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Failed(e.to_string())
    }
}

/// The lease a server runs a session's task under: the number of times the
/// session's lease had changed hands (`sessions.lease`) when this server,
/// holding it, started the task. What is written under it (events,
/// messages, the task's end) is refused once another server took the
/// session over: the database itself fences a server that was cut off and
/// has not noticed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease(i64);

/// The condition, on a `sessions` row, that the server `$s` holds the
/// session under lease `$l` (sessions from before servers had ids are
/// every server's).
macro_rules! held_under {
    ($s:literal, $l:literal) => {
        concat!("COALESCE(server, ", $s, ") = ", $s, " AND lease = ", $l)
    };
}

/// A checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub seq: u64,
    /// The commit id in the sandbox's store.
    pub id: String,
    pub task_id: Option<String>,
    pub task: Option<String>,
    pub created: DateTime<Utc>,
    pub files_changed: u64,
    pub insertions: u64,
    pub deletions: u64,
    /// JSON: the files it left out.
    pub skipped: String,
    /// The conversation's next message number when it was taken.
    pub messages: u64,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub container_id: String,
    pub workdir: String,
    pub created: DateTime<Utc>,
    pub last_task: Option<String>,
    /// Why the session is broken, when it is.
    pub error: Option<String>,
    /// Its own network settings, as JSON, when it has any.
    pub network: Option<String>,
    /// How its tool calls are approved: default, all or none.
    pub approval: String,
    /// The principal that made it ('' before principals existed).
    pub owner: String,
    /// Most model tokens its tasks may use, when limited.
    pub budget_tokens: Option<u64>,
    /// The server holding its lease, which runs its tasks and follows its
    /// sandbox: the one that made it (set by the store from its own) until
    /// another takes it over (`None` before servers had ids).
    pub server: Option<String>,
    /// The engine its container is on (`None`: the first configured, as
    /// for sessions from before several engines).
    pub engine: Option<String>,
}

/// One model call, as the usage ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub principal: String,
    pub session_id: String,
    pub task_id: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub at: DateTime<Utc>,
}

/// How usage is summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Principal,
    Session,
    /// The UTC day (`YYYY-MM-DD`).
    Day,
}

/// Usage summed over one group and one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSum {
    /// The principal, the session id or the day.
    pub key: String,
    pub model: String,
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A compaction of a conversation: messages up to `upto` replaced by
/// `summary` (a stored message), or dropped when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionRecord {
    pub upto: u64,
    pub summary: Option<String>,
}

/// The columns [`session_record`] reads, in its order.
macro_rules! session_columns {
    () => {
        "id, container_id, workdir, created, last_task, error, network, approval, owner, budget_tokens, server, engine"
    };
}

/// The columns [`approval_record`] reads, in its order.
macro_rules! approval_columns {
    () => {
        "id, task_id, tool_call_id, tool_name, arguments, subject, requested, expires, decision, message, resolved_by, resolved"
    };
}

/// A request for a person's approval of one tool call, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    pub id: String,
    pub task_id: String,
    pub tool_call_id: String,
    pub tool_name: String,
    /// JSON, as the model gave them.
    pub arguments: String,
    pub subject: String,
    pub requested: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// `None` while it waits.
    pub resolution: Option<ApprovalResolution>,
}

/// How an approval request was resolved, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalResolution {
    pub decision: String,
    pub message: Option<String>,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// A background process as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    pub id: String,
    pub pid: u32,
    /// When it started, in clock ticks after the container's kernel booted.
    pub start_ticks: u64,
    pub cmd: String,
    pub log: String,
    pub started: DateTime<Utc>,
}

/// Where a task stands, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    Interrupted,
    MaxSteps,
    BudgetExceeded,
}

impl TaskStatus {
    const ALL: [Self; 8] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Interrupted,
        Self::MaxSteps,
        Self::BudgetExceeded,
    ];

    /// The word stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::MaxSteps => "max_steps",
            Self::BudgetExceeded => "budget_exceeded",
        }
    }

    fn parse(word: &str) -> StoreResult<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == word)
            .ok_or_else(|| StoreError::new(format!("unknown task status {word:?}")))
    }

    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// A task a previous run left queued or running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedTask {
    pub session_id: String,
    pub task_id: String,
    pub task: String,
    pub status: TaskStatus,
}

/// Which database a [`Store`] is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The server's database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// PostgreSQL's URL, for the connection that listens to notifications.
    listen_url: Option<std::sync::Arc<str>>,
    /// The server this store works for: stamped on the sessions it makes
    /// and the tasks it runs.
    server: std::sync::Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it holds the password.
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The channel on which PostgreSQL announces stored events, as
/// `<session_id>:<last seq>`, when the transaction that stored them commits.
const EVENTS_CHANNEL: &str = "crogia_events";

/// The channel on which PostgreSQL announces sessions made and deleted, as
/// `created:<id>` and `deleted:<id>`.
const SESSIONS_CHANNEL: &str = "crogia_sessions";

/// The channel on which servers hand each other work for the sessions they
/// hold: `task:<session>` (a task was queued), `cancel:<session>`,
/// `approval:<session>:<approval id>` (resolved), and `moved:<session>` (it
/// was taken over).
const WORK_CHANNEL: &str = "crogia_work";

/// Work one server hands the server holding a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// A task was queued for the session.
    Queued(String),
    /// Its running task is to stop.
    Cancel(String),
    /// One of its approval requests was resolved.
    Resolved {
        session_id: String,
        approval_id: String,
    },
    /// Another server took it over.
    Moved(String),
}

impl Work {
    fn payload(&self) -> String {
        match self {
            Self::Queued(id) => format!("task:{id}"),
            Self::Cancel(id) => format!("cancel:{id}"),
            Self::Resolved {
                session_id,
                approval_id,
            } => format!("approval:{session_id}:{approval_id}"),
            Self::Moved(id) => format!("moved:{id}"),
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        let (kind, rest) = payload.split_once(':')?;
        Some(match kind {
            "task" => Self::Queued(rest.into()),
            "cancel" => Self::Cancel(rest.into()),
            "moved" => Self::Moved(rest.into()),
            "approval" => {
                let (session_id, approval_id) = rest.split_once(':')?;
                Self::Resolved {
                    session_id: session_id.into(),
                    approval_id: approval_id.into(),
                }
            }
            _ => return None,
        })
    }

    /// The session it is about.
    pub fn session_id(&self) -> &str {
        match self {
            Self::Queued(id) | Self::Cancel(id) | Self::Moved(id) => id,
            Self::Resolved { session_id, .. } => session_id,
        }
    }
}

/// A statement for `backend` with the database's clock (milliseconds since
/// 1970) between `before` and `after`, as each database says it: leases are
/// compared on one clock, whatever the servers' own say.
macro_rules! on_db_clock {
    ($backend:expr, $before:literal, $after:literal) => {
        match $backend {
            Backend::Sqlite => concat!(
                $before,
                "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
                $after
            ),
            Backend::Postgres => concat!(
                $before,
                "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
                $after
            ),
        }
    };
}

/// What [`EventNotices::next`] heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Some server stored a session's events, up to `last`.
    Stored { session_id: String, last: u64 },
    /// Some server made this session.
    Created(String),
    /// Some server deleted this session.
    Deleted(String),
    /// Some server handed work to the server holding a session.
    Work(Work),
    /// The connection was lost and made again: announcements may have been
    /// missed in between.
    Missed,
}

/// Announcements of events stored by any server sharing the database.
pub struct EventNotices {
    listener: sqlx::postgres::PgListener,
}

impl EventNotices {
    /// The next announcement. Errors only when the database cannot be
    /// reached again.
    pub async fn next(&mut self) -> StoreResult<Notice> {
        loop {
            let Some(n) = self.listener.try_recv().await? else {
                return Ok(Notice::Missed);
            };
            let parsed = match n.channel() {
                WORK_CHANNEL => Work::parse(n.payload()).map(Notice::Work),
                SESSIONS_CHANNEL => match n.payload().split_once(':') {
                    Some(("created", id)) => Some(Notice::Created(id.into())),
                    Some(("deleted", id)) => Some(Notice::Deleted(id.into())),
                    _ => None,
                },
                _ => n.payload().rsplit_once(':').and_then(|(id, last)| {
                    Some(Notice::Stored {
                        session_id: id.into(),
                        last: last.parse().ok()?,
                    })
                }),
            };
            match parsed {
                Some(notice) => return Ok(notice),
                None => tracing::warn!(
                    channel = n.channel(),
                    payload = n.payload(),
                    "unreadable notice"
                ),
            }
        }
    }
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .unwrap_or_default()
}

fn time(t: DateTime<Utc>) -> String {
    crate::time::timestamp(t)
}

/// Most events written in one statement: two bound values per row plus the
/// session's id stay under SQLite's 32,766 and PostgreSQL's 65,535.
const EVENT_ROWS: usize = 4096;

impl Store {
    /// The store `config` names: PostgreSQL at `store.url`, or SQLite in
    /// `server.data_dir` when it is empty.
    pub async fn for_config(config: &crate::config::Config) -> StoreResult<Self> {
        if config.store.url.is_empty() {
            Self::open(&config.server.data_dir).await
        } else {
            let server = crate::datadir::server_id(&config.server.data_dir)
                .map_err(|e| StoreError::new(format!("{e:#}")))?;
            Ok(Self::connect(&config.store).await?.with_server(&server))
        }
    }

    /// This store working for the server `id`.
    pub fn with_server(mut self, id: &str) -> Self {
        self.server = id.into();
        self
    }

    /// The id of the server this store works for.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Opens (creating if needed) the SQLite database in `data_dir` and
    /// brings its schema up to date.
    pub async fn open(data_dir: &Path) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let file = data_dir.join("crogia.db");
        Self::make_private(&file)?;
        let url = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .to_url_lossy();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // What the URL cannot say. Foreign keys are on by
                    // sqlx's default; WAL, once set, stays with the file.
                    sqlx::raw_sql(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            })
            .connect_with(AnyConnectOptions::from_url(&url)?)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let server =
            crate::datadir::server_id(data_dir).map_err(|e| StoreError::new(format!("{e:#}")))?;
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            listen_url: None,
            server: server.into(),
        })
    }

    /// Connects to PostgreSQL and brings its schema up to date (servers
    /// starting together take turns: sqlx holds an advisory lock while it
    /// migrates).
    pub async fn connect(config: &StoreConfig) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let at = config.display_url();
        let failed = |e: sqlx::Error| StoreError::new(format!("PostgreSQL at {at}: {e}"));
        let options = AnyConnectOptions::from_str(&config.url).map_err(failed)?;
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(config.connect_timeout_secs))
            .connect_with(options)
            .await
            .map_err(failed)?;
        sqlx::migrate!("./migrations-postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::new(format!("PostgreSQL at {at}: {e}")))?;
        Ok(Self {
            pool,
            backend: Backend::Postgres,
            listen_url: Some(config.url.as_str().into()),
            // A server of its own until told which (`with_server`).
            server: format!("{:016x}", rand::random::<u64>()).into(),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Announcements of the events any server stores, on PostgreSQL;
    /// `None` on SQLite, whose only writer is this server.
    pub async fn event_notices(&self) -> StoreResult<Option<EventNotices>> {
        let Some(url) = &self.listen_url else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener
            .listen_all([EVENTS_CHANNEL, SESSIONS_CHANNEL, WORK_CHANNEL])
            .await?;
        Ok(Some(EventNotices { listener }))
    }

    /// Creates the database file readable by the server's user only, or
    /// makes an existing one (and its journal files, which SQLite creates
    /// with the database's mode) so.
    fn make_private(file: &Path) -> StoreResult<()> {
        let private = |e: anyhow::Error| StoreError::new(format!("{e:#}"));
        crate::datadir::private_file(file).map_err(private)?;
        for suffix in ["-wal", "-shm"] {
            let mut journal = file.as_os_str().to_owned();
            journal.push(suffix);
            let journal = std::path::PathBuf::from(journal);
            if journal.exists() {
                crate::datadir::make_private(&journal, crate::datadir::FILE_MODE)
                    .map_err(private)?;
            }
        }
        Ok(())
    }

    /// Runs raw SQL: for tests that need the database to misbehave.
    #[cfg(test)]
    pub(crate) async fn execute_raw(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await
            .unwrap();
    }

    /// A random id naming this server's data directory, created once. It
    /// labels the containers this server owns, so servers sharing one Docker
    /// engine never mistake each other's containers for their own.
    pub async fn instance_id(&self) -> StoreResult<String> {
        let fresh = format!("{:016x}", rand::random::<u64>());
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('instance_id', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&fresh)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'instance_id'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    pub async fn insert_session(&self, s: &SessionRecord) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, container_id, workdir, created, last_task, error, network, approval, owner, budget_tokens, server, engine) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&s.id)
        .bind(&s.container_id)
        .bind(&s.workdir)
        .bind(time(s.created))
        .bind(&s.last_task)
        .bind(&s.error)
        .bind(&s.network)
        .bind(&s.approval)
        .bind(&s.owner)
        .bind(s.budget_tokens.map(|b| b as i64))
        .bind(&*self.server)
        .bind(&s.engine)
        .execute(&mut *tx)
        .await?;
        self.announce(&mut tx, SESSIONS_CHANNEL, &format!("created:{}", s.id))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// On PostgreSQL, tells every listening server `payload` on `channel`
    /// when `tx` commits; nothing on SQLite, whose only reader is us.
    async fn announce(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        channel: &str,
        payload: &str,
    ) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub async fn sessions(&self) -> StoreResult<Vec<SessionRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions ORDER BY created, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(session_record).collect())
    }

    /// One session, if it is stored.
    pub async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(session_record))
    }

    pub async fn set_last_task(&self, id: &str, task: &str) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_task = $1 WHERE id = $2")
            .bind(task)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_network(&self, id: &str, network: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET network = $1 WHERE id = $2")
            .bind(network)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_error(&self, id: &str, error: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET error = $1 WHERE id = $2")
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a session with its processes, events and messages.
    pub async fn delete_session(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.announce(&mut tx, SESSIONS_CHANNEL, &format!("deleted:{id}"))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_process(&self, session_id: &str, p: &ProcessRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO processes (session_id, id, pid, start_ticks, cmd, log, started) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(session_id)
        .bind(&p.id)
        .bind(i64::from(p.pid))
        .bind(p.start_ticks as i64)
        .bind(&p.cmd)
        .bind(&p.log)
        .bind(time(p.started))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A session's processes, oldest first.
    pub async fn processes(&self, session_id: &str) -> StoreResult<Vec<ProcessRecord>> {
        let rows = sqlx::query(
            "SELECT id, pid, start_ticks, cmd, log, started FROM processes WHERE session_id = $1 ORDER BY started, rowid",
        )
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ProcessRecord {
                id: r.get(0),
                pid: r.get::<i64, _>(1) as u32,
                start_ticks: r.get::<i64, _>(2) as u64,
                cmd: r.get(3),
                log: r.get(4),
                started: parse_time(r.get::<&str, _>(5)),
            })
            .collect())
    }

    /// Appends events to a session's log after its last, all or none:
    /// `render(seq, item)` gives the text of each, with the number the
    /// database gave it. The numbers are taken from the session's row in
    /// the same transaction, which holds that row until it commits, so
    /// writers on several servers take turns and a failed write gives its
    /// numbers back. Returns the events as stored.
    ///
    /// Under a `lease`, the write is refused ([`StoreError::Fenced`]) unless
    /// this server still holds the session under it; the row's lock orders
    /// it with a takeover, which waits for it or makes it fail.
    pub async fn append_events<T: Sync>(
        &self,
        session_id: &str,
        lease: Option<Lease>,
        items: &[T],
        render: impl Fn(u64, &T) -> String,
    ) -> StoreResult<Vec<(u64, String)>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let numbered = match lease {
            None => sqlx::query_scalar(
                "UPDATE sessions SET last_event = last_event + $1 WHERE id = $2 RETURNING last_event",
            )
            .bind(items.len() as i64)
            .bind(session_id),
            Some(Lease(lease)) => sqlx::query_scalar(concat!(
                "UPDATE sessions SET last_event = last_event + $1 WHERE id = $2 AND ",
                held_under!("$3", "$4"),
                " RETURNING last_event"
            ))
            .bind(items.len() as i64)
            .bind(session_id)
            .bind(&*self.server)
            .bind(lease),
        };
        let last: i64 = match numbered.fetch_optional(&mut *tx).await? {
            Some(last) => last,
            None if lease.is_some() => return Err(StoreError::Fenced),
            None => return Err(StoreError::new(format!("no session {session_id}"))),
        };
        let first = last as u64 + 1 - items.len() as u64;
        let rows: Vec<(u64, String)> = items
            .iter()
            .zip(first..)
            .map(|(item, seq)| (seq, render(seq, item)))
            .collect();
        for chunk in rows.chunks(EVENT_ROWS) {
            let mut sql = String::from("INSERT INTO events (session_id, seq, event) VALUES ");
            for i in 0..chunk.len() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(sql, "{sep}($1, ${}, ${})", 2 * i + 2, 2 * i + 3);
            }
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(session_id);
            for (seq, event) in chunk {
                insert = insert.bind(*seq as i64).bind(event.as_str());
            }
            insert.execute(&mut *tx).await?;
        }
        self.announce(&mut tx, EVENTS_CHANNEL, &format!("{session_id}:{last}"))
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Up to `limit` events with `seq > after`, in order.
    pub async fn events_after(
        &self,
        session_id: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<(u64, String)>> {
        let rows = sqlx::query(
            "SELECT seq, event FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(session_id)
        .bind(after as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<i64, _>(0) as u64, r.get(1)))
            .collect())
    }

    /// The highest event sequence number of a session (0 when none).
    pub async fn last_event_seq(&self, session_id: &str) -> StoreResult<u64> {
        self.session_number(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE session_id = $1",
            session_id,
        )
        .await
    }

    /// Appends messages to a session's conversation; under a `lease`, only
    /// while this server holds the session under it (else
    /// [`StoreError::Fenced`]).
    pub async fn append_messages(
        &self,
        session_id: &str,
        lease: Option<Lease>,
        first_seq: u64,
        messages: &[String],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(lease) = lease {
            self.hold(&mut tx, session_id, lease).await?;
        }
        for (i, m) in messages.iter().enumerate() {
            sqlx::query("INSERT INTO messages (session_id, seq, message) VALUES ($1, $2, $3)")
                .bind(session_id)
                .bind((first_seq + i as u64) as i64)
                .bind(m)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A session's latest compaction, if its conversation has one.
    pub async fn latest_compaction(
        &self,
        session_id: &str,
    ) -> StoreResult<Option<CompactionRecord>> {
        let row = sqlx::query(
            "SELECT upto, summary FROM compactions WHERE session_id = $1 ORDER BY upto DESC LIMIT 1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| CompactionRecord {
            upto: r.get::<i64, _>(0) as u64,
            summary: r.get(1),
        }))
    }

    /// Records that the messages up to `c.upto` are, for the model,
    /// replaced by `c.summary` (or dropped).
    pub async fn insert_compaction(
        &self,
        session_id: &str,
        c: &CompactionRecord,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO compactions (session_id, upto, summary, created) VALUES ($1, $2, $3, $4) ON CONFLICT (session_id, upto) DO UPDATE SET summary = excluded.summary, created = excluded.created",
        )
        .bind(session_id)
        .bind(c.upto as i64)
        .bind(&c.summary)
        .bind(time(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A session's messages with `seq > after` (0: all of them), oldest
    /// first, with their sequence numbers.
    pub async fn messages_after(
        &self,
        session_id: &str,
        after: u64,
    ) -> StoreResult<Vec<(u64, String)>> {
        let rows = sqlx::query(
            "SELECT seq, message FROM messages WHERE session_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(session_id)
        .bind(after as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<i64, _>(0) as u64, r.get(1)))
            .collect())
    }

    /// Records one model call in the usage ledger.
    pub async fn insert_usage(&self, u: &UsageRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO usage (principal, session_id, task_id, model, prompt_tokens, completion_tokens, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&u.principal)
        .bind(&u.session_id)
        .bind(&u.task_id)
        .bind(&u.model)
        .bind(u.prompt_tokens as i64)
        .bind(u.completion_tokens as i64)
        .bind(time(u.at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The one number `sql` gives for a session (a sum, a maximum).
    async fn session_number(&self, sql: &'static str, session_id: &str) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(sql)
            .bind(session_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Tokens (prompt and completion) a session's model calls used.
    pub async fn session_tokens(&self, session_id: &str) -> StoreResult<u64> {
        self.session_number(
            "SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) FROM usage WHERE session_id = $1",
            session_id,
        )
        .await
    }

    /// Tokens a principal's model calls used since `since`.
    pub async fn principal_tokens_since(
        &self,
        principal: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) FROM usage WHERE principal = $1 AND at >= $2",
        )
        .bind(principal)
        .bind(time(since))
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    /// The ledger between `from` (included) and `to` (excluded), of one
    /// principal or all, summed by `group` and model.
    pub async fn usage(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        principal: Option<&str>,
        group: UsageGroup,
    ) -> StoreResult<Vec<UsageSum>> {
        let key = match group {
            UsageGroup::Principal => "principal",
            UsageGroup::Session => "session_id",
            UsageGroup::Day => "substr(at, 1, 10)",
        };
        let sql = format!(
            "SELECT {key}, model, COUNT(*), CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) \
             FROM usage WHERE at >= $1 AND at < $2 AND ($3 IS NULL OR principal = $3) \
             GROUP BY 1, 2 ORDER BY 1, 2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(time(from))
            .bind(time(to))
            .bind(principal)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| UsageSum {
                key: r.get(0),
                model: r.get(1),
                calls: r.get::<i64, _>(2) as u64,
                prompt_tokens: r.get::<i64, _>(3) as u64,
                completion_tokens: r.get::<i64, _>(4) as u64,
            })
            .collect())
    }

    /// The number the next message of a session's conversation gets.
    pub async fn next_message_seq(&self, session_id: &str) -> StoreResult<u64> {
        self.session_number(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = $1",
            session_id,
        )
        .await
    }

    /// Records a checkpoint as the session's `seq`th and makes it the one
    /// its workspace is at.
    pub async fn insert_checkpoint(
        &self,
        session_id: &str,
        c: &CheckpointRecord,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO checkpoints (session_id, seq, id, task_id, task, created, files_changed, insertions, deletions, skipped, messages) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(session_id)
        .bind(c.seq as i64)
        .bind(&c.id)
        .bind(&c.task_id)
        .bind(&c.task)
        .bind(time(c.created))
        .bind(c.files_changed as i64)
        .bind(c.insertions as i64)
        .bind(c.deletions as i64)
        .bind(&c.skipped)
        .bind(c.messages as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sessions SET checkpoint = $1 WHERE id = $2")
            .bind(&c.id)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A session's checkpoints, oldest first.
    pub async fn checkpoints(&self, session_id: &str) -> StoreResult<Vec<CheckpointRecord>> {
        let rows = sqlx::query(
            "SELECT seq, id, task_id, task, created, files_changed, insertions, deletions, skipped, messages FROM checkpoints WHERE session_id = $1 ORDER BY seq",
        )
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| CheckpointRecord {
                seq: r.get::<i64, _>(0) as u64,
                id: r.get(1),
                task_id: r.get(2),
                task: r.get(3),
                created: parse_time(r.get::<&str, _>(4)),
                files_changed: r.get::<i64, _>(5) as u64,
                insertions: r.get::<i64, _>(6) as u64,
                deletions: r.get::<i64, _>(7) as u64,
                skipped: r.get(8),
                messages: r.get::<i64, _>(9) as u64,
            })
            .collect())
    }

    /// Gives the new session `child` the history of `parent` up to its
    /// checkpoint `upto` (a fork): those checkpoints, the messages of the
    /// conversation before it, and `upto` as the one its workspace is at.
    pub async fn fork_history(
        &self,
        parent: &str,
        child: &str,
        upto: &CheckpointRecord,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO checkpoints (session_id, seq, id, task_id, task, created, files_changed, insertions, deletions, skipped, messages) SELECT $1, seq, id, task_id, task, created, files_changed, insertions, deletions, skipped, messages FROM checkpoints WHERE session_id = $2 AND seq <= $3",
        )
        .bind(child)
        .bind(parent)
        .bind(upto.seq as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO messages (session_id, seq, message) SELECT $1, seq, message FROM messages WHERE session_id = $2 AND seq < $3",
        )
        .bind(child)
        .bind(parent)
        .bind(upto.messages as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO compactions (session_id, upto, summary, created) SELECT $1, upto, summary, created FROM compactions WHERE session_id = $2 AND upto < $3",
        )
        .bind(child)
        .bind(parent)
        .bind(upto.messages as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sessions SET checkpoint = $1 WHERE id = $2")
            .bind(&upto.id)
            .bind(child)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes `checkpoint` the one the session's workspace is at.
    pub async fn set_session_checkpoint(
        &self,
        session_id: &str,
        checkpoint: &str,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET checkpoint = $1 WHERE id = $2")
            .bind(checkpoint)
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops the messages of a session with `seq >= from` (a rewound
    /// conversation); how many there were.
    pub async fn delete_messages_from(&self, session_id: &str, from: u64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM messages WHERE session_id = $1 AND seq >= $2")
            .bind(session_id)
            .bind(from as i64)
            .execute(&mut *tx)
            .await?;
        // A compaction that took in messages from there on no longer holds.
        sqlx::query("DELETE FROM compactions WHERE session_id = $1 AND upto >= $2")
            .bind(session_id)
            .bind(from as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// The checkpoint a session's workspace is at, if any.
    pub async fn session_checkpoint(&self, session_id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT checkpoint FROM sessions WHERE id = $1")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Stores a queued task. The server holding its session runs it.
    pub async fn insert_task(&self, session_id: &str, id: &str, task: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO tasks (session_id, id, task, status, created) VALUES ($1, $2, $3, 'queued', $4)")
            .bind(session_id)
            .bind(id)
            .bind(task)
            .bind(time(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets a task's status; a final one also stamps `finished`. Under a
    /// `lease`, only while this server holds the session under it (else
    /// [`StoreError::Fenced`]).
    pub async fn set_task_status(
        &self,
        session_id: &str,
        id: &str,
        status: TaskStatus,
        lease: Option<Lease>,
    ) -> StoreResult<()> {
        let finished = status.is_final().then(|| time(Utc::now()));
        let mut tx = self.pool.begin().await?;
        if let Some(lease) = lease {
            self.hold(&mut tx, session_id, lease).await?;
        }
        sqlx::query("UPDATE tasks SET status = $1, finished = COALESCE($2, finished) WHERE session_id = $3 AND id = $4")
            .bind(status.as_str())
            .bind(finished)
            .bind(session_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that this server starts running a task, and returns the
    /// lease it runs it under; `None` when another server holds the
    /// session (the task is that server's to run).
    pub async fn start_task(&self, session_id: &str, id: &str) -> StoreResult<Option<Lease>> {
        // The write first: on SQLite, a transaction that reads and then
        // writes cannot wait for another writer (its lock upgrade fails
        // at once with SQLITE_BUSY); one that writes first waits.
        let mut tx = self.pool.begin().await?;
        let started = sqlx::query(
            "UPDATE tasks SET status = 'running', server = $1 WHERE session_id = $2 AND id = $3 \
             AND EXISTS (SELECT 1 FROM sessions WHERE id = $2 AND COALESCE(server, $1) = $1)",
        )
        .bind(&*self.server)
        .bind(session_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if started.rows_affected() == 0 {
            return Ok(None);
        }
        let lease: i64 = sqlx::query_scalar("SELECT lease FROM sessions WHERE id = $1")
            .bind(session_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Lease(lease)))
    }

    /// Holds a session's row for the rest of `tx` if this server holds the
    /// session under `lease`: a takeover then waits for the transaction,
    /// or the transaction finds the session taken ([`StoreError::Fenced`]).
    async fn hold(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        session_id: &str,
        Lease(lease): Lease,
    ) -> StoreResult<()> {
        let held = sqlx::query(concat!(
            "UPDATE sessions SET lease = lease WHERE id = $1 AND ",
            held_under!("$2", "$3")
        ))
        .bind(session_id)
        .bind(&*self.server)
        .bind(lease)
        .execute(&mut **tx)
        .await?;
        if held.rows_affected() == 0 {
            return Err(StoreError::Fenced);
        }
        Ok(())
    }

    /// Tasks still queued or running in the sessions this server holds
    /// (and in those from before servers had ids), oldest first: another
    /// server's are its own to recover.
    pub async fn unfinished_tasks(&self) -> StoreResult<Vec<UnfinishedTask>> {
        let rows = sqlx::query(
            "SELECT t.session_id, t.id, t.task, t.status FROM tasks t JOIN sessions s ON s.id = t.session_id \
             WHERE t.status IN ('queued', 'running') AND (s.server IS NULL OR s.server = $1) ORDER BY t.created, t.rowid",
        )
        .bind(&*self.server)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(unfinished_task).collect()
    }

    /// One session's tasks still queued or running, oldest first.
    pub async fn session_unfinished_tasks(
        &self,
        session_id: &str,
    ) -> StoreResult<Vec<UnfinishedTask>> {
        let rows = sqlx::query(
            "SELECT session_id, id, task, status FROM tasks WHERE session_id = $1 AND status IN ('queued', 'running') ORDER BY created, rowid",
        )
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(unfinished_task).collect()
    }

    /// How many of `owner`'s sessions besides `except` have a task queued
    /// or running: held by any server, or with `elsewhere_only` by servers
    /// other than this one (whose tasks this one does not see).
    pub async fn owner_busy_sessions(
        &self,
        owner: &str,
        except: &str,
        elsewhere_only: bool,
    ) -> StoreResult<u64> {
        let not_held_here = elsewhere_only.then_some(&*self.server);
        let query = sqlx::query_scalar(
            "SELECT CAST(COUNT(DISTINCT t.session_id) AS BIGINT) FROM tasks t JOIN sessions s ON s.id = t.session_id \
             WHERE s.owner = $1 AND t.session_id <> $2 AND t.status IN ('queued', 'running') \
             AND ($3 IS NULL OR (s.server IS NOT NULL AND s.server <> $3))",
        )
        .bind(owner)
        .bind(except)
        .bind(not_held_here);
        let n: i64 = query.fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    /// The sessions held by this server with tasks queued.
    pub async fn sessions_with_queued_tasks(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT t.session_id FROM tasks t JOIN sessions s ON s.id = t.session_id WHERE t.status = 'queued' AND s.server = $1",
        )
        .bind(&*self.server)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Says this server is alive, on the database's clock.
    pub async fn heartbeat(&self) -> StoreResult<()> {
        let sql = on_db_clock!(
            self.backend,
            "INSERT INTO servers (id, heartbeat) VALUES ($1, ",
            ") ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat"
        );
        sqlx::query(sql)
            .bind(&*self.server)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes over the sessions held by servers silent for `lease` (or
    /// never heard of), announcing each: returns their ids. Two servers
    /// taking over at once never take one session both: the update holds
    /// each row, and the second finds it held by a live server.
    pub async fn take_over_sessions(&self, lease: Duration) -> StoreResult<Vec<String>> {
        let sql = on_db_clock!(
            self.backend,
            "UPDATE sessions SET server = $1, lease = lease + 1 WHERE server IS NOT NULL AND server <> $1 AND server NOT IN (SELECT id FROM servers WHERE heartbeat >= ",
            " - $2) RETURNING id"
        );
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(sql)
            .bind(&*self.server)
            .bind(lease.as_millis() as i64)
            .fetch_all(&mut *tx)
            .await?;
        for id in &ids {
            self.announce(&mut tx, WORK_CHANNEL, &Work::Moved(id.clone()).payload())
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Forgets servers silent for `idle` that hold no session.
    pub async fn forget_idle_servers(&self, idle: Duration) -> StoreResult<u64> {
        let sql = on_db_clock!(
            self.backend,
            "DELETE FROM servers WHERE heartbeat < ",
            " - $1 AND id NOT IN (SELECT server FROM sessions WHERE server IS NOT NULL)"
        );
        let done = sqlx::query(sql)
            .bind(idle.as_millis() as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The servers that said they were alive within `lease`, and the
    /// sessions each holds.
    pub async fn live_servers(&self, lease: Duration) -> StoreResult<Vec<(String, u64)>> {
        let sql = on_db_clock!(
            self.backend,
            "SELECT v.id, CAST(COUNT(s.id) AS BIGINT) FROM servers v LEFT JOIN sessions s ON s.server = v.id WHERE v.heartbeat >= ",
            " - $1 GROUP BY v.id ORDER BY v.id"
        );
        let rows = sqlx::query(sql)
            .bind(lease.as_millis() as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<i64, _>(1) as u64))
            .collect())
    }

    /// The server holding a session's lease (`Some(None)`: one from before
    /// servers had ids); `None` when there is no such session.
    pub async fn session_server(&self, session_id: &str) -> StoreResult<Option<Option<String>>> {
        let row = sqlx::query("SELECT server FROM sessions WHERE id = $1")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Tells the server holding a session (whichever hears it) of `work`.
    /// Nothing on SQLite, where that is always this server.
    pub async fn hand_over(&self, work: &Work) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WORK_CHANNEL)
                .bind(work.payload())
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn insert_approval(&self, session_id: &str, a: &ApprovalRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO approvals (session_id, id, task_id, tool_call_id, tool_name, arguments, subject, requested, expires) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(session_id)
        .bind(&a.id)
        .bind(&a.task_id)
        .bind(&a.tool_call_id)
        .bind(&a.tool_name)
        .bind(&a.arguments)
        .bind(&a.subject)
        .bind(time(a.requested))
        .bind(time(a.expires))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records how a pending request was resolved. False when it was not
    /// pending (unknown, or resolved already): exactly one resolution wins.
    pub async fn resolve_approval(
        &self,
        session_id: &str,
        id: &str,
        r: &ApprovalResolution,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE approvals SET decision = $1, message = $2, resolved_by = $3, resolved = $4 WHERE session_id = $5 AND id = $6 AND decision IS NULL",
        )
        .bind(&r.decision)
        .bind(&r.message)
        .bind(&r.by)
        .bind(time(r.at))
        .bind(session_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One request, pending or not.
    pub async fn approval(
        &self,
        session_id: &str,
        id: &str,
    ) -> StoreResult<Option<ApprovalRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approvals WHERE session_id = $1 AND id = $2"
        ))
        .bind(session_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| approval_record(&r)))
    }

    /// The request made for one tool call, if any.
    pub async fn approval_for_call(
        &self,
        session_id: &str,
        tool_call_id: &str,
    ) -> StoreResult<Option<ApprovalRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approvals WHERE session_id = $1 AND tool_call_id = $2 ORDER BY requested DESC, rowid DESC LIMIT 1"
        ))
        .bind(session_id)
        .bind(tool_call_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| approval_record(&r)))
    }

    /// A session's requests still waiting, oldest first.
    pub async fn pending_approvals(&self, session_id: &str) -> StoreResult<Vec<ApprovalRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approvals WHERE session_id = $1 AND decision IS NULL ORDER BY requested, rowid"
        ))
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(approval_record).collect())
    }

    pub async fn insert_approval_rule(
        &self,
        session_id: &str,
        tool_name: &str,
        pattern: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO approval_rules (session_id, tool_name, pattern, created) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(session_id)
        .bind(tool_name)
        .bind(pattern)
        .bind(time(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A session's rules (tool name, subject pattern), oldest first.
    pub async fn approval_rules(&self, session_id: &str) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT tool_name, pattern FROM approval_rules WHERE session_id = $1 ORDER BY created, rowid",
        )
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn unfinished_task(r: &AnyRow) -> StoreResult<UnfinishedTask> {
    Ok(UnfinishedTask {
        session_id: r.get(0),
        task_id: r.get(1),
        task: r.get(2),
        status: TaskStatus::parse(r.get::<&str, _>(3))?,
    })
}

fn session_record(r: &AnyRow) -> SessionRecord {
    SessionRecord {
        id: r.get(0),
        container_id: r.get(1),
        workdir: r.get(2),
        created: parse_time(r.get::<&str, _>(3)),
        last_task: r.get(4),
        error: r.get(5),
        network: r.get(6),
        approval: r.get(7),
        owner: r.get(8),
        budget_tokens: r.get::<Option<i64>, _>(9).map(|b| b as u64),
        server: r.get(10),
        engine: r.get(11),
    }
}

fn approval_record(r: &AnyRow) -> ApprovalRecord {
    let decision: Option<String> = r.get(8);
    ApprovalRecord {
        id: r.get(0),
        task_id: r.get(1),
        tool_call_id: r.get(2),
        tool_name: r.get(3),
        arguments: r.get(4),
        subject: r.get(5),
        requested: parse_time(r.get::<&str, _>(6)),
        expires: parse_time(r.get::<&str, _>(7)),
        resolution: decision.map(|decision| ApprovalResolution {
            decision,
            message: r.get(9),
            by: r.get::<Option<String>, _>(10).unwrap_or_default(),
            at: parse_time(r.get::<Option<&str>, _>(11).unwrap_or_default()),
        }),
    }
}

/// A PostgreSQL database of its own for one test: made on the cluster at
/// `CROGIA_TEST_POSTGRES_URL` (default: the one `tests/ensure-postgres.sh`
/// starts, which `just test` runs), dropped when it drops, even while a
/// failed test unwinds.
#[doc(hidden)]
pub mod scratch {
    use sqlx::Connection;

    use crate::config::StoreConfig;

    /// The cluster's administrative URL.
    pub fn admin_url() -> String {
        std::env::var("CROGIA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://crogia:crogia@127.0.0.1:54329/postgres".into())
    }

    pub struct ScratchDatabase {
        pub name: String,
        /// A store config that points at it.
        pub config: StoreConfig,
        admin: String,
    }

    impl ScratchDatabase {
        pub async fn create() -> Self {
            sqlx::any::install_default_drivers();
            let admin = admin_url();
            let name = format!("crogia_test_{:016x}", rand::random::<u64>());
            let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap_or_else(|e| {
                panic!(
                    "no PostgreSQL at {admin} ({e}): `bash tests/ensure-postgres.sh` starts one \
                     (`just test` does)"
                )
            });
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.ok();
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&name);
            Self {
                config: StoreConfig {
                    url: url.to_string(),
                    max_connections: 8,
                    connect_timeout_secs: 10,
                    ..StoreConfig::default()
                },
                name,
                admin,
            }
        }

        /// Runs raw SQL on it: for tests that act in the database as
        /// another server would, unannounced.
        pub async fn execute(&self, sql: &str) {
            let mut conn = sqlx::AnyConnection::connect(&self.config.url)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.ok();
        }
    }

    impl Drop for ScratchDatabase {
        fn drop(&mut self) {
            let (admin, name) = (self.admin.clone(), self.name.clone());
            // Its own thread and runtime: this works inside a runtime or
            // not, unwinding or not. FORCE ends connections still open.
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut conn = sqlx::AnyConnection::connect(&admin).await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await?;
                    conn.close().await
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("warning: could not drop the test database {}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a test's database lives, opened (again) as a server opens it.
    enum Place {
        Sqlite(tempfile::TempDir),
        Postgres(scratch::ScratchDatabase),
    }

    impl Place {
        async fn new(backend: Backend) -> Self {
            match backend {
                Backend::Sqlite => Self::Sqlite(tempfile::tempdir().unwrap()),
                Backend::Postgres => Self::Postgres(scratch::ScratchDatabase::create().await),
            }
        }

        async fn open(&self) -> Store {
            match self {
                Self::Sqlite(dir) => Store::open(dir.path()).await.unwrap(),
                Self::Postgres(db) => Store::connect(&db.config).await.unwrap(),
            }
        }
    }

    /// Each test, once on SQLite and once on PostgreSQL.
    macro_rules! on_both_backends {
        ($($(#[$doc:meta])* async fn $name:ident($place:ident: &Place) $body:block)*) => {$(
            $(#[$doc])*
            mod $name {
                use super::*;

                async fn run($place: &Place) $body

                #[tokio::test]
                async fn sqlite() {
                    run(&Place::new(Backend::Sqlite).await).await
                }

                #[tokio::test]
                async fn postgres() {
                    run(&Place::new(Backend::Postgres).await).await
                }
            }
        )*};
    }

    fn record(id: &str) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            container_id: format!("c-{id}"),
            workdir: format!("/data/workspaces/session_{id}"),
            created: Utc::now(),
            last_task: Some("build it".into()),
            error: None,
            network: None,
            approval: "default".into(),
            owner: "alice".into(),
            budget_tokens: Some(1000),
            server: None,
            engine: None,
        }
    }

    on_both_backends! {
    async fn sessions_processes_and_events_survive_reopening(place: &Place) {
        let store = place.open().await;
        let instance = store.instance_id().await.unwrap();
        store.insert_session(&record("a1b2c3d4")).await.unwrap();
        let p = ProcessRecord {
            id: "p1".into(),
            pid: 42,
            start_ticks: 7,
            cmd: "sleep 1".into(),
            log: ".agent_logs/p1.log".into(),
            started: Utc::now(),
        };
        store.insert_process("a1b2c3d4", &p).await.unwrap();
        store
            .append_events("a1b2c3d4", None, &["a", "b"], |seq, t| {
                format!("{{\"seq\":{seq},\"type\":\"{t}\"}}")
            })
            .await
            .unwrap();
        store.set_error("a1b2c3d4", Some("gone")).await.unwrap();
        store.close().await;

        let store = place.open().await;
        assert_eq!(store.instance_id().await.unwrap(), instance);
        let sessions = store.sessions().await.unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].error.as_deref(), Some("gone"));
        assert_eq!(store.processes("a1b2c3d4").await.unwrap()[0].pid, 42);
        assert_eq!(store.last_event_seq("a1b2c3d4").await.unwrap(), 2);
        assert_eq!(
            store.events_after("a1b2c3d4", 1, 10).await.unwrap(),
            vec![(2, "{\"seq\":2,\"type\":\"b\"}".to_string())]
        );
    }

    async fn task_statuses_are_stored_as_their_words_and_read_back(place: &Place) {
        let store = place.open().await;
        store.insert_session(&record("0000000a")).await.unwrap();
        for (i, status) in TaskStatus::ALL.into_iter().enumerate() {
            let id = format!("t{i}");
            store.insert_task("0000000a", &id, "x").await.unwrap();
            store
                .set_task_status("0000000a", &id, status, None)
                .await
                .unwrap();
            assert_eq!(TaskStatus::parse(status.as_str()).unwrap(), status);
        }
        let unfinished = store.unfinished_tasks().await.unwrap();
        let statuses: Vec<_> = unfinished.iter().map(|t| t.status).collect();
        assert_eq!(statuses, vec![TaskStatus::Queued, TaskStatus::Running]);
        assert_eq!(unfinished[1].task_id, "t1");
        assert!(TaskStatus::parse("exploded").is_err());
    }

    async fn deleting_a_session_deletes_what_belongs_to_it(place: &Place) {
        let store = place.open().await;
        store.insert_session(&record("00000001")).await.unwrap();
        store
            .append_events("00000001", None, &[()], |_, _| "{}".into())
            .await
            .unwrap();
        store
            .append_messages("00000001", None, 1, &["{}".into()])
            .await
            .unwrap();
        store.delete_session("00000001").await.unwrap();
        assert!(store.sessions().await.unwrap().is_empty());
        assert_eq!(store.last_event_seq("00000001").await.unwrap(), 0);
        assert!(
            store
                .messages_after("00000001", 0)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// Two servers (two pools) append to one session's log at once, in
    /// batches of every size: every number is given once, none is skipped,
    /// and each event is stored under the number its text carries.
    async fn event_numbers_from_writers_on_two_servers_are_unique_and_gap_free(place: &Place) {
        let (a, b) = (place.open().await, place.open().await);
        a.insert_session(&record("0000000e")).await.unwrap();
        let mut writers = Vec::new();
        for (w, store) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
            writers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for round in 0..12usize {
                    let batch: Vec<String> = (0..1 + (round * 7 + w) % 9)
                        .map(|i| format!("w{w}r{round}i{i}"))
                        .collect();
                    let stored = store
                        .append_events("0000000e", None, &batch, |seq, tag| {
                            format!("{{\"seq\":{seq},\"tag\":\"{tag}\"}}")
                        })
                        .await
                        .unwrap();
                    // A batch gets consecutive numbers.
                    let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
                    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "{seqs:?}");
                    mine.extend(seqs);
                }
                mine
            }));
        }
        let mut given: Vec<u64> = Vec::new();
        for w in writers {
            given.extend(w.await.unwrap());
        }
        given.sort_unstable();
        let total = given.len() as u64;
        assert_eq!(given, (1..=total).collect::<Vec<_>>());
        let stored = b.events_after("0000000e", 0, 10_000).await.unwrap();
        assert_eq!(stored.len() as u64, total);
        for (seq, json) in &stored {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["seq"], *seq, "{json}");
        }
        assert_eq!(a.last_event_seq("0000000e").await.unwrap(), total);
    }

    /// Servers sharing a database: each session and task carries the id
    /// of the server that made it, and a server recovering after a restart
    /// takes up only its own unfinished tasks, never those another runs.
    async fn a_server_recovers_the_tasks_of_the_sessions_it_holds(place: &Place) {
        let a = place.open().await.with_server("00000000000000aa");
        let b = place.open().await.with_server("00000000000000bb");
        a.insert_session(&record("000000a1")).await.unwrap();
        b.insert_session(&record("000000b1")).await.unwrap();
        // Whichever server stored them, a session's tasks are its holder's.
        a.insert_task("000000a1", "a-1", "x").await.unwrap();
        b.insert_task("000000a1", "a-2", "y").await.unwrap();
        a.insert_task("000000b1", "b-1", "z").await.unwrap();
        let stored = b.session("000000a1").await.unwrap().unwrap();
        assert_eq!(stored.server.as_deref(), Some("00000000000000aa"));
        let ids = |tasks: Vec<UnfinishedTask>| -> Vec<String> {
            tasks.into_iter().map(|t| t.task_id).collect()
        };
        assert_eq!(ids(a.unfinished_tasks().await.unwrap()), ["a-1", "a-2"]);
        assert_eq!(ids(b.unfinished_tasks().await.unwrap()), ["b-1"]);
        assert_eq!(a.sessions_with_queued_tasks().await.unwrap(), ["000000a1"]);
        // Running records who runs it; it stays unfinished.
        assert!(a.start_task("000000a1", "a-1").await.unwrap().is_some());
        // Only the holder starts a session's tasks.
        assert!(b.start_task("000000a1", "a-2").await.unwrap().is_none());
        let unfinished = b.session_unfinished_tasks("000000a1").await.unwrap();
        assert_eq!(
            unfinished.iter().map(|t| t.status).collect::<Vec<_>>(),
            [TaskStatus::Running, TaskStatus::Queued]
        );
    }

    /// A silent server's sessions go to exactly one of the servers taking
    /// over at once; a live server's sessions to none.
    async fn a_silent_servers_sessions_are_taken_over_once_and_a_live_ones_never(place: &Place) {
        let lease = Duration::from_secs(60);
        let [a, b, c, d] = ["aa", "bb", "cc", "dd"].map(|n| format!("00000000000000{n}"));
        let open = async |id: &str| {
            let store = place.open().await.with_server(id);
            store.heartbeat().await.unwrap();
            store
        };
        let (a, b, c, d) = (open(&a).await, open(&b).await, open(&c).await, open(&d).await);
        let mine: Vec<String> = (0..24).map(|i| format!("0000a{i:03}")).collect();
        for id in &mine {
            a.insert_session(&record(id)).await.unwrap();
        }
        d.insert_session(&record("0000d000")).await.unwrap();
        assert!(b.take_over_sessions(lease).await.unwrap().is_empty());
        let live = b.live_servers(lease).await.unwrap();
        assert_eq!(live.len(), 4, "{live:?}");
        assert!(live.contains(&(a.server().to_string(), 24)), "{live:?}");

        // A falls silent (its heartbeat two leases old).
        a.execute_raw(&format!(
            "UPDATE servers SET heartbeat = heartbeat - 120000 WHERE id = '{}'",
            a.server()
        ))
        .await;
        let (by_b, by_c) = tokio::join!(b.take_over_sessions(lease), c.take_over_sessions(lease));
        let (mut by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
        assert!(by_b.iter().all(|id| !by_c.contains(id)), "{by_b:?} {by_c:?}");
        by_b.extend(by_c);
        by_b.sort();
        assert_eq!(by_b, mine);
        for id in &mine {
            let holder = a.session_server(id).await.unwrap().unwrap().unwrap();
            assert!(holder == b.server() || holder == c.server(), "{holder}");
        }
        // D, alive, keeps its own.
        assert_eq!(
            a.session_server("0000d000").await.unwrap(),
            Some(Some(d.server().to_string()))
        );
        assert!(!b.live_servers(lease).await.unwrap().iter().any(|(s, _)| s == a.server()));
        // A holds nothing now: it is forgotten once long silent.
        assert_eq!(b.forget_idle_servers(lease).await.unwrap(), 1);
        assert_eq!(b.forget_idle_servers(lease).await.unwrap(), 0);
    }

    /// Starting tasks while events are written from another connection
    /// never fails: on SQLite a transaction that read before writing
    /// could not wait for the other writer (SQLITE_BUSY at once; a task
    /// left unstarted until the next heartbeat).
    async fn tasks_start_while_events_are_written_beside_them(place: &Place) {
        let (a, b) = (place.open().await, place.open().await);
        a.insert_session(&record("000000c1")).await.unwrap();
        for i in 0..60 {
            a.insert_task("000000c1", &format!("t{i}"), "x").await.unwrap();
        }
        let writer = tokio::spawn(async move {
            for _ in 0..300 {
                b.append_events("000000c1", None, &[(); 4], |_, _| "{}".into())
                    .await
                    .unwrap();
            }
        });
        for i in 0..60 {
            let started = a.start_task("000000c1", &format!("t{i}")).await;
            assert!(matches!(started, Ok(Some(_))), "task {i}: {started:?}");
        }
        writer.await.unwrap();
    }

    /// Fencing: what a server writes under the lease it started a task
    /// with is refused once another server took the session over, even
    /// when it never heard of that; nothing of a refused write is kept (no
    /// event number is used up), and the new holder's writes go on.
    async fn writes_under_a_lease_another_server_took_over_are_refused(place: &Place) {
        let lease = Duration::from_secs(60);
        let a = place.open().await.with_server("00000000000000aa");
        let b = place.open().await.with_server("00000000000000bb");
        a.heartbeat().await.unwrap();
        b.heartbeat().await.unwrap();
        a.insert_session(&record("000000f1")).await.unwrap();
        a.insert_task("000000f1", "t-1", "x").await.unwrap();
        a.insert_task("000000f1", "t-2", "y").await.unwrap();
        let held = a.start_task("000000f1", "t-1").await.unwrap().unwrap();
        let text = |seq: u64, t: &&str| format!("{{\"seq\":{seq},\"t\":\"{t}\"}}");
        a.append_events("000000f1", Some(held), &["a1", "a2"], text)
            .await
            .unwrap();
        a.append_messages("000000f1", Some(held), 1, &["m1".into()])
            .await
            .unwrap();

        // A falls silent; B takes the session over. A has not noticed.
        a.execute_raw(&format!(
            "UPDATE servers SET heartbeat = heartbeat - 120000 WHERE id = '{}'",
            a.server()
        ))
        .await;
        assert_eq!(b.take_over_sessions(lease).await.unwrap(), ["000000f1"]);
        let refused = a
            .append_events("000000f1", Some(held), &["late"], text)
            .await;
        assert_eq!(refused, Err(StoreError::Fenced));
        let refused = a
            .append_messages("000000f1", Some(held), 2, &["late".into()])
            .await;
        assert_eq!(refused, Err(StoreError::Fenced));
        let refused = a
            .set_task_status("000000f1", "t-1", TaskStatus::Completed, Some(held))
            .await;
        assert_eq!(refused, Err(StoreError::Fenced));
        assert!(a.start_task("000000f1", "t-2").await.unwrap().is_none());
        let unfinished = b.session_unfinished_tasks("000000f1").await.unwrap();
        assert_eq!(unfinished[0].status, TaskStatus::Running);

        // B runs it under a lease of its own; its writes go on after A's.
        b.set_task_status("000000f1", "t-1", TaskStatus::Interrupted, None)
            .await
            .unwrap();
        let b_held = b.start_task("000000f1", "t-2").await.unwrap().unwrap();
        assert_ne!(b_held, held);
        let stored = b
            .append_events("000000f1", Some(b_held), &["b1"], text)
            .await
            .unwrap();
        assert_eq!(stored[0].0, 3);
        let events = b.events_after("000000f1", 0, 100).await.unwrap();
        assert!(events.iter().all(|(_, e)| !e.contains("late")), "{events:?}");
        let messages = b.messages_after("000000f1", 0).await.unwrap();
        assert_eq!(messages.len(), 1, "{messages:?}");

        // A takes it back later (B fell silent): the lease it ran the
        // first task under is not good again.
        b.execute_raw(&format!(
            "UPDATE servers SET heartbeat = heartbeat - 120000 WHERE id = '{}'",
            b.server()
        ))
        .await;
        a.heartbeat().await.unwrap();
        assert_eq!(a.take_over_sessions(lease).await.unwrap(), ["000000f1"]);
        let refused = a
            .append_events("000000f1", Some(held), &["stale"], text)
            .await;
        assert_eq!(refused, Err(StoreError::Fenced));
        // Writes made under no lease (not a task's) are never fenced.
        a.append_events("000000f1", None, &["a3"], text)
            .await
            .unwrap();
        assert_eq!(a.last_event_seq("000000f1").await.unwrap(), 4);
    }

    /// The queries whose SQL or types differ most between the two: sums,
    /// counts, upserts and optional filters read back the same.
    async fn usage_compactions_and_rules_read_back_the_same(place: &Place) {
        let store = place.open().await;
        let id = store.instance_id().await.unwrap();
        assert_eq!(store.instance_id().await.unwrap(), id);
        store.insert_session(&record("0000000f")).await.unwrap();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        for (principal, tokens, when) in [
            ("alice", 10, "2026-12-01T10:00:00Z"),
            ("alice", 5, "2026-12-02T10:00:00Z"),
            ("bob", 7, "2026-12-02T11:00:00Z"),
        ] {
            store
                .insert_usage(&UsageRecord {
                    principal: principal.into(),
                    session_id: "0000000f".into(),
                    task_id: "1".into(),
                    model: "m".into(),
                    prompt_tokens: tokens,
                    completion_tokens: 1,
                    at: at(when),
                })
                .await
                .unwrap();
        }
        assert_eq!(store.session_tokens("0000000f").await.unwrap(), 25);
        assert_eq!(
            store
                .principal_tokens_since("alice", at("2026-12-02T00:00:00Z"))
                .await
                .unwrap(),
            6
        );
        let (from, to) = (at("2026-12-01T00:00:00Z"), at("2026-12-03T00:00:00Z"));
        let days = store.usage(from, to, None, UsageGroup::Day).await.unwrap();
        let days: Vec<_> = days.iter().map(|u| (u.key.as_str(), u.calls, u.prompt_tokens)).collect();
        assert_eq!(days, [("2026-12-01", 1, 10), ("2026-12-02", 2, 12)]);
        let bob = store
            .usage(from, to, Some("bob"), UsageGroup::Principal)
            .await
            .unwrap();
        assert_eq!((bob.len(), bob[0].completion_tokens), (1, 1));

        store
            .append_messages("0000000f", None, 1, &["m1".into(), "m2".into()])
            .await
            .unwrap();
        assert_eq!(store.next_message_seq("0000000f").await.unwrap(), 3);
        for summary in ["first", "second"] {
            store
                .insert_compaction(
                    "0000000f",
                    &CompactionRecord {
                        upto: 2,
                        summary: Some(summary.into()),
                    },
                )
                .await
                .unwrap();
        }
        let latest = store.latest_compaction("0000000f").await.unwrap().unwrap();
        assert_eq!(latest.summary.as_deref(), Some("second"));
        for _ in 0..2 {
            store
                .insert_approval_rule("0000000f", "shell", "ls *")
                .await
                .unwrap();
        }
        assert_eq!(store.approval_rules("0000000f").await.unwrap().len(), 1);
        assert_eq!(store.delete_messages_from("0000000f", 2).await.unwrap(), 1);
        assert!(store.latest_compaction("0000000f").await.unwrap().is_none());
    }
    }
}
