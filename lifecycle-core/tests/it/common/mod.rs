//! A scripted component for the integration tests: it records what the lifecycle did to it, on
//! tokio's clock, and behaves as told in start and stop.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle_core::testing::TestRun;
use lifecycle_core::{
    async_trait, BoxError, Component, Context, Lifecycle, LifecycleBuilder, Phase, Report,
};
use tokio::time::Instant;

/// What a scripted start or stop does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// Sleep for the duration, then succeed.
    Take(Duration),
    /// Return an error at once.
    Fail,
    /// Panic at once.
    Panic,
    /// Never return.
    Hang,
}

impl Act {
    pub fn ok() -> Self {
        Act::Take(Duration::ZERO)
    }

    pub fn secs(s: u64) -> Self {
        Act::Take(Duration::from_secs(s))
    }

    pub fn ms(ms: u64) -> Self {
        Act::Take(Duration::from_millis(ms))
    }

    async fn perform(self, what: &str) -> Result<(), BoxError> {
        match self {
            Act::Take(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Act::Fail => Err(format!("scripted {what} error").into()),
            Act::Panic => panic!("scripted {what} panic"),
            Act::Hang => std::future::pending().await,
        }
    }
}

/// One thing that happened to a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    StartBegan,
    StartEnded,
    StopBegan,
    StopEnded,
    /// Its context token was cancelled (seen by a task it spawned at start).
    TokenCancelled,
}

/// A log of (component, event, time) shared by all probes of a test.
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<(String, Event, Instant)>>>);

impl Log {
    fn push(&self, name: &str, event: Event) {
        self.0
            .lock()
            .unwrap()
            .push((name.to_owned(), event, Instant::now()));
    }

    pub fn events(&self) -> Vec<(String, Event, Instant)> {
        self.0.lock().unwrap().clone()
    }

    /// The times `name` saw `event`.
    pub fn times(&self, name: &str, event: Event) -> Vec<Instant> {
        self.events()
            .into_iter()
            .filter(|(n, e, _)| n == name && *e == event)
            .map(|(_, _, t)| t)
            .collect()
    }

    /// The only time `name` saw `event`; panics if it saw it more than once.
    pub fn once(&self, name: &str, event: Event) -> Option<Instant> {
        let times = self.times(name, event);
        assert!(
            times.len() <= 1,
            "{name} saw {event:?} {} times",
            times.len()
        );
        times.first().copied()
    }

    /// The order of `event` across components.
    pub fn order(&self, event: Event) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|(_, e, _)| *e == event)
            .map(|(n, _, _)| n)
            .collect()
    }
}

/// A component whose start and stop do what they are told and log it.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub start: Act,
    pub stop: Act,
    pub log: Log,
}

impl Probe {
    pub fn new(name: &str, log: &Log) -> Self {
        Probe {
            name: name.into(),
            start: Act::ok(),
            stop: Act::ok(),
            log: log.clone(),
        }
    }

    pub fn start(mut self, act: Act) -> Self {
        self.start = act;
        self
    }

    pub fn stop(mut self, act: Act) -> Self {
        self.stop = act;
        self
    }
}

#[async_trait]
impl Component for Probe {
    async fn start(&self, ctx: &Context) -> Result<(), BoxError> {
        self.log.push(&self.name, Event::StartBegan);
        let (token, log, name) = (ctx.token().clone(), self.log.clone(), self.name.clone());
        ctx.spawn(async move {
            token.cancelled().await;
            log.push(&name, Event::TokenCancelled);
        });
        self.start.perform("start").await?;
        self.log.push(&self.name, Event::StartEnded);
        Ok(())
    }

    async fn stop(&self, _ctx: &Context) -> Result<(), BoxError> {
        self.log.push(&self.name, Event::StopBegan);
        self.stop.perform("stop").await?;
        self.log.push(&self.name, Event::StopEnded);
        Ok(())
    }
}

/// A builder that leaves the process's signals alone, as tests must.
pub fn builder() -> LifecycleBuilder {
    Lifecycle::builder().signals([])
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs `builder` with the testing kit, asks for the shutdown `after` it is ready, and returns
/// the report.
pub async fn request_when_ready(builder: LifecycleBuilder, after: Duration) -> Report {
    let run = TestRun::start(builder).expect("a valid configuration");
    run.ready().await.expect("ready");
    tokio::time::sleep(after).await;
    run.request("test over");
    run.finish().await.into_report()
}

/// Asks for the shutdown `after` the lifecycle is ready, for tests that need the lifecycle's
/// handle before it runs.
pub fn shutdown_when_ready(lifecycle: &Lifecycle, after: Duration) {
    let handle = lifecycle.handle();
    let mut phase = handle.watch_phase();
    tokio::spawn(async move {
        phase.wait_for(|p| *p == Phase::Ready).await.unwrap();
        tokio::time::sleep(after).await;
        handle.shutdown("test over");
    });
}
