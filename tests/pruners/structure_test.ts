import assert from "node:assert/strict";
import { prng } from "../../core/prng.ts";
import {
  nmMask,
  prunedCount,
  structureMask,
  structurePrunedCount,
  unstructuredMask,
  validateStructure,
} from "../../pruners/structure.ts";
import { assertThrowsWith } from "./_util.ts";

function randomScores(n: number, seed: number, ties = false): Float64Array {
  const rng = prng(seed);
  const s = new Float64Array(n);
  for (let i = 0; i < n; i++) s[i] = ties ? rng.int(4) : rng.uniform();
  return s;
}

/** Brute-force oracle: prune the k smallest of the given positions (ties: lower position). */
function bruteForcePrune(
  scores: ArrayLike<number>,
  positions: number[],
  k: number,
  mask: Uint8Array,
) {
  const order = [...positions].sort((a, b) => scores[a]! - scores[b]! || a - b);
  for (const p of order.slice(0, k)) mask[p] = 0;
}

Deno.test("unstructuredMask() prunes exactly ⌊sparsity·cols⌋ lowest scores in every row, as brute force does", () => {
  const rows = 7, cols = 33;
  for (const ties of [false, true]) {
    for (const sparsity of [0, 0.1, 0.5, 0.77, 0.99]) {
      const scores = randomScores(rows * cols, 11, ties);
      const mask = unstructuredMask(scores, [rows, cols], { sparsity, scope: "row" });
      const expected = new Uint8Array(rows * cols).fill(1);
      const k = Math.floor(sparsity * cols + 1e-9);
      for (let r = 0; r < rows; r++) {
        const pos = Array.from({ length: cols }, (_, c) => r * cols + c);
        bruteForcePrune(scores, pos, k, expected);
        let kept = 0;
        for (const p of pos) kept += mask[p]!;
        assert.deepEqual(kept, cols - k);
      }
      assert.deepEqual(mask, expected);
    }
  }
});

Deno.test("unstructuredMask() with scope 'layer' prunes exactly ⌊sparsity·rows·cols⌋ weights by one threshold", () => {
  const rows = 9, cols = 20;
  for (const ties of [false, true]) {
    for (const sparsity of [0.25, 0.5, 0.9]) {
      const scores = randomScores(rows * cols, 5, ties);
      const mask = unstructuredMask(scores, [rows, cols], { sparsity, scope: "layer" });
      const expected = new Uint8Array(rows * cols).fill(1);
      const k = Math.floor(sparsity * rows * cols + 1e-9);
      bruteForcePrune(scores, Array.from({ length: rows * cols }, (_, i) => i), k, expected);
      assert.deepEqual(mask, expected);
      assert.deepEqual(mask.reduce((a, b) => a + b, 0), rows * cols - k);
      let maxPruned = -Infinity, minKept = Infinity;
      for (let i = 0; i < mask.length; i++) {
        if (mask[i]) minKept = Math.min(minKept, scores[i]!);
        else maxPruned = Math.max(maxPruned, scores[i]!);
      }
      assert.deepEqual(maxPruned <= minKept, true);
    }
  }
});

Deno.test("nmMask() keeps exactly the n highest scores of every group of m in each row", () => {
  const rows = 6, cols = 24;
  for (const [n, m] of [[2, 4], [4, 8], [1, 3], [3, 4]] as const) {
    for (const ties of [false, true]) {
      const scores = randomScores(rows * cols, 3, ties);
      const mask = nmMask(scores, [rows, cols], { n, m });
      const expected = new Uint8Array(rows * cols).fill(1);
      for (let g = 0; g < rows * cols; g += m) {
        const pos = Array.from({ length: m }, (_, i) => g + i);
        bruteForcePrune(scores, pos, m - n, expected);
        let kept = 0;
        for (const p of pos) kept += mask[p]!;
        assert.deepEqual(kept, n);
      }
      assert.deepEqual(mask, expected);
    }
  }
});

Deno.test("structureMask() dispatches on the structure value and its default scope", () => {
  const scores = randomScores(4 * 8, 9);
  assert.deepEqual(
    structureMask(scores, [4, 8], { kind: "nm", n: 2, m: 4 }),
    nmMask(scores, [4, 8], { n: 2, m: 4 }),
  );
  assert.deepEqual(
    structureMask(scores, [4, 8], { kind: "unstructured", sparsity: 0.5 }, "layer"),
    unstructuredMask(scores, [4, 8], { sparsity: 0.5, scope: "layer" }),
  );
  assert.deepEqual(
    structureMask(scores, [4, 8], { kind: "unstructured", sparsity: 0.5, scope: "row" }, "layer"),
    unstructuredMask(scores, [4, 8], { sparsity: 0.5, scope: "row" }),
  );
  assert.deepEqual(structurePrunedCount({ kind: "nm", n: 2, m: 4 }, 4, 8), 16);
  assert.deepEqual(structurePrunedCount({ kind: "unstructured", sparsity: 0.3 }, 3, 10, "row"), 9);
  assert.deepEqual(
    structurePrunedCount({ kind: "unstructured", sparsity: 0.35 }, 3, 10, "layer"),
    10,
  );
});

Deno.test("prunedCount() rounds products that float error puts just below an integer", () => {
  assert.deepEqual(prunedCount(0.29, 100), 29);
  assert.deepEqual(prunedCount(0.7, 10), 7);
  assert.deepEqual(prunedCount(0.5, 7), 3);
  assert.deepEqual(prunedCount(0, 5), 0);
});

Deno.test("validateStructure() rejects bad sparsity, n ≥ m, n < 1 and m not dividing the columns", () => {
  for (const sparsity of [-0.1, 1, 1.5, NaN]) {
    assertThrowsWith(
      () => validateStructure({ kind: "unstructured", sparsity }, 8),
      RangeError,
      "'structure.sparsity' must be a number in [0, 1)",
    );
  }
  assertThrowsWith(
    () => validateStructure({ kind: "unstructured", sparsity: 0.5, scope: "col" as "row" }, 8),
    RangeError,
    "'structure.scope'",
  );
  assertThrowsWith(
    () => validateStructure({ kind: "nm", n: 4, m: 4 }, 8),
    RangeError,
    "'structure.n'",
  );
  assertThrowsWith(
    () => validateStructure({ kind: "nm", n: 5, m: 4 }, 8),
    RangeError,
    "'structure.n'",
  );
  assertThrowsWith(
    () => validateStructure({ kind: "nm", n: 0, m: 4 }, 8),
    RangeError,
    "'structure.n'",
  );
  assertThrowsWith(
    () => validateStructure({ kind: "nm", n: 1, m: 1.5 }, 8),
    RangeError,
    "'structure.m'",
  );
  assertThrowsWith(
    () => validateStructure({ kind: "nm", n: 2, m: 4 }, 10),
    RangeError,
    "must divide the 10 input columns",
  );
  assertThrowsWith(
    () => validateStructure({ kind: "2:4" } as never, 8),
    TypeError,
    "'structure.kind'",
  );
  assertThrowsWith(() => validateStructure("2:4" as never, 8), TypeError, "'structure'");
  assertThrowsWith(
    () => unstructuredMask([1, NaN], [1, 2], { sparsity: 0.5 }),
    TypeError,
    "NaN at [0, 1]",
  );
  assertThrowsWith(() => nmMask([1, 2, 3], [1, 4], { n: 2, m: 4 }), RangeError, "3 elements");
});
