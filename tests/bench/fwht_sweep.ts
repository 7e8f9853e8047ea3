/**
 * Sweep of the Hadamard butterfly kernel variants on the GPU machine: every
 * variant of kernels/fwht_kernel.ts worth comparing, the kernel it replaces
 * (legacy, a copy of the previous generator) and memory microbenchmarks,
 * timed with timestamp queries in one process, against PyTorch's
 * device-to-device copy measured in the same call. Each variant is first
 * checked against the CPU reference (core/fwht.ts) on 32 rows; a mismatch
 * is reported and its timing skipped.
 *
 * Run: `deno run -A tests/bench/fwht_sweep.ts [--small] [--check] [--final]`
 * (`--check`: only the default variants against core/fwht, through fwhtGpu;
 * `--final`: the third run's short list); writes a JSON
 * summary to $OUT/fwht_sweep.json when OUT is set. Uses the Deno namespace.
 *
 * @module
 */

import {
  cachedPipeline,
  foldGroups,
  type Gpu,
  GpuBatch,
  storageBuffer,
  uploadBuffer,
} from "../../kernels/backend.ts";
import {
  butterflySpec,
  encodeButterfly,
  encodeFwht,
  fwhtGpu,
  fwhtReference,
  prepareFwht,
} from "../../kernels/fwht_kernel.ts";
import type {
  FwhtButterflySpec,
  FwhtLanesSpec,
  FwhtRowsSpec,
} from "../../kernels/fwht_butterfly_wgsl.ts";
import { fwht } from "../../core/fwht.ts";
import { tensor } from "../../core/tensor.ts";
import { benchGpu, gpuSecondsPerUnit, pythonBaselines, randnF32 } from "./_bench.ts";

const small = Deno.args.includes("--small");
const checksOnly = Deno.args.includes("--check");
const final = Deno.args.includes("--final");

// ---- the previous butterfly kernel (baseline), verbatim from kernels/fwht_kernel.ts at d0a4bd3 ----
function paddedLength(n: number): number {
  return n + Math.ceil(n / 16);
}
/**
 * WGSL of the butterfly pass (H_{pow2} ⊗ I_{n/pow2}) on each row, in place,
 * times a scale. One workgroup per row, staged in workgroup memory. Bindings: 0 = X, 1 = parameters
 * {rows, scale}.
 *
 * @param spec Row length and power-of-two order.
 * @returns WGSL source.
 */
function legacyWgsl(spec: { n: number; pow2: number }): string {
  const { n, pow2 } = spec;
  const inner = n / pow2;
  const stages = Math.round(Math.log2(pow2));
  // Rounds of up to 4 stages, largest strides first (the stages commute):
  // each thread takes 2^r elements h apart into registers and runs their r
  // butterfly stages there (no private arrays). The first round reads
  // straight from global memory (coalesced: thread q takes q + c·h); the
  // others go through workgroup memory, one barrier each.
  const rounds: string[] = [];
  for (let top = stages; top > 0; top -= 4) {
    const r = Math.min(4, top), s0 = top - r, g = 1 << r;
    const h = inner * (1 << s0), span = h * g;
    const first = top === stages;
    const body: string[] = [];
    body.push(`  for (var q = t; q < ${n / g}u; q += 256u) {`);
    body.push(`    let base = (q / ${h}u) * ${span}u + q % ${h}u;`);
    for (let c = 0; c < g; c++) {
      body.push(
        first
          ? `    var v${c} = X[row0 + base + ${c * h}u];`
          : `    var v${c} = s[pad(base + ${c * h}u)];`,
      );
    }
    for (let b = 0; b < r; b++) {
      for (let c = 0; c < g; c++) {
        if (c & (1 << b)) continue;
        const d = c + (1 << b);
        body.push(`    { let u = v${c}; v${c} = u + v${d}; v${d} = u - v${d}; }`);
      }
    }
    for (let c = 0; c < g; c++) body.push(`    s[pad(base + ${c * h}u)] = v${c};`);
    body.push(`  }`);
    body.push(`  workgroupBarrier();`);
    rounds.push(body.join("\n"));
  }
  if (stages === 0) {
    rounds.push(
      `  for (var i = t; i < ${n}u; i += 256u) { s[pad(i)] = X[row0 + i]; }\n  workgroupBarrier();`,
    );
  }
  return `
struct Params { rows: u32, scale: f32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<uniform> prm: Params;
var<workgroup> s: array<f32, ${paddedLength(n)}>;
// One padding word per 16: the 16 elements a thread takes at stride 1 fall in distinct banks.
fn pad(i: u32) -> u32 { return i + (i >> 4u); }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= prm.rows) { return; }
  let row0 = row * ${n}u;
${rounds.join("\n")}
  for (var i = t; i < ${n}u; i += 256u) { X[row0 + i] = s[pad(i)] * prm.scale; }
}
`;
}

