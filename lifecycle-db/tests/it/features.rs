//! Every backend is opt-in: a service gets SQLite's bundled C build or redis-rs only if it asks
//! for them. (The tests themselves turn every backend on, through a dev-dependency.)

#[test]
fn no_backend_is_on_by_default() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let features = manifest
        .split("[features]")
        .nth(1)
        .expect("a [features] table");
    let default = features
        .lines()
        .take_while(|line| !line.starts_with('['))
        .find_map(|line| line.strip_prefix("default"))
        .map(|rest| rest.trim_start_matches([' ', '=']).trim())
        .unwrap_or("[]");
    assert_eq!(default, "[]", "default features: {default}");
    for backend in ["postgres", "sqlite", "mysql", "redis"] {
        assert!(
            features.contains(&format!("\n{backend} = ")),
            "no `{backend}` feature"
        );
    }
}

/// sqlx (and `url`, which only the SQL pool reads) come with a SQL backend only: optional
/// dependencies that `postgres`, `sqlite` and `mysql` turn on and `redis` does not, so a
/// Redis-only service builds no sqlx. That the crate builds, without warnings, with each
/// feature alone and with none is `cargo check -p lifecycle-db --no-default-features
/// [--features X]`, which a test cannot run (see the `### lifecycle-db` section of
/// ARCHITECTURE.md for the commands CI runs).
#[test]
fn sqlx_comes_only_with_a_sql_backend() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let table = |name: &str| -> Vec<String> {
        manifest
            .split(&format!("\n[{name}]\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("a [{name}] table"))
            .lines()
            .take_while(|line| !line.starts_with('['))
            .map(str::to_owned)
            .collect()
    };
    let entry = |lines: &[String], key: &str| -> String {
        lines
            .iter()
            .find(|line| line.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no `{key}` entry"))
            .clone()
    };
    let dependencies = table("dependencies");
    for optional in ["sqlx", "url"] {
        let line = entry(&dependencies, optional);
        assert!(
            line.contains("optional = true"),
            "`{optional}` must be optional: {line}"
        );
    }
    let features = table("features");
    for sql in ["postgres", "sqlite", "mysql"] {
        let line = entry(&features, sql);
        assert!(
            line.contains("\"dep:sqlx\"") && line.contains("\"dep:url\""),
            "`{sql}` must turn sqlx and url on: {line}"
        );
    }
    for other in ["default", "redis"] {
        let line = entry(&features, other);
        assert!(
            !line.contains("sqlx") && !line.contains("url"),
            "`{other}` must not build sqlx: {line}"
        );
    }
}
