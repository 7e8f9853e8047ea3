import assert from "node:assert/strict";
import { convert } from "../../core/convert.ts";
import { tensor } from "../../core/tensor.ts";
import { magnitudePrune } from "../../pruners/magnitude.ts";
import { assertRejectsWith, randomWeight } from "./_util.ts";

Deno.test("magnitudePrune() uses one threshold over the whole layer by default, as the reference baseline does", async () => {
  const rows = 16, cols = 32;
  const data = randomWeight(rows, cols, 1);
  const w = tensor("f32", [rows, cols], data);
  const copy = data.slice();
  const res = await magnitudePrune(w, { structure: { kind: "unstructured", sparsity: 0.5 } });
  assert.deepEqual(data, copy, "the input is not mutated");
  assert.equal(res.sparsity, 0.5);
  let maxPruned = 0, minKept = Infinity, rowsDiffer = false;
  for (let r = 0; r < rows; r++) {
    let kept = 0;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      if (res.mask.data[i]) {
        kept++;
        minKept = Math.min(minKept, Math.abs(data[i]!));
        assert.equal(res.weight.data[i], data[i]);
      } else {
        maxPruned = Math.max(maxPruned, Math.abs(data[i]!));
        assert.equal(res.weight.data[i], 0);
      }
    }
    if (kept !== cols / 2) rowsDiffer = true;
  }
  assert.ok(maxPruned <= minKept);
  assert.ok(rowsDiffer, "a layer-wide threshold gives uneven rows on random weights");
});

Deno.test("magnitudePrune() gives exact counts per row, per layer and per group of m", async () => {
  const rows = 8, cols = 24;
  const w = tensor("f32", [rows, cols], randomWeight(rows, cols, 2));
  const row = await magnitudePrune(w, {
    structure: { kind: "unstructured", sparsity: 0.3, scope: "row" },
  });
  for (let r = 0; r < rows; r++) {
    let pruned = 0;
    for (let c = 0; c < cols; c++) pruned += 1 - row.mask.data[r * cols + c]!;
    assert.equal(pruned, 7); // ⌊0.3·24⌋
  }
  const layer = await magnitudePrune(w, {
    structure: { kind: "unstructured", sparsity: 0.3, scope: "layer" },
  });
  assert.equal(layer.mask.data.reduce((a, b) => a + b, 0), rows * cols - 57); // ⌊0.3·192⌋
  for (const [n, m] of [[2, 4], [4, 8]]) {
    const nm = await magnitudePrune(w, { structure: { kind: "nm", n: n!, m: m! } });
    assert.equal(nm.sparsity, 1 - n! / m!);
    for (let g = 0; g < rows * cols; g += m!) {
      let kept = 0, nonzero = 0;
      for (let i = g; i < g + m!; i++) {
        kept += nm.mask.data[i]!;
        if (nm.weight.data[i] !== 0) nonzero++;
      }
      assert.equal(kept, n);
      assert.equal(nonzero, n);
    }
  }
});

Deno.test("magnitudePrune() accepts f64 and bf16 weights and returns f32", async () => {
  const w = tensor("f32", [2, 4], new Float32Array([1, -3, 0.5, 2, 4, 0.25, -1, 0.5]));
  for (const dtype of ["f64", "bf16"] as const) {
    const res = await magnitudePrune(convert(w, dtype), { structure: { kind: "nm", n: 2, m: 4 } });
    assert.equal(res.weight.dtype, "f32");
    assert.deepEqual([...res.weight.data], [0, -3, 0, 2, 4, 0, -1, 0]);
  }
});

Deno.test("magnitudePrune() rejects NaN weights, bad structures and non-2-D weights", async () => {
  const bad = tensor("f32", [2, 4], new Float32Array([1, 2, NaN, 4, 5, 6, 7, 8]));
  await assertRejectsWith(
    () => magnitudePrune(bad, { structure: { kind: "nm", n: 2, m: 4 } }),
    TypeError,
    "'weight' holds NaN at [0, 2]",
  );
  const w = tensor("f32", [2, 6], new Float32Array(12).fill(1));
  await assertRejectsWith(
    () => magnitudePrune(w, { structure: { kind: "nm", n: 2, m: 4 } }),
    RangeError,
    "must divide the 6 input columns",
  );
  await assertRejectsWith(
    () => magnitudePrune(w, { structure: { kind: "unstructured", sparsity: 1 } }),
    RangeError,
    "'structure.sparsity'",
  );
  await assertRejectsWith(
    () => magnitudePrune(tensor("f32", [12]), { structure: { kind: "unstructured", sparsity: 0 } }),
    RangeError,
    "must be 2-D",
  );
});
