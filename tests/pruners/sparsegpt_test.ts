import assert from "node:assert/strict";
import { index as mindex, inv, matrix, multiply, subset } from "mathjs";
import { tensor } from "../../core/tensor.ts";
import { hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { magnitudePrune } from "../../pruners/magnitude.ts";
import { sparsegpt } from "../../pruners/sparsegpt.ts";
import { wanda } from "../../pruners/wanda.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { assertClose } from "../_helpers.ts";
import { assertRejectsWith, correlatedInputs, randomWeight } from "./_util.ts";

Deno.test("sparsegpt() has a lower layer error than wanda() and magnitudePrune() at 50% and 2:4 on correlated inputs with outliers", async () => {
  const rows = 64, cols = 256, tokens = 1024;
  for (const seed of [1, 2]) {
    const h = hessian(tensor("f64", [tokens, cols], correlatedInputs(tokens, cols, seed)));
    const w = tensor("f32", [rows, cols], randomWeight(rows, cols, 100 + seed));
    for (
      const structure of [
        { kind: "unstructured", sparsity: 0.5 },
        { kind: "nm", n: 2, m: 4 },
      ] as const
    ) {
      const s = await sparsegpt(w, h, { backend: "cpu", structure });
      const a = await wanda(w, h, { structure });
      const m = await magnitudePrune(w, { structure });
      const [es, ea, em] = [s, a, m].map((r) => layerError(w, r.weight, h)) as [
        number,
        number,
        number,
      ];
      assert.equal(s.sparsity, 0.5);
      assert.ok(
        es < ea && es < em,
        `${structure.kind}: SparseGPT ${es}, Wanda ${ea}, magnitude ${em}`,
      );
      assert.ok(
        es < 0.6 * Math.min(ea, em),
        `SparseGPT ${es} is not clearly better (${ea}, ${em})`,
      );
    }
  }
});

Deno.test("sparsegpt() removes exactly ⌊sparsity·rows·width⌋ weights per block, and n of every m per row with N:M", async () => {
  const rows = 10, cols = 100, tokens = 300;
  const h = hessian(tensor("f64", [tokens, cols], correlatedInputs(tokens, cols, 3)));
  const w = tensor("f32", [rows, cols], randomWeight(rows, cols, 4));
  const blockSize = 32;
  for (const sparsity of [0.3, 0.5, 0.9]) {
    const res = await sparsegpt(w, h, {
      backend: "cpu",
      structure: { kind: "unstructured", sparsity },
      blockSize,
    });
    let total = 0;
    for (let b0 = 0; b0 < cols; b0 += blockSize) {
      const width = Math.min(cols, b0 + blockSize) - b0;
      let pruned = 0;
      for (let r = 0; r < rows; r++) {
        for (let c = b0; c < b0 + width; c++) {
          const i = r * cols + c;
          if (res.mask.data[i] === 0) {
            pruned++;
            assert.equal(res.weight.data[i], 0);
          }
        }
      }
      assert.equal(pruned, Math.floor(sparsity * rows * width + 1e-9), `block at ${b0}`);
      total += pruned;
    }
    assert.equal(res.sparsity, total / (rows * cols));
  }
  const c96 = 96;
  const h96 = hessian(tensor("f64", [tokens, c96], correlatedInputs(tokens, c96, 3)));
  const w96 = tensor("f32", [rows, c96], randomWeight(rows, c96, 4));
  for (const [n, m] of [[2, 4], [4, 8], [1, 4]] as const) {
    // blockSize 30 is rounded down to a multiple of m by the solver
    const res = await sparsegpt(w96, h96, {
      backend: "cpu",
      structure: { kind: "nm", n, m },
      blockSize: 30,
    });
    for (let g = 0; g < rows * c96; g += m) {
      let kept = 0;
      for (let i = g; i < g + m; i++) {
        kept += res.mask.data[i]!;
        if (res.mask.data[i] === 0) assert.equal(res.weight.data[i], 0);
      }
      assert.equal(kept, n);
    }
  }
});

Deno.test("sparsegpt() with 'quantize' returns only grid values and exact zeros, with codes at the zero point where pruned", async () => {
  const rows = 12, cols = 64, tokens = 200;
  const h = hessian(tensor("f64", [tokens, cols], correlatedInputs(tokens, cols, 5)));
  const w = tensor("f32", [rows, cols], randomWeight(rows, cols, 6));
  for (
    const [structure, grid] of [
      [{ kind: "unstructured", sparsity: 0.5 }, { bits: 4 }],
      [{ kind: "nm", n: 2, m: 4 }, { bits: 3, groupSize: 16 }],
      [{ kind: "nm", n: 4, m: 8 }, { bits: 4, groupSize: 32, symmetric: true }],
    ] as const
  ) {
    const res = await sparsegpt(w, h, { backend: "cpu", structure, quantize: grid });
    const q = res.quantized!;
    assert.equal(q.bits, grid.bits);
    assert.equal(q.groupSize, "groupSize" in grid ? grid.groupSize : -1);
    const groups = q.scales.length / rows;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c, k = r * groups + q.gIdx[c]!;
        const v = res.weight.data[i]!;
        const onGrid = Math.fround(q.scales[k]! * (q.codes[i]! - q.zeros[k]!));
        assert.ok(q.codes[i]! < 2 ** grid.bits);
        assert.equal(v, onGrid, `[${r}, ${c}] is not the grid value of its code`);
        if (res.mask.data[i] === 0) {
          assert.ok(Object.is(v, 0) || v === 0);
          assert.equal(q.codes[i], q.zeros[k]);
        }
      }
    }
    assert.equal(res.sparsity, 0.5);
  }
});

