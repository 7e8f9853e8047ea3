import assert from "node:assert/strict";
import { lusolve, multiply, transpose } from "mathjs";
import { tensor } from "../../core/tensor.ts";
import { prng, randn } from "../../core/prng.ts";
import { hessian, hessianFromGram } from "../../hessian/hessian.ts";
import { obsSolve } from "../../hessian/obs.ts";
import { assertClose } from "../_helpers.ts";

function matrixOf(data: ArrayLike<number>, rows: number, cols: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from(data).slice(r * cols, (r + 1) * cols));
}

/** Least-squares optimum (mathjs) of the free columns of each row with the fixed ones pinned. */
function leastSquares(
  x: number[][],
  w: number[][],
  fixed: Map<number, number[]>,
): number[][] {
  const cols = w[0]!.length;
  const free = [...Array(cols).keys()].filter((c) => !fixed.has(c));
  const xf = x.map((row) => free.map((c) => row[c]!));
  const xtx = multiply(transpose(xf), xf) as number[][];
  return w.map((wr, r) => {
    // target: X·w − Σ_fixed x_c·q_c
    const y = x.map((row) => {
      let s = 0;
      for (let c = 0; c < cols; c++) {
        s += row[c]! * (fixed.has(c) ? wr[c]! - fixed.get(c)![r]! : wr[c]!);
      }
      return s;
    });
    const xty = multiply(transpose(xf), y) as number[];
    const v = (lusolve(xtx, xty) as number[][]).map((a) => a[0]!);
    const out = wr.slice();
    free.forEach((c, i) => (out[c] = v[i]!));
    for (const [c, q] of fixed) out[c] = q[r]!;
    return out;
  });
}

const rows = 4, cols = 6, tokens = 20;
const xData = Float64Array.from(randn(tokens * cols, prng(11)));
const wData = Float32Array.from(randn(rows * cols, prng(12)));
const x = tensor("f64", [tokens, cols], xData);
const w = tensor("f32", [rows, cols], wData);
const roundQuarter = (v: number) => Math.round(v * 4) / 4;

Deno.test("obsSolve() after fixing one column equals the least-squares optimum of the others (4×6)", async () => {
  const fixedValues: number[] = [];
  const res = await obsSolve(w, hessian(x), {
    backend: "cpu",
    dampRatio: 0,
    decider: {
      kind: "custom",
      decide: (column, info) => {
        if (info.position > 0) return column; // keep: no error to propagate
        const q = Array.from(column, roundQuarter);
        fixedValues.push(...q);
        return q;
      },
    },
  });
  const expected = leastSquares(
    matrixOf(xData, tokens, cols),
    matrixOf(wData, rows, cols),
    new Map([[0, fixedValues]]),
  );
  assertClose(res.weight.data, expected.flat(), { atol: 2e-6, rtol: 2e-5 });
});

Deno.test("obsSolve() after fixing two columns in a given order equals the joint optimum of the rest", async () => {
  const fixed = new Map<number, number[]>();
  const res = await obsSolve(w, hessian(x), {
    backend: "cpu",
    dampRatio: 0,
    perm: [3, 1, 0, 2, 4, 5],
    blockSize: 1, // every update goes through the lazy batch path
    decider: {
      kind: "custom",
      decide: (column, info) => {
        if (info.position > 1) return column;
        const q = Array.from(column, roundQuarter);
        fixed.set(info.column, q);
        return q;
      },
    },
  });
  assert.deepEqual([...fixed.keys()], [3, 1]);
  assert.deepEqual(Array.from(res.perm!), [3, 1, 0, 2, 4, 5]);
  const expected = leastSquares(matrixOf(xData, tokens, cols), matrixOf(wData, rows, cols), fixed);
  assertClose(res.weight.data, expected.flat(), { atol: 2e-6, rtol: 2e-5 });
});

Deno.test("obsSolve() reports the output error it causes as obsLoss (undamped, exact arithmetic)", async () => {
  const h = hessian(x);
  const res = await obsSolve(w, h, {
    backend: "cpu",
    dampRatio: 0,
    decider: { kind: "custom", decide: (column) => Array.from(column, roundQuarter) },
  });
  let err = 0;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j < cols; j++) {
        const di = wData[r * cols + i]! - res.weight.data[r * cols + i]!;
        const dj = wData[r * cols + j]! - res.weight.data[r * cols + j]!;
        err += di * h.xtx[i * cols + j]! * dj;
      }
    }
  }
  assertClose(res.stats.obsLoss, err, { rtol: 1e-4, atol: 0 });
});

