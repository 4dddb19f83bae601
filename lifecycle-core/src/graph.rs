//! The dependency graph: validation and the critical path.
//!
//! Components are numbered by registration order; everything here works on those indices so the
//! orchestrator can keep its per-component state in plain vectors.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::BuildError;

/// A validated, acyclic dependency graph. Components added while the lifecycle runs are
/// appended by the orchestrator (`changes.rs`), after their dependencies.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    /// `dependencies[i]`: the components `i` depends on (deduplicated, in declaration order).
    pub(crate) dependencies: Vec<Vec<usize>>,
    /// `dependents[i]`: the components that depend on `i`.
    pub(crate) dependents: Vec<Vec<usize>>,
    /// Every component registered before the run, after all of its dependencies.
    pub(crate) topological_order: Vec<usize>,
}

impl Graph {
    /// Builds the graph from each component's name and declared dependencies, rejecting
    /// duplicate names, unknown dependencies and cycles.
    pub(crate) fn new<'a>(
        components: impl ExactSizeIterator<Item = (&'a str, &'a [String])> + Clone,
    ) -> Result<Self, BuildError> {
        let mut index = HashMap::with_capacity(components.len());
        for (i, (name, _)) in components.clone().enumerate() {
            if index.insert(name, i).is_some() {
                return Err(BuildError::DuplicateName {
                    name: name.to_owned(),
                });
            }
        }

        let mut dependencies = Vec::with_capacity(components.len());
        let mut dependents = vec![Vec::new(); components.len()];
        for (i, (name, declared)) in components.clone().enumerate() {
            let mut resolved: Vec<usize> = Vec::with_capacity(declared.len());
            for dependency in declared {
                let Some(&d) = index.get(dependency.as_str()) else {
                    return Err(BuildError::MissingDependency {
                        component: name.to_owned(),
                        dependency: dependency.clone(),
                    });
                };
                if !resolved.contains(&d) {
                    resolved.push(d);
                    dependents[d].push(i);
                }
            }
            dependencies.push(resolved);
        }

        let names: Vec<&str> = components.map(|(name, _)| name).collect();
        let topological_order = topological_order(&dependencies, &names)?;
        Ok(Graph {
            dependencies,
            dependents,
            topological_order,
        })
    }

    /// The number of components.
    pub(crate) fn len(&self) -> usize {
        self.dependencies.len()
    }

    /// The dependency chain with the largest total weight, in stop order (each component before
    /// the dependency it stops ahead of), and that total.
    pub(crate) fn critical_path(
        &self,
        weight: impl Fn(usize) -> Duration,
    ) -> (Vec<usize>, Duration) {
        // longest[i]: the heaviest chain that starts at `i` and follows dependencies down;
        // next[i]: the dependency that chain continues with.
        let mut longest = vec![Duration::ZERO; self.len()];
        let mut next = vec![None; self.len()];
        for &i in &self.topological_order {
            let heaviest = self.dependencies[i]
                .iter()
                .copied()
                .max_by_key(|&d| longest[d]);
            longest[i] = weight(i).saturating_add(heaviest.map_or(Duration::ZERO, |d| longest[d]));
            next[i] = heaviest;
        }
        let Some(mut at) = (0..self.len()).max_by_key(|&i| longest[i]) else {
            return (Vec::new(), Duration::ZERO);
        };
        let total = longest[at];
        let mut path = vec![at];
        while let Some(d) = next[at] {
            path.push(d);
            at = d;
        }
        (path, total)
    }
}

