//! `JobWorker`: a component that takes jobs from a [`JobQueue`] and finishes or hands back the
//! job in hand when its stop turn comes.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use lifecycle_core::held_by::Holding;
use lifecycle_core::{async_trait, BoxError, Component, Context};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::stats::Counters;
use super::{Job, JobQueue, JobStats};
use crate::error::DbError;
use crate::jobs::metrics::{Ended, JobMetrics};
use crate::GIVE_UP_RESERVE;

/// The shortest lease a worker accepts: it renews at a third of it, which must not be zero.
const MIN_LEASE: Duration = Duration::from_millis(3);

/// A worker on a [`JobQueue`] ([`SqlJobQueue`](crate::SqlJobQueue),
/// [`RedisJobQueue`](crate::RedisJobQueue)) whose contract is *finish or hand back*: on its stop turn it
/// takes no new job; the job in hand finishes if it can before the stop timeout, and otherwise
/// is handed back to the queue shortly before it, without counting against the job's retry
/// limit. A job is never lost: if the process dies instead, the job's lease expires and a worker
/// takes it up again (each worker reclaims expired jobs at its start and then once a lease,
/// busy or not).
///
/// Each start gives the worker a new identity, under which it holds its jobs: the component's
/// name, the host's name and a random part (`emails@orders-7d9f-x2x4q/9f86d081884c7d65`), so it
/// is unique across hosts, containers (each PID 1 of its own namespace) and restarts. It is
/// logged at the start and shown by [`describe`](Component::describe), so `/readyz?verbose`
/// says which replica holds which job.
///
/// The handler gets a [`Job<T>`](Job): the payload as the type it was enqueued as (JSON, through
/// serde), and the job's [`deliveries`](Job::deliveries), more than 1 when the job may have run
/// before. A payload that does not deserialize into `T` fails the job for good, with the serde
/// error as the reason. A handler that returns an error, panics (the panic is caught: the
/// worker goes on), or runs past [`max_run_time`](Self::max_run_time) (it is cut off) fails the
/// job's attempt: the job is tried again, up to [`max_attempts`](Self::max_attempts), and then
/// failed for good with the reason. The payload's type comes from the handler's argument, so
/// annotate it (`|job: Job<Email>|`). With [`concurrency`](Self::concurrency) above 1, the
/// worker holds several jobs at once, and each is finished or handed back at the stop.
///
/// Delivery is *at least once*: see the crate documentation for when a job runs twice.
///
/// Register it as depending on the pool's component, so the pool is still open when it hands a
/// job back.
///
/// # Examples
///
/// ```no_run
/// use lifecycle_core::{Lifecycle, Registration};
/// use lifecycle_db::{Job, JobWorker, SqlJobQueue, SqlPool};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Email {
///     to: String,
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = SqlPool::<sqlx::Sqlite>::new("sqlite://jobs.db?mode=rwc")?;
/// let queue = SqlJobQueue::new(db.pool().clone(), "emails");
/// queue.enqueue(&Email { to: "ada@example.com".into() }).await?;
/// let worker = JobWorker::new(queue, |job: Job<Email>| async move {
///     if job.deliveries > 1 {
///         // It may have been sent already: check before sending again.
///     }
///     println!("sending to {}", job.payload.to);
///     Ok(())
/// })
/// .concurrency(4);
/// let lifecycle = Lifecycle::builder()
///     .register(Registration::new("db", db))
///     .register(Registration::new("emails", worker).depends_on("db"))
///     .build()?;
/// # Ok(())
/// # }
/// ```
pub struct JobWorker<H, T = String> {
    queue: Arc<dyn JobQueue>,
    handler: Arc<H>,
    lease: Duration,
    poll_interval: Duration,
    max_attempts: u32,
    max_run_time: Option<Duration>,
    concurrency: u32,
    payload: PhantomData<fn() -> T>,
    /// What became of its jobs, over all its runs and clones.
    counts: Arc<Counters>,
    /// The identity of the current (or last) run, for `describe`; set by `start` only.
    identity: Arc<Mutex<Option<String>>>,
    /// The jobs in hand, for `held_by`.
    holding: Arc<Holding>,
}

