//! What a component is still waiting for when its stop overruns: its own answer
//! ([`Component::held_by`](crate::Component::held_by)) and its named tasks still running, capped so that a stop with ten
//! thousand requests in flight still writes a short report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The most items a report's `held_by` lists; the rest are counted in one more item.
pub const HELD_BY_LIMIT: usize = 10;

/// A component's own `held_by`, then its named tasks still running, capped at
/// [`HELD_BY_LIMIT`].
pub(crate) fn collect(own: Vec<String>, named_tasks: Vec<String>) -> Vec<String> {
    let mut items = own;
    items.extend(named_tasks);
    cap(items)
}

/// The work in progress of a component whose work items are not tasks of their own (jobs,
/// messages), labelled when each begins, for its [`Component::held_by`](crate::Component::held_by): listed with their ages,
/// the oldest first.
///
/// # Examples
///
/// ```
/// use lifecycle_core::held_by::Holding;
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let holding = Arc::new(Holding::default());
/// let job = holding.begin("job 42, delivery 2");
/// tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
/// assert_eq!(holding.list(), ["job 42, delivery 2, running 1.5s"]);
/// drop(job);
/// assert!(holding.list().is_empty());
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Holding {
    next: AtomicU64,
    items: Mutex<BTreeMap<u64, (String, Instant)>>,
}

/// One item of a [`Holding`], listed until dropped.
#[derive(Debug)]
#[must_use = "the item is listed only while this guard lives"]
pub struct Held {
    holding: Arc<Holding>,
    key: u64,
}

impl Holding {
    /// Lists `label` from now until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>, label: impl Into<String>) -> Held {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, (label.into(), Instant::now()));
        Held {
            holding: self.clone(),
            key,
        }
    }

    /// The items in progress, the oldest first, as `{label}, running {age}`.
    pub fn list(&self) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .values()
            .map(|(label, since)| listed(label, now.saturating_duration_since(*since)))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, (String, Instant)>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Held {
    /// The item as [`Holding::list`] shows it now.
    pub fn describe(&self) -> String {
        let items = self.holding.lock();
        match items.get(&self.key) {
            Some((label, since)) => listed(label, since.elapsed()),
            None => String::new(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.holding.lock().remove(&self.key);
    }
}

fn listed(label: &str, running: Duration) -> String {
    format!("{label}, running {}", age(running))
}

/// The first [`HELD_BY_LIMIT`] items, and `and N more` for the rest.
pub(crate) fn cap(mut items: Vec<String>) -> Vec<String> {
    if items.len() > HELD_BY_LIMIT {
        let more = items.len() - HELD_BY_LIMIT;
        items.truncate(HELD_BY_LIMIT);
        items.push(format!("and {more} more"));
    }
    items
}

/// An age as `held_by` items show it: `850ms`, `12.3s`, `4m05s`.
pub fn age(age: Duration) -> String {
    let ms = age.as_millis();
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", age.as_secs_f64()),
        _ => format!("{}m{:02}s", ms / 60_000, (ms / 1_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_items_are_cut_to_the_limit_and_a_count() {
        let items: Vec<String> = (0..10_000).map(|i| format!("request {i}")).collect();
        let capped = cap(items);
        assert_eq!(capped.len(), HELD_BY_LIMIT + 1);
        assert_eq!(capped[0], "request 0");
        assert_eq!(capped[HELD_BY_LIMIT], "and 9990 more");
        assert_eq!(cap(vec!["one".into()]), ["one"]);
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(Duration::from_millis(850)), "850ms");
        assert_eq!(age(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(age(Duration::from_secs(245)), "4m05s");
    }
}
