import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { hessian } from "../../hessian/hessian.ts";
import { magnitudePrune } from "../../pruners/magnitude.ts";
import { wanda, wandaScores } from "../../pruners/wanda.ts";
import { assertRejectsWith, correlatedInputs, randomWeight } from "./_util.ts";

Deno.test("wanda() prunes the lowest |W_ij|·‖X_j‖ of each row, with norms taken from the inputs directly", async () => {
  const rows = 12, cols = 40, tokens = 64;
  const x = correlatedInputs(tokens, cols, 7);
  const h = hessian(tensor("f64", [tokens, cols], x));
  const data = randomWeight(rows, cols, 8);
  const w = tensor("f32", [rows, cols], data);
  const norms = Array.from({ length: cols }, (_, c) => {
    let s = 0;
    for (let t = 0; t < tokens; t++) s += x[t * cols + c]! ** 2;
    return Math.sqrt(s);
  });
  const res = await wanda(w, h, { structure: { kind: "unstructured", sparsity: 0.5 } });
  assert.equal(res.sparsity, 0.5);
  for (let r = 0; r < rows; r++) {
    const order = Array.from({ length: cols }, (_, c) => c)
      .sort((a, b) =>
        Math.abs(data[r * cols + a]!) * norms[a]! - Math.abs(data[r * cols + b]!) * norms[b]!
      );
    for (let i = 0; i < cols; i++) {
      const c = order[i]!;
      assert.equal(res.mask.data[r * cols + c], i < cols / 2 ? 0 : 1, `row ${r}, column ${c}`);
      assert.equal(res.weight.data[r * cols + c], i < cols / 2 ? 0 : data[r * cols + c]);
    }
  }
  const scores = wandaScores(w, h);
  assert.ok(Math.abs(scores[5]! - Math.abs(data[5]!) * norms[5]! / Math.sqrt(tokens)) < 1e-9);
});

Deno.test("wanda() gives exact counts for 2:4, 4:8 and per-layer unstructured sparsity", async () => {
  const rows = 8, cols = 32, tokens = 48;
  const h = hessian(tensor("f64", [tokens, cols], correlatedInputs(tokens, cols, 1)));
  const w = tensor("f32", [rows, cols], randomWeight(rows, cols, 2));
  for (const [n, m] of [[2, 4], [4, 8]] as const) {
    const res = await wanda(w, h, { structure: { kind: "nm", n, m } });
    for (let g = 0; g < rows * cols; g += m) {
      let kept = 0;
      for (let i = g; i < g + m; i++) kept += res.mask.data[i]!;
      assert.equal(kept, n);
    }
  }
  const layer = await wanda(w, h, {
    structure: { kind: "unstructured", sparsity: 0.6, scope: "layer" },
  });
  assert.equal(
    layer.mask.data.reduce((a, b) => a + b, 0),
    rows * cols - Math.floor(0.6 * rows * cols),
  );
});

Deno.test("wanda() equals per-row magnitude pruning when every input channel has the same norm", async () => {
  const rows = 6, cols = 16;
  const xtx = new Float64Array(cols * cols);
  for (let c = 0; c < cols; c++) xtx[c * cols + c] = 2.5;
  const h = { cols, count: 10, xtx };
  const w = tensor("f32", [rows, cols], randomWeight(rows, cols, 3));
  const structure = { kind: "unstructured", sparsity: 0.5, scope: "row" } as const;
  assert.deepEqual(
    (await wanda(w, h, { structure })).mask,
    (await magnitudePrune(w, { structure })).mask,
  );
});

Deno.test("wanda() rejects mismatched Hessians, NaN weights and bad structures", async () => {
  const w = tensor("f32", [2, 8], randomWeight(2, 8, 1));
  const h = { cols: 4, count: 1, xtx: new Float64Array(16) };
  const structure = { kind: "nm", n: 2, m: 4 } as const;
  await assertRejectsWith(() => wanda(w, h, { structure }), RangeError, "'hessian' has 4 columns");
  const good = { cols: 8, count: 1, xtx: new Float64Array(64) };
  const nan = tensor("f32", [2, 8], new Float32Array(16).fill(NaN));
  await assertRejectsWith(() => wanda(nan, good, { structure }), TypeError, "'weight' holds NaN");
  await assertRejectsWith(
    () => wanda(w, good, { structure: { kind: "nm", n: 3, m: 3 } }),
    RangeError,
    "'structure.n'",
  );
});