/// Orders components so that each comes after its dependencies, or returns the first cycle
/// found as a [`BuildError::Cycle`].
///
/// An iterative depth-first search, so a chain of 100k components cannot overflow the stack.
fn topological_order(
    dependencies: &[Vec<usize>],
    names: &[&str],
) -> Result<Vec<usize>, BuildError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnStack,
        Done,
    }
    let mut mark = vec![Mark::Unvisited; dependencies.len()];
    let mut order = Vec::with_capacity(dependencies.len());
    // (component, how many of its dependencies have been looked at)
    let mut stack: Vec<(usize, usize)> = Vec::new();

    for root in 0..dependencies.len() {
        if mark[root] != Mark::Unvisited {
            continue;
        }
        mark[root] = Mark::OnStack;
        stack.push((root, 0));
        while let Some(&mut (node, ref mut seen)) = stack.last_mut() {
            if let Some(&d) = dependencies[node].get(*seen) {
                *seen += 1;
                match mark[d] {
                    Mark::Done => {}
                    Mark::Unvisited => {
                        mark[d] = Mark::OnStack;
                        stack.push((d, 0));
                    }
                    Mark::OnStack => {
                        // The stack from `d` up to `node` is the cycle; close it with `d`.
                        let from = stack.iter().position(|&(n, _)| n == d).expect("on stack");
                        let mut path: Vec<String> = stack[from..]
                            .iter()
                            .map(|&(n, _)| names[n].to_owned())
                            .collect();
                        path.push(names[d].to_owned());
                        return Err(BuildError::Cycle { path });
                    }
                }
            } else {
                mark[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(spec: &[(&str, &[&str])]) -> Result<Graph, BuildError> {
        let owned: Vec<(String, Vec<String>)> = spec
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect();
        Graph::new(owned.iter().map(|(n, d)| (n.as_str(), d.as_slice())))
    }

    #[test]
    fn diamond_is_accepted_and_ordered() {
        let g = graph(&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"]), ("d", &[])]).unwrap();
        let pos = |i| g.topological_order.iter().position(|&x| x == i).unwrap();
        assert!(pos(3) < pos(1) && pos(3) < pos(2) && pos(1) < pos(0) && pos(2) < pos(0));
        assert_eq!(g.dependents[3], vec![1, 2]);
    }

    #[test]
    fn cycle_shows_full_path() {
        let err = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn cycle_not_through_first_component() {
        let err = graph(&[("x", &["a"]), ("a", &["b"]), ("b", &["a"])]).unwrap_err();
        assert_eq!(
            err,
            BuildError::Cycle {
                path: vec!["a".into(), "b".into(), "a".into()]
            }
        );
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let err = graph(&[("a", &["a"])]).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: a -> a");
    }

    #[test]
    fn missing_dependency() {
        let err = graph(&[("http", &["db"])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "component `http` depends on `db`, which is not registered"
        );
    }

    #[test]
    fn duplicate_name() {
        let err = graph(&[("db", &[]), ("db", &[])]).unwrap_err();
        assert_eq!(err.to_string(), "component `db` is registered twice");
    }

    #[test]
    fn repeated_dependency_counts_once() {
        let g = graph(&[("a", &["b", "b"]), ("b", &[])]).unwrap();
        assert_eq!(g.dependencies[0], vec![1]);
        assert_eq!(g.dependents[1], vec![0]);
    }

    #[test]
    fn critical_path_takes_the_heaviest_chain() {
        // http -> db (1 s + 5 s) outweighs worker -> cache (2 s + 1 s).
        let g = graph(&[
            ("db", &[]),
            ("cache", &[]),
            ("http", &["db"]),
            ("worker", &["cache"]),
        ])
        .unwrap();
        let secs = [5, 1, 1, 2];
        let (path, total) = g.critical_path(|i| Duration::from_secs(secs[i]));
        assert_eq!(path, vec![2, 0]);
        assert_eq!(total, Duration::from_secs(6));
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let names: Vec<String> = (0..200_000).map(|i| i.to_string()).collect();
        let deps: Vec<Vec<String>> = (0..200_000)
            .map(|i| {
                if i == 0 {
                    vec![]
                } else {
                    vec![names[i - 1].clone()]
                }
            })
            .collect();
        let g = Graph::new(
            names
                .iter()
                .zip(&deps)
                .map(|(n, d)| (n.as_str(), d.as_slice())),
        )
        .unwrap();
        let (path, _) = g.critical_path(|_| Duration::from_millis(1));
        assert_eq!(path.len(), 200_000);
    }
}
