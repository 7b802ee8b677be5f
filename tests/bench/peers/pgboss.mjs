// pg-boss 12 for the side-by-side benchmark: a no-op queue "noop".
//   node pgboss.mjs setup|enqueue N|work  (DATABASE_URL; BENCH_MODE=batched|default; BENCH_TRACE=1)
import { PgBoss } from "pg-boss";

const connectionString = process.env.DATABASE_URL;
const trace = !!process.env.BENCH_TRACE;
const batched = (process.env.BENCH_MODE || "batched") === "batched";
const now_us = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const boss = new PgBoss({ connectionString });
boss.on("error", (e) => console.error(e));
await boss.start();
const cmd = process.argv[2];
if (cmd === "setup") {
  await boss.createQueue("noop");
  await boss.stop({ graceful: false });
  process.exit(0);
}
if (cmd === "enqueue") {
  const n = Number(process.argv[3]);
  for (let i = 0; i < n; i += 10000) {
    const jobs = Array.from({ length: Math.min(10000, n - i) }, () => ({ data: {} }));
    await boss.insert("noop", jobs);
  }
  await boss.stop({ graceful: false });
  process.exit(0);
}
const handler = async (jobs) => {
  if (trace) for (const j of jobs) process.stdout.write(`TRACE ${j.id} ${now_us()}\n`);
};
if (batched) {
  for (let i = 0; i < 4; i++) await boss.work("noop", { batchSize: 500, pollingIntervalSeconds: 0.5, burstWhenBatchFull: true }, handler);
} else {
  await boss.work("noop", handler);
}
const stop = async () => {
  await boss.stop({ graceful: false, timeout: 1000 });
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
