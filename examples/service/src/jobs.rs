//! The job queue the service uses: in the SQL database, or in Redis when `--redis-url` is given;
//! and what a job (or an event) asks of its work: milliseconds to wait, and maybe to fail.

use lifecycle_core::BoxError;
use lifecycle_db::{JobState, RedisJobQueue, SqlJobQueue};
use serde::{Deserialize, Serialize};

/// Where the service's jobs live.
#[derive(Debug, Clone)]
pub(crate) enum Jobs {
    Sql(SqlJobQueue),
    Redis(RedisJobQueue),
}

/// How a job's or an event's work is to fail, every time it runs: to show what becomes of a
/// poison job or message (set aside as `dead` after `--max-deliveries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Fail {
    /// The work returns an error.
    Error,
    /// The work panics.
    Panic,
}

impl Fail {
    /// Fails as asked, naming `what` fails: returns the error, or panics.
    pub(crate) fn now(self, what: &str) -> BoxError {
        match self {
            Fail::Error => format!("{what} was asked to fail").into(),
            Fail::Panic => panic!("{what} was asked to panic"),
        }
    }
}

/// A job's payload: the milliseconds its work waits, and whether it fails. Stored as the bare
/// number when it does not fail, as every job was before failures could be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Work {
    Ms(u64),
    Failing {
        ms: u64,
        #[serde(default)]
        fail: Option<Fail>,
    },
}

impl Work {
    pub(crate) fn new(ms: u64, fail: Option<Fail>) -> Self {
        match fail {
            None => Work::Ms(ms),
            Some(_) => Work::Failing { ms, fail },
        }
    }

    /// The milliseconds the work waits.
    pub(crate) fn ms(self) -> u64 {
        match self {
            Work::Ms(ms) | Work::Failing { ms, .. } => ms,
        }
    }

    /// Fails (an error, or a panic) if the job asks to.
    pub(crate) fn fail_if_asked(self, id: i64) -> Result<(), BoxError> {
        match self {
            Work::Failing {
                fail: Some(fail), ..
            } => Err(fail.now(&format!("job {id}"))),
            _ => Ok(()),
        }
    }
}

impl Jobs {
    /// Queues a job of `ms` milliseconds, which fails every time if `fail` says so.
    pub(crate) async fn enqueue(&self, ms: u64, fail: Option<Fail>) -> Result<i64, BoxError> {
        let work = Work::new(ms, fail);
        Ok(match self {
            Jobs::Sql(queue) => queue.enqueue(&work).await?,
            Jobs::Redis(queue) => queue.enqueue(&work).await?,
        })
    }

    pub(crate) async fn state(&self, id: i64) -> Result<Option<JobState>, BoxError> {
        Ok(match self {
            Jobs::Sql(queue) => queue.state(id).await?,
            Jobs::Redis(queue) => queue.state(id).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Fail, Work};

    #[test]
    fn a_job_that_does_not_fail_is_stored_as_before() {
        assert_eq!(serde_json::to_string(&Work::new(5, None)).unwrap(), "5");
        let failing = Work::new(5, Some(Fail::Panic));
        let json = serde_json::to_string(&failing).unwrap();
        assert_eq!(json, r#"{"ms":5,"fail":"panic"}"#);
        assert_eq!(serde_json::from_str::<Work>(&json).unwrap(), failing);
        assert_eq!(serde_json::from_str::<Work>("7").unwrap().ms(), 7);
        assert!(Work::new(1, Some(Fail::Error)).fail_if_asked(1).is_err());
        assert!(Work::new(1, None).fail_if_asked(1).is_ok());
    }
}