Deno.test("obsSolve() gives the same result for every block size (lazy updates are exact)", async () => {
  const big = tensor("f32", [16, 40], Float32Array.from(randn(640, prng(13))));
  const h = hessian(tensor("f64", [80, 40], randn(3200, prng(14))));
  // Per-channel grids: dynamic groups are fitted on the state at their block's
  // start (as the reference does), which does depend on the block size.
  const decider = { kind: "grid", grid: { bits: 3 } } as const;
  const ref = await obsSolve(big, h, { backend: "cpu", decider, blockSize: 40 });
  for (const blockSize of [1, 7, 16]) {
    const res = await obsSolve(big, h, { backend: "cpu", decider, blockSize });
    let same = 0;
    for (let i = 0; i < 640; i++) if (res.codes![i] === ref.codes![i]) same++;
    assert.ok(same >= 636, `blockSize ${blockSize}: ${same}/640 codes agree`);
    assertClose(res.stats.obsLoss, ref.stats.obsLoss, { rtol: 1e-3, atol: 0 });
  }
});

Deno.test("the unstructured prune decider removes exactly ⌊sparsity·rows·width⌋ weights per block", async () => {
  const big = tensor("f32", [10, 50], Float32Array.from(randn(500, prng(15))));
  const h = hessian(tensor("f64", [100, 50], randn(5000, prng(16))));
  const res = await obsSolve(big, h, {
    backend: "cpu",
    blockSize: 16,
    decider: { kind: "prune", structure: { kind: "unstructured", sparsity: 0.5 } },
  });
  for (const [i1, i2] of [[0, 16], [16, 32], [32, 48], [48, 50]]) {
    let count = 0;
    for (let r = 0; r < 10; r++) {
      for (let c = i1!; c < i2!; c++) {
        if (res.pruned![r * 50 + c]) {
          count++;
          assert.equal(res.weight.data[r * 50 + c], 0);
        }
      }
    }
    assert.equal(count, Math.floor(0.5 * 10 * (i2! - i1!)));
  }
});

Deno.test("obsSolve() gives the keep-mask as the complement of the pruned one, and counts the pruned weights", async () => {
  const big = tensor("f32", [7, 50], Float32Array.from(randn(350, prng(25))));
  const h = hessian(tensor("f64", [100, 50], randn(5000, prng(26))));
  const decider = { kind: "prune", structure: { kind: "unstructured", sparsity: 0.3 } } as const;
  const a = await obsSolve(big, h, { backend: "cpu", blockSize: 16, decider, actOrder: true });
  const b = await obsSolve(big, h, {
    backend: "cpu",
    blockSize: 16,
    decider,
    actOrder: true,
    mask: "kept",
  });
  let count = 0;
  for (let i = 0; i < 350; i++) {
    count += a.pruned![i]!;
    assert.equal(a.weight.data[i] === 0 || a.pruned![i] === 0, true);
  }
  assert.equal(a.prunedCount, count);
  assert.equal(b.prunedCount, count);
  const complement = a.pruned!.map((v) => 1 - v);
  assert.deepEqual(a.kept, complement);
  assert.deepEqual(b.kept, complement);
  assert.deepEqual(b.pruned, a.pruned);
  await assert.rejects(
    () => obsSolve(big, h, { decider, mask: "both" as "kept" }),
    RangeError,
  );
});

Deno.test("the N:M prune decider keeps n of every m weights in each row, and joint mode lands on the grid", async () => {
  const big = tensor("f32", [8, 32], Float32Array.from(randn(256, prng(17))));
  const h = hessian(tensor("f64", [64, 32], randn(2048, prng(18))));
  const res = await obsSolve(big, h, {
    backend: "cpu",
    blockSize: 10, // rounded down to a multiple of m
    decider: {
      kind: "prune+grid",
      structure: { kind: "nm", n: 2, m: 4 },
      grid: { bits: 4, groupSize: 16 },
    },
  });
  for (let r = 0; r < 8; r++) {
    for (let g = 0; g < 32; g += 4) {
      let kept = 0;
      for (let c = g; c < g + 4; c++) kept += res.pruned![r * 32 + c] ? 0 : 1;
      assert.equal(kept, 2);
    }
    for (let c = 0; c < 32; c++) {
      const k = r * 2 + res.gIdx![c]!;
      const v = res.scales![k]! * (res.codes![r * 32 + c]! - res.zeros![k]!);
      assert.equal(res.weight.data[r * 32 + c], Math.fround(v));
      if (res.pruned![r * 32 + c]) assert.equal(res.weight.data[r * 32 + c], 0);
    }
  }
});

Deno.test("obsSolve() completes on singular Hessians: fewer tokens than columns and dead inputs", async () => {
  const xs = Float64Array.from(randn(5 * 12, prng(19)));
  for (let t = 0; t < 5; t++) xs[t * 12 + 3] = xs[t * 12 + 7] = 0;
  const res = await obsSolve(
    tensor("f32", [6, 12], Float32Array.from(randn(72, prng(20)))),
    hessian(tensor("f64", [5, 12], xs)),
    { backend: "cpu", decider: { kind: "grid", grid: { bits: 2 } }, actOrder: true },
  );
  assert.equal(res.stats.deadColumns, 2);
  assert.ok(res.weight.data.every(Number.isFinite));
  for (let r = 0; r < 6; r++) assert.equal(res.weight.data[r * 12 + 3], 0);
});

