//! The job queue's statements in each database's SQL: PostgreSQL, SQLite, MySQL/MariaDB.
//!
//! Each database gets its own statements, never another's: placeholders (`$1` or `?`), the
//! clock, locking and `RETURNING` all differ.

/// Which SQL a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Postgres,
    Sqlite,
    MySql,
}

/// The statements of one database.
#[derive(Debug)]
pub(super) struct Dialect {
    pub(super) kind: Kind,
    pub(super) create: &'static str,
    /// Taken first in the transaction that creates the table, where concurrent creates fail:
    /// PostgreSQL's `CREATE TABLE IF NOT EXISTS` is not safe against another one in progress
    /// (it fails on the row type or the sequence the other is creating).
    pub(super) create_lock: Option<&'static str>,
    /// Creates the claim index when `create` does not (MySQL declares it in the table).
    pub(super) create_index: Option<&'static str>,
    /// Counts the `deliveries` column (0 or 1), for tables made before it existed.
    pub(super) has_deliveries: &'static str,
    pub(super) add_deliveries: &'static str,
    /// Binds: queue, payload. Returns the id, unless the database has no `RETURNING` for it
    /// (MySQL: the result's last insert id).
    pub(super) enqueue: &'static str,
    /// Binds: worker, lease in ms, queue. Returns id, payload, attempts, deliveries. MySQL, with
    /// no `UPDATE ... RETURNING`, runs [`MYSQL_CLAIM`] in a transaction instead.
    pub(super) claim: &'static str,
    /// Binds: lease in ms, id, worker.
    pub(super) renew: &'static str,
    /// Binds: id, worker.
    pub(super) complete: &'static str,
    /// Binds: max attempts, error, id, worker.
    pub(super) fail: &'static str,
    /// Binds: id, worker.
    pub(super) hand_back: &'static str,
    /// Binds: max deliveries, max deliveries, queue.
    pub(super) reclaim: &'static str,
    /// Binds: id.
    pub(super) state: &'static str,
    /// Binds: id.
    pub(super) error: &'static str,
    /// Binds: queue.
    pub(super) counts: &'static str,
}

// The database's clock in milliseconds since the epoch.
macro_rules! now_postgres {
    () => {
        "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT"
    };
}
macro_rules! now_sqlite {
    () => {
        "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
    };
}
macro_rules! now_mysql {
    () => {
        "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)"
    };
}

