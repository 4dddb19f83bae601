//! `Jobs`: the service's job queue, read and written from the test through lifecycle-db's own
//! `SqlJobQueue`, on a connection of the test's own.

use std::time::Duration;

use lifecycle_db::{JobQueue, SqlJobQueue};
use lifecycle_test_support::servers;
use sqlx::AnyPool;

/// A job queue in the `lifecycle_jobs` table of the shared PostgreSQL, as the test sees it.
#[derive(Debug)]
pub struct Jobs {
    queue: SqlJobQueue,
    pool: AnyPool,
    name: String,
}

/// How many jobs of a queue are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobCounts {
    /// Waiting for a worker (never taken, or handed back).
    pub queued: i64,
    /// Held by a worker, or by one that died and whose lease has not been reclaimed yet.
    pub running: i64,
    /// Finished.
    pub done: i64,
    /// Failed for good.
    pub failed: i64,
}

impl JobCounts {
    /// Every job counted.
    pub fn total(&self) -> i64 {
        self.queued + self.running + self.done + self.failed
    }
}

impl Jobs {
    /// The queue named `queue`; creates the table if it is not there yet.
    ///
    /// # Panics
    ///
    /// When PostgreSQL cannot be reached.
    pub async fn connect(queue: &str) -> Jobs {
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(&servers::postgres_url("stack-test-jobs"))
            .await
            .expect("PostgreSQL");
        let jobs = SqlJobQueue::new(pool.clone(), queue);
        jobs.create_table().await.expect("the job table");
        Jobs {
            queue: jobs,
            pool,
            name: queue.to_owned(),
        }
    }

    /// Queues `jobs` jobs of `ms` milliseconds straight into the table, as another instance
    /// would; returns their ids.
    ///
    /// # Panics
    ///
    /// On a database error.
    pub async fn enqueue(&self, jobs: usize, ms: u64) -> Vec<i64> {
        let mut ids = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            ids.push(self.queue.enqueue(&ms.to_string()).await.expect("enqueue"));
        }
        ids
    }

    /// The counts now.
    ///
    /// # Panics
    ///
    /// On a database error.
    pub async fn counts(&self) -> JobCounts {
        let (queued, running, done, failed) = self.queue.counts().await.expect("job counts");
        JobCounts {
            queued,
            running,
            done,
            failed,
        }
    }

    /// Waits until `until` holds of the counts, up to `within`; returns them.
    ///
    /// # Panics
    ///
    /// When it does not hold in time.
    pub async fn wait_for(
        &self,
        within: Duration,
        until: impl Fn(&JobCounts) -> bool,
    ) -> JobCounts {
        let give_up = tokio::time::Instant::now() + within;
        loop {
            let counts = self.counts().await;
            if until(&counts) {
                return counts;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "job counts not reached within {within:?}: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Queues again the jobs whose lease has expired, as the next instance's worker does at
    /// its start; returns how many.
    ///
    /// # Panics
    ///
    /// On a database error.
    pub async fn reclaim_expired(&self) -> u64 {
        self.queue.reclaim_expired().await.expect("reclaim")
    }

    /// Deletes the queue's rows and closes the connection.
    pub async fn remove(self) {
        let _ = sqlx::query("DELETE FROM lifecycle_jobs WHERE queue = $1")
            .bind(&self.name)
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }
}