impl<H, T, Fut> JobWorker<H, T>
where
    H: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    /// A worker that runs `handler` on each job of `queue`, one at a time, with a 30 s lease, a
    /// poll every 100 ms when the queue is empty, and 3 attempts per job.
    pub fn new(queue: impl JobQueue, handler: H) -> Self {
        JobWorker {
            queue: Arc::new(queue),
            handler: Arc::new(handler),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            max_attempts: 3,
            max_run_time: None,
            concurrency: 1,
            payload: PhantomData,
            counts: Arc::default(),
            identity: Arc::default(),
            holding: Arc::default(),
        }
    }

    /// How long a job stays claimed without a renewal (default 30 s); the worker renews it at a
    /// third of that while the job runs. A killed worker's job waits this long to be taken again.
    /// Less than 3 ms is refused at the start ([`DbError::InvalidSetting`]).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long to wait before asking an empty queue again (default 100 ms).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How many times a failing job is tried before it is marked failed (default 3): a handler
    /// error, a panic and a run cut off at [`max_run_time`](Self::max_run_time) each count.
    /// 0 is refused at the start ([`DbError::InvalidSetting`]).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The longest a job's handler may run (default: no limit). A handler still running then is
    /// cut off (its future dropped) and the job counts as failed, as if the handler had
    /// returned an error: retried up to [`max_attempts`](Self::max_attempts), then failed for
    /// good. Without it, a handler that hangs holds its job, renewing the lease, until the stop.
    /// Zero is refused at the start ([`DbError::InvalidSetting`]).
    #[must_use]
    pub fn max_run_time(mut self, limit: Duration) -> Self {
        self.max_run_time = Some(limit);
        self
    }

    /// How many jobs the worker holds at once (default 1; 0 counts as 1): it claims another
    /// whenever fewer are in hand. At the stop, each is finished or handed back.
    #[must_use]
    pub fn concurrency(mut self, jobs: u32) -> Self {
        self.concurrency = jobs.max(1);
        self
    }

    /// Refuses settings the worker cannot run with, before it takes any job: a lease whose
    /// third (the renewal period) is zero, a zero maximum run time, fewer than 1 attempt.
    fn check_settings(&self, component: &str) -> Result<(), DbError> {
        let invalid = |setting, reason: &str| DbError::InvalidSetting {
            component: component.to_owned(),
            setting,
            reason: reason.to_owned(),
        };
        if self.lease < MIN_LEASE {
            return Err(invalid(
                "lease",
                &format!(
                    "must be at least {MIN_LEASE:?} (it is renewed at a third of it), not {:?}",
                    self.lease
                ),
            ));
        }
        if self.max_run_time == Some(Duration::ZERO) {
            return Err(invalid("max_run_time", "must be more than zero"));
        }
        if self.max_attempts == 0 {
            return Err(invalid("max_attempts", "must be at least 1, not 0"));
        }
        Ok(())
    }

    /// What the worker did with its jobs so far, since it was created (its clones share the
    /// counts): see [`JobStats`].
    pub fn stats(&self) -> JobStats {
        self.counts.snapshot()
    }
}

/// A clone shares everything with the original (queue, handler, counts, identity): register one
/// and keep the other to read its [`stats`](JobWorker::stats).
impl<H, T> Clone for JobWorker<H, T> {
    fn clone(&self) -> Self {
        JobWorker {
            queue: self.queue.clone(),
            handler: self.handler.clone(),
            lease: self.lease,
            poll_interval: self.poll_interval,
            max_attempts: self.max_attempts,
            max_run_time: self.max_run_time,
            concurrency: self.concurrency,
            payload: PhantomData,
            counts: self.counts.clone(),
            identity: self.identity.clone(),
            holding: self.holding.clone(),
        }
    }
}

