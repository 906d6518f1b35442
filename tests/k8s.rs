//! Kubernetes: audit-manifests on the seed's manifests and on ours,
//! verify-digests against API responses replayed from a loopback HTTP
//! server and against kubectl JSON files, and pod enrichment from a replayed
//! pod list and watch stream.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use driftwatch::enrich::Enricher;
use driftwatch::k8s::enrich::{PodEnricher, SharedIndex, watch_pods};
use driftwatch_sdk::Event;
use driftwatch_sdk::event::Container;
use serde_json::Value;

fn data() -> PathBuf {
    support::root().join("tests/data/k8s")
}

// ---------------------------------------------------------------- replay server

/// A loopback HTTP/1.1 server answering Kubernetes API paths from files:
/// `GET /api/v1/pods` → `<root>/api/v1/pods.json`; a `watch=true` request
/// streams `<root>/<path>.watch.jsonl` one event per chunk once `release()`
/// is called, then holds the stream open like an idle watch. After a path's
/// watch events went out, its list answers from `<path>.after.json` when that
/// exists (the state the events led to). Unknown paths get the API server's
/// 404 Status object.
struct ApiReplay {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl ApiReplay {
    fn start(root: PathBuf) -> ApiReplay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let state: Arc<Streams> = Arc::default();
        let (r, g) = (requests.clone(), gate.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (root, r, g, st) = (root.clone(), r.clone(), g.clone(), state.clone());
                std::thread::spawn(move || serve(conn, &root, &r, &g, &st));
            }
        });
        ApiReplay {
            addr,
            requests,
            gate,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets the watch streams send their events.
    fn release(&self) {
        let (m, c) = &*self.gate;
        *m.lock().unwrap() = true;
        c.notify_all();
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// A kubeconfig pointing at this server.
    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let p = dir.join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: replay\n  cluster:\n    server: {}\ncontexts:\n- name: replay\n  context:\n    cluster: replay\n    user: replay\ncurrent-context: replay\nusers:\n- name: replay\n  user: {{}}\n",
                self.url()
            ),
        )
        .unwrap();
        p
    }
}

/// Which paths' watch events were claimed by a stream, and which were sent.
#[derive(Default)]
struct Streams {
    claimed: Mutex<HashSet<String>>,
    sent: Mutex<HashSet<String>>,
}

fn serve(
    mut conn: TcpStream,
    root: &Path,
    requests: &Mutex<Vec<String>>,
    gate: &(Mutex<bool>, Condvar),
    streams: &Streams,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        // Skip the headers; requests are GETs without a body.
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        requests.lock().unwrap().push(target.clone());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let file = root.join(path.trim_start_matches('/'));
        if query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1")
        {
            let events = std::fs::read_to_string(file.with_extension("watch.jsonl"))
                .ok()
                .filter(|_| streams.claimed.lock().unwrap().insert(path.to_string()));
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            if let Some(events) = events {
                let (m, c) = gate;
                let mut open = m.lock().unwrap();
                while !*open {
                    open = c.wait(open).unwrap();
                }
                drop(open);
                for ev in events.lines() {
                    let chunk = format!("{ev}\n");
                    let _ = conn.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
                    let _ = conn.flush();
                }
                streams.sent.lock().unwrap().insert(path.to_string());
            }
            // Hold the watch open until the client goes away.
            let mut sink = [0u8; 64];
            while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
            return;
        }
        let after = file.with_extension("after.json");
        let chosen = if streams.sent.lock().unwrap().contains(path) && after.exists() {
            after
        } else {
            file.with_extension("json")
        };
        let (status, body) = match std::fs::read(&chosen) {
            Ok(b) => ("200 OK", b),
            Err(_) => (
                "404 Not Found",
                br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#
                    .to_vec(),
            ),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&body).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- helpers

fn run(args: &[&str]) -> Output {
    support::bin()
        .args(args)
        .current_dir(support::root())
        .output()
        .expect("running driftwatch")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The table row of `pod`/`container`, as printed.
fn row<'a>(table: &'a str, pod: &str, container: &str) -> &'a str {
    table
        .lines()
        .find(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[2] == pod && cols[3] == container
        })
        .unwrap_or_else(|| panic!("no row for {pod}/{container} in\n{table}"))
}

