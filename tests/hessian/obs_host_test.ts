import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { hessian } from "../../hessian/hessian.ts";
import { obsSolve } from "../../hessian/obs.ts";
import { complementMask, countOnes, prepareObs } from "../../hessian/_obs_host.ts";
import { packLower, packLowerChunks } from "../../kernels/cholesky_kernel.ts";
import { assembleObsResult } from "../../hessian/_obs_assemble.ts";
import type { ObsGpuProblem } from "../../hessian/obs_gpu.ts";
import { invertMaskInPlace } from "../../pruners/_common.ts";
import { acquireGpu, GpuBatch, storageBuffer, writeBuffer } from "../../kernels/backend.ts";

function randomWeight(rows: number, n: number, seed: number): Float32Array {
  const rng = prng(seed);
  return Float32Array.from({ length: rows * n }, () => rng.normal());
}

function spd(n: number, seed: number): Float64Array {
  const rng = prng(seed);
  const x = tensor("f32", [4 * n, n], Float32Array.from({ length: 4 * n * n }, () => rng.normal()));
  return hessian(x).xtx;
}

Deno.test("prepareObs() copies W only where its values change and reports dead columns", () => {
  const rows = 3, n = 5;
  const data = randomWeight(rows, n, 1);
  const before = data.slice();
  const xtx = spd(n, 2);
  const plain = prepareObs(tensor("f32", [rows, n], data), xtx, rows, n, false, undefined);
  assert.equal(plain.original, data);
  assert.equal(plain.cleaned, data);
  assert.equal(plain.w, data);
  assert.equal(plain.deadColumns, 0);
  assert.equal(plain.perm, null);

  const dead = xtx.slice();
  for (let k = 0; k < n; k++) dead[1 * n + k] = dead[k * n + 1] = 0;
  const p = prepareObs(tensor("f32", [rows, n], data), dead, rows, n, true, undefined);
  assert.deepEqual(data, before);
  assert.equal(p.original, data);
  assert.equal(p.deadColumns, 1);
  assert.equal(p.diag[1], 1);
  const diag = Array.from({ length: n }, (_, j) => (j === 1 ? 1 : dead[j * n + j]!));
  const order = [...Array(n).keys()].sort((a, b) => diag[b]! - diag[a]! || a - b);
  assert.deepEqual(Array.from(p.perm!), order);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < n; c++) {
      assert.equal(p.cleaned[r * n + c], c === 1 ? 0 : data[r * n + c]);
      assert.equal(p.w[r * n + c], p.cleaned[r * n + order[c]!]);
    }
  }
  const mean = diag.reduce((s, v) => s + v, 0) / n;
  assert.ok(Math.abs(p.meanDiag - mean) <= 1e-12 * mean);

  const f64 = prepareObs(
    tensor("f64", [rows, n], Float64Array.from(data)),
    xtx,
    rows,
    n,
    false,
    undefined,
  );
  assert.deepEqual(f64.original, data);
});

Deno.test("prepareObs() names the first non-finite element of W or H", () => {
  const rows = 2, n = 4;
  const xtx = spd(n, 3);
  const data = randomWeight(rows, n, 4);
  data[5] = -Infinity;
  data[6] = NaN;
  assert.throws(
    () => prepareObs(tensor("f32", [rows, n], data), xtx, rows, n, false, undefined),
    { name: "RangeError", message: /'weight' must be finite: element 5 is -Infinity/ },
  );
  const big = tensor("f64", [rows, n], new Float64Array(rows * n).fill(1e39)); // overflows float32
  assert.throws(() => prepareObs(big, xtx, rows, n, false, undefined), /element 0 is Infinity/);
  const badH = xtx.slice();
  badH[7] = NaN;
  assert.throws(
    () =>
      prepareObs(
        tensor("f32", [rows, n], randomWeight(rows, n, 5)),
        badH,
        rows,
        n,
        false,
        undefined,
      ),
    { name: "RangeError", message: /the Hessian must be finite: element 7 is NaN/ },
  );
});

Deno.test("obsSolve() leaves the caller's weight untouched and solves it as it would a copy", async () => {
  const rows = 8, n = 32;
  const data = randomWeight(rows, n, 6);
  const before = data.slice();
  const h = { cols: n, count: 1, xtx: spd(n, 7) };
  const backends = (await acquireGpu()) === null ? ["cpu"] as const : ["cpu", "webgpu"] as const;
  for (const backend of backends) {
    for (
      const decider of [
        { kind: "grid", grid: { bits: 3 } },
        { kind: "prune", structure: { kind: "unstructured", sparsity: 0.5 } },
      ] as const
    ) {
      const res = await obsSolve(tensor("f32", [rows, n], data), h, { decider, backend });
      assert.deepEqual(data, before, `${backend} ${decider.kind}`);
      const copy = await obsSolve(tensor("f32", [rows, n], before.slice()), h, {
        decider,
        backend,
      });
      assert.deepEqual(res.weight.data, copy.weight.data, `${backend} ${decider.kind}`);
    }
  }
});