#[async_trait]
impl<H, T, Fut> Component for JobWorker<H, T>
where
    H: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        self.check_settings(ctx.name())?;
        let worker = worker_id(ctx.name());
        tracing::info!(component = ctx.name(), worker = %worker, "job worker starting");
        *self.identity.lock().unwrap_or_else(|e| e.into_inner()) = Some(worker.clone());
        self.queue.prepare(&worker).await?;
        let metrics = JobMetrics::register(ctx.name(), self.counts.clone());
        let reclaimed = self.queue.reclaim_expired().await?;
        metrics.reclaimed(reclaimed);
        if reclaimed > 0 {
            tracing::warn!(
                component = ctx.name(),
                reclaimed,
                "took back jobs of workers that died"
            );
        }
        let working = Arc::new(Working {
            ctx: ctx.clone(),
            queue: self.queue.clone(),
            handler: self.handler.clone(),
            worker,
            lease: self.lease,
            poll_interval: self.poll_interval,
            max_attempts: self.max_attempts,
            max_run_time: self.max_run_time,
            concurrency: self.concurrency,
            metrics: metrics.clone(),
            holding: self.holding.clone(),
            payload: PhantomData,
        });
        ctx.spawn(Working::<H, T>::reap(
            ctx.clone(),
            self.queue.clone(),
            working.worker.clone(),
            self.lease,
            metrics,
        ));
        ctx.spawn(working.work());
        Ok(())
    }

    /// The jobs in hand, the oldest first: `job 42, delivery 2, running 12.3s`.
    fn held_by(&self) -> Vec<String> {
        self.holding.list()
    }

    fn describe(&self) -> Option<String> {
        let identity = self
            .identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let stats = self.stats();
        Some(format!(
            "worker {}: {} jobs done, {} failed, {} dead, {} handed back or cut at shutdown, {} ended after their lease expired",
            identity.as_deref().unwrap_or("not started"),
            stats.done,
            stats.failed,
            stats.dead,
            stats.handed_back + stats.cut,
            stats.late
        ))
    }
}

/// The identity of one run of a worker, stored with the jobs it holds (and, on Redis, naming
/// its processing list and heartbeat): the component's name, the host's name and 64 random
/// bits, e.g. `emails@orders-7d9f-x2x4q/9f86d081884c7d65`.
///
/// It must differ between any two runs, wherever they are: two workers with one identity share
/// their leases, so one keeps the other's jobs from ever being taken back. Never the PID alone:
/// every exec-form container is PID 1, and a restarted container has the same PID again. The
/// host name is for people reading logs; the random part is what makes it unique.
fn worker_id(name: &str) -> String {
    format!(
        "{name}@{}/{:016x}",
        gethostname::gethostname().to_string_lossy(),
        rand::random::<u64>()
    )
}

/// One run of a worker, from its start to its stop.
struct Working<H, T> {
    ctx: Context,
    queue: Arc<dyn JobQueue>,
    handler: Arc<H>,
    worker: String,
    lease: Duration,
    poll_interval: Duration,
    max_attempts: u32,
    max_run_time: Option<Duration>,
    concurrency: u32,
    metrics: JobMetrics,
    holding: Arc<Holding>,
    payload: PhantomData<fn() -> T>,
}

