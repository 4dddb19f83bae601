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
