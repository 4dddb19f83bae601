//! What a component is still waiting for when its stop overruns: its own answer
//! ([`Component::held_by`]) and its named tasks still running, capped so that a stop with ten
//! thousand requests in flight still writes a short report.

use std::time::Duration;

use crate::component::Component;
use crate::tasks::TrackedTasks;

/// The most items a report's `held_by` lists; the rest are counted in one more item.
pub const HELD_BY_LIMIT: usize = 10;

/// Component `component`'s `held_by`, with its named tasks, capped at [`HELD_BY_LIMIT`].
pub(crate) fn collect(component: &dyn Component, tasks: Option<&TrackedTasks>) -> Vec<String> {
    let mut items = component.held_by();
    if let Some(tasks) = tasks {
        items.extend(tasks.named_running());
    }
    cap(items)
}

/// The first [`HELD_BY_LIMIT`] items, and `and N more` for the rest.
fn cap(mut items: Vec<String>) -> Vec<String> {
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
