//! Persistent state in SQLite (sqlx, migrations embedded at build time):
//! sessions, their background processes, their event log and their
//! conversation history. The database lives at `<data_dir>/crogia.db`.
//!
//! The journal is WAL with `synchronous = NORMAL`: a committed write survives
//! the process being killed at any moment (what this server promises); only a
//! power loss may drop the last transactions, never corrupting the file.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, thiserror::Error)]
#[error("database error: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self(e.to_string())
    }
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

/// The server's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .unwrap_or_default()
}

fn time(t: DateTime<Utc>) -> String {
    crate::time::timestamp(t)
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and brings its
    /// schema up to date.
    pub async fn open(data_dir: &Path) -> StoreResult<Self> {
        let file = data_dir.join("crogia.db");
        Self::make_private(&file)?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
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
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('instance_id', ?)")
            .bind(&fresh)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'instance_id'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    pub async fn insert_session(&self, s: &SessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id, container_id, workdir, created, last_task, error, network, approval, owner, budget_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn sessions(&self) -> StoreResult<Vec<SessionRecord>> {
        let rows = sqlx::query("SELECT id, container_id, workdir, created, last_task, error, network, approval, owner, budget_tokens FROM sessions ORDER BY created, id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| SessionRecord {
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
            })
            .collect())
    }

    pub async fn set_last_task(&self, id: &str, task: &str) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_task = ? WHERE id = ?")
            .bind(task)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_network(&self, id: &str, network: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET network = ? WHERE id = ?")
            .bind(network)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_error(&self, id: &str, error: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET error = ? WHERE id = ?")
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a session with its processes, events and messages.
    pub async fn delete_session(&self, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_process(&self, session_id: &str, p: &ProcessRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO processes (session_id, id, pid, start_ticks, cmd, log, started) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            "SELECT id, pid, start_ticks, cmd, log, started FROM processes WHERE session_id = ? ORDER BY started, rowid",
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

    /// Appends events to a session's log, all or none.
    pub async fn append_events<S: AsRef<str>>(
        &self,
        session_id: &str,
        events: &[(u64, S)],
    ) -> StoreResult<()> {
        // SQLite allows 32,766 bound values per statement, three per row;
        // a batch that fits is one statement (its own transaction).
        const ROWS: usize = 4096;
        let insert = |chunk: &[(u64, S)]| {
            let mut q = sqlx::QueryBuilder::new("INSERT INTO events (session_id, seq, event) ");
            q.push_values(chunk, |mut row, (seq, event)| {
                row.push_bind(session_id)
                    .push_bind(*seq as i64)
                    .push_bind(event.as_ref());
            });
            q
        };
        if events.len() <= ROWS {
            insert(events).build().execute(&self.pool).await?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in events.chunks(ROWS) {
            insert(chunk).build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` events with `seq > after`, in order.
    pub async fn events_after(
        &self,
        session_id: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<(u64, String)>> {
        let rows = sqlx::query(
            "SELECT seq, event FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
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
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE session_id = ?",
            session_id,
        )
        .await
    }

    /// Appends messages to a session's conversation.
    pub async fn append_messages(
        &self,
        session_id: &str,
        first_seq: u64,
        messages: &[String],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for (i, m) in messages.iter().enumerate() {
            sqlx::query("INSERT INTO messages (session_id, seq, message) VALUES (?, ?, ?)")
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
            "SELECT upto, summary FROM compactions WHERE session_id = ? ORDER BY upto DESC LIMIT 1",
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
            "INSERT OR REPLACE INTO compactions (session_id, upto, summary, created) VALUES (?, ?, ?, ?)",
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
            "SELECT seq, message FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq",
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
            "INSERT INTO usage (principal, session_id, task_id, model, prompt_tokens, completion_tokens, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage WHERE session_id = ?",
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
            "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage WHERE principal = ? AND at >= ?",
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
            "SELECT {key}, model, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) \
             FROM usage WHERE at >= ? AND at < ? AND (? IS NULL OR principal = ?) \
             GROUP BY 1, 2 ORDER BY 1, 2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(time(from))
            .bind(time(to))
            .bind(principal)
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
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?",
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
            "INSERT INTO checkpoints (session_id, seq, id, task_id, task, created, files_changed, insertions, deletions, skipped, messages) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        sqlx::query("UPDATE sessions SET checkpoint = ? WHERE id = ?")
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
            "SELECT seq, id, task_id, task, created, files_changed, insertions, deletions, skipped, messages FROM checkpoints WHERE session_id = ? ORDER BY seq",
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
            "INSERT INTO checkpoints (session_id, seq, id, task_id, task, created, files_changed, insertions, deletions, skipped, messages) SELECT ?, seq, id, task_id, task, created, files_changed, insertions, deletions, skipped, messages FROM checkpoints WHERE session_id = ? AND seq <= ?",
        )
        .bind(child)
        .bind(parent)
        .bind(upto.seq as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO messages (session_id, seq, message) SELECT ?, seq, message FROM messages WHERE session_id = ? AND seq < ?",
        )
        .bind(child)
        .bind(parent)
        .bind(upto.messages as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO compactions (session_id, upto, summary, created) SELECT ?, upto, summary, created FROM compactions WHERE session_id = ? AND upto < ?",
        )
        .bind(child)
        .bind(parent)
        .bind(upto.messages as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sessions SET checkpoint = ? WHERE id = ?")
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
        sqlx::query("UPDATE sessions SET checkpoint = ? WHERE id = ?")
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
        let done = sqlx::query("DELETE FROM messages WHERE session_id = ? AND seq >= ?")
            .bind(session_id)
            .bind(from as i64)
            .execute(&mut *tx)
            .await?;
        // A compaction that took in messages from there on no longer holds.
        sqlx::query("DELETE FROM compactions WHERE session_id = ? AND upto >= ?")
            .bind(session_id)
            .bind(from as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// The checkpoint a session's workspace is at, if any.
    pub async fn session_checkpoint(&self, session_id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT checkpoint FROM sessions WHERE id = ?")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    pub async fn insert_task(&self, session_id: &str, id: &str, task: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO tasks (session_id, id, task, status, created) VALUES (?, ?, ?, 'queued', ?)")
            .bind(session_id)
            .bind(id)
            .bind(task)
            .bind(time(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets a task's status; a final one also stamps `finished`.
    pub async fn set_task_status(
        &self,
        session_id: &str,
        id: &str,
        status: TaskStatus,
    ) -> StoreResult<()> {
        let finished = status.is_final().then(|| time(Utc::now()));
        sqlx::query("UPDATE tasks SET status = ?, finished = COALESCE(?, finished) WHERE session_id = ? AND id = ?")
            .bind(status.as_str())
            .bind(finished)
            .bind(session_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Tasks still queued or running, oldest first.
    pub async fn unfinished_tasks(&self) -> StoreResult<Vec<UnfinishedTask>> {
        let rows = sqlx::query(
            "SELECT session_id, id, task, status FROM tasks WHERE status IN ('queued', 'running') ORDER BY created",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(UnfinishedTask {
                    session_id: r.get(0),
                    task_id: r.get(1),
                    task: r.get(2),
                    status: TaskStatus::parse(r.get::<&str, _>(3))?,
                })
            })
            .collect()
    }

    pub async fn insert_approval(&self, session_id: &str, a: &ApprovalRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO approvals (session_id, id, task_id, tool_call_id, tool_name, arguments, subject, requested, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "UPDATE approvals SET decision = ?, message = ?, resolved_by = ?, resolved = ? WHERE session_id = ? AND id = ? AND decision IS NULL",
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
            " FROM approvals WHERE session_id = ? AND id = ?"
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
            " FROM approvals WHERE session_id = ? AND tool_call_id = ? ORDER BY requested DESC, rowid DESC LIMIT 1"
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
            " FROM approvals WHERE session_id = ? AND decision IS NULL ORDER BY requested, rowid"
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
            "INSERT OR IGNORE INTO approval_rules (session_id, tool_name, pattern, created) VALUES (?, ?, ?, ?)",
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
            "SELECT tool_name, pattern FROM approval_rules WHERE session_id = ? ORDER BY created, rowid",
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

fn approval_record(r: &sqlx::sqlite::SqliteRow) -> ApprovalRecord {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[tokio::test]
    async fn sessions_processes_and_events_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
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
            .append_events(
                "a1b2c3d4",
                &[(1, "{\"type\":\"a\"}"), (2, "{\"type\":\"b\"}")],
            )
            .await
            .unwrap();
        store.set_error("a1b2c3d4", Some("gone")).await.unwrap();
        store.close().await;

        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(store.instance_id().await.unwrap(), instance);
        let sessions = store.sessions().await.unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].error.as_deref(), Some("gone"));
        assert_eq!(store.processes("a1b2c3d4").await.unwrap()[0].pid, 42);
        assert_eq!(store.last_event_seq("a1b2c3d4").await.unwrap(), 2);
        assert_eq!(
            store.events_after("a1b2c3d4", 1, 10).await.unwrap(),
            vec![(2, "{\"type\":\"b\"}".to_string())]
        );
    }

    #[tokio::test]
    async fn task_statuses_are_stored_as_their_words_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store.insert_session(&record("0000000a")).await.unwrap();
        for (i, status) in TaskStatus::ALL.into_iter().enumerate() {
            let id = format!("t{i}");
            store.insert_task("0000000a", &id, "x").await.unwrap();
            store
                .set_task_status("0000000a", &id, status)
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

    #[tokio::test]
    async fn deleting_a_session_deletes_what_belongs_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store.insert_session(&record("00000001")).await.unwrap();
        store.append_events("00000001", &[(1, "{}")]).await.unwrap();
        store
            .append_messages("00000001", 1, &["{}".into()])
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
}
