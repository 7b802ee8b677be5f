#!/usr/bin/python3
"""How agentcron's statements and drain cost grow with the table: 0 to 10 million rows.

Run through `packaging/agentcron-dev bench-scale`, which starts a throwaway cluster, builds the
binary and calls this. The table grows in steps to --sizes rows of background: 80 % pending tasks
waiting in the future (a large fleet's recurring tasks, six priorities) and 20 % finished ones,
inside their retention: half succeeded an hour ago, half failed ten days ago (kept for 30 days,
past the succeeded ones' 7: the janitor must not step over them). At each size it measures, on
the statements the binary sends (read from src/pg_statements.hpp, so the benchmark cannot drift
from the code):

  claim 10     the claim with 10 tasks due          claim 500   the claim with a backlog of 10,000 due
  rescue       the rescuer's statement               janitor     the janitor's statement
  extend 500   a lease extension of 500 tasks        status      `agentcron status`'s statement

— the median of --reps executions (each in a transaction rolled back, so the table stays as it
is), its shared buffers, and then the drain rate of --drain no-op tasks by the shipped binary
(`once --drain`, a notify handler). At the last size it then adds a due backlog of --due-backlog
tasks and measures the claims and `status` again: a claim's cost must not grow with the tasks
waiting to be claimed either. It writes a markdown table and a data file for gnuplot.
"""
import argparse, os, re, statistics, subprocess, sys, time
import psycopg2

A = argparse.ArgumentParser()
A.add_argument("--build", required=True)
A.add_argument("--server", required=True, help="libpq conninfo of the server, without dbname")
A.add_argument("--sizes", default="0,1000000,3000000,10000000")
A.add_argument("--reps", type=int, default=15)
A.add_argument("--drain", type=int, default=20000)
A.add_argument("--drain-runs", type=int, default=5, help="drains per size; the median is reported")
A.add_argument("--due-backlog", type=int, default=10000000,
               help="at the last size, also claim from a due backlog this large (0: skip)")
A.add_argument("--out", required=True, help="markdown file to write the results into")
A.add_argument("--data", required=True, help="whitespace-separated data file for the plot")
args = A.parse_args()

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
AGENTCRON = os.path.join(args.build, "agentcron")
DB = "bench_scale"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def statements():
    text = open(os.path.join(ROOT, "src", "pg_statements.hpp")).read()
    # name → (sql, hash_by_id, generic_plan): the store runs hash_by_id statements with nested
    # loops off, and generic_plan ones prepared, with their generic plan.
    found = {name: (sql, hash_by_id == "true", generic == "true") for name, sql, hash_by_id, generic in
             re.findall(r'constexpr Statement (k\w+)\{"\w+", R"SQL\((.*?)\)SQL"(?:, (true|false))?(?:, (true|false))?\}',
                        text, re.S)}
    # The claim as claim_statement() writes it (src/pg_task_store.cpp): kClaim for one kind, and
    # kClaim4 for up to four kinds (each kind's range per slot, "@" the slot's number).
    raw = dict(re.findall(r'constexpr const char\* (k\w+) = R"SQL\((.*?)\)SQL"', text, re.S))
    lit = lambda name: "".join(re.findall(r'"([^"]*)"', re.search(name + r' =\s*((?:"[^"]*"\s*)+);', text).group(1)))
    slots = lambda name, n: " UNION ALL ".join(lit(name).replace("@", str(i)) for i in range(1, n + 1))
    sql, hash_by_id, generic = found["kClaim"]
    found["kClaim"] = (sql.replace("@QUOTA@", "").replace("@DUE@", raw["kClaimOneKindSql"]), hash_by_id, generic)
    quota = raw["kClaimQuotaSql"].replace("@RANGES@", slots("kClaimRangeSql", 4)).replace("@LOCKED@", slots("kClaimLockedSql", 4))
    due = raw["kClaimMergeSql"].replace("@MORE@", slots("kClaimMoreSql", 4))
    found["kClaim4"] = (sql.replace("@QUOTA@", quota).replace("@DUE@", due), hash_by_id, generic)
    return found


