#!/usr/bin/python3
"""What the container and Kubernetes files promise must agree with the built binary.

packaging/container/Dockerfile, compose.yaml and packaging/kubernetes/*.yaml are parsed (no
container engine or cluster runs here) and checked: every agentcron command line they hold is
accepted by the binary, every configuration they carry passes `config check`, probe paths and
ports match metrics.listen, grace periods cover the configuration's shutdown budget, and the
security settings a worker needs are there.

usage: manifests_test.py AGENTCRON_BINARY SOURCE_DIR
"""
import glob, os, re, shlex, subprocess, sys, tempfile
import yaml

BIN, SRC = sys.argv[1], sys.argv[2]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def agentcron(args, config_text=None):
    """Runs the binary with `args`; a --config path inside the image is replaced by a file holding
    `config_text`. DATABASE_URL is a placeholder (nothing connects)."""
    env = dict(os.environ, DATABASE_URL="postgres://agentcron@db.invalid/agentcron")
    env.pop("JOURNAL_STREAM", None)
    args = list(args)
    tmp = None
    if "--config" in args and config_text is not None:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        tmp.write(config_text)
        tmp.close()
        args[args.index("--config") + 1] = tmp.name
    try:
        return subprocess.run([BIN] + args, env=env, capture_output=True, text=True, timeout=30)
    finally:
        if tmp:
            os.unlink(tmp.name)


def split_command(args):
    """Global options, then the command and its options (`run`, `once --drain`, …)."""
    for i, a in enumerate(args):
        if a in ("run", "once", "migrate", "enqueue", "status", "probe", "config", "cron"):
            return args[:i], args[i:]
    return args, []


def budget_seconds(globals_, config_text):
    r = agentcron(globals_ + ["config", "check"], config_text)
    check(r.returncode == 0, f"config check accepts the configuration of {globals_}: {r.stderr.strip()[:200]}")
    m = re.search(r"shutdown budget: (?:(\d+)m)?(\d+(?:\.\d+)?)s", r.stdout)
    check(m is not None, "config check prints the shutdown budget")
    return (int(m.group(1) or 0) * 60 + float(m.group(2))) if m else 1e9


def accepted(args, config_text, where):
    """The command line parses: its command's --help exits 0, and the configuration checks."""
    globals_, command = split_command(args)
    check(bool(command), f"{where}: {args} names a command")
    r = agentcron(globals_ + command + ["--help"], config_text)
    check(r.returncode == 0, f"{where}: the binary accepts {shlex.join(args)} ({r.stderr.strip()[:200]})")
    return globals_


def metrics_port(config_text):
    m = re.search(r'^listen\s*=\s*"[^"]*:(\d+)"', config_text, re.M)
    return int(m.group(1)) if m else None


# ---- the container ------------------------------------------------------------------------
dockerfile = open(os.path.join(SRC, "packaging/container/Dockerfile")).read()
final = dockerfile[dockerfile.rfind("\nFROM "):]
check("STOPSIGNAL SIGTERM" in final, "Dockerfile: STOPSIGNAL SIGTERM")
user = re.search(r"^USER (\S+)", final, re.M)
check(user is not None and not user.group(1).startswith(("root", "0")), "Dockerfile: a non-root USER")
check(re.search(r'HEALTHCHECK .*CMD \["agentcron", "probe"\]', final) is not None, "Dockerfile: HEALTHCHECK through agentcron probe")
check(re.search(r'^ENTRYPOINT \["agentcron"\]', final, re.M) is not None, "Dockerfile: agentcron is the entry point (PID 1)")
check("AGENTCRON_" not in final, "Dockerfile: no AGENTCRON_* environment (it would outrank a mounted configuration)")
image_config = re.search(r"^COPY (\S+) /etc/agentcron/agentcron.toml", final, re.M)
check(image_config is not None, "Dockerfile: the image's configuration file")
image_toml = open(os.path.join(SRC, image_config.group(1))).read() if image_config else ""
expose = re.search(r"^EXPOSE (\d+)", final, re.M)
check(expose is not None and metrics_port(image_toml) == int(expose.group(1)), "Dockerfile: EXPOSE is the image's metrics.listen port")
r = agentcron(["--config", "/etc/agentcron/agentcron.toml", "config", "check"], image_toml)
check(r.returncode == 0, f"the image's configuration passes config check ({r.stderr.strip()[:200]})")
r = subprocess.run([BIN, "probe", "--help"], capture_output=True, text=True)
check(r.returncode == 0, "the binary has the probe command the HEALTHCHECK runs")