// `$N` placeholders appear in numeric order: SQLite numbers them by first appearance.
macro_rules! claim {
    ($now:expr, $lock:expr) => {
        concat!(
            "UPDATE lifecycle_jobs
             SET state = 'running', worker = $1, lease_until = ",
            $now,
            " + $2,
                 attempts = attempts + 1, deliveries = deliveries + 1
             WHERE id = (SELECT id FROM lifecycle_jobs WHERE queue = $3 AND state = 'queued'
                         ORDER BY id LIMIT 1",
            $lock,
            ")
             RETURNING id, payload, attempts, deliveries"
        )
    };
}
macro_rules! renew {
    ($now:expr) => {
        concat!(
            "UPDATE lifecycle_jobs SET lease_until = ",
            $now,
            " + $1 WHERE id = $2 AND worker = $3 AND state = 'running'"
        )
    };
}
macro_rules! reclaim {
    ($now:expr) => {
        concat!(
            "UPDATE lifecycle_jobs
             SET state = CASE WHEN deliveries >= $1 THEN 'failed' ELSE 'queued' END,
                 error = CASE WHEN deliveries >= $2
                     THEN 'its lease expired after its delivery ' || deliveries
                          || ' of ' || $2 || ': its worker died or hung every time'
                     ELSE error END,
                 worker = NULL, lease_until = NULL, attempts = attempts - 1
             WHERE queue = $3 AND state = 'running' AND lease_until < ",
            $now
        )
    };
}

const ENQUEUE: &str = "INSERT INTO lifecycle_jobs (queue, payload, state, attempts)
    VALUES ($1, $2, 'queued', 0) RETURNING id";
const COMPLETE: &str = "UPDATE lifecycle_jobs SET state = 'done', worker = NULL, lease_until = NULL
    WHERE id = $1 AND worker = $2 AND state = 'running'";
const FAIL: &str = "UPDATE lifecycle_jobs
    SET state = CASE WHEN attempts >= $1 THEN 'failed' ELSE 'queued' END,
        worker = NULL, lease_until = NULL, error = $2
    WHERE id = $3 AND worker = $4 AND state = 'running'";
const HAND_BACK: &str = "UPDATE lifecycle_jobs
    SET state = 'queued', worker = NULL, lease_until = NULL, attempts = attempts - 1
    WHERE id = $1 AND worker = $2 AND state = 'running'";
const STATE: &str = "SELECT state FROM lifecycle_jobs WHERE id = $1";
const ERROR: &str = "SELECT error FROM lifecycle_jobs WHERE id = $1";
const COUNTS: &str = "SELECT state, COUNT(*) FROM lifecycle_jobs WHERE queue = $1 GROUP BY state";
const INDEX: &str =
    "CREATE INDEX IF NOT EXISTS lifecycle_jobs_claim ON lifecycle_jobs (queue, state, id)";

pub(super) static POSTGRES: Dialect = Dialect {
    kind: Kind::Postgres,
    create: "CREATE TABLE IF NOT EXISTS lifecycle_jobs (
        id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0, worker TEXT, lease_until BIGINT, error TEXT,
        deliveries BIGINT NOT NULL DEFAULT 0)",
    create_lock: Some("SELECT pg_advisory_xact_lock(hashtext('lifecycle_jobs'))"),
    create_index: Some(INDEX),
    has_deliveries: "SELECT COUNT(*) FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'lifecycle_jobs'
          AND column_name = 'deliveries'",
    add_deliveries:
        "ALTER TABLE lifecycle_jobs ADD COLUMN IF NOT EXISTS deliveries BIGINT NOT NULL DEFAULT 0",
    enqueue: ENQUEUE,
    // Concurrent claims skip the rows others are taking instead of waiting for them.
    claim: claim!(now_postgres!(), " FOR UPDATE SKIP LOCKED"),
    renew: renew!(now_postgres!()),
    complete: COMPLETE,
    fail: FAIL,
    hand_back: HAND_BACK,
    reclaim: reclaim!(now_postgres!()),
    state: STATE,
    error: ERROR,
    counts: COUNTS,
};

pub(super) static SQLITE: Dialect = Dialect {
    kind: Kind::Sqlite,
    create: "CREATE TABLE IF NOT EXISTS lifecycle_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, payload TEXT NOT NULL,
        state TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, worker TEXT, lease_until BIGINT,
        error TEXT, deliveries BIGINT NOT NULL DEFAULT 0)",
    create_lock: None,
    create_index: Some(INDEX),
    has_deliveries:
        "SELECT COUNT(*) FROM pragma_table_info('lifecycle_jobs') WHERE name = 'deliveries'",
    add_deliveries: "ALTER TABLE lifecycle_jobs ADD COLUMN deliveries BIGINT NOT NULL DEFAULT 0",
    enqueue: ENQUEUE,
    // SQLite runs one writer at a time, so the same statement without row locks is atomic.
    claim: claim!(now_sqlite!(), ""),
    renew: renew!(now_sqlite!()),
    complete: COMPLETE,
    fail: FAIL,
    hand_back: HAND_BACK,
    reclaim: reclaim!(now_sqlite!()),
    state: STATE,
    error: ERROR,
    counts: COUNTS,
};