SQL = statements()
# What the store sets for a generic_plan statement (pg_statements.hpp's kGenericPlanSql).
GENERIC_PLAN_SQL = re.search(r'kGenericPlanSql =\s*"([^"]*)"', open(os.path.join(ROOT, "src", "pg_statements.hpp")).read()).group(1)
kv = dict(p.split("=", 1) for p in args.server.split())
URL = f"postgresql://{kv['user']}@{kv['host']}:{kv['port']}/{DB}"

admin = psycopg2.connect(f"{args.server} dbname=postgres")
admin.autocommit = True
admin.cursor().execute(f"DROP DATABASE IF EXISTS {DB}")
admin.cursor().execute(f"CREATE DATABASE {DB}")
subprocess.run([AGENTCRON, "--log-level", "warn", "--database-url", URL, "migrate"], check=True,
               stdout=subprocess.DEVNULL)
conn = psycopg2.connect(f"{args.server} dbname={DB} application_name=bench-scale")
conn.autocommit = True


def run(sql, *params):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


# The INSERT trigger would NOTIFY for every statement of the fill; nothing listens here.
run("ALTER TABLE agentcron.agent_tasks DISABLE TRIGGER agent_tasks_notify_due")


def grow(from_rows, to_rows):
    """Adds background rows from_rows+1 … to_rows, in chunks of a million."""
    for lo in range(from_rows, to_rows, 1000000):
        hi = min(to_rows, lo + 1000000)
        run("INSERT INTO agentcron.agent_tasks (kind, priority, scheduled_for, cron, status, finished_at) "
            "SELECT 'noop', (g %% 6 - 2)::smallint, "
            "       CASE WHEN g %% 5 = 0 THEN now() - interval '1 day' ELSE now() + interval '1 hour' + (g %% 86400) * interval '1 second' END, "
            "       CASE WHEN g %% 5 <> 0 THEN '0 * * * *' END, "
            "       CASE WHEN g %% 10 = 0 THEN 'failed' WHEN g %% 5 = 0 THEN 'succeeded' ELSE 'pending' END, "
            "       CASE WHEN g %% 10 = 0 THEN now() - interval '10 days' WHEN g %% 5 = 0 THEN now() - interval '1 hour' END "
            "FROM generate_series(%s, %s) g", lo + 1, hi)
        log(f"  {hi:,} background rows")
    run("VACUUM ANALYZE agentcron.agent_tasks")