Deno.test("sparsegpt() joint with 4-bit quantization has a lower layer error than pruning first and rounding after", async () => {
  const rows = 32, cols = 128, tokens = 512;
  const h = hessian(tensor("f64", [tokens, cols], correlatedInputs(tokens, cols, 21)));
  const w = tensor("f32", [rows, cols], randomWeight(rows, cols, 22));
  for (
    const structure of [{ kind: "unstructured", sparsity: 0.5 }, {
      kind: "nm",
      n: 2,
      m: 4,
    }] as const
  ) {
    const joint = await sparsegpt(w, h, { backend: "cpu", structure, quantize: { bits: 4 } });
    const pruned = await sparsegpt(w, h, { backend: "cpu", structure });
    const after = dequantize(await rtn(pruned.weight, { bits: 4 }));
    for (let i = 0; i < after.data.length; i++) {
      if (pruned.mask.data[i] === 0) assert.equal(after.data[i], 0, "rounding keeps zeros");
    }
    const ej = layerError(w, joint.weight, h), es = layerError(w, after, h);
    assert.ok(ej < es, `${structure.kind}: joint ${ej}, prune then round ${es}`);
  }
});

/** Damped Hessian as a nested array (the solver damps by 1% of the mean diagonal). */
function damped(h: { cols: number; xtx: Float64Array }, ratio: number): number[][] {
  const n = h.cols;
  let mean = 0;
  for (let j = 0; j < n; j++) mean += h.xtx[j * n + j]! / n;
  return Array.from(
    { length: n },
    (_, i) => Array.from({ length: n }, (_, j) => h.xtx[i * n + j]! + (i === j ? ratio * mean : 0)),
  );
}

Deno.test("sparsegpt() removing one weight gives the closed-form OBS optimum (checked with mathjs)", async () => {
  const rows = 3, cols = 5, tokens = 40;
  const h = hessian(tensor("f64", [tokens, cols], correlatedInputs(tokens, cols, 9, { rank: 2 })));
  const H = damped(h, 0.01);
  for (const q of [0, 2]) {
    const data = Float32Array.from([
      0.9,
      -1.1,
      0.7,
      1.3,
      -0.8,
      1.2,
      0.6,
      -1.4,
      0.9,
      1.0,
      -0.7,
      1.5,
      0.8,
      -1.2,
      1.1,
    ]);
    data[1 * cols + q] = 1e-3; // the one weight with a negligible saliency
    const w = tensor("f32", [rows, cols], data);
    const res = await sparsegpt(w, h, {
      backend: "cpu",
      structure: { kind: "unstructured", sparsity: 0.07 },
    });
    assert.equal(res.mask.data.reduce((a, b) => a + b, 0), rows * cols - 1);
    assert.equal(res.mask.data[1 * cols + q], 0);
    const expected = Array.from(data);
    expected[1 * cols + q] = 0;
    if (q === 0) {
      // OBS: δ = −w_q / [H⁻¹]_qq · H⁻¹ e_q, the optimum over all other weights of the row
      const Hinv = inv(matrix(H)).toArray() as number[][];
      for (let c = 1; c < cols; c++) {
        expected[cols + c] = data[cols + c]! - (data[cols + q]! / Hinv[q]![q]!) * Hinv[c]![q]!;
      }
    } else {
      // earlier columns are already fixed: least squares over the later ones,
      // δ_R = H_RR⁻¹ H_Rq w_q with R = {q + 1, …}
      const R = Array.from({ length: cols - q - 1 }, (_, i) => q + 1 + i);
      const HRR = subset(matrix(H), mindex(R, R));
      const HRq = subset(matrix(H), mindex(R, [q]));
      const delta = (multiply(inv(HRR), HRq).toArray() as number[][]).map((x) =>
        x[0]! * data[cols + q]!
      );
      R.forEach((c, i) => (expected[cols + c] = data[cols + c]! + delta[i]!));
    }
    assertClose(res.weight.data, expected, {
      atol: 2e-6,
      rtol: 2e-6,
      message: `pruned column ${q}`,
    });
  }
});

