import assert from "node:assert/strict";
import { assertClose } from "../_helpers.ts";
import { testGpu } from "../kernels/_gpu.ts";
import { prng } from "../../core/prng.ts";
import { GpuBatch, storageBuffer, uploadBuffer } from "../../kernels/backend.ts";
import { causalAttention, rmsNorm } from "../../models/forward.ts";
import type { LlamaConfig } from "../../models/model.ts";
import {
  argmaxScratchBytes,
  argmaxWgsl,
  encodeAddRmsNorm,
  encodeArgmax,
  encodeSliceCopy,
} from "../../models/_gpu_decode.ts";
import {
  type CachedAttentionKernel,
  encodeCachedAttention,
  splitAttentionFits,
  splitAttentionScratchBytes,
  splitAttentionSplits,
} from "../../models/_gpu_cached_attention.ts";
import { ProgramRecorder } from "../../models/_gpu_program.ts";
import { encodeRope } from "../../models/_gpu_kernels.ts";
import {
  allocateScratch,
  destroyLinear,
  encodeGateUp,
  encodeLinearGroup,
  linearScratchBytes,
  uploadLinear,
} from "../../models/_decode_linears.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { qmatmulFewRowSpec } from "../../kernels/qmatmul_default_spec.ts";
import { qmatmulDispatch } from "../../kernels/qmatmul_kernel.ts";
import { qmatmulReference } from "../../kernels/qmatmul_reference.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { tensor } from "../../core/tensor.ts";
import {
  encodeGemv,
  gemvReference,
  gemvRowLength,
  uploadGemvWeight,
} from "../../models/_gpu_gemv.ts";

function normals(n: number, seed: number): Float32Array {
  const rng = prng(seed);
  return Float32Array.from({ length: n }, () => rng.normal());
}

async function read(batch: GpuBatch, b: GPUBuffer): Promise<ArrayBuffer> {
  const { data } = await batch.submit([b]);
  return data[0]!;
}

Deno.test("the GEMV kernel equals its CPU reference for f32 and f16 weights, aligned and ragged widths, short and long rows, into a slice, accumulating", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const weights of ["f32", "f16"] as const) {
    for (const [n, k] of [[37, 64], [20, 45], [5, 1344], [3, 1339]] as const) {
      for (const accumulate of [false, true]) {
        const rows = 3, ldy = n + 5, yOff = 2;
        const w = normals(n * k, 1);
        const stored = weights === "f16" ? Float32Array.from(Float16Array.from(w)) : w;
        const x = normals(rows * k, 2);
        const y0 = normals(rows * ldy, 3);
        const expected = Float32Array.from(y0);
        gemvReference(expected, x, stored, { rows, n, k, ldy, yOff }, accumulate);
        const wb = uploadGemvWeight(gpu, w, n, k, weights, "w");
        const xb = uploadBuffer(gpu, x), yb = uploadBuffer(gpu, y0);
        const batch: GpuBatch = new GpuBatch(gpu);
        encodeGemv(batch, { y: yb, x: xb, w: wb }, { rows, n, k, ldy, yOff }, {
          weights,
          accumulate,
        });
        const got = new Float32Array(await read(batch, yb));
        assertClose(got, expected, {
          atol: 1e-5,
          rtol: 1e-5,
          message: `${weights} ${n}×${k} accumulate ${accumulate}`,
        });
        assert.equal(wb.size, n * gemvRowLength(k) * (weights === "f16" ? 2 : 4));
        for (const b of [wb, xb, yb]) b.destroy();
      }
    }
  }
});