fn digest(s: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(s.as_bytes())))
}

// ---------------------------------------------------------------- audit

fn audit_json(paths: &[&str]) -> (i32, Value) {
    let mut args = vec!["audit-manifests", "--json"];
    args.extend_from_slice(paths);
    let out = run(&args);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), support::stderr(&out)));
    (code(&out), v)
}

/// (rule, object, container, line) of every violation.
fn violations(report: &Value) -> BTreeSet<(String, String, String, u64)> {
    report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["rule"].as_str().unwrap().to_string(),
                v["object"].as_str().unwrap().to_string(),
                v["container"].as_str().unwrap_or("-").to_string(),
                v["line"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn audit_reports_exactly_whats_wrong_with_the_seed() {
    // The seed's Deployment sets every securityContext field the seed
    // recommends, at container level, and gives both emptyDirs a sizeLimit;
    // its namespace carries all three restricted labels. What is wrong is
    // the image: `sha256:abc123...` is not a digest (64 hex digits), so the
    // image is pinned by nothing at all.
    let (rc, report) = audit_json(&["tests/data/k8s/seed"]);
    assert_eq!(rc, 1, "{report:#}");
    assert_eq!(report["files"], 2);
    assert_eq!(report["objects"], 2);
    let got = violations(&report);
    let want: BTreeSet<_> = [(
        "DW005".to_string(),
        "Deployment/immutable-app".to_string(),
        "app".to_string(),
        11,
    )]
    .into();
    assert_eq!(got, want, "{report:#}");
    let v = &report["violations"][0];
    assert!(
        v["message"].as_str().unwrap().contains("sha256:abc123..."),
        "{v}"
    );
    assert!(v["fix"].as_str().unwrap().contains("64"), "{v}");
    assert!(
        v["file"]
            .as_str()
            .unwrap()
            .ends_with("seed/deployment.yaml")
    );

    // The table says the same, with file:line.
    let out = run(&["audit-manifests", "tests/data/k8s/seed"]);
    assert_eq!(code(&out), 1);
    let t = stdout(&out);
    assert!(t.contains("tests/data/k8s/seed/deployment.yaml:11"), "{t}");
    assert!(t.contains("DW005 image-digest-valid"), "{t}");
    assert!(t.contains("2 file(s), 2 object(s): 1 violation(s)"), "{t}");

    // The namespace alone is clean.
    let out = run(&["audit-manifests", "tests/data/k8s/seed/namespace.yaml"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}

#[test]
fn audit_sarif_has_the_required_fields() {
    let out = run(&["audit-manifests", "--sarif", "tests/data/k8s/seed"]);
    assert_eq!(code(&out), 1);
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["version"], "2.1.0");
    assert!(s["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run0 = &s["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "driftwatch");
    let rules = run0["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 9);
    assert!(rules.iter().all(|r| r["id"].is_string()
        && r["shortDescription"]["text"].is_string()
        && r["help"]["text"].is_string()));
    let results = run0["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!(r["ruleId"], "DW005");
    assert_eq!(
        rules[r["ruleIndex"].as_u64().unwrap() as usize]["id"],
        "DW005"
    );
    assert_eq!(r["level"], "error");
    assert!(
        r["message"]["text"]
            .as_str()
            .unwrap()
            .contains("sha256:abc123...")
    );
    let loc = &r["locations"][0]["physicalLocation"];
    assert_eq!(
        loc["artifactLocation"]["uri"],
        "tests/data/k8s/seed/deployment.yaml"
    );
    assert_eq!(loc["region"]["startLine"], 11);
    assert_eq!(
        r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
        "Deployment/immutable-app/app"
    );
}

#[test]
fn audit_checks_every_rule_in_every_workload_kind() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    let good = "registry.example.com/app:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(
        dir.path().join("all.yaml"),
        format!(
            r#"apiVersion: v1
kind: Namespace
metadata:
  name: loose
  labels:
    pod-security.kubernetes.io/enforce: baseline
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
  namespace: loose
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        spec:
          securityContext:
            runAsNonRoot: true
          initContainers:
            - name: init
              image: busybox
              securityContext:
                readOnlyRootFilesystem: true
                allowPrivilegeEscalation: false
                runAsNonRoot: false
          containers:
            - name: job
              image: {good}
              securityContext:
                readOnlyRootFilesystem: true
                allowPrivilegeEscalation: false
              volumeMounts:
                - name: scratch
                  mountPath: /scratch
                - name: host
                  mountPath: /host
                - name: hostro
                  mountPath: /hostro
                  readOnly: true
          volumes:
            - name: scratch
              emptyDir: {{}}
            - name: host
              hostPath:
                path: /var/log
            - name: hostro
              hostPath:
                path: /etc
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: not-a-workload
data:
  image: nginx
"#
        ),
    )
    .unwrap();
    // A kubectl-style JSON List in a nested directory: a Pod with a
    // privileged ephemeral container.
    std::fs::write(
        nested.join("pods.json"),
        format!(
            r#"{{"apiVersion": "v1", "kind": "List", "items": [
  {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p", "namespace": "loose"}},
   "spec": {{"securityContext": {{"runAsNonRoot": true}},
     "containers": [{{"name": "c", "image": "{good}",
       "securityContext": {{"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false}}}}],
     "ephemeralContainers": [{{"name": "dbg", "image": "{good}",
       "securityContext": {{"privileged": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false}}}}]}}}}
]}}"#
        ),
    )
    .unwrap();
    // Not a manifest: ignored by the directory walk.
    std::fs::write(nested.join("notes.txt"), "image: nginx").unwrap();
    let (rc, report) = audit_json(&[dir.path().to_str().unwrap()]);
    assert_eq!(rc, 1, "{report:#}");
    assert_eq!(report["files"], 2);
    assert_eq!(report["objects"], 4);
    let got = violations(&report);
    let s = |r: &str, o: &str, c: &str, l: u64| (r.to_string(), o.to_string(), c.to_string(), l);
    let want: BTreeSet<_> = [
        s("DW009", "Namespace/loose", "-", 6),
        s("DW009", "Namespace/loose", "-", 5),
        s("DW009", "Namespace/loose", "-", 5),
        s("DW004", "CronJob/loose/nightly", "init", 23),
        s("DW003", "CronJob/loose/nightly", "init", 27),
        s("DW006", "CronJob/loose/nightly", "-", 44),
        s("DW008", "CronJob/loose/nightly", "job", 37),
        s("DW007", "Pod/loose/p", "dbg", 7),
    ]
    .into();
    assert_eq!(got, want, "{report:#}");
    // Three namespace labels: enforce is wrong, audit and warn missing.
    let ns_msgs: Vec<&str> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["rule"] == "DW009")
        .map(|v| v["message"].as_str().unwrap())
        .collect();
    assert_eq!(ns_msgs.len(), 3, "{ns_msgs:?}");
    assert!(
        ns_msgs
            .iter()
            .any(|m| m.contains("enforce is \"baseline\""))
    );
}

#[test]
fn audit_reports_unparsable_files_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "kind: Pod\nspec: [1, 2\n").unwrap();
    let out = run(&["audit-manifests", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(stdout(&out).contains("bad.yaml:"), "{}", stdout(&out));
    let out = run(&["audit-manifests", "/nonexistent/manifests"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn audit_of_the_shipped_daemonset_finds_only_what_a_node_sensor_needs() {
    // docs/kubernetes.md explains each of these; anything else is a bug in
    // deploy/kubernetes.
    let (rc, report) = audit_json(&["deploy/kubernetes"]);
    assert_eq!(rc, 1, "{report:#}");
    let got: BTreeSet<(String, String, String)> = violations(&report)
        .into_iter()
        .map(|(r, o, c, _)| (r, o, c))
        .collect();
    let s = |r: &str, o: &str, c: &str| (r.to_string(), o.to_string(), c.to_string());
    let want: BTreeSet<_> = [
        s("DW003", "DaemonSet/driftwatch/driftwatch", "driftwatch"),
        s("DW004", "DaemonSet/driftwatch/driftwatch", "driftwatch"),
        s("DW008", "DaemonSet/driftwatch/driftwatch", "driftwatch"),
        s("DW009", "Namespace/driftwatch", "-"),
    ]
    .into();
    assert_eq!(got, want, "{report:#}");
}

// ---------------------------------------------------------------- verify-digests

const REG: &str = "registry.example.com/shop";

struct Case {
    ns: &'static str,
    code: i32,
    /// (pod, container, status, a detail fragment)
    rows: Vec<(&'static str, &'static str, &'static str, String)>,
}

fn cases() -> Vec<Case> {
    let web = digest("web-1.4.2");
    let (a, b) = (digest("api-2.0.1"), digest("api-2.0.1-repushed"));
    vec![
        Case {
            ns: "good",
            code: 0,
            rows: vec![
                ("web-6d8f9b7c5-x7k2p", "web", "ok", format!("runs {web}")),
                (
                    "backup-29405700-mv6tq",
                    "backup",
                    "ok",
                    format!("runs {}", digest("backup-0.9")),
                ),
                (
                    "node-exporter-8qzvl",
                    "node-exporter",
                    "ok",
                    format!("runs {}", digest("node-exporter-1.8.2")),
                ),
            ],
        },
        Case {
            ns: "tags",
            code: 1,
            rows: vec![(
                "cache-0",
                "redis",
                "mutable-tag",
                format!(
                    "approved image redis:7.2 is not pinned by digest; it runs {}",
                    digest("redis-7.2.5")
                ),
            )],
        },
        Case {
            ns: "drift",
            code: 4,
            rows: vec![(
                "api-5f7c8d9b6-q4m8n",
                "api",
                "digest-mismatch",
                format!("running digest {b} differs from approved digest {a}"),
            )],
        },
        Case {
            ns: "broken",
            code: 3,
            rows: vec![(
                "worker-7b9c6d5f4-z2r9t",
                "worker",
                "malformed-digest",
                format!(
                    "approved image {REG}/worker:3.1@sha256:abc123... pins \"sha256:abc123...\""
                ),
            )],
        },
        Case {
            ns: "adhoc",
            code: 3,
            rows: vec![(
                "netshoot",
                "netshoot",
                "unapproved",
                "bare pod: no workload owns it".to_string(),
            )],
        },
    ]
}

fn check_case(case: &Case, out: &Output) {
    let t = stdout(out);
    assert_eq!(
        code(out),
        case.code,
        "{}: {t}{}",
        case.ns,
        support::stderr(out)
    );
    let data_rows = t
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .count();
    assert_eq!(data_rows, case.rows.len(), "{}: {t}", case.ns);
    for (pod, container, status, detail) in &case.rows {
        let r = row(&t, pod, container);
        assert!(r.starts_with(status), "{}: {r}", case.ns);
        assert!(r.contains(case.ns), "{r}");
        assert!(
            r.contains(detail.as_str()),
            "{}: want {detail:?} in {r}",
            case.ns
        );
    }
    assert!(
        t.contains(&format!("exit code {}", case.code)),
        "{}: {t}",
        case.ns
    );
}

#[test]
fn verify_digests_from_kubectl_files() {
    for case in cases() {
        let file = format!("tests/data/k8s/kubectl/{}.json", case.ns);
        let out = run(&["verify-digests", "--from-file", &file]);
        check_case(&case, &out);
    }
    // All files at once: the worst finding decides the exit code.
    let out = run(&[
        "verify-digests",
        "--from-file",
        "tests/data/k8s/kubectl",
        "--json",
    ]);
    assert_eq!(code(&out), 4);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["containers"].as_array().unwrap().len(), 7);
    assert_eq!(v["summary"]["ok"], 3);
    assert_eq!(v["summary"]["digest-mismatch"], 1);
    let api = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["container"] == "api")
        .unwrap();
    assert_eq!(api["status"], "digest-mismatch");
    assert_eq!(api["level"], "error");
    assert_eq!(api["workload"], "Deployment/api");
    assert_eq!(api["approved_digest"], digest("api-2.0.1"));
    assert_eq!(api["running_digest"], digest("api-2.0.1-repushed"));
    assert_eq!(api["approved_source"], "cluster");
    // --namespace filters offline input too.
    let out = run(&[
        "verify-digests",
        "--from-file",
        "tests/data/k8s/kubectl",
        "-n",
        "tags",
    ]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
}

#[test]
fn verify_digests_against_the_api_server() {
    let server = ApiReplay::start(data().join("api"));
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let kc = kc.to_str().unwrap();
    for case in cases() {
        let out = run(&["verify-digests", "--kubeconfig", kc, "-n", case.ns]);
        check_case(&case, &out);
    }
    let reqs = server.requests();
    // Only the kinds that own the pods are listed, page by page.
    assert!(reqs.contains(&"/api/v1/namespaces/drift/pods?&limit=500".to_string())
        || reqs.iter().any(|r| r.starts_with("/api/v1/namespaces/drift/pods?") && r.contains("limit=500")),
        "{reqs:#?}");
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("/apis/apps/v1/namespaces/drift/replicasets?"))
    );
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("/apis/apps/v1/namespaces/drift/deployments?"))
    );
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("/apis/batch/v1/namespaces/good/cronjobs?"))
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.contains("/namespaces/adhoc/") && r.contains("/apis/"))
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.contains("statefulsets") && !r.contains("/tags/"))
    );

    // Every namespace at once.
    let out = run(&["verify-digests", "--kubeconfig", kc, "--json"]);
    assert_eq!(code(&out), 4, "{}", support::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["containers"].as_array().unwrap().len(), 7);
    let statuses: BTreeSet<&str> = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "ok",
            "mutable-tag",
            "digest-mismatch",
            "malformed-digest",
            "unapproved"
        ]
        .into()
    );

    // An API server that cannot be reached is a failure to run: exit 2.
    let dead = dir.path().join("dead");
    std::fs::create_dir(&dead).unwrap();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kc2 = dead.join("kubeconfig");
    std::fs::write(
        &kc2,
        std::fs::read_to_string(kc)
            .unwrap()
            .replace(&server.url(), &format!("http://{closed}")),
    )
    .unwrap();
    let out = run(&[
        "verify-digests",
        "--kubeconfig",
        kc2.to_str().unwrap(),
        "-n",
        "good",
    ]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(
        support::stderr(&out).contains("listing pods"),
        "{}",
        support::stderr(&out)
    );
}

