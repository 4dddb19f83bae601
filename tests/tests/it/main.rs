//! The whole stack as a user deploys it, one binary: `fault_matrix` (the stack service under
//! each fault), `deployments` (the example service as each shipped deployment runs it, with the
//! triggers it sees) and `leaks` (what the stops leave behind).

mod deployments;
mod fault_matrix;
mod leaks;