Deno.test("the GEMV with an RMSNorm prologue equals the GEMV of rmsNorm(x), per row, aligned and ragged, plain, accumulating and SwiGLU", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const eps = 1e-5;
  for (const weights of ["f32", "f16"] as const) {
    for (const [n, k] of [[40, 64], [24, 45], [8, 1344], [16, 2051]] as const) {
      for (const mode of ["plain", "accumulate", "swiglu"] as const) {
        const rows = 2;
        const w = normals(n * k, 11), nw = normals(k, 12), x = normals(rows * k, 13);
        const stored = weights === "f16" ? Float32Array.from(Float16Array.from(w)) : w;
        const y0 = normals(rows * n, 14);
        const h = rmsNorm(x, rows, nw, eps);
        let expected = Float32Array.from(y0);
        gemvReference(expected, h, stored, { rows, n, k }, mode === "accumulate");
        if (mode === "swiglu") {
          // Rows interleaved by blocks of 4 gates and their 4 ups.
          const out = new Float32Array(rows * (n / 2));
          for (let r = 0; r < rows; r++) {
            for (let i = 0; i < n / 2; i++) {
              const b = Math.floor(i / 4), o = i % 4;
              const gate = expected[r * n + b * 8 + o]!, up = expected[r * n + b * 8 + 4 + o]!;
              out[r * (n / 2) + i] = gate / (1 + Math.exp(-gate)) * up;
            }
          }
          expected = out;
        }
        const wb = uploadGemvWeight(gpu, w, n, k, weights, "w");
        const xb = uploadBuffer(gpu, x), nb = uploadBuffer(gpu, nw);
        const yb = mode === "swiglu"
          ? storageBuffer(gpu, rows * (n / 2) * 4)
          : uploadBuffer(gpu, y0);
        const batch: GpuBatch = new GpuBatch(gpu);
        encodeGemv(batch, { y: yb, x: xb, w: wb, norm: { weight: nb, eps } }, { rows, n, k }, {
          weights,
          accumulate: mode === "accumulate",
          swiglu: mode === "swiglu",
        });
        const got = new Float32Array(await read(batch, yb));
        assertClose(got, expected, {
          atol: 1e-5,
          rtol: 1e-4,
          message: `${weights} ${n}×${k} ${mode}`,
        });
        for (const b of [wb, xb, nb, yb]) b.destroy();
      }
    }
  }
});

Deno.test("the argmax kernel returns the first index of the largest value and skips NaN", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const n of [5, 1000, 40000]) {
    const v = normals(n, n);
    const top = n - 2;
    v[top] = 100;
    v[n - 1] = 100; // a tie after it
    v[0] = NaN;
    const vb = uploadBuffer(gpu, v), tok = storageBuffer(gpu, 4);
    const scratch = {
      values: storageBuffer(gpu, argmaxScratchBytes(n)),
      indices: storageBuffer(gpu, argmaxScratchBytes(n)),
    };
    // The second pass also advances a position counter when given one.
    const pos = uploadBuffer(gpu, Uint32Array.of(n));
    const batch: GpuBatch = new GpuBatch(gpu);
    encodeArgmax(batch, tok, vb, n, scratch, n % 2 === 0 ? { pos, n: 3 } : undefined);
    const { data } = await batch.submit([tok, pos]);
    assert.equal(new Uint32Array(data[0]!)[0], top, `n = ${n}`);
    assert.equal(new Uint32Array(data[1]!)[0], n % 2 === 0 ? n + 3 : n, `position, n = ${n}`);
    for (const b of [vb, tok, pos, scratch.values, scratch.indices]) b.destroy();
  }
});