#[test]
fn verify_digests_against_approved_manifests() {
    // Git approves web (no namespace: matches any) and the backup CronJob,
    // and knows nothing of node-exporter.
    let out = run(&[
        "verify-digests",
        "--from-file",
        "tests/data/k8s/kubectl/good.json",
        "--approved",
        "tests/data/k8s/approved",
    ]);
    let t = stdout(&out);
    assert_eq!(code(&out), 3, "{t}{}", support::stderr(&out));
    assert!(
        row(&t, "web-6d8f9b7c5-x7k2p", "web").starts_with("ok "),
        "{t}"
    );
    assert!(
        row(&t, "backup-29405700-mv6tq", "backup").starts_with("ok "),
        "{t}"
    );
    let ne = row(&t, "node-exporter-8qzvl", "node-exporter");
    assert!(ne.starts_with("unapproved"), "{ne}");
    assert!(
        ne.contains("no approved manifest for DaemonSet/good/node-exporter"),
        "{ne}"
    );

    let out = run(&[
        "verify-digests",
        "--from-file",
        "tests/data/k8s/kubectl/drift.json",
        "--approved",
        "tests/data/k8s/approved",
        "--json",
    ]);
    assert_eq!(code(&out), 4);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["containers"][0];
    assert_eq!(c["status"], "digest-mismatch");
    assert_eq!(c["approved_source"], "tests/data/k8s/approved/api.yaml:1");
}