Deno.test("assembleObsResult() unpacks the GPU's mask bits and weights into the original column order", () => {
  const rng = prng(8);
  for (
    const [rows, n, permuted] of [[3, 64, false], [2, 40, false], [3, 64, true], [
      2,
      37,
      true,
    ]] as const
  ) {
    const stride = Math.ceil(n / 32);
    const words = Uint32Array.from(
      { length: rows * stride },
      (_, i) => (i % 3 === 1 ? 0 : rng.nextU32()),
    );
    const w = Float32Array.from({ length: rows * n }, () => rng.normal());
    const perm = permuted
      ? Int32Array.from([...Array(n).keys()].sort((a, b) => ((a * 7) % n) - ((b * 7) % n)))
      : null;
    const order = perm ?? Int32Array.from({ length: n }, (_, i) => i);
    const p: ObsGpuProblem = {
      rows,
      n,
      w,
      xtx: new Float64Array(n * n),
      diag: new Float64Array(n).fill(1),
      meanDiag: 1,
      dampRatio: 0.01,
      maxDampingRetries: 0,
      decider: { kind: "prune", structure: { kind: "unstructured", sparsity: 0.5 } },
      blockSize: 8,
      perm,
      original: w,
      cleaned: w,
      deadColumns: 0,
      t0: performance.now(),
    };
    const data = [
      new Uint32Array(1).buffer,
      new Float32Array(rows).fill(0.5).buffer,
      w.slice().buffer,
      words.buffer,
    ];
    const assemble = (keepMask: boolean) =>
      assembleObsResult(p, order, { data, gpuSeconds: NaN, phases: {} }, {
        hasGrid: false,
        cpw: 4,
        groups: 1,
        gIdx: new Uint32Array(n),
        damping: 0.01,
        structure: true,
        keepMask,
      });
    const res = assemble(false), keep = assemble(true);
    assert.equal(res.stats.obsLoss, rows * 0.5);
    let count = 0;
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < n; i++) {
        const bit = Math.floor(words[r * stride + Math.floor(i / 32)]! / 2 ** (i % 32)) % 2;
        const at = `[${rows}, ${n}] ${permuted} (${r}, ${i})`;
        assert.equal(res.pruned![r * n + order[i]!], bit, at);
        assert.equal(res.kept![r * n + order[i]!], 1 - bit, at);
        assert.equal(keep.kept![r * n + order[i]!], 1 - bit, at);
        assert.equal(keep.pruned![r * n + order[i]!], bit, at);
        assert.equal(res.weight.data[r * n + order[i]!], w[r * n + i]);
        count += bit;
      }
    }
    // Bits past n in a row's last word are not counted.
    assert.equal(res.prunedCount, count);
    assert.equal(keep.prunedCount, count);
  }
});

Deno.test("invertMaskInPlace() complements a 0/1 mask and counts its ones, for any length and offset", () => {
  const rng = prng(9);
  const base = Uint8Array.from({ length: 103 }, () => rng.int(2));
  for (let offset = 0; offset < 4; offset++) {
    for (const len of [0, 1, 3, 4, 5, 8, 63, 99]) {
      const copy = base.slice();
      const mask = copy.subarray(offset, offset + len);
      const want = Array.from(mask, (b) => 1 - b);
      const ones = mask.reduce((s, b) => s + b, 0);
      assert.equal(invertMaskInPlace(mask), ones);
      assert.deepEqual(Array.from(mask), want);
      // Outside the view nothing changed.
      assert.deepEqual(copy.subarray(0, offset), base.subarray(0, offset));
      assert.deepEqual(copy.subarray(offset + len), base.subarray(offset + len));
    }
  }
});

Deno.test("packLowerChunks() emits packLower()'s values in consecutive runs of whole rows", () => {
  for (const n of [0, 1, 5, 37]) {
    const h = spd(Math.max(n, 1), 10).subarray(0, n * n);
    const want = packLower(h, n);
    for (const chunk of [1, 3, 10, 100, 1 << 22]) {
      const got: number[] = [];
      let rowsEnd = 0;
      packLowerChunks(h, n, (offset, values) => {
        assert.equal(offset, got.length);
        got.push(...values);
        // Each run ends at the end of a row.
        while ((rowsEnd * (rowsEnd + 1)) / 2 < got.length) rowsEnd++;
        assert.equal((rowsEnd * (rowsEnd + 1)) / 2, got.length);
        assert.ok(values.length <= Math.max(chunk, n));
      }, chunk);
      assert.deepEqual(got, Array.from(want), `n ${n} chunk ${chunk}`);
    }
  }
});

Deno.test("packLowerChunks() runs written at their offsets rebuild packLower() in a GPU buffer", async () => {
  const gpu = await acquireGpu();
  if (gpu === null) {
    console.log("skipping: no WebGPU adapter is available");
    return;
  }
  const n = 37, h = spd(n, 11), want = packLower(h, n);
  const buf = storageBuffer(gpu, want.byteLength, "packed");
  try {
    packLowerChunks(h, n, (offset, values) => writeBuffer(gpu, buf, offset * 4, values), 50);
    const out = await new GpuBatch(gpu).submit([buf]);
    assert.deepEqual(new Float32Array(out.data[0]!), want);
  } finally {
    buf.destroy();
  }
});

Deno.test("complementMask() and countOnes() complement and count a 0/1 mask, for any length and offset", () => {
  const rng = prng(10);
  const base = Uint8Array.from({ length: 103 }, () => rng.int(2));
  for (let offset = 0; offset < 4; offset++) {
    for (const len of [0, 1, 3, 4, 5, 8, 63, 99]) {
      const mask = base.subarray(offset, offset + len);
      assert.deepEqual(Array.from(complementMask(mask)), Array.from(mask, (b) => 1 - b));
      assert.equal(countOnes(mask), mask.reduce((s, b) => s + b, 0));
    }
  }
});