Deno.test("a recorded argmax replayed three times in one pass advances the position each time and writes the token that follows each position to the history, none past its end", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const n = 3000, top = 1234;
  const v = normals(n, 7);
  v[top] = 50;
  const vb = uploadBuffer(gpu, v), tok = storageBuffer(gpu, 4);
  const scratch = {
    values: storageBuffer(gpu, argmaxScratchBytes(n)),
    indices: storageBuffer(gpu, argmaxScratchBytes(n)),
  };
  const pos = uploadBuffer(gpu, Uint32Array.of(5));
  const history = storageBuffer(gpu, 4 * 9);
  const rec = new ProgramRecorder(gpu);
  encodeArgmax(rec, tok, vb, n, scratch, { pos, n: 2, history });
  const program = rec.finish();
  assert.throws(() => program.encode(gpu.device.createCommandEncoder(), undefined, 0), /repeat/);
  const enc = gpu.device.createCommandEncoder();
  program.encode(enc, undefined, 3);
  gpu.device.queue.submit([enc.finish()]);
  const { data } = await new GpuBatch(gpu).submit([pos, history, tok]);
  // Positions 5 → 7 → 9 → 11: the tokens after positions 6 and 8; 10 lies past the history.
  assert.equal(new Uint32Array(data[0]!)[0], 11);
  assert.deepEqual([...new Uint32Array(data[1]!)], [0, 0, 0, 0, 0, 0, top, 0, top]);
  assert.equal(new Uint32Array(data[2]!)[0], top);
  assert.throws(() => argmaxWgsl(true, { history: true }), /history/);
  assert.throws(() => argmaxWgsl(true, { advance: true, embed: "f16" }), /embed/);
  program.dispose();
  for (const b of [vb, tok, pos, history, scratch.values, scratch.indices]) b.destroy();
});

Deno.test("cached attention of new queries, which writes their keys and values, equals the causal attention over the whole sequence, across key tiles and head widths", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (
    const [hd, nHeads, nKvHeads, T, pos] of [
      [48, 4, 2, 150, 140],
      [128, 2, 1, 20, 17],
      [256, 2, 2, 9, 0],
      [6, 3, 1, 40, 33], // loads of one value
      // One new row (the decode step's kernel): across a key tile, the first, a GQA group.
      [64, 8, 2, 144, 143],
      [64, 4, 4, 1, 0],
      [48, 4, 2, 130, 129],
      [6, 3, 1, 7, 6],
      // The one-row kernel's ("row") tiles of 256 keys: past one, one key past one, the new row
      // alone in its tile, a head of 128 over three tiles.
      [64, 4, 2, 300, 299],
      [32, 2, 1, 258, 257],
      [64, 2, 2, 257, 256],
      [128, 2, 1, 600, 599],
    ] as const
  ) {
    const config = { nHeads, nKvHeads, headDim: hd, dim: nHeads * hd } as LlamaConfig;
    const qDim = nHeads * hd, kvDim = nKvHeads * hd, ld = qDim + 2 * kvDim;
    const q = normals(T * qDim, 1), k = normals(T * kvDim, 2), v = normals(T * kvDim, 3);
    const expected = causalAttention(q, k, v, T, config).subarray(pos * qDim);
    const qkv = new Float32Array(T * ld);
    for (let t = 0; t < T; t++) {
      qkv.set(q.subarray(t * qDim, (t + 1) * qDim), t * ld);
      qkv.set(k.subarray(t * kvDim, (t + 1) * kvDim), t * ld + qDim);
      qkv.set(v.subarray(t * kvDim, (t + 1) * kvDim), t * ld + qDim + kvDim);
    }
    // Rows [0, pos) run first, from position 0 (filling the cache), then the new rows at pos.
    const rows = T - pos;
    const cache = { k: storageBuffer(gpu, T * kvDim * 4), v: storageBuffer(gpu, T * kvDim * 4) };
    const old = uploadBuffer(gpu, qkv.subarray(0, Math.max(1, pos) * ld));
    const fresh = uploadBuffer(gpu, qkv.subarray(pos * ld));
    const zero = uploadBuffer(gpu, Uint32Array.of(0)), at = uploadBuffer(gpu, Uint32Array.of(pos));
    const scratch = storageBuffer(gpu, Math.max(1, pos) * qDim * 4);
    const out = storageBuffer(gpu, rows * qDim * 4);
    const batch: GpuBatch = new GpuBatch(gpu);
    const shape = { nHeads, nKvHeads, hd, ld, cap: T };
    if (pos > 0) encodeCachedAttention(batch, scratch, old, cache, zero, { rows: pos, ...shape });
    encodeCachedAttention(batch, out, fresh, cache, at, { rows, ...shape });
    const got = new Float32Array(await read(batch, out));
    assertClose(got, expected, { atol: 2e-5, rtol: 1e-4, message: `hd ${hd}, pos ${pos}` });
    // The one-row kernels on the same cache (they write the new row's key and value again, the
    // same ones), where they take the head width: "row", and the split kernel with its default
    // splits, one split (every key in one workgroup, over tiles of 32), an odd count, more splits
    // than keys. Elsewhere they throw.
    if (rows === 1) {
      const rowFits = [4, 8, 16, 32, 64, 128].includes(hd);
      const splitFits = splitAttentionFits(hd, nHeads / nKvHeads);
      const parts = [splitAttentionSplits(shape), 1, 7, 64].map((splits) => ({
        scratch: storageBuffer(gpu, splitAttentionScratchBytes(shape, splits)),
        splits,
      }));
      const kernels: [string, CachedAttentionKernel, boolean, RegExp][] = [
        ["row", "row", rowFits, /Cannot encode one-row attention for 1 rows of head width/],
        ...parts.map((k): [string, CachedAttentionKernel, boolean, RegExp] => [
          `split ${k.splits}`,
          k,
          splitFits,
          /Cannot encode split attention for 1 rows of head width/,
        ]),
      ];
      for (const [name, kernel, fits, refusal] of kernels) {
        const record = (b: GpuBatch) =>
          encodeCachedAttention(b, out, fresh, cache, at, { rows, ...shape }, undefined, kernel);
        if (!fits) {
          assert.throws(() => record(new GpuBatch(gpu)), refusal);
          continue;
        }
        const again: GpuBatch = new GpuBatch(gpu);
        record(again);
        assertClose(new Float32Array(await read(again, out)), expected, {
          atol: 2e-5,
          rtol: 1e-4,
          message: `${name}, hd ${hd}, pos ${pos}`,
        });
      }
      for (const k of parts) k.scratch.destroy();
    }
    for (const b of [cache.k, cache.v, old, fresh, zero, at, scratch, out]) b.destroy();
  }
});