#[test]
fn verify_digests_exports_findings_through_the_pipeline_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::config(dir.path(), "[outputs.stdout]\nenabled = true\n");
    let out = run(&[
        "verify-digests",
        "--from-file",
        "tests/data/k8s/kubectl",
        "--export",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 4, "{}", support::stderr(&out));
    // The stdout output prints findings; the report moved to stderr.
    let lines = support::json_lines(&out);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let mismatch = lines
        .iter()
        .find(|l| l["rule"] == "Image Digest Mismatch")
        .expect("a mismatch finding");
    assert_eq!(mismatch["priority"], "Critical");
    assert_eq!(mismatch["plugin"], "verify-digests");
    let f = &mismatch["output_fields"];
    assert_eq!(f["k8s.ns.name"], "drift");
    assert_eq!(f["k8s.pod.name"], "api-5f7c8d9b6-q4m8n");
    assert_eq!(f["k8s.workload"], "Deployment/api");
    assert_eq!(f["container.image.repository"], format!("{REG}/api"));
    assert_eq!(f["driftwatch.approved_digest"], digest("api-2.0.1"));
    // Falco's container.id is the 12-character short id.
    assert_eq!(f["container.id"].as_str().unwrap().len(), 12);
    let rules: BTreeSet<&str> = lines.iter().map(|l| l["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules,
        [
            "Image Digest Mismatch",
            "Approved Image Uses Mutable Tag",
            "Approved Image Digest Malformed",
            "Unapproved Container"
        ]
        .into()
    );
    assert!(support::stderr(&out).contains("digest-mismatch"));
}

#[test]
fn verify_digests_watch_rechecks_as_pods_change() {
    let server = ApiReplay::start(data().join("api"));
    let dir = tempfile::tempdir().unwrap();
    let kc = server.kubeconfig(dir.path());
    let mut child = support::bin()
        .args(["verify-digests", "--watch", "-n", "drift", "--kubeconfig"])
        .arg(&kc)
        .current_dir(support::root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
        }
        panic!("no {needle:?} within 30 s; saw {seen:#?}");
    };
    let first = wait_for("exit code 4");
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("digest-mismatch") && l.contains("api-5f7c8d9b6-q4m8n")),
        "{first:#?}"
    );
    // The pod is replaced by one running the approved digest.
    server.release();
    let second = wait_for("exit code 0");
    assert!(
        second
            .iter()
            .any(|l| l.starts_with("ok ") && l.contains("api-5f7c8d9b6-w9p3c")),
        "{second:#?}"
    );
    // SIGINT ends the watch with the last round's exit code.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

