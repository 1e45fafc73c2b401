// The in-process peer of `make bench` (testbed/cmd/benchtable): what a
// JavaScript app on the device would pay to run Silero VAD itself with
// onnxruntime-node, on the same frame and state as agent/api's
// BenchmarkInfer. Prints one JSON line:
//   {"runs":N,"concurrency":C,"nsPerOp":...,"rps":...,"p50us":...,"p99us":...}
// nsPerOp is wall time over runs (what `go test -bench` reports); with
// concurrency C, C session.run calls are kept in flight at once.
//
// usage: node peer.mjs --model silero_vad_v5.onnx [--runs 2000] [--concurrency 1] [--warmup 200]
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";

const { values: args } = parseArgs({
  options: {
    model: { type: "string" },
    runs: { type: "string", default: "2000" },
    concurrency: { type: "string", default: "1" },
    warmup: { type: "string", default: "200" },
  },
});
if (!args.model) {
  console.error("peer.mjs: --model is required");
  process.exit(2);
}
const runs = Number(args.runs), concurrency = Number(args.concurrency), warmup = Number(args.warmup);
for (const [name, v] of [["runs", runs], ["concurrency", concurrency], ["warmup", warmup]]) {
  if (!Number.isInteger(v) || v < 0 || (name !== "warmup" && v < 1)) {
    console.error(`peer.mjs: --${name} ${args[name]}: want a whole number${name === "warmup" ? "" : " of at least 1"}`);
    process.exit(2);
  }
}

// The frame and state of agent/api's sileroFrame and sileroInputs.
const frame = new Float32Array(512);
for (let i = 0; i < 512; i++) {
  frame[i] = 0.5 * Math.sin((2 * Math.PI * 220 * i) / 16000) + 0.1 * Math.sin((2 * Math.PI * 1375 * i) / 16000);
}
const state = new Float32Array(256);
for (let i = 0; i < 256; i++) state[i] = Math.fround(Math.sin(i)) * 0.3;
const feeds = () => ({
  input: new ort.Tensor("float32", frame, [1, 512]),
  state: new ort.Tensor("float32", state, [2, 1, 128]),
  sr: new ort.Tensor("int64", BigInt64Array.from([16000n]), [1]),
});

const session = await ort.InferenceSession.create(args.model);
for (let i = 0; i < warmup; i++) await session.run(feeds());

const lat = new Float64Array(runs);
let next = 0;
async function worker() {
  while (next < runs) {
    const i = next++;
    const t0 = process.hrtime.bigint();
    await session.run(feeds());
    lat[i] = Number(process.hrtime.bigint() - t0);
  }
}
const start = process.hrtime.bigint();
await Promise.all(Array.from({ length: concurrency }, worker));
const wall = Number(process.hrtime.bigint() - start);
lat.sort();
const q = (p) => lat[Math.min(runs - 1, Math.floor(p * runs))] / 1e3;
console.log(JSON.stringify({ runs, concurrency, nsPerOp: wall / runs, rps: (runs * 1e9) / wall, p50us: q(0.5), p99us: q(0.99) }));
await session.release();