Deno.test("one-row attention that rotates its query and key itself equals the rotary kernel followed by attention, output and cache", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const cases = [[64, 8, 2, 140], [16, 2, 1, 0], [128, 2, 2, 5]] as const;
  for (const [hd, nHeads, nKvHeads, pos] of cases) {
    const qDim = nHeads * hd, kvDim = nKvHeads * hd, ld = qDim + 2 * kvDim, cap = pos + 1;
    const row = normals(ld, 7);
    const angles = normals(hd / 2, 8);
    const cs = new Float32Array(hd);
    angles.forEach((t, j) => {
      cs[2 * j] = Math.cos(t);
      cs[2 * j + 1] = Math.sin(t);
    });
    const past = { k: normals(cap * kvDim, 9), v: normals(cap * kvDim, 10) };
    const shape = { rows: 1, nHeads, nKvHeads, hd, ld, cap };
    // The fused kernel reads row pos of a table whose other rows differ.
    const table = normals(cap * hd, 15);
    table.set(cs, pos * hd);
    const at = uploadBuffer(gpu, Uint32Array.of(pos)), rope = uploadBuffer(gpu, cs);
    const tb = uploadBuffer(gpu, table);
    const part = storageBuffer(gpu, splitAttentionScratchBytes(shape, 5));
    const run = async (fused: boolean, kernel: CachedAttentionKernel = "tiles") => {
      const qkv = uploadBuffer(gpu, row), out = storageBuffer(gpu, qDim * 4);
      const cache = { k: uploadBuffer(gpu, past.k), v: uploadBuffer(gpu, past.v) };
      const batch: GpuBatch = new GpuBatch(gpu);
      if (!fused) encodeRope(batch, qkv, rope, { rows: 1, T: 1, width: qDim + kvDim, ld, hd });
      encodeCachedAttention(batch, out, qkv, cache, at, shape, fused ? tb : undefined, kernel);
      const { data } = await batch.submit([out, cache.k, cache.v]);
      for (const b of [qkv, out, cache.k, cache.v]) b.destroy();
      return data.map((d) => new Float32Array(d));
    };
    const want = await run(false);
    for (const kernel of ["tiles", "row", { scratch: part, splits: 5 }] as const) {
      const got = await run(true, kernel);
      const message = `${
        typeof kernel === "string" ? kernel : "split"
      }, hd ${hd}, heads ${nHeads}/${nKvHeads}, pos ${pos}`;
      assertClose(got[0]!, want[0]!, { atol: 1e-6, rtol: 1e-5, message: `output: ${message}` });
      assertClose(got[1]!, want[1]!, { atol: 1e-6, rtol: 1e-6, message: `keys: ${message}` });
      assertClose(got[2]!, want[2]!, { atol: 0, rtol: 0, message: `values: ${message}` });
      // The new key is rotated: it differs from the unrotated row's.
      const k0 = got[1]!.subarray(pos * kvDim, pos * kvDim + hd);
      assert.ok(k0.some((v, i) => Math.abs(v - row[qDim + i]!) > 1e-3), message);
    }
    at.destroy();
    rope.destroy();
    tb.destroy();
    part.destroy();
  }
  // Attention of `rows` rows of a head of 4 over small buffers (it throws before recording).
  const attend = (rows: number, rope?: GPUBuffer, kernel?: CachedAttentionKernel) =>
    encodeCachedAttention(
      new GpuBatch(gpu),
      storageBuffer(gpu, 64),
      storageBuffer(gpu, 64),
      { k: storageBuffer(gpu, 64), v: storageBuffer(gpu, 64) },
      storageBuffer(gpu, 4),
      { rows, nHeads: 1, nKvHeads: 1, hd: 4, ld: 12, cap: 2 },
      rope,
      kernel,
    );
  assert.throws(
    () => attend(2, storageBuffer(gpu, 16)),
    /Cannot rotate inside attention for 2 rows/,
  );
  assert.throws(
    () => attend(1, undefined, "rows" as "row"),
    /'kernel' must be "tiles", "row" or a split kernel's scratch and splits: current value is rows/,
  );
  assert.throws(() => attend(2, undefined, "row"), /Cannot encode one-row attention for 2 rows/);
  const scratch = storageBuffer(gpu, 64);
  assert.throws(
    () => attend(2, undefined, { scratch, splits: 1 }),
    /Cannot encode split attention for 2 rows/,
  );
  assert.throws(
    () => attend(1, undefined, { scratch, splits: 0 }),
    /'splits' must be an integer in \[1, 1024\]: current value is 0/,
  );
  assert.throws(
    () => attend(1, undefined, { scratch, splits: 3 }),
    /its scratch holds 64 bytes, it needs 96/,
  );
});