/// MySQL 8 and MariaDB 10.6+ (`SKIP LOCKED`): `?` placeholders, in binding order.
pub(super) static MYSQL: Dialect = Dialect {
    kind: Kind::MySql,
    create: "CREATE TABLE IF NOT EXISTS lifecycle_jobs (
        id BIGINT AUTO_INCREMENT PRIMARY KEY, queue VARCHAR(255) NOT NULL,
        payload LONGTEXT NOT NULL, state VARCHAR(16) NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0, worker VARCHAR(255), lease_until BIGINT, error TEXT,
        deliveries BIGINT NOT NULL DEFAULT 0,
        INDEX lifecycle_jobs_claim (queue, state, id))",
    create_lock: None,
    create_index: None,
    has_deliveries: "SELECT COUNT(*) FROM information_schema.columns
        WHERE table_schema = DATABASE() AND table_name = 'lifecycle_jobs'
          AND column_name = 'deliveries'",
    add_deliveries: "ALTER TABLE lifecycle_jobs ADD COLUMN deliveries BIGINT NOT NULL DEFAULT 0",
    enqueue: "INSERT INTO lifecycle_jobs (queue, payload, state, attempts)
        VALUES (?, ?, 'queued', 0)",
    claim: "",
    renew: concat!(
        "UPDATE lifecycle_jobs SET lease_until = ",
        now_mysql!(),
        " + ? WHERE id = ? AND worker = ? AND state = 'running'"
    ),
    complete: "UPDATE lifecycle_jobs SET state = 'done', worker = NULL, lease_until = NULL
        WHERE id = ? AND worker = ? AND state = 'running'",
    fail: "UPDATE lifecycle_jobs
        SET state = CASE WHEN attempts >= ? THEN 'failed' ELSE 'queued' END,
            worker = NULL, lease_until = NULL, error = ?
        WHERE id = ? AND worker = ? AND state = 'running'",
    hand_back: "UPDATE lifecycle_jobs
        SET state = 'queued', worker = NULL, lease_until = NULL, attempts = attempts - 1
        WHERE id = ? AND worker = ? AND state = 'running'",
    // `error` is set before `state` changes: MySQL evaluates SET left to right, each assignment
    // seeing the ones before it.
    reclaim: concat!(
        "UPDATE lifecycle_jobs
         SET error = CASE WHEN deliveries >= ?
                 THEN CONCAT('its lease expired after its delivery ', deliveries, ' of ', ?,
                             ': its worker died or hung every time')
                 ELSE error END,
             state = CASE WHEN deliveries >= ? THEN 'failed' ELSE 'queued' END,
             worker = NULL, lease_until = NULL, attempts = attempts - 1
         WHERE queue = ? AND state = 'running' AND lease_until < ",
        now_mysql!()
    ),
    state: "SELECT state FROM lifecycle_jobs WHERE id = ?",
    error: "SELECT error FROM lifecycle_jobs WHERE id = ?",
    counts: "SELECT state, COUNT(*) FROM lifecycle_jobs WHERE queue = ? GROUP BY state",
};

/// MySQL's claim, in one transaction: lock the oldest queued row (skipping rows other claims
/// hold), take it, read it back.
pub(super) struct MySqlClaim {
    /// Binds: queue.
    pub(super) select: &'static str,
    /// Binds: worker, lease in ms, id.
    pub(super) take: &'static str,
    /// Binds: id. Returns id, payload, attempts, deliveries.
    pub(super) read: &'static str,
}

pub(super) static MYSQL_CLAIM: MySqlClaim = MySqlClaim {
    select: "SELECT id FROM lifecycle_jobs WHERE queue = ? AND state = 'queued'
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
    take: concat!(
        "UPDATE lifecycle_jobs SET state = 'running', worker = ?, lease_until = ",
        now_mysql!(),
        " + ?, attempts = attempts + 1, deliveries = deliveries + 1 WHERE id = ?"
    ),
    read: "SELECT id, payload, attempts, deliveries FROM lifecycle_jobs WHERE id = ?",
};

impl Dialect {
    /// The dialect of a database named by a URL scheme; `None` for a database the queue does
    /// not speak.
    pub(super) fn for_scheme(scheme: &str) -> Option<&'static Dialect> {
        match scheme {
            "postgres" | "postgresql" => Some(&POSTGRES),
            "sqlite" => Some(&SQLITE),
            "mysql" | "mariadb" => Some(&MYSQL),
            _ => None,
        }
    }
}