function encodeLegacy(batch: GpuBatch, n: number, pow2: number, x: GPUBuffer, rows: number): void {
  const pipe = cachedPipeline(batch.gpu, `legacy:${n}:${pow2}`, () => legacyWgsl({ n, pow2 }));
  batch.dispatch(pipe, [
    x,
    batch.uniform([{ u32: rows }, { f32: 1 / Math.sqrt(pow2) }, { u32: 0 }, { u32: 0 }]),
  ], foldGroups(batch.gpu, rows));
}

// ---- memory microbenchmarks: what a row kernel costs before any butterfly ----
const MICRO: Record<string, (n: number) => string> = {
  // out of place, vec4, one element per thread (the bench's WGSL copy)
  copy4: () => `
@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> b: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = g.x + g.y * n.x * 256u;
  if (i < arrayLength(&a)) { b[i] = a[i]; }
}`,
  // out of place, vec4, grid-stride over 1056 workgroups, 4 vec4 in flight per thread
  copyStride: () => `
@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> b: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let s = n.x * 256u;
  let m = arrayLength(&a);
  var i = g.x;
  for (; i + 3u * s < m; i += 4u * s) {
    let v0 = a[i]; let v1 = a[i + s]; let v2 = a[i + 2u * s]; let v3 = a[i + 3u * s];
    b[i] = v0; b[i + s] = v1; b[i + 2u * s] = v2; b[i + 3u * s] = v3;
  }
  for (; i < m; i += s) { b[i] = a[i]; }
}`,
  // in place, scalar, one element per thread
  scale1: () => `
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = g.x + g.y * n.x * 256u;
  if (i < arrayLength(&X)) { X[i] = X[i] * 0.5; }
}`,
  // in place, one workgroup per row, 16 coalesced scalar loads per thread, no workgroup memory
  rowScale: (n) => rowMicro(n, false, false),
  // the same with a row-sized workgroup array that is touched once (its zero-fill and occupancy)
  rowScaleSmem: (n) => rowMicro(n, true, false),
  // a row through workgroup memory: coalesced loads, one barrier, vec4 stores of 16 contiguous
  rowStage: (n) => rowMicro(n, true, true),
  // in place, one workgroup per row, coalesced vec4 loads and stores (4 per thread)
  rowVec4: (n) => rowVec4Micro(n, false, false),
  // the same, 1056 workgroups looping over the rows
  rowVec4P1056: (n) => rowVec4Micro(n, true, false),
  // the same, out of place
  rowVec4Oop: (n) => rowVec4Micro(n, false, true),
  // in place, vec4, one element per thread
  scale4: () => `
@group(0) @binding(0) var<storage, read_write> X: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = g.x + g.y * n.x * 256u;
  if (i < arrayLength(&X)) { X[i] = X[i] * 0.5; }
}`,
};

function rowVec4Micro(n: number, persistent: boolean, oop: boolean): string {
  const per = n / 1024;
  const lines: string[] = [];
  for (let c = 0; c < per; c++) lines.push(`    let p${c} = X[r0 + t + ${c * 256}u];`);
  for (let c = 0; c < per; c++) {
    lines.push(`    ${oop ? "Y" : "X"}[r0 + t + ${c * 256}u] = p${c} * 0.5;`);
  }
  return `
@group(0) @binding(0) var<storage, ${oop ? "read" : "read_write"}> X: array<vec4<f32>>;
${oop ? "@group(0) @binding(1) var<storage, read_write> Y: array<vec4<f32>>;" : ""}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let rows = arrayLength(&X) / ${n / 4}u;
  ${
    persistent
      ? "for (var row = wg.x; row < rows; row += nwg.x) {"
      : "let row = wg.x + wg.y * nwg.x; {"
  }
    let r0 = row * ${n / 4}u;
${lines.join("\n")}
  }
}`;
}

