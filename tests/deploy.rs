//! The container image and the Kubernetes manifests in the repository:
//! their shape, and that every loadgen command they run is one loadgen
//! accepts. Where Docker or a Kubernetes API server is at hand, they are
//! also built or dry-run; elsewhere those steps say they were skipped.

#[path = "common/skip.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use clap::Parser;
use yaml_rust2::{Yaml, YamlLoader};

use common::Lack;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn documents(relative: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

/// The container's shell command with its `$VARS` replaced by `env`'s
/// values (and the index by 0), cut into words, from `loadgen` on and
/// before any redirection.
fn loadgen_words(container: &Yaml) -> Vec<String> {
    let mut script = container["args"][0]
        .as_str()
        .expect("a shell script")
        .to_string();
    for var in container["env"].as_vec().into_iter().flatten() {
        let (name, value) = (
            var["name"].as_str().unwrap(),
            var["value"].as_str().unwrap(),
        );
        script = script.replace(&format!("\"${name}\""), value);
    }
    script = script.replace("$JOB_COMPLETION_INDEX", "0");
    let words: Vec<String> = script
        .split_whitespace()
        .map(|w| w.trim_matches('"').to_string())
        .skip_while(|w| w != "loadgen")
        .take_while(|w| w != ">")
        .collect();
    assert!(!words.is_empty(), "the script runs loadgen: {script}");
    words
}

#[test]
fn the_kubernetes_job_runs_indexed_agents_that_start_together() {
    let docs = documents("deploy/k8s/loadgen-agents.yaml");
    let claim = of_kind(&docs, "PersistentVolumeClaim");
    assert_eq!(claim.len(), 1);
    assert_eq!(
        claim[0]["metadata"]["name"].as_str(),
        Some("loadgen-results")
    );
    assert_eq!(
        claim[0]["spec"]["accessModes"][0].as_str(),
        Some("ReadWriteMany")
    );
    let jobs = of_kind(&docs, "Job");
    assert_eq!(jobs.len(), 1);
    let job = jobs[0];
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let n = spec["completions"].as_i64().expect("completions");
    assert!(n >= 2, "several agents");
    assert_eq!(spec["parallelism"].as_i64(), Some(n), "all run at once");
    let pod = &spec["template"]["spec"];
    assert_eq!(
        pod["restartPolicy"].as_str(),
        Some("Never"),
        "an agent never reruns"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["volumeMounts"][0]["mountPath"].as_str(),
        Some("/results")
    );
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"].as_str(),
        Some("loadgen-results")
    );
    let script = container["args"][0].as_str().unwrap();
    for needed in [
        "--start-at",
        "--tag \"agent-$JOB_COMPLETION_INDEX\"",
        "--json",
        "--hdr-log \"/results/agent-$JOB_COMPLETION_INDEX.hlog\"",
        "> \"/results/agent-$JOB_COMPLETION_INDEX.json\"",
    ] {
        assert!(script.contains(needed), "{needed} in: {script}");
    }
    // Every flag is one loadgen takes (a name as target resolves now, so
    // the test puts an address in its place).
    let mut words = loadgen_words(container);
    if let Some(at) = words.iter().position(|w| w == "--tcp") {
        words[at + 1] = "127.0.0.1:65432".into();
    }
    let cli =
        loadgen::cli::Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{words:?}: {e}"));
    assert!(cli.start_at.is_some() && cli.json && cli.hdr_log.is_some());
    assert_eq!(cli.tag.as_deref(), Some("agent-0"));
}

#[test]
fn the_kubernetes_report_job_merges_what_the_agents_wrote() {
    let docs = documents("deploy/k8s/loadgen-report.yaml");
    let job = of_kind(&docs, "Job")[0];
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"].as_str(),
        Some("loadgen-results")
    );
    let words = loadgen_words(&pod["containers"][0]);
    assert_eq!(words[1], "report");
    assert!(words.iter().any(|w| w == "/results/agent-*.json"));
    assert!(words.iter().any(|w| w == "/results/agent-*.hlog"));
    loadgen::cli::Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{words:?}: {e}"));
}

#[test]
fn kubectl_accepts_the_manifests_where_it_can_reach_an_api_server() {
    for file in [
        "deploy/k8s/loadgen-agents.yaml",
        "deploy/k8s/loadgen-report.yaml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let Ok(out) = Command::new("kubectl")
            .args(["apply", "--dry-run=client", "-f"])
            .arg(&path)
            .output()
        else {
            common::skip(
                Lack::Program("kubectl"),
                "kubectl is not installed (the YAML shape is checked above)",
            );
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success()
            && ["openapi", "server", "connect", "refused", "recognize"]
                .iter()
                .any(|w| stderr.contains(w))
        {
            common::skip(
                Lack::KubernetesApi,
                format!(
                    "kubectl cannot reach an API server for a dry run: {}",
                    stderr.lines().last().unwrap_or("")
                ),
            );
            return;
        }
        assert!(out.status.success(), "kubectl refused {file}: {stderr}");
    }
}

#[test]
fn the_dockerfile_builds_both_binaries_into_a_slim_image() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    assert!(stages[0].contains(" AS build"));
    assert!(stages[1].contains("-slim"), "a slim runtime: {}", stages[1]);
    assert!(dockerfile.contains("cargo build --release --locked -p ringcore -p loadgen"));
    assert!(dockerfile.contains("ENTRYPOINT [\"ringcore\"]"));
    assert!(
        dockerfile.contains("\"--bind\", \"0.0.0.0\""),
        "reachable from outside the container"
    );
    for port in [
        "65432/tcp",
        "65432/udp",
        "12345/tcp",
        "8888/udp",
        "5555/tcp",
        "5555/udp",
        "8080/tcp",
    ] {
        assert!(dockerfile.contains(port), "EXPOSE {port}");
    }
    assert!(dockerfile.contains("deploy/docker/seccomp-ringcore.json"));
    let docker_up = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !docker_up {
        common::skip(
            Lack::DockerDaemon,
            "no Docker daemon here to build the image (the seccomp profile is tested in tests/chapter.rs)",
        );
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let docker = |args: &[&str]| {
        let out = Command::new("docker")
            .args(args)
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    docker(&["build", "-q", "-t", "ringcore:test", "."]);
    // Docker parses the profile as it starts the container.
    let profile = format!("seccomp={root}/deploy/docker/seccomp-ringcore.json");
    let version = docker(&[
        "run",
        "--rm",
        "--security-opt",
        &profile,
        "ringcore:test",
        "--version",
    ]);
    assert!(version.starts_with("ringcore "), "{version}");
    let version = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "loadgen",
        "ringcore:test",
        "--version",
    ]);
    assert!(version.starts_with("loadgen "), "{version}");
}