Deno.test("sparsegpt() zeroes dead input columns, reports progress and leaves its arguments alone", async () => {
  const rows = 4, cols = 16, tokens = 64;
  const x = correlatedInputs(tokens, cols, 11);
  for (let t = 0; t < tokens; t++) x[t * cols + 5] = 0;
  const h = hessian(tensor("f64", [tokens, cols], x));
  const xtxCopy = h.xtx.slice();
  const data = randomWeight(rows, cols, 12);
  const copy = data.slice();
  const progress: [number, number][] = [];
  const res = await sparsegpt(tensor("f32", [rows, cols], data), h, {
    backend: "cpu",
    structure: { kind: "nm", n: 2, m: 4 },
    blockSize: 8,
    onProgress: (done, total) => progress.push([done, total]),
  });
  assert.deepEqual(progress, [[8, 16], [16, 16]]);
  assert.equal(res.stats.deadColumns, 1);
  for (let r = 0; r < rows; r++) assert.equal(res.weight.data[r * cols + 5], 0);
  assert.deepEqual(data, copy);
  assert.deepEqual(h.xtx, xtxCopy);
});

Deno.test("sparsegpt() rejects bad sparsity, n ≥ m, m not dividing the columns, NaN weights and a scope", async () => {
  const h = hessian(tensor("f64", [32, 8], correlatedInputs(32, 8, 1)));
  const w = tensor("f32", [2, 8], randomWeight(2, 8, 1));
  const cases: [unknown, new (...a: never[]) => Error, string][] = [
    [
      { kind: "unstructured", sparsity: 1 },
      RangeError,
      "'structure.sparsity' must be a number in [0, 1)",
    ],
    [{ kind: "unstructured", sparsity: -0.5 }, RangeError, "'structure.sparsity'"],
    [{ kind: "nm", n: 4, m: 4 }, RangeError, "'structure.n' must be an integer in [1, m)"],
    [{ kind: "nm", n: 2, m: 3 }, RangeError, "'structure.m' (3) must divide the 8 input columns"],
    [
      { kind: "unstructured", sparsity: 0.5, scope: "row" },
      RangeError,
      "'structure.scope' is not used",
    ],
  ];
  for (const [structure, cls, msg] of cases) {
    await assertRejectsWith(
      () => sparsegpt(w, h, { backend: "cpu", structure: structure as never }),
      cls,
      msg,
    );
  }
  const nan = tensor("f32", [2, 8], new Float32Array(16).fill(NaN));
  await assertRejectsWith(
    () => sparsegpt(nan, h, { backend: "cpu", structure: { kind: "nm", n: 2, m: 4 } }),
    TypeError,
    "'weight' holds NaN at [0, 0]",
  );
  await assertRejectsWith(
    () => sparsegpt(w, h, { backend: "cpu", structure: { kind: "nm", n: 2, m: 4 }, blockSize: 0 }),
    RangeError,
    "'blockSize'",
  );
  await assertRejectsWith(
    () => sparsegpt(w, h, { backend: "cpu", structure: { kind: "nm", n: 2, m: 4 }, dampRatio: -1 }),
    RangeError,
    "'dampRatio'",
  );
  const h4 = hessian(tensor("f64", [32, 4], correlatedInputs(32, 4, 1)));
  await assertRejectsWith(
    () => sparsegpt(w, h4, { backend: "cpu", structure: { kind: "nm", n: 2, m: 4 } }),
    RangeError,
    "Hessian has 4 columns",
  );
});
