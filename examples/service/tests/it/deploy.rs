//! The deployment examples hold together: replicas share one database, the service runs as a
//! user other than root, and one slow readiness probe does not take a pod out of service.

use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Deployment in `kubernetes/deployment.yaml`.
fn deployment() -> Yaml {
    YamlLoader::load_from_str(&deploy_file("kubernetes/deployment.yaml"))
        .unwrap()
        .into_iter()
        .find(|doc| doc["kind"].as_str() == Some("Deployment"))
        .expect("a Deployment")
}

fn container(deployment: &Yaml) -> &Yaml {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn env<'a>(container: &'a Yaml, name: &str) -> Option<&'a Yaml> {
    container["env"]
        .as_vec()?
        .iter()
        .find(|var| var["name"].as_str() == Some(name))
}

/// Several replicas, each with a SQLite file of its own, would each keep their own jobs: a job
/// queued on a replaced pod would be lost. They must share one database, whose URL (with its
/// password) comes from a Secret.
#[test]
fn replicas_share_one_postgres_database_from_a_secret() {
    let deployment = deployment();
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    assert!(replicas > 1, "the example runs several replicas");
    let url = env(container(&deployment), "DATABASE_URL").expect("DATABASE_URL is set");
    assert!(
        url["value"].is_badvalue(),
        "DATABASE_URL is written in the manifest: {url:?}"
    );
    let secret = &url["valueFrom"]["secretKeyRef"];
    assert!(
        secret["name"].as_str().is_some() && secret["key"].as_str().is_some(),
        "DATABASE_URL does not come from a Secret: {url:?}"
    );
    let readme = deploy_file("kubernetes/README.md");
    assert!(
        readme.contains("postgres://"),
        "the README says how to make the Secret, with a PostgreSQL URL"
    );
}

/// The container runs as a user other than root, in the image and in the pod.
#[test]
fn the_service_runs_as_a_user_other_than_root() {
    let deployment = deployment();
    let pod = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true), "{pod:?}");
    let user = pod["runAsUser"].as_i64().expect("runAsUser");
    assert_ne!(user, 0);
    let container = &container(&deployment)["securityContext"];
    assert_eq!(
        container["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{container:?}"
    );

    let dockerfile = deploy_file("Dockerfile");
    let image_user = dockerfile
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the image sets a USER");
    let uid = image_user.split(':').next().unwrap().trim();
    assert!(
        uid != "0" && uid != "root",
        "the image runs as {image_user}"
    );
    assert_eq!(uid, user.to_string(), "the image's user is the pod's");
}

/// A readiness probe that fails once (a slow answer under load) must not take the pod out of
/// the Service: a failure threshold of at least 2.
#[test]
fn one_slow_readiness_probe_does_not_take_a_pod_out() {
    let deployment = deployment();
    let probe = &container(&deployment)["readinessProbe"];
    let threshold = probe["failureThreshold"].as_i64().unwrap_or(3);
    assert!(threshold >= 2, "readiness failureThreshold is {threshold}");
    assert!(
        probe["timeoutSeconds"].as_i64().unwrap_or(1) >= 1,
        "{probe:?}"
    );
}

/// The kubelet probes, and Prometheus scrapes, the admin port that `ADMIN_LISTEN` opens, not
/// the public one (which serves no `/metrics`); the Service does not expose it.
#[test]
fn probes_and_scrapes_go_to_the_admin_port() {
    let deployment = deployment();
    let container = container(&deployment);
    let admin_port = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("admin"))
        .expect("a port named admin")["containerPort"]
        .as_i64()
        .unwrap();
    let listen = env(container, "ADMIN_LISTEN").expect("ADMIN_LISTEN is set")["value"]
        .as_str()
        .unwrap();
    assert_eq!(
        listen.rsplit(':').next().unwrap().parse::<i64>().unwrap(),
        admin_port
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some("admin"),
            "{probe}"
        );
    }
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(admin_port.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
    let service = YamlLoader::load_from_str(&deploy_file("kubernetes/deployment.yaml"))
        .unwrap()
        .into_iter()
        .find(|doc| doc["kind"].as_str() == Some("Service"))
        .expect("a Service");
    for port in service["spec"]["ports"].as_vec().unwrap() {
        assert_ne!(port["targetPort"].as_str(), Some("admin"));
    }
}
