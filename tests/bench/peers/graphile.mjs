// graphile-worker 0.18 for the side-by-side benchmark: a no-op task "noop".
//   node graphile.mjs migrate|work  (DATABASE_URL; BENCH_MODE=batched|default; BENCH_TRACE=1)
import { run, runMigrations } from "graphile-worker";

const connectionString = process.env.DATABASE_URL;
const trace = !!process.env.BENCH_TRACE;
const batched = (process.env.BENCH_MODE || "batched") === "batched";
const now_us = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

if (process.argv[2] === "migrate") {
  await runMigrations({ connectionString });
  process.exit(0);
}
const preset = batched
  ? { worker: { connectionString, concurrentJobs: 10, localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
  : { worker: { connectionString } };
const runner = await run({
  connectionString,
  preset,
  noHandleSignals: false,
  taskList: {
    noop: async (_payload, helpers) => {
      if (trace) process.stdout.write(`TRACE ${helpers.job.id} ${now_us()}\n`);
    },
  },
});
await runner.promise;