function rowMicro(n: number, smem: boolean, stage: boolean): string {
  const per = n / 256;
  const lines: string[] = [];
  for (let c = 0; c < per; c++) lines.push(`  var v${c} = X[r0 + t + ${c * 256}u];`);
  if (stage) {
    for (let c = 0; c < per; c++) lines.push(`  s[pad(t + ${c * 256}u)] = v${c};`);
    lines.push(`  workgroupBarrier();`);
    for (let c = 0; c < per; c++) lines.push(`  v${c} = s[pad(t * ${per}u + ${c}u)];`);
    for (let c = 0; c < per; c += 4) {
      lines.push(
        `  Y[(r0 + t * ${per}u + ${c}u) >> 2u] = vec4<f32>(v${c}, v${c + 1}, v${c + 2}, v${
          c + 3
        }) * 0.5;`,
      );
    }
  } else {
    if (smem) {
      lines.push(`  s[t] = v0;`, `  workgroupBarrier();`, `  v0 = s[t ^ 1u];`);
    }
    for (let c = 0; c < per; c++) lines.push(`  X[r0 + t + ${c * 256}u] = v${c} * 0.5;`);
  }
  return `
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
${stage ? "@group(0) @binding(1) var<storage, read_write> Y: array<vec4<f32>>;" : ""}
${smem ? `var<workgroup> s: array<f32, ${paddedLength(n)}>;` : ""}
fn pad(i: u32) -> u32 { return i + (i >> 4u); }
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let r0 = (wg.x + wg.y * nwg.x) * ${n}u;
${lines.join("\n")}
}`;
}

async function micro(gpu: Gpu, rows: number, n: number, out: Record<string, number>) {
  const a = uploadBuffer(gpu, randnF32(rows * n, 1));
  const b = storageBuffer(gpu, rows * n * 4);
  const bytes = 2 * rows * n * 4;
  for (const [name, gen] of Object.entries(MICRO)) {
    if (name.startsWith("row") && n % 1024 !== 0) continue; // 4 | n/256 values per thread
    const pipe = cachedPipeline(gpu, `micro:${name}:${n}`, () => gen(n));
    const t = await gpuSecondsPerUnit(gpu, (batch) => {
      if (name === "copy4") {
        batch.dispatch(pipe, [a, b], foldGroups(gpu, Math.ceil(rows * n / 4 / 256)));
      } else if (name === "scale1") {
        batch.dispatch(pipe, [a], foldGroups(gpu, Math.ceil(rows * n / 256)));
      } else if (name === "scale4") {
        batch.dispatch(pipe, [a], foldGroups(gpu, Math.ceil(rows * n / 4 / 256)));
      } else if (name === "rowStage" || name === "rowVec4Oop") {
        batch.dispatch(pipe, [a, b], foldGroups(gpu, rows));
      } else if (name === "copyStride") {
        batch.dispatch(pipe, [a, b], [1056]);
      } else if (name === "rowVec4P1056") {
        batch.dispatch(pipe, [a], [1056]);
      } else {
        batch.dispatch(pipe, [a], foldGroups(gpu, rows));
      }
    }, 10);
    out[`micro ${name} [${rows}, ${n}]`] = bytes / t / 1e9;
    console.log(`micro ${name} [${rows}, ${n}]: ${(bytes / t / 1e9).toFixed(0)} GB/s`);
  }
  a.destroy();
  b.destroy();
}

type Variant = { name: string; spec: FwhtButterflySpec | "legacy" };

