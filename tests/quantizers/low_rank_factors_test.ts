import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { addLowRank } from "../../quantizers/low_rank_factors.ts";

Deno.test("addLowRank() adds B·A to Ŵ and refuses factors that do not chain", () => {
  const approx = tensor("f32", [2, 3], new Float32Array([1, 2, 3, 4, 5, 6]));
  const b = tensor("f32", [2, 1], new Float32Array([1, -2]));
  const a = tensor("f32", [1, 3], new Float32Array([0.5, 0, 1]));
  assert.deepEqual(Array.from(addLowRank(approx, { a, b }).data), [1.5, 2, 4, 3, 5, 4]);
  assert.deepEqual(Array.from(approx.data), [1, 2, 3, 4, 5, 6]); // not mutated
  assert.throws(
    () => addLowRank(approx, { a: tensor("f32", [1, 2], new Float32Array(2)), b }),
    /'b' \[2,1\]·'a' \[1,2\] does not give the shape of 'approx' \[2,3\]/,
  );
});