Deno.test("obsSolve() multiplies the damping by 10 until Cholesky succeeds and reports it", async () => {
  // eigenvalues −1.5 and 3.5: damping 0.01, 0.1 and 1 fail, 10 works
  const h = hessianFromGram(new Float64Array([1, 2.5, 2.5, 1]), 1);
  const res = await obsSolve(tensor("f32", [1, 2], new Float32Array([0.5, -0.5])), h, {
    backend: "cpu",
    decider: { kind: "grid", grid: { bits: 4 } },
  });
  assertClose(res.stats.damping, 10, { rtol: 1e-12 });
  await assert.rejects(
    obsSolve(tensor("f32", [1, 2], new Float32Array([0.5, -0.5])), h, {
      backend: "cpu",
      decider: { kind: "grid", grid: { bits: 4 } },
      maxDampingRetries: 2,
    }),
    /Cholesky failed/,
  );
});

Deno.test("obsSolve() reports progress per block and does not modify its arguments", async () => {
  const h = hessian(x);
  const hBefore = h.xtx.slice(), wBefore = wData.slice();
  const seen: [number, number][] = [];
  await obsSolve(w, h, {
    backend: "cpu",
    blockSize: 4,
    decider: { kind: "prune", structure: { kind: "unstructured", sparsity: 0.25 } },
    onProgress: (done, total) => seen.push([done, total]),
  });
  assert.deepEqual(seen, [[4, 6], [6, 6]]);
  assert.deepEqual(h.xtx, hBefore);
  assert.deepEqual(w.data, wBefore);
});

Deno.test("obsSolve() rejects bad shapes, options and non-finite values with clear errors", async () => {
  const h = hessian(x);
  const grid = { kind: "grid", grid: { bits: 4 } } as const;
  await assert.rejects(
    obsSolve(tensor("f32", [4, 5], new Float32Array(20)), h, { decider: grid }),
    /6 columns/,
  );
  const nan = wData.slice();
  nan[3] = NaN;
  await assert.rejects(
    obsSolve(tensor("f32", [4, 6], nan), h, { decider: grid }),
    /'weight' must be finite/,
  );
  await assert.rejects(
    obsSolve(w, h, { backend: "cpu", decider: grid, blockSize: 0 }),
    /'blockSize'/,
  );
  await assert.rejects(
    obsSolve(w, h, { backend: "cpu", decider: grid, dampRatio: -1 }),
    /'dampRatio'/,
  );
  await assert.rejects(
    obsSolve(w, h, { backend: "cpu", decider: grid, perm: [0, 1, 2, 3, 4, 4] }),
    /'perm'/,
  );
  await assert.rejects(
    obsSolve(w, h, { decider: grid, perm: [0, 1, 2, 3, 4, 5], actOrder: true }),
    /exclude/,
  );
  await assert.rejects(
    obsSolve(w, h, { backend: "cpu", decider: { kind: "grid", grid: { bits: 0 } } }),
    /'bits'/,
  );
  await assert.rejects(
    obsSolve(w, h, {
      decider: { kind: "prune", structure: { kind: "unstructured", sparsity: 1 } },
    }),
    /'sparsity'/,
  );
  await assert.rejects(
    obsSolve(w, h, { decider: { kind: "prune", structure: { kind: "nm", n: 2, m: 4 } } }),
    /must divide the columns/,
  );
  await assert.rejects(
    obsSolve(w, h, { decider: { kind: "prune", structure: { kind: "nm", n: 4, m: 4 } } }),
    /'n'/,
  );
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    obsSolve(w, h, { backend: "cpu", decider: { kind: "round" } as any }),
    TypeError,
  );
  await assert.rejects(
    obsSolve(w, h, { decider: { kind: "custom", decide: () => [1, 2] } }),
    /returned 2 values/,
  );
});

Deno.test("the grid decider fits one grid for the whole tensor with perTensor, and keeps it", async () => {
  const res = await obsSolve(w, hessian(x), {
    backend: "cpu",
    decider: { kind: "grid", grid: { bits: 3, perTensor: true } },
  });
  assert.equal(res.scales!.length, rows);
  assert.ok(res.scales!.every((s) => s === res.scales![0]));
  assert.ok(res.zeros!.every((z) => z === res.zeros![0]));
  const values = new Set(Array.from(res.weight.data));
  assert.ok(values.size <= 8, `${values.size} distinct values on a 3-bit grid`);
});