Deno.test("the fused residual add and RMSNorm equals the sum, then rmsNorm, at widths below, at and above its threads", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  for (const [rows, dim] of [[3, 300], [1, 2048], [2, 100], [1, 256]] as const) {
    for (const add of [true, false]) {
      const x = normals(rows * dim, 1), d = normals(rows * dim, 2), w = normals(dim, 3);
      const sum = add ? x.map((v, i) => v + d[i]!) : x;
      const xb = uploadBuffer(gpu, x), db = uploadBuffer(gpu, d), wb = uploadBuffer(gpu, w);
      const yb = storageBuffer(gpu, rows * dim * 4);
      const batch: GpuBatch = new GpuBatch(gpu);
      encodeAddRmsNorm(batch, yb, xb, add ? db : null, wb, { rows, dim, eps: 1e-5 });
      const { data } = await batch.submit([yb, xb]);
      const message = `rows ${rows}, dim ${dim}, add ${add}`;
      assertClose(new Float32Array(data[1]!), sum, { atol: 0, rtol: 0, message: `x: ${message}` });
      assertClose(new Float32Array(data[0]!), rmsNorm(sum, rows, w, 1e-5), {
        atol: 1e-5,
        rtol: 1e-5,
        message,
      });
      for (const b of [xb, db, wb, yb]) b.destroy();
    }
  }
});

