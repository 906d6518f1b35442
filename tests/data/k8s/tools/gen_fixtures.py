"""Writes API-server-shaped responses and kubectl List files for the tests."""
import hashlib, json, os, copy, sys

ROOT = sys.argv[1]

def dg(s): return "sha256:" + hashlib.sha256(s.encode()).hexdigest()
def uid(s):
    h = hashlib.sha256(("uid" + s).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
def cid(s): return hashlib.sha256(("cid" + s).encode()).hexdigest()

RV = [48210000]
def rv():
    RV[0] += 17
    return str(RV[0])

TS = "2026-11-27T09:14:03Z"

def owner(kind, name, api="apps/v1"):
    return {"apiVersion": api, "kind": kind, "name": name, "uid": uid(kind + name),
            "controller": True, "blockOwnerDeletion": True}

def container(name, image, extra=None):
    c = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
         "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
         "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                             "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
         "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
    if extra: c.update(extra)
    return c

def podspec(containers, node="worker-1", init=None):
    s = {"containers": containers, "dnsPolicy": "ClusterFirst", "enableServiceLinks": True,
         "nodeName": node, "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
         "restartPolicy": "Always", "schedulerName": "default-scheduler",
         "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
         "serviceAccount": "default", "serviceAccountName": "default",
         "terminationGracePeriodSeconds": 30,
         "tolerations": [{"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                         {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}]}
    if init: s["initContainers"] = init
    return s

def status(name, image, image_id, running=True, restart=0, runtime="containerd"):
    st = {"name": name, "image": image, "imageID": image_id,
          "containerID": f"{runtime}://{cid(name + image_id + str(restart))}",
          "lastState": {}, "ready": running, "restartCount": restart, "started": running,
          "state": {"running": {"startedAt": "2026-11-27T09:14:09Z"}} if running else
                   {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}
    if not running:
        st["containerID"] = None
        del st["containerID"]
    return st

def pod(ns, name, spec, statuses, labels, owners=None, init_statuses=None, eph=None, eph_statuses=None, phase="Running"):
    p = {"metadata": {"name": name, "namespace": ns, "uid": uid(ns + name), "resourceVersion": rv(),
                      "creationTimestamp": TS, "labels": labels},
         "spec": spec,
         "status": {"phase": phase, "hostIP": "10.0.3.21", "hostIPs": [{"ip": "10.0.3.21"}],
                    "podIP": "10.244.1.37", "podIPs": [{"ip": "10.244.1.37"}], "qosClass": "Burstable",
                    "startTime": TS,
                    "conditions": [{"type": t, "status": "True", "lastProbeTime": None,
                                    "lastTransitionTime": TS} for t in
                                   ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]],
                    "containerStatuses": statuses}}
    if owners:
        p["metadata"]["ownerReferences"] = owners
        p["metadata"]["generateName"] = name.rsplit("-", 1)[0] + "-"
    if init_statuses: p["status"]["initContainerStatuses"] = init_statuses
    if eph:
        p["spec"]["ephemeralContainers"] = eph
        p["status"]["ephemeralContainerStatuses"] = eph_statuses
    return p

def template(labels, spec):
    s = copy.deepcopy(spec)
    for k in ["nodeName", "serviceAccount", "enableServiceLinks", "preemptionPolicy", "priority", "tolerations"]:
        s.pop(k, None)
    return {"metadata": {"labels": labels}, "spec": s}

def meta(ns, name, kind, labels, owners=None, gen=1):
    m = {"name": name, "namespace": ns, "uid": uid(kind + name), "resourceVersion": rv(), "generation": gen,
         "creationTimestamp": "2026-11-20T16:02:44Z", "labels": labels,
         "annotations": {}}
    if owners: m["ownerReferences"] = owners
    return m

def deployment(ns, name, labels, spec, rev=3):
    return {"metadata": dict(meta(ns, name, "Deployment", labels), annotations={"deployment.kubernetes.io/revision": str(rev)}),
            "spec": {"replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                     "selector": {"matchLabels": {"app": labels["app"]}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                     "template": template(labels, spec)},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}}

def replicaset(ns, name, deploy, labels, spec, h):
    l = dict(labels, **{"pod-template-hash": h})
    return {"metadata": dict(meta(ns, name, "ReplicaSet", l, [owner("Deployment", deploy)]),
                             annotations={"deployment.kubernetes.io/desired-replicas": "1", "deployment.kubernetes.io/max-replicas": "2", "deployment.kubernetes.io/revision": "3"}),
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": labels["app"], "pod-template-hash": h}},
                     "template": template(l, spec)},
            "status": {"observedGeneration": 1, "replicas": 1, "fullyLabeledReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}}

REG = "registry.example.com/shop"
objs = {}  # ns -> {"pods": [], "replicasets": [], ...}
def add(ns, res, o):
    objs.setdefault(ns, {}).setdefault(res, []).append(o)

def deploy_pod(ns, app, approved_image, rs_image, running_id, h, suffix, node="worker-1"):
    labels = {"app": app, "app.kubernetes.io/part-of": "shop"}
    dspec = podspec([container(app, approved_image)], node)
    add(ns, "deployments", deployment(ns, app, labels, dspec))
    rspec = podspec([container(app, rs_image)], node)
    rsname = f"{app}-{h}"
    add(ns, "replicasets", replicaset(ns, rsname, app, labels, rspec, h))
    pl = dict(labels, **{"pod-template-hash": h})
    p = pod(ns, f"{rsname}-{suffix}", rspec, [status(app, rs_image.split("@")[0] if "@" in rs_image else rs_image, running_id)],
            pl, [owner("ReplicaSet", rsname)])
    add(ns, "pods", p)
    return p

# good: Deployment pinned & matching; CronJob->Job pod; DaemonSet pod.
WEB = dg("web-1.4.2")
deploy_pod("good", "web", f"{REG}/web:1.4.2@{WEB}", f"{REG}/web:1.4.2@{WEB}", f"{REG}/web@{WEB}", "6d8f9b7c5", "x7k2p")
BK = dg("backup-0.9")
jl = {"app": "backup"}
bspec = podspec([container("backup", f"{REG}/backup:0.9@{BK}")])
bspec["restartPolicy"] = "OnFailure"
add("good", "cronjobs", {"metadata": meta("good", "backup", "CronJob", jl),
    "spec": {"schedule": "0 3 * * *", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1, "suspend": False,
             "jobTemplate": {"metadata": {}, "spec": {"backoffLimit": 2, "template": template(jl, bspec)}}},
    "status": {"lastScheduleTime": "2026-11-29T03:00:00Z"}})
add("good", "jobs", {"metadata": meta("good", "backup-29405700", "Job", jl, [owner("CronJob", "backup", "batch/v1")]),
    "spec": {"backoffLimit": 2, "completions": 1, "parallelism": 1, "template": template(jl, bspec)},
    "status": {"active": 1, "startTime": "2026-11-29T03:00:00Z"}})
add("good", "pods", pod("good", "backup-29405700-mv6tq", bspec, [status("backup", f"{REG}/backup:0.9", f"{REG}/backup@{BK}")],
    dict(jl, **{"batch.kubernetes.io/job-name": "backup-29405700"}), [owner("Job", "backup-29405700", "batch/v1")]))
NE = dg("node-exporter-1.8.2")
nl = {"app": "node-exporter"}
nspec = podspec([container("node-exporter", f"quay.io/prometheus/node-exporter:v1.8.2@{NE}")])
add("good", "daemonsets", {"metadata": meta("good", "node-exporter", "DaemonSet", nl),
    "spec": {"selector": {"matchLabels": nl}, "template": template(nl, nspec), "updateStrategy": {"type": "RollingUpdate"}},
    "status": {"currentNumberScheduled": 1, "desiredNumberScheduled": 1, "numberReady": 1}})
add("good", "pods", pod("good", "node-exporter-8qzvl", nspec, [status("node-exporter", f"quay.io/prometheus/node-exporter:v1.8.2", f"quay.io/prometheus/node-exporter@{NE}")],
    dict(nl, **{"controller-revision-hash": "7c9d5b8f6d", "pod-template-generation": "1"}), [owner("DaemonSet", "node-exporter")]))

# tags: a StatefulSet approving redis:7.2 by tag.
RD = dg("redis-7.2.5")
sl = {"app": "cache"}
sspec = podspec([container("redis", "redis:7.2")])
add("tags", "statefulsets", {"metadata": meta("tags", "cache", "StatefulSet", sl),
    "spec": {"replicas": 1, "serviceName": "cache", "podManagementPolicy": "OrderedReady", "selector": {"matchLabels": sl},
             "template": template(sl, sspec), "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}},
    "status": {"replicas": 1, "readyReplicas": 1, "currentReplicas": 1, "updatedReplicas": 1}})
add("tags", "pods", pod("tags", "cache-0", sspec, [status("redis", "docker.io/library/redis:7.2", f"docker.io/library/redis@{RD}")],
    dict(sl, **{"apps.kubernetes.io/pod-index": "0", "statefulset.kubernetes.io/pod-name": "cache-0"}), [owner("StatefulSet", "cache")]))

# drift: the Deployment approves api@A; the pod runs api@B (digest mismatch).
A, B = dg("api-2.0.1"), dg("api-2.0.1-repushed")
# Someone edited the ReplicaSet's template (kubectl edit rs) to a re-pushed
# image: its pods run B while the Deployment still approves A.
deploy_pod("drift", "api", f"{REG}/api:2.0.1@{A}", f"{REG}/api:2.0.1@{B}", f"{REG}/api@{B}", "5f7c8d9b6", "q4m8n")

# broken: the Deployment pins the seed's malformed digest.
W = dg("worker-3.1")
deploy_pod("broken", "worker", f"{REG}/worker:3.1@sha256:abc123...", f"{REG}/worker:3.1@{W}", f"{REG}/worker@{W}", "7b9c6d5f4", "z2r9t")

# adhoc: a bare pod nobody approved.
NS_ = dg("netshoot-0.13")
add("adhoc", "pods", pod("adhoc", "netshoot", podspec([container("netshoot", f"docker.io/nicolaka/netshoot:v0.13@{NS_}")]),
    [status("netshoot", "docker.io/nicolaka/netshoot:v0.13", f"docker.io/nicolaka/netshoot@{NS_}")], {"run": "netshoot"}))

API = {"pods": ("v1", "PodList", "/api/v1"), "replicasets": ("apps/v1", "ReplicaSetList", "/apis/apps/v1"),
       "deployments": ("apps/v1", "DeploymentList", "/apis/apps/v1"), "statefulsets": ("apps/v1", "StatefulSetList", "/apis/apps/v1"),
       "daemonsets": ("apps/v1", "DaemonSetList", "/apis/apps/v1"), "jobs": ("batch/v1", "JobList", "/apis/batch/v1"),
       "cronjobs": ("batch/v1", "CronJobList", "/apis/batch/v1")}
KIND = {"pods": "Pod", "replicasets": "ReplicaSet", "deployments": "Deployment", "statefulsets": "StatefulSet",
        "daemonsets": "DaemonSet", "jobs": "Job", "cronjobs": "CronJob"}

def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")

def listobj(res, items):
    api, kind, _ = API[res]
    return {"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": rv()}, "items": items}

# API server responses: items carry no kind/apiVersion, as the server sends them.
allres = {}
for ns, by in objs.items():
    for res, items in by.items():
        _, _, prefix = API[res]
        write(f"{ROOT}/api{prefix}/namespaces/{ns}/{res}.json", listobj(res, items))
        allres.setdefault(res, []).extend(items)
for res, items in allres.items():
    _, _, prefix = API[res]
    write(f"{ROOT}/api{prefix}/{res}.json", listobj(res, items))

# kubectl get pods,rs,deploy,sts,ds,jobs,cronjobs -n NS -o json: a List with kinds.
for ns, by in objs.items():
    items = []
    for res in ["pods", "replicasets", "deployments", "statefulsets", "daemonsets", "jobs", "cronjobs"]:
        for o in by.get(res, []):
            api, _, _ = API[res]
            items.append(dict({"apiVersion": api, "kind": KIND[res]}, **o))
    write(f"{ROOT}/kubectl/{ns}.json", {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})

# Approved GitOps manifests for --approved: what Git says (YAML, no status).
os.makedirs(f"{ROOT}/approved/apps", exist_ok=True)
with open(f"{ROOT}/approved/apps/web.yaml", "w") as f:
    f.write(f"""# GitOps source of truth for web: the namespace is set at apply time.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: {REG}/web:1.4.2@{WEB}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
    - port: 80
""")
with open(f"{ROOT}/approved/apps/backup.yml", "w") as f:
    f.write(f"""apiVersion: batch/v1
kind: CronJob
metadata:
  name: backup
  namespace: good
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: backup
              image: {REG}/backup:0.9@{BK}
""")
with open(f"{ROOT}/approved/api.yaml", "w") as f:
    f.write(f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: drift
spec:
  selector:
    matchLabels:
      app: api
  template:
    metadata:
      labels:
        app: api
    spec:
      containers:
        - name: api
          image: {REG}/api:2.0.1@{A}
""")

# Enrichment: pods of node worker-1 and a watch stream.
E = "enrich"
ea = pod("shop", "web-6d8f9b7c5-x7k2p", podspec([container("app", f"{REG}/web:1.4.2@{WEB}"), container("envoy", "envoyproxy/envoy:v1.31.2")],
         init=[container("migrate", f"{REG}/web-migrate:1.4.2"), container("log-shipper", "fluent/fluent-bit:3.1", {"restartPolicy": "Always"})]),
         [status("app", f"{REG}/web:1.4.2", f"{REG}/web@{WEB}"), status("envoy", "docker.io/envoyproxy/envoy:v1.31.2", f"docker.io/envoyproxy/envoy@{dg('envoy')}")],
         {"app": "web", "pod-template-hash": "6d8f9b7c5"}, [owner("ReplicaSet", "web-6d8f9b7c5")],
         init_statuses=[dict(status("migrate", f"{REG}/web-migrate:1.4.2", f"{REG}/web-migrate@{dg('migrate')}"),
                             state={"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": TS, "finishedAt": TS}}, ready=False, started=False),
                        status("log-shipper", "docker.io/fluent/fluent-bit:3.1", f"docker.io/fluent/fluent-bit@{dg('fb')}")])
eb = pod("batch", "report-29405700-k2l9d", podspec([container("report", f"{REG}/report:1.0@{dg('report')}")]),
         [status("report", f"{REG}/report:1.0", f"{REG}/report@{dg('report')}", runtime="cri-o")],
         {"app": "report"}, [owner("Job", "report-29405700", "batch/v1")])
write(f"{ROOT}/{E}/api/v1/pods.json", listobj("pods", [ea, eb]))
ec = pod("shop", "api-5f7c8d9b6-q4m8n", podspec([container("api", f"{REG}/api:2.0.1@{A}")]),
         [status("api", f"{REG}/api:2.0.1", f"{REG}/api@{A}")], {"app": "api"}, [owner("ReplicaSet", "api-5f7c8d9b6")])
# a debug container added to web with kubectl debug, and envoy restarted (new id).
ea2 = copy.deepcopy(ea)
ea2["metadata"]["resourceVersion"] = rv()
ea2["spec"]["ephemeralContainers"] = [{"name": "debugger-x8k2f", "image": "busybox:1.36", "stdin": True, "tty": True, "targetContainerName": "app",
                                       "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}]
ea2["status"]["ephemeralContainerStatuses"] = [status("debugger-x8k2f", "docker.io/library/busybox:1.36", f"docker.io/library/busybox@{dg('busybox')}")]
ea2["status"]["containerStatuses"][1] = status("envoy", "docker.io/envoyproxy/envoy:v1.31.2", f"docker.io/envoyproxy/envoy@{dg('envoy')}", restart=1)
ea2["status"]["containerStatuses"][1]["lastState"] = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": TS, "finishedAt": "2026-11-29T10:02:11Z"}}
ebd = copy.deepcopy(eb)
ebd["metadata"]["resourceVersion"] = rv()
ebd["metadata"]["deletionTimestamp"] = "2026-11-29T10:05:00Z"
ebd["metadata"]["deletionGracePeriodSeconds"] = 0
events = [{"type": "ADDED", "object": dict({"kind": "Pod", "apiVersion": "v1"}, **ec)},
          {"type": "MODIFIED", "object": dict({"kind": "Pod", "apiVersion": "v1"}, **ea2)},
          {"type": "DELETED", "object": dict({"kind": "Pod", "apiVersion": "v1"}, **ebd)}]
with open(f"{ROOT}/{E}/api/v1/pods.watch.jsonl", "w") as f:
    for e in events:
        f.write(json.dumps(e, separators=(",", ":")) + "\n")

# --watch: the drifted api pod is replaced by one running the approved digest.
fixed = copy.deepcopy(objs["drift"]["pods"][0])
fixed["metadata"]["name"] = "api-5f7c8d9b6-w9p3c"
fixed["metadata"]["uid"] = uid("drift-fixed")
fixed["metadata"]["resourceVersion"] = rv()
fixed["spec"]["containers"][0]["image"] = f"{REG}/api:2.0.1@{A}"
fixed["status"]["containerStatuses"] = [status("api", f"{REG}/api:2.0.1", f"{REG}/api@{A}")]
write(f"{ROOT}/api/api/v1/namespaces/drift/pods.after.json", listobj("pods", [fixed]))
gone = copy.deepcopy(objs["drift"]["pods"][0])
gone["metadata"]["resourceVersion"] = rv()
with open(f"{ROOT}/api/api/v1/namespaces/drift/pods.watch.jsonl", "w") as f:
    for t, o in [("ADDED", fixed), ("DELETED", gone)]:
        f.write(json.dumps({"type": t, "object": dict({"kind": "Pod", "apiVersion": "v1"}, **o)}, separators=(",", ":")) + "\n")