impl<H, T, Fut> Working<H, T>
where
    H: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    /// Claims jobs while fewer than `concurrency` are in hand, each run as a tracked task of
    /// its own, until the stop turn; the jobs in hand then finish or are handed back on their
    /// own, and the lifecycle waits for their tasks.
    async fn work(self: Arc<Self>) {
        let token = self.ctx.token().clone();
        // One place per job the worker may hold at once; a job in hand keeps its place till it ends.
        let places = Arc::new(Semaphore::new(self.concurrency as usize));
        // The token is checked only between claims: a job in hand is never dropped here.
        while !token.is_cancelled() {
            let Some(Ok(place)) = token
                .run_until_cancelled(places.clone().acquire_owned())
                .await
            else {
                break;
            };
            match self.queue.claim(&self.worker, self.lease).await {
                // A claim that waited on the queue may return after the stop turn came.
                Ok(Some(job)) if token.is_cancelled() => {
                    self.metrics.claimed();
                    let recorded = self.queue.hand_back(job.id, &self.worker).await;
                    self.settled(job.id, Ended::HandedBack, None, recorded);
                }
                Ok(Some(job)) => {
                    self.metrics.claimed();
                    let working = self.clone();
                    self.ctx.spawn(async move {
                        working.run(job).await;
                        drop(place);
                    });
                }
                Ok(None) => {
                    let _ = token
                        .run_until_cancelled(tokio::time::sleep(self.poll_interval))
                        .await;
                }
                Err(error) => {
                    tracing::warn!(component = self.ctx.name(), worker = %self.worker, %error, "could not claim a job");
                    let _ = token
                        .run_until_cancelled(tokio::time::sleep(self.poll_interval))
                        .await;
                }
            }
        }
    }

    /// Takes back the jobs of workers that died, once a lease (no lease expires faster), until
    /// the stop turn: apart from the job loop, so a worker that is never idle, or holds one
    /// long job, still does it.
    async fn reap(
        ctx: Context,
        queue: Arc<dyn JobQueue>,
        worker: String,
        every: Duration,
        metrics: JobMetrics,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while ctx.token().run_until_cancelled(tick.tick()).await.is_some() {
            match queue.reclaim_expired().await {
                Ok(0) => {}
                Ok(reclaimed) => {
                    metrics.reclaimed(reclaimed);
                    tracing::warn!(component = ctx.name(), worker = %worker, reclaimed,
                        "took back jobs whose lease expired (their worker died or hung)");
                }
                Err(error) => {
                    tracing::warn!(component = ctx.name(), worker = %worker, %error,
                        "could not reclaim expired jobs");
                }
            }
        }
    }

    /// Runs one job to its end, renewing its lease, unless the stop deadline comes first; then
    /// hands it back.
    async fn run(&self, job: Job) {
        let (id, attempts) = (job.id, job.attempts);
        let held = self
            .holding
            .begin(format!("job {id}, delivery {}", job.deliveries));
        let began = tokio::time::Instant::now();
        let job = match job.decode::<T>() {
            Ok(job) => job,
            Err(error) => {
                // It would fail the same way every time: failed for good, no retry.
                let reason = format!(
                    "the payload is not a valid {}: {error}",
                    std::any::type_name::<T>()
                );
                tracing::warn!(component = self.ctx.name(), worker = %self.worker, job = id, %reason, "job failed");
                let took = began.elapsed();
                let recorded = self.queue.fail(id, &self.worker, &reason, 0).await;
                self.settled(id, Ended::Dead, Some(took), recorded);
                return;
            }
        };
        // Boxed, so that it can be dropped (the handler cut off) before the end is recorded.
        // The handler's call, which makes its future, may panic as well as the future.
        let mut handling: BoxFuture<'static, std::thread::Result<Result<(), BoxError>>> =
            match std::panic::catch_unwind(AssertUnwindSafe(|| (self.handler)(job))) {
                Ok(future) => Box::pin(AssertUnwindSafe(future).catch_unwind()),
                Err(panic) => Box::pin(std::future::ready(Err(panic))),
            };
        let mut renew = tokio::time::interval(self.lease / 3);
        renew.tick().await;
        let too_long = async {
            match self.max_run_time {
                Some(limit) => tokio::time::sleep_until(began + limit).await,
                None => std::future::pending().await,
            }
        };
        let mut too_long = std::pin::pin!(too_long);
        let outcome = loop {
            let cut_off = async {
                self.ctx.token().cancelled().await;
                tokio::time::sleep_until(
                    self.ctx.give_up_at(GIVE_UP_RESERVE, Duration::from_secs(5)),
                )
                .await;
            };
            tokio::select! {
                outcome = &mut handling => break match outcome {
                    Ok(Ok(())) => Outcome::Done,
                    Ok(Err(error)) => Outcome::Failed(error.to_string()),
                    Err(panic) => {
                        self.metrics.panicked();
                        Outcome::Failed(panic_message(panic.as_ref()))
                    }
                },
                _ = renew.tick() => {
                    match self.queue.renew(id, &self.worker, self.lease).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(component = self.ctx.name(), worker = %self.worker, job = id,
                            "lost the lease on a job in hand: it was taken back and may run elsewhere too"),
                        Err(error) => tracing::warn!(component = self.ctx.name(), worker = %self.worker, job = id, %error,
                            "could not renew a job's lease"),
                    }
                }
                () = &mut too_long => {
                    let limit = self.max_run_time.unwrap_or_default();
                    tracing::warn!(component = self.ctx.name(), worker = %self.worker, job = id, ?limit,
                        "a job ran past its max run time: it is cut off and counted as failed");
                    break Outcome::Failed(format!("the job ran past its max run time of {limit:?} and was cut off"));
                }
                () = cut_off => break Outcome::Cut,
            }
        };
        // The handler's future is dropped here, whatever it was doing, before the end is
        // recorded: a job cut off must not go on beside its next delivery.
        drop(handling);
        let how = match outcome {
            Outcome::Done => Ended::Done,
            // The queue fails it for good at the same count.
            Outcome::Failed(_) if attempts >= i64::from(self.max_attempts) => Ended::Dead,
            Outcome::Failed(_) => Ended::Failed,
            Outcome::Cut => Ended::Cut,
        };
        let took = began.elapsed();
        let recorded = match outcome {
            Outcome::Done => self.queue.complete(id, &self.worker).await,
            Outcome::Failed(reason) => {
                tracing::warn!(component = self.ctx.name(), worker = %self.worker, job = id, %reason, "job failed");
                self.queue
                    .fail(id, &self.worker, &reason, self.max_attempts)
                    .await
            }
            Outcome::Cut => {
                tracing::info!(
                    component = self.ctx.name(), worker = %self.worker,
                    job = id,
                    "stop timeout near: handing the job back"
                );
                self.ctx.gave_up_on(held.describe());
                self.queue.hand_back(id, &self.worker).await
            }
        };
        self.settled(id, how, Some(took), recorded);
    }

    /// Counts how job `id` ended (`how`, after running for `took`), once the queue has
    /// answered: as `how` if the queue recorded it, as late if the job was no longer this
    /// worker's, as a failed settlement if the queue could not be told. So the counts, like a
    /// consumer's, say what the queue holds.
    fn settled(
        &self,
        id: i64,
        how: Ended,
        took: Option<Duration>,
        recorded: Result<bool, BoxError>,
    ) {
        match recorded {
            Ok(true) => self.metrics.ended(how, took),
            Ok(false) => {
                // Another worker has the job (or had it and finished it): this end changed
                // nothing, and the job ran more than once.
                self.metrics.late();
                tracing::warn!(component = self.ctx.name(), worker = %self.worker, job = id,
                    "a job ended after its lease expired and it was taken back: its end was not recorded, and it runs (or ran) again elsewhere");
            }
            Err(error) => {
                // The lease will expire and the job will be taken again: not lost, maybe run twice.
                self.metrics.settle_failed();
                tracing::warn!(component = self.ctx.name(), worker = %self.worker, job = id, %error, "could not record a job's end");
            }
        }
    }
}

/// How a job in hand ended.
enum Outcome {
    Done,
    /// The handler failed, panicked or ran past its maximum run time: why.
    Failed(String),
    /// Cut off shortly before the stop deadline, to be handed back.
    Cut,
}

/// What a caught panic said (`panic!` with a literal or with a format), for the job's error.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let said = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str));
    match said {
        Some(said) => format!("the job panicked: {said}"),
        None => "the job panicked".to_owned(),
    }
}

impl<H, T> std::fmt::Debug for JobWorker<H, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWorker")
            .field("queue", &self.queue)
            .field("lease", &self.lease)
            .field("max_attempts", &self.max_attempts)
            .field("max_run_time", &self.max_run_time)
            .field("concurrency", &self.concurrency)
            .field("stats", &self.counts.snapshot())
            .finish_non_exhaustive()
    }
}