Deno.test("the slice copy writes and adds a block of columns into a slice of wider rows", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const x = normals(3 * 10, 1), y0 = normals(3 * 7, 2);
  for (const add of [false, true]) {
    const expected = Float32Array.from(y0);
    for (let r = 0; r < 3; r++) {
      for (let c = 0; c < 4; c++) {
        const o = 2 + r * 7 + c;
        expected[o] = (add ? expected[o]! : 0) + x[1 + r * 10 + c]!;
      }
    }
    const xb = uploadBuffer(gpu, x), yb = uploadBuffer(gpu, y0);
    const batch: GpuBatch = new GpuBatch(gpu);
    encodeSliceCopy(batch, yb, xb, { rows: 3, w: 4, ldx: 10, xOff: 1, ldy: 7, yOff: 2 }, add);
    assertClose(new Float32Array(await read(batch, yb)), expected, { atol: 1e-6, rtol: 0 });
    xb.destroy();
    yb.destroy();
  }
});

Deno.test("decode's quantized linears run qmatmul's few-row specialization at 1–4 rows, and the product matches the CPU reference", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  /** A batch that records which pipelines it dispatches. */
  class Recording extends GpuBatch {
    readonly pipelines: GPUComputePipeline[] = [];
    override dispatch(
      pipeline: GPUComputePipeline,
      resources: readonly (GPUBuffer | GPUBufferBinding)[],
      groups: readonly [number, number?, number?],
    ): void {
      this.pipelines.push(pipeline);
      super.dispatch(pipeline, resources, groups);
    }
  }
  const limits = {
    workgroupBytes: gpu.limits.maxComputeWorkgroupStorageSize,
    invocations: gpu.limits.maxComputeInvocationsPerWorkgroup,
  };
  // o (accumulating into the residual, left pending) and gate-up (two weights, one group).
  const [n, k] = [96, 256];
  const wo = await rtn(tensor("f32", [n, k], normals(n * k, 7)), { bits: 4, groupSize: 64 });
  const w1 = await rtn(tensor("f32", [n, k], normals(n * k, 8)), { bits: 4, groupSize: 64 });
  const w3 = await rtn(tensor("f32", [n, k], normals(n * k, 9)), { bits: 4, groupSize: 64 });
  for (const [weights, accumulate] of [[[wo], true], [[w1, w3], false]] as const) {
    const l = uploadLinear(gpu, weights, "f16", "test");
    const part = l.parts[0]!;
    assert(part.kind === "packed" && l.parts.length === 1);
    // Adding to y: left to the caller (defer, the decoder's o and down) or in the kernel.
    for (const defer of accumulate ? [true, false] : [true]) {
      for (const rows of [1, 2, 4]) {
        const needs = linearScratchBytes(gpu, l, rows, accumulate);
        const scratch = allocateScratch(gpu, [needs], "test");
        const x = normals(rows * k, rows), y0 = normals(rows * l.n, rows + 1);
        const xb = uploadBuffer(gpu, x), yb = uploadBuffer(gpu, y0);
        const batch: Recording = new Recording(gpu);
        const pending = encodeLinearGroup(batch, l, xb, yb, rows, accumulate, scratch, defer);
        assert.equal(pending !== null, accumulate && defer);
        const out = pending ?? yb;
        const adds = accumulate && !defer;
        const spec = qmatmulFewRowSpec(part.weight.packed, rows, limits);
        const expected: GPUComputePipeline = qmatmulDispatch(gpu, part.weight, xb, out, rows, {
          ...spec,
          ...(adds ? { accumulate: true } : {}),
        }).pipeline;
        assert.deepEqual(batch.pipelines, [expected], `${l.n} rows of W, ${rows} of x`);
        const got = new Float32Array(await read(batch, out));
        const ref = qmatmulReference(
          tensor("f32", [rows, k], x),
          part.weight.packed,
          adds ? tensor("f32", [rows, l.n], y0) : undefined,
        );
        assertClose(got, ref.data, {
          atol: 1e-4,
          rtol: 1e-5,
          message: `${rows} rows, defer ${defer}`,
        });
        for (const b of [xb, yb, ...Object.values(scratch)]) b.destroy();
      }
    }
    destroyLinear(l);
  }
});