def explain(sql, params, hash_by_id, generic_plan, raw_sql):
    """Median execution time (ms) and shared buffers of `sql` over --reps runs, each rolled back."""
    times, buffers = [], []
    # The rolled-back runs leave dead row versions behind, as no real worker would: clean them first.
    run("VACUUM agentcron.agent_tasks")
    if generic_plan:  # prepared, as the store sends it, and run with its generic plan
        run("DEALLOCATE ALL")
        run("PREPARE measured AS " + raw_sql.replace("%", "%%"))
        sql = "EXECUTE measured(" + ", ".join(["%s"] * len(params)) + ")"
    for _ in range(args.reps):
        run("BEGIN")
        try:
            run("SET LOCAL jit = off")  # as the store runs every statement (pg_execution.hpp)
            if hash_by_id:
                run("SET LOCAL enable_nestloop = off")
            if generic_plan:
                run(GENERIC_PLAN_SQL)
            plan = "\n".join(r[0] for r in run("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *params))
        finally:
            run("ROLLBACK")
        times.append(float(re.search(r"Execution Time: ([\d.]+)", plan).group(1)))
        top = re.search(r"Buffers: shared([^\n]*)", plan)
        buffers.append(sum(int(x) for x in re.findall(r"(?:hit|read)=(\d+)", top.group(1))) if top else 0)
    return statistics.median(times), int(statistics.median(buffers))


def psql_params(sql):
    """psycopg2 formats %s; the statements use $1… — turn them into %s in order of appearance."""
    order = [int(n) for n in re.findall(r"\$(\d+)", sql)]
    return re.sub(r"\$(\d+)", "%s", sql.replace("%", "%%")), order


def measure(label, name, values):
    sql, hash_by_id, generic_plan = SQL[name]
    text, order = psql_params(sql)
    if generic_plan:  # EXECUTE takes each parameter once, in order
        order = list(range(1, max(order) + 1))
    ms, buf = explain(text, [values[n - 1] for n in order], hash_by_id, generic_plan, sql)
    return label, ms, buf


DUE_PRIORITY_MIX = "(g %% 6 - 2)::smallint"  # %% : psycopg2's escape of %


def add_due(n):
    run(f"INSERT INTO agentcron.agent_tasks (kind, priority, scheduled_for) "
        f"SELECT 'noop', {DUE_PRIORITY_MIX}, now() - interval '1 minute' FROM generate_series(1, %s) g", n)


def clear_due():
    run("DELETE FROM agentcron.agent_tasks WHERE status IN ('pending', 'running') AND scheduled_for <= now()")


def statement_costs():
    out = []
    clear_due()
    add_due(10)
    run("ANALYZE agentcron.agent_tasks")
    out.append(measure("claim 10", "kClaim", ["{noop}", 500, "bench", 60000, 1 << 20, "{}", "{}"]))
    clear_due()
    add_due(10000)
    run("ANALYZE agentcron.agent_tasks")
    out.append(measure("claim 500", "kClaim", ["{noop}", 500, "bench", 60000, 1 << 20, "{}", "{}"]))
    # 500 running tasks of ours for the extension; their leases are live, so the rescuer finds none.
    ids = [r[0] for r in run("UPDATE agentcron.agent_tasks SET status = 'running', locked_by = 'bench', "
                             "locked_until = now() + interval '1 minute', claim_token = id WHERE id IN "
                             "(SELECT id FROM agentcron.agent_tasks WHERE status = 'pending' AND scheduled_for <= now() "
                             "LIMIT 500) RETURNING id")]
    out.append(measure("extend 500", "kExtend", [ids, "bench", 60000, ids]))
    out.append(measure("rescue", "kRescue", [500]))
    out.append(measure("janitor", "kDeleteFinished", [7 * 86400000, 30 * 86400000, 500]))
    out.append(measure("status", "kStatus", [10000]))
    clear_due()
    return out


def drain_rate(n):
    clear_due()
    add_due(n)
    run("VACUUM ANALYZE agentcron.agent_tasks")
    cfg = f"/tmp/agentcron-bench-scale-{os.getpid()}.toml"
    with open(cfg, "w") as f:
        f.write(f'[database]\nurl = "{URL}"\nconnection_limit = 4\n'
                f'[scheduler]\nbatch_size = 500\nconcurrency = 2000\nlisten = false\n'
                f'[log]\nlevel = "warn"\nformat = "json"\n'
                f'[handlers.noop]\ntype = "notify"\nchannel = "bench_scale_done"\n')
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    start = time.monotonic()
    subprocess.run([AGENTCRON, "--config", cfg, "once", "--drain"], check=True, env=env, stdout=subprocess.DEVNULL)
    took = time.monotonic() - start
    left = run("SELECT count(*) FROM agentcron.agent_tasks WHERE status IN ('pending', 'running') AND scheduled_for <= now()")[0][0]
    if left:
        raise SystemExit(f"the drain left {left} due tasks")
    # The drained tasks are finished rows now: delete them so the next size starts alike.
    run("DELETE FROM agentcron.agent_tasks WHERE status = 'succeeded' AND finished_at > now() - interval '10 minutes'")
    return n / took


sizes = [int(s) for s in args.sizes.split(",")]
rows, results = 0, []
for size in sizes:
    log(f"size {size:,}")
    grow(rows, size)
    rows = size
    costs = statement_costs()
    rate = statistics.median(drain_rate(args.drain) for _ in range(args.drain_runs))
    results.append((size, costs, rate))
    log("  " + ", ".join(f"{l} {ms:.2f} ms/{b} buf" for l, ms, b in costs) + f", drain {rate:,.0f}/s")

backlog = []
if args.due_backlog:
    log(f"due backlog {args.due_backlog:,} at {rows:,} rows")
    for label, n in (("10,000 due", 10000), (f"{args.due_backlog:,} due", args.due_backlog)):
        clear_due()
        for start in range(0, n, 1000000):
            add_due(min(1000000, n - start))
        run("VACUUM ANALYZE agentcron.agent_tasks")
        costs = [measure("claim 10", "kClaim", ["{noop}", 10, "bench", 60000, 1 << 20, "{}", "{}"]),
                 measure("claim 500", "kClaim", ["{noop}", 500, "bench", 60000, 1 << 20, "{}", "{}"]),
                 measure("status", "kStatus", [10000])]
        backlog.append((label, costs))
        log("  " + label + ": " + ", ".join(f"{l} {ms:.2f} ms/{b} buf" for l, ms, b in costs))
        if n == 10000:
            # The same backlog split among three kinds, claimed by a worker that takes all three.
            run("UPDATE agentcron.agent_tasks SET kind = (ARRAY['noop', 'mail', 'chat'])[1 + id %% 3] "
                "WHERE status = 'pending' AND scheduled_for <= now()")
            run("VACUUM ANALYZE agentcron.agent_tasks")
            three_kinds = [measure(f"claim {k} of three kinds", "kClaim4", ["{noop,mail,chat}", k, "bench", 60000, 1 << 20, "{}", "{}"])
                           for k in (10, 500)]
            log("  three kinds: " + ", ".join(f"{l} {ms:.2f} ms/{b} buf" for l, ms, b in three_kinds))
    # Behind the largest backlog, ten due tasks of another kind: what a claim costs a worker
    # whose kinds are not the backlog's (a kind paused fleet-wide, or one handled elsewhere).
    run("INSERT INTO agentcron.agent_tasks (kind, scheduled_for) "
        "SELECT 'mail', now() - interval '1 second' FROM generate_series(1, 10)")
    run("ANALYZE agentcron.agent_tasks")
    other_kind = measure("claim 10", "kClaim", ["{mail}", 10, "bench", 60000, 1 << 20, "{}", "{}"])
    log(f"  claim 10 of another kind: {other_kind[1]:.2f} ms/{other_kind[2]} buf")
    clear_due()

labels = [l for l, _, _ in results[0][1]]
with open(args.out, "w") as f:
    f.write(f"Statement latency in ms (median of {args.reps}, server time) and shared buffers, and the drain rate of "
            f"{args.drain:,} no-op tasks (`once --drain`, notify handler, median of {args.drain_runs}), against the rows in `agent_tasks` "
            f"(80 % pending in the future over six priorities, 10 % succeeded an hour ago, 10 % failed ten days ago and kept).\n\n")
    f.write("| rows | " + " | ".join(labels) + " | drain (tasks/s) |\n")
    f.write("|---:|" + "---:|" * len(labels) + "---:|\n")
    for size, costs, rate in results:
        f.write(f"| {size:,} | " + " | ".join(f"{ms:.2f} ms ({b})" for _, ms, b in costs) + f" | {rate:,.0f} |\n")
    if backlog:
        f.write(f"\nWith a due backlog, at {rows:,} rows of background (the same statements; claim 10 and 500 "
                f"take the first 10 or 500 of the backlog):\n\n")
        f.write("| due tasks | " + " | ".join(l for l, _, _ in backlog[0][1]) + " |\n")
        f.write("|---:|" + "---:|" * len(backlog[0][1]) + "\n")
        for label, costs in backlog:
            f.write(f"| {label} | " + " | ".join(f"{ms:.2f} ms ({b})" for _, ms, b in costs) + " |\n")
        f.write(f"\nThe {backlog[0][0]} tasks split among three kinds, claimed by a worker that takes all three "
                f"(the statement for several kinds): " + ", ".join(f"{l} {ms:.2f} ms ({b})" for l, ms, b in three_kinds) + ".\n")
        f.write(f"\nBehind the {backlog[-1][0]} tasks of kind `noop`, a claim of 10 due tasks of another kind "
                f"(a worker whose kinds are not the backlog's: the backlog's kind paused, or handled elsewhere): "
                f"{other_kind[1]:.2f} ms ({other_kind[2]}).\n")
with open(args.data, "w") as f:
    f.write("rows " + " ".join(l.replace(" ", "_") for l in labels) + " drain\n")
    for size, costs, rate in results:
        f.write(f"{size} " + " ".join(f"{ms:.3f}" for _, ms, _ in costs) + f" {rate:.0f}\n")
log(f"results in {args.out}")