/** Checks a variant on 32 rows against core/fwht (H_pow2 ⊗ I, normalized). */
async function check(gpu: Gpu, v: Variant, n: number, pow2: number): Promise<number> {
  const rows = 32, inner = n / pow2;
  const x = randnF32(rows * n, 3);
  const identity = new Float64Array(inner * inner);
  for (let i = 0; i < inner; i++) identity[i * inner + i] = 1;
  const ref = fwht(tensor("f32", [rows, n], x), {
    normalize: true,
    ...(inner > 1 ? { block: { m: inner, data: identity } } : {}),
  }).data;
  const buf = uploadBuffer(gpu, x);
  const out = storageBuffer(gpu, x.byteLength);
  const batch = new GpuBatch(gpu);
  let result = buf;
  if (v.spec === "legacy") encodeLegacy(batch, n, pow2, buf, rows);
  else result = encodeButterfly(batch, v.spec, buf, rows, 1 / Math.sqrt(pow2), out);
  const { data } = await batch.submit([result]);
  buf.destroy();
  out.destroy();
  const y = new Float32Array(data[0]!);
  let num = 0, den = 0;
  for (let i = 0; i < y.length; i++) {
    num += (y[i]! - ref[i]!) ** 2;
    den += ref[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

async function sweep(
  gpu: Gpu,
  rows: number,
  n: number,
  pow2: number,
  variants: Variant[],
  copy: number,
  out: Record<string, number>,
): Promise<void> {
  const x = uploadBuffer(gpu, randnF32(rows * n, 9));
  const y = storageBuffer(gpu, rows * n * 4);
  const bytes = 2 * rows * n * 4;
  for (const v of variants) {
    let err: number;
    try {
      err = await check(gpu, v, n, pow2);
    } catch (e) {
      console.log(`[${rows}, ${n}] ${v.name}: FAILED to build/run: ${e}`);
      continue;
    }
    if (!(err < 1e-5)) {
      console.log(`[${rows}, ${n}] ${v.name}: WRONG (error ${err})`);
      continue;
    }
    let cur = x, other = y;
    const t = await gpuSecondsPerUnit(gpu, (batch) => {
      if (v.spec === "legacy") encodeLegacy(batch, n, pow2, cur, rows);
      else {
        const res = encodeButterfly(batch, v.spec, cur, rows, 1 / Math.sqrt(pow2), other);
        if (res !== cur) [cur, other] = [other, cur];
      }
    }, 10);
    const gbs = bytes / t / 1e9;
    out[`[${rows}, ${n}] ${v.name}`] = gbs;
    console.log(
      `row: [${rows}, ${n}] ${v.name} | ${(t * 1e3).toFixed(4)} ms | ${gbs.toFixed(0)} GB/s | ${
        (100 * gbs / copy).toFixed(1)
      }% of copy | err ${err.toExponential(1)}`,
    );
  }
  x.destroy();
  y.destroy();
}

/** The third run: the chosen default against what might still beat it. */
function finalVariants(n: number): Variant[] {
  const vs: Variant[] = [{ name: "legacy", spec: "legacy" }];
  const lanes = (threads: number, extra: Partial<FwhtLanesSpec> = {}) => {
    const spec: FwhtLanesSpec = {
      kind: "lanes",
      n,
      threads,
      persistent: 0,
      prefetch: false,
      ...extra,
    };
    vs.push({ name: `lanes T${threads} ${JSON.stringify(extra)}`, spec });
  };
  const v4 = { smemVec4: true }, oop = { smemVec4: true, outOfPlace: true };
  lanes(128, oop);
  lanes(128, v4);
  lanes(128, { ...oop, persistent: 792 });
  lanes(128, { ...oop, persistent: 1024, prefetch: true });
  lanes(128, { ...oop, persistent: 1056, prefetch: true });
  lanes(256, oop);
  return vs;
}

function rowsVariants(n: number): Variant[] {
  const vs: Variant[] = [{ name: "legacy", spec: "legacy" }];
  const add = (s: Omit<FwhtRowsSpec, "kind" | "n" | "pow2">) => {
    const spec: FwhtRowsSpec = { kind: "rows", n, pow2: n, ...s };
    const name = `T${s.threads} r${s.radix} R${s.rowsPerGroup} ${s.order}${s.vec4 ? " v4" : ""}${
      s.persistent ? ` P${s.persistent}` : ""
    }`;
    vs.push({ name, spec });
  };
  // The best rows variants of the first sweep (the full grid is in the commit message).
  add({ threads: 256, radix: 4, rowsPerGroup: 1, order: "asc", vec4: true, persistent: 0 });
  add({ threads: 256, radix: 4, rowsPerGroup: 1, order: "asc", vec4: true, persistent: 1056 });
  add({ threads: 128, radix: 5, rowsPerGroup: 1, order: "desc", vec4: true, persistent: 0 });
  add({ threads: 128, radix: 5, rowsPerGroup: 1, order: "desc", vec4: true, persistent: 1056 });
  const lanes = (threads: number, persistent: number, prefetch: boolean) =>
    vs.push({
      name: `lanes T${threads}${persistent ? ` P${persistent}` : ""}${prefetch ? " prefetch" : ""}`,
      spec: { kind: "lanes", n, threads, persistent, prefetch },
    });
  for (const threads of [64, 128, 256, 512]) {
    if (n / threads < 4 || threads < 32) continue;
    lanes(threads, 0, false);
    lanes(threads, 1056, false);
    lanes(threads, 1056, true);
  }
  for (const threads of [128, 256]) {
    for (const persistent of [264, 528, 2112]) lanes(threads, persistent, true);
  }
  return vs;
}

function stridedVariants(n: number, pow2: number): Variant[] {
  const vs: Variant[] = [{ name: "legacy", spec: "legacy" }];
  vs.push({ name: "columns w1", spec: { kind: "columns", n, pow2, width: 1 } });
  if ((n / pow2) % 4 === 0) {
    vs.push({ name: "columns w4", spec: { kind: "columns", n, pow2, width: 4 } });
  }
  for (const radix of [3, 4]) {
    for (const threads of [256, 512]) {
      vs.push({
        name: `rows T${threads} r${radix} desc`,
        spec: {
          kind: "rows",
          n,
          pow2,
          threads,
          radix,
          rowsPerGroup: 1,
          order: "desc",
          vec4: false,
          persistent: 0,
        },
      });
    }
  }
  return vs;
}

const gpu = await benchGpu();
const base = small || checksOnly
  ? null
  : await pythonBaselines<Record<string, number>>("gpu_baselines.py");
if (base) console.log(`PyTorch baselines: ${JSON.stringify(base)}`);
const results: Record<string, number> = {};
const rows = small ? 64 : 4096;
// Warm-up: ~2 s of copies, so that clocks have settled before anything is timed.
{
  const a = uploadBuffer(gpu, randnF32(rows * 4096, 5)), b = storageBuffer(gpu, rows * 4096 * 4);
  const pipe = cachedPipeline(gpu, "micro:copy4:4096", () => MICRO.copy4!(4096));
  for (let r = 0; r < (small || checksOnly ? 1 : 20); r++) {
    const batch = new GpuBatch(gpu);
    for (let i = 0; i < 400; i++) {
      batch.dispatch(pipe, [a, b], foldGroups(gpu, Math.ceil(rows * 4096 / 4 / 256)));
    }
    await batch.submit();
  }
  a.destroy();
  b.destroy();
}
const sizes: [number, number][] = checksOnly
  ? []
  : small
  ? [[1024, 1024], [1376, 32]]
  : [[4096, 4096], [11008, 32]];
for (const [n, pow2] of sizes) {
  const copy = base ? Number(base[`copy_${rows}x${n}_gbs`]) : NaN;
  console.log(`== [${rows}, ${n}] pow2 ${pow2}; torch copy ${copy.toFixed(0)} GB/s`);
  try {
    await size(n, pow2, copy);
  } catch (e) {
    console.log(`[${rows}, ${n}]: FAILED ${e}`);
  }
}

async function size(n: number, pow2: number, copy: number): Promise<void> {
  await micro(gpu, rows, n, results);
  const variants = n !== pow2
    ? (final ? stridedVariants(n, pow2).slice(0, 2) : stridedVariants(n, pow2))
    : final
    ? finalVariants(n)
    : rowsVariants(n);
  await sweep(gpu, rows, n, pow2, variants, copy, results);
  // The whole transform through encodeFwht with the default variant (dense factors included).
  const prepared = prepareFwht(gpu, n);
  const xa = uploadBuffer(gpu, randnF32(rows * n, 9));
  const xb = storageBuffer(gpu, rows * n * 4);
  let cur = xa, other = xb;
  const t = await gpuSecondsPerUnit(gpu, (batch) => {
    const res = encodeFwht(batch, prepared, cur, other, rows, true);
    if (res !== cur) [cur, other] = [other, cur];
  }, 10);
  const gbs = 2 * rows * n * 4 / t / 1e9;
  results[`[${rows}, ${n}] encodeFwht default`] = gbs;
  console.log(
    `row: [${rows}, ${n}] encodeFwht (default ${JSON.stringify(butterflySpec(gpu, n, pow2))}) | ${
      (t * 1e3).toFixed(4)
    } ms | ${gbs.toFixed(0)} GB/s | ${(100 * gbs / copy).toFixed(1)}% of copy`,
  );
  xa.destroy();
  xb.destroy();
}
// The default variants on the real GPU, through the public entry point, against core/fwht.
for (const n of [4, 32, 1024, 2048, 8192, 12, 24, 1376, 5504, 11008]) {
  const x = tensor("f32", [16, n], randnF32(16 * n, n));
  for (const opts of [{ normalize: true }, { transpose: true }]) {
    try {
      const { y } = await fwhtGpu(gpu, x, opts);
      const ref = fwhtReference(x, opts).data;
      let num = 0, den = 0;
      for (let i = 0; i < ref.length; i++) {
        num += (y.data[i]! - ref[i]!) ** 2;
        den += ref[i]! ** 2;
      }
      const err = Math.sqrt(num / den);
      results[`check fwhtGpu n=${n} ${JSON.stringify(opts)}`] = err;
      console.log(
        `check fwhtGpu n=${n} ${JSON.stringify(opts)}: ${err < 1e-5 ? "ok" : "WRONG"} ${err}`,
      );
    } catch (e) {
      console.log(`check fwhtGpu n=${n}: FAILED ${e}`);
    }
  }
}
const outDir = Deno.env.get("OUT");
if (outDir) {
  await Deno.writeTextFile(`${outDir}/fwht_sweep.json`, JSON.stringify({ base, results }, null, 1));
}