Deno.test("a gate-and-up linear applies SwiGLU in its product's epilogue where it can, and every path equals silu(x·W1ᵀ)·(x·W3ᵀ)", async () => {
  const gpu = await testGpu();
  if (!gpu) return;
  const silu = (z: number) => z / (1 + Math.exp(-z));
  // [kind, H, k, rows, dispatches]: fused (1), or the product and the SwiGLU kernel (2).
  const cases = [
    ["f32", 12, 40, 1, 1],
    ["f32", 12, 40, 3, 2], // f32 weights at 3 rows: the GEMM, not the GEMV
    ["f16", 12, 48, 3, 1],
    ["f16", 10, 48, 1, 2], // H not a multiple of 4: not interleaved
    ["4-bit", 64, 256, 1, 1],
    ["4-bit", 64, 256, 4, 1],
    ["4-bit", 64, 256, 6, 2], // past the few-row kernels: the product, then SwiGLU by blocks
    ["4-bit", 48, 256, 2, 2], // H not a multiple of 32: not interleaved
  ] as const;
  for (const [kind, H, k, rows, dispatches] of cases) {
    const g1 = normals(H * k, H + k), g3 = normals(H * k, H + k + 1);
    let weights, w1: Float32Array, w3: Float32Array;
    if (kind === "4-bit") {
      const q1 = await rtn(tensor("f32", [H, k], g1), { bits: 4, groupSize: 64 });
      const q3 = await rtn(tensor("f32", [H, k], g3), { bits: 4, groupSize: 64 });
      weights = [q1, q3];
      // The packed weight keeps f16 scales (and zero points).
      const f16 = (a: Float32Array) => Float32Array.from(Float16Array.from(a));
      const stored = (q: typeof q1) => ({ ...q, scales: f16(q.scales), zeros: f16(q.zeros) });
      [w1, w3] = [dequantize(stored(q1)).data, dequantize(stored(q3)).data];
    } else {
      weights = [tensor("f32", [H, k], g1), tensor("f32", [H, k], g3)];
      const round = (w: Float32Array) =>
        kind === "f16" ? Float32Array.from(Float16Array.from(w)) : w;
      [w1, w3] = [round(g1), round(g3)];
    }
    const l = uploadLinear(gpu, weights, kind === "f32" ? "f32" : "f16", "test", "f16", true);
    const scratch = allocateScratch(gpu, [linearScratchBytes(gpu, l, rows, false)], "test");
    const x = normals(rows * k, rows);
    const xb = uploadBuffer(gpu, x), ub = storageBuffer(gpu, rows * 2 * H * 4);
    const gb = storageBuffer(gpu, rows * H * 4);
    const batch: GpuBatch = new GpuBatch(gpu);
    encodeGateUp(batch, l, xb, ub, gb, rows, scratch);
    const message = `${kind}, H ${H}, ${rows} rows`;
    assert.equal(batch.dispatches, dispatches, message);
    const got = new Float32Array(await read(batch, gb));
    const want = new Float32Array(rows * H);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < H; i++) {
        let a = 0, b = 0;
        for (let j = 0; j < k; j++) {
          a += x[r * k + j]! * w1[i * k + j]!;
          b += x[r * k + j]! * w3[i * k + j]!;
        }
        want[r * H + i] = silu(a) * b;
      }
    }
    assertClose(got, want, { atol: 1e-4, rtol: 1e-4, message });
    for (const b of [xb, ub, gb, ...Object.values(scratch)]) b.destroy();
    destroyLinear(l);
  }
});