compose = yaml.safe_load(open(os.path.join(SRC, "packaging/container/compose.yaml")))
demo = open(os.path.join(SRC, "packaging/container/demo.toml")).read()
for name, svc in compose["services"].items():
    if svc.get("image", "").startswith("agentcron") or "build" in svc:
        args = svc.get("command", ["run"])
        text = demo if "--config" in args else ""
        globals_ = accepted(args, text, f"compose {name}")
        if "run" in args:
            grace = svc.get("stop_grace_period", "10s")
            secs = int(grace.rstrip("s"))
            check(secs >= budget_seconds(globals_, text), f"compose {name}: stop_grace_period {grace} covers the shutdown budget")
            port = metrics_port(text)
            check(any(str(port) in str(p) for p in svc.get("ports", [])), f"compose {name}: publishes the metrics port {port}")

# ---- Kubernetes ---------------------------------------------------------------------------
docs = []
for path in sorted(glob.glob(os.path.join(SRC, "packaging/kubernetes/*.yaml"))):
    docs += [d for d in yaml.safe_load_all(open(path)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
for kind in ("ConfigMap", "Deployment", "CronJob", "PodDisruptionBudget"):
    check(kind in by_kind, f"kubernetes: a {kind}")
config_text = by_kind["ConfigMap"][0]["data"]["agentcron.toml"]
port = metrics_port(config_text)
check(port is not None and '"0.0.0.0:' in config_text, "kubernetes: metrics.listen on every address")

for kind in ("Deployment", "CronJob"):
    for d in by_kind.get(kind, []):
        spec = d["spec"]["template"]["spec"] if kind == "Deployment" else d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        where = f"{kind} {d['metadata']['name']}"
        check(spec.get("securityContext", {}).get("runAsNonRoot") is True, f"{where}: runAsNonRoot")
        for c in spec["containers"]:
            globals_ = accepted(c.get("command", []) + c.get("args", []), config_text, where)
            check(c.get("securityContext", {}).get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
            env = {e["name"]: e for e in c.get("env", [])}
            check("secretKeyRef" in env.get("DATABASE_URL", {}).get("valueFrom", {}), f"{where}: DATABASE_URL from a Secret")
            check(spec.get("terminationGracePeriodSeconds", 30) >= budget_seconds(globals_, config_text),
                  f"{where}: terminationGracePeriodSeconds covers the shutdown budget")
            if kind == "Deployment":
                check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}, f"{where}: liveness is /healthz on {port}")
                check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}, f"{where}: readiness is /readyz on {port}")
                check(any(p["containerPort"] == port for p in c.get("ports", [])), f"{where}: exposes {port}")
                check("limits" in c.get("resources", {}) and "requests" in c["resources"], f"{where}: requests and limits")
        if kind == "CronJob":
            check(d["spec"].get("concurrencyPolicy") == "Forbid", f"{where}: concurrencyPolicy Forbid")
            args = spec["containers"][0].get("args", [])
            check("once" in args and "--drain" in args, f"{where}: runs once --drain")
pdb = by_kind["PodDisruptionBudget"][0]["spec"]["selector"]["matchLabels"]
deployment = by_kind["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
check(all(deployment.get(k) == v for k, v in pdb.items()), "kubernetes: the PodDisruptionBudget selects the Deployment's pods")

# packaging/monitoring: the alert rules are a Prometheus rules file, the dashboard a Grafana
# dashboard; which metric names they may use is the e2e MonitoringE2E test's business.
import json
rules = yaml.safe_load(open(os.path.join(SRC, "packaging/monitoring/agentcron-alerts.yml")))
alerts = [r for g in rules["groups"] for r in g["rules"]]
check(len(alerts) >= 6, "alerts: at least six rules")
for r in alerts:
    where = f"alert {r.get('alert')}"
    check(set(r) >= {"alert", "expr", "labels", "annotations"}, f"{where}: alert, expr, labels, annotations")
    check(r.get("labels", {}).get("severity") in ("warning", "critical"), f"{where}: severity warning or critical")
    check("summary" in r.get("annotations", {}) and "description" in r.get("annotations", {}), f"{where}: summary and description")
    check(re.fullmatch(r"\d+[smh]", str(r.get("for", "0s"))) is not None, f"{where}: a duration in for")
    check(r["expr"].count("(") == r["expr"].count(")"), f"{where}: balanced parentheses")
dashboard = json.load(open(os.path.join(SRC, "packaging/monitoring/agentcron-dashboard.json")))
panels = [p for p in dashboard.get("panels", []) if p.get("type") != "row"]
check(dashboard.get("uid") == "agentcron" and len(panels) >= 8, "dashboard: uid agentcron and its panels")
for p in panels:
    check(all(t.get("expr") for t in p.get("targets", [])) and p.get("targets"), f"dashboard panel {p.get('title')}: queries")

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