// ---------------------------------------------------------------- enrichment

fn event_for(id: &str) -> Event {
    Event {
        container: Some(Container {
            id: id.to_string(),
            ..Container::default()
        }),
        ..Event::default()
    }
}

fn cid(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("cid{s}").as_bytes()))
}

/// The container id the fixture generator gave `name` running `image_id`.
fn container_id(name: &str, image_id: &str, restarts: u32) -> String {
    cid(&format!("{name}{image_id}{restarts}"))
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_follows_the_pods_of_this_node() {
    let server = ApiReplay::start(data().join("enrich"));
    let client = driftwatch::k8s::client::for_url(&server.url()).unwrap();
    let index = SharedIndex::default();
    let task = tokio::spawn(watch_pods(client, Some("worker-1".into()), index.clone()));
    let mut enricher = PodEnricher::new(index.clone());

    let web = format!("{REG}/web@{}", digest("web-1.4.2"));
    let app = container_id("app", &web, 0);
    let envoy_id = format!("docker.io/envoyproxy/envoy@{}", digest("envoy"));
    let envoy0 = container_id("envoy", &envoy_id, 0);
    let envoy1 = container_id("envoy", &envoy_id, 1);
    let shipper = container_id(
        "log-shipper",
        &format!("docker.io/fluent/fluent-bit@{}", digest("fb")),
        0,
    );
    let report = container_id("report", &format!("{REG}/report@{}", digest("report")), 0);
    let api = container_id("api", &format!("{REG}/api@{}", digest("api-2.0.1")), 0);
    let debugger = container_id(
        "debugger-x8k2f",
        &format!("docker.io/library/busybox@{}", digest("busybox")),
        0,
    );

    // The initial list.
    until("the pod list", || index.snapshot().len() >= 5).await;
    let mut ev = event_for(&app);
    enricher.enrich(&mut ev);
    let k = ev.k8s.as_ref().expect("web's app container is known");
    assert_eq!(k.namespace.as_deref(), Some("shop"));
    assert_eq!(k.pod_name.as_deref(), Some("web-6d8f9b7c5-x7k2p"));
    assert_eq!(k.container_name.as_deref(), Some("app"));
    assert_eq!(k.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(k.pod_uid.as_deref().map(str::len), Some(36));
    // The owning workload: the ReplicaSet's Deployment, by pod-template-hash.
    assert_eq!(
        (k.workload_kind.as_deref(), k.workload_name.as_deref()),
        (Some("Deployment"), Some("web"))
    );
    let c = ev.container.as_ref().unwrap();
    assert_eq!(c.image_repository.as_deref(), Some(&*format!("{REG}/web")));
    assert_eq!(c.image_tag.as_deref(), Some("1.4.2"));
    assert_eq!(c.image_digest.as_deref(), Some(&*digest("web-1.4.2")));

    // Init (sidecar) containers, CRI-O ids, the short id form.
    let mut ev = event_for(&shipper);
    enricher.enrich(&mut ev);
    assert_eq!(
        ev.k8s.unwrap().container_name.as_deref(),
        Some("log-shipper")
    );
    let mut ev = event_for(&report);
    enricher.enrich(&mut ev);
    assert_eq!(ev.k8s.unwrap().namespace.as_deref(), Some("batch"));
    let mut ev = event_for(&envoy0[..12]);
    enricher.enrich(&mut ev);
    assert_eq!(ev.k8s.unwrap().container_name.as_deref(), Some("envoy"));

    // What the runtime already said is kept.
    let mut ev = event_for(&app);
    ev.container.as_mut().unwrap().image_repository = Some("from-runtime".into());
    enricher.enrich(&mut ev);
    assert_eq!(
        ev.container.unwrap().image_repository.as_deref(),
        Some("from-runtime")
    );
    // Unknown containers and host processes stay untouched.
    let mut ev = event_for(&cid("nobody"));
    let before = ev.clone();
    enricher.enrich(&mut ev);
    assert_eq!(ev, before);
    let mut host = Event::default();
    enricher.enrich(&mut host);
    assert_eq!(host, Event::default());
    assert!(index.snapshot().get(&api).is_none());

    // The watch: api is added, web gets a debug container and a restarted
    // envoy, the report pod is deleted.
    server.release();
    until("the report pod's deletion", || {
        index.snapshot().get(&report).is_none()
    })
    .await;
    let snap = index.snapshot();
    assert_eq!(snap.get(&api).unwrap().pod_name, "api-5f7c8d9b6-q4m8n");
    assert_eq!(
        snap.get(&debugger).unwrap().container_name,
        "debugger-x8k2f"
    );
    assert_eq!(snap.get(&envoy1).unwrap().container_name, "envoy");
    assert!(
        snap.get(&envoy0).is_none(),
        "the replaced container id is gone"
    );
    assert!(snap.get(&app).is_some());
    let mut ev = event_for(&report);
    enricher.enrich(&mut ev);
    assert_eq!(ev.k8s, None);

    // Only this node's pods were asked for.
    let reqs = server.requests();
    assert!(
        reqs.iter()
            .all(|r| r.contains("fieldSelector=spec.nodeName%3Dworker-1")),
        "{reqs:#?}"
    );
    assert!(reqs.iter().any(|r| r.contains("watch=true")), "{reqs:#?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cluster_breaks_nothing() {
    use driftwatch::config::{K8sConfig, Switch};
    // auto without a usable cluster configuration: enrichment is off.
    let cfg = K8sConfig {
        enabled: Switch::Auto,
        node_name: None,
        kubeconfig: Some("/nonexistent/kubeconfig".into()),
    };
    assert!(
        driftwatch::k8s::enrich::start(&cfg)
            .await
            .unwrap()
            .is_none()
    );
    // Required: the same is an error naming the file.
    let cfg = K8sConfig {
        enabled: Switch::On,
        ..cfg
    };
    let e = driftwatch::k8s::enrich::start(&cfg).await.err().unwrap();
    assert!(e.to_string().contains("/nonexistent/kubeconfig"), "{e}");
    // A configured but unreachable API server: events pass unchanged.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = driftwatch::k8s::client::for_url(&format!("http://{closed}")).unwrap();
    let index = SharedIndex::default();
    let task = tokio::spawn(watch_pods(client, Some("n".into()), index.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut enricher = PodEnricher::new(index);
    let mut ev = event_for(&cid("x"));
    let before = ev.clone();
    enricher.enrich(&mut ev);
    assert_eq!(ev, before);
    task.abort();
}

#[test]
fn the_shipped_configmap_holds_a_valid_pipeline() {
    let path = support::root().join("deploy/kubernetes/configmap.yaml");
    let docs = driftwatch::k8s::manifest::load_file(&path).unwrap();
    let toml = docs[0].value["data"]["pipeline.toml"].as_str().unwrap();
    let cfg = driftwatch::config::Config::parse(toml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.k8s.enabled, driftwatch::config::Switch::On);
    assert_eq!(
        cfg.daemon.cache_dir,
        Path::new("/var/cache/driftwatch/plugins")
    );
    // The DaemonSet mounts the cache emptyDir where the config points.
    let ds = &driftwatch::k8s::manifest::load_file(
        &support::root().join("deploy/kubernetes/daemonset.yaml"),
    )
    .unwrap()[0];
    let mounts = ds
        .value
        .pointer("/spec/template/spec/containers/0/volumeMounts")
        .unwrap();
    assert!(
        mounts
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/var/cache/driftwatch")
    );
}

/// Every shipped manifest against the Kubernetes API schemas, with PyPI's
/// kubernetes-validate (scripts/setup.sh installs it in its venv), strictly:
/// a misspelled or misplaced field fails too.
#[test]
fn the_shipped_manifests_validate_against_the_kubernetes_schemas() {
    let venv = std::env::var("DRIFTWATCH_VENV").unwrap_or_else(|_| "/opt/driftwatch-venv".into());
    let tool = Path::new(&venv).join("bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} not found: run scripts/setup.sh",
        tool.display()
    );
    let dir = support::root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let out = std::process::Command::new(&tool)
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "kubernetes-validate refused the manifests:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It does refuse what is wrong: a field the schema does not have.
    let bad = tempfile::tempdir().unwrap();
    let ds = std::fs::read_to_string(dir.join("daemonset.yaml")).unwrap();
    let broken = ds.replacen("hostPID: true", "hostPID: true\n      hostPIDs: true", 1);
    assert_ne!(broken, ds);
    std::fs::write(bad.path().join("ds.yaml"), broken).unwrap();
    let out = std::process::Command::new(&tool)
        .args(["--strict", "--quiet"])
        .arg(bad.path().join("ds.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown field passed");
}

/// The DaemonSet mounts, read-only, exactly the runtime sockets and state
/// the default `[runtimes]` endpoints and the runtimes' layer directories
/// name, and docs/kubernetes.md says which serves which runtime.
#[test]
fn the_daemonset_mounts_each_runtime_read_only() {
    let ds = &driftwatch::k8s::manifest::load_file(
        &support::root().join("deploy/kubernetes/daemonset.yaml"),
    )
    .unwrap()[0];
    let spec = ds.value.pointer("/spec/template/spec").unwrap();
    let mounts = spec.pointer("/containers/0/volumeMounts").unwrap();
    let volumes = spec["volumes"].as_array().unwrap();
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["hostPath"]["path"].as_str())
            .map(str::to_string)
    };
    let defaults = driftwatch::config::RuntimesConfig::default();
    let wanted = [
        defaults.containerd_socket.clone(),
        defaults.docker_socket.clone(),
        defaults.crio_socket.clone(),
        defaults.podman_root.clone(),
        PathBuf::from("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"),
        PathBuf::from("/var/lib/docker/overlay2"),
    ];
    let docs = std::fs::read_to_string(support::root().join("docs/kubernetes.md")).unwrap();
    for path in &wanted {
        let m = mounts
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"].as_str() == path.to_str())
            .unwrap_or_else(|| panic!("{} is not mounted", path.display()));
        assert_eq!(m["readOnly"], true, "{m}");
        let name = m["name"].as_str().unwrap();
        assert_eq!(
            host_path(name).as_deref(),
            path.to_str(),
            "{name} mounts the host's own path"
        );
        assert!(
            docs.contains(&format!("`{name}`")),
            "docs/kubernetes.md does not say what `{name}` serves"
        );
    }
}
