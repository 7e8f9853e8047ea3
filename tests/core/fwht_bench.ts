/**
 * `fwht` on f32 weights of shape [4096, 4096] (Sylvester 4096: 12 butterfly
 * levels) and [4096, 11008] (Sylvester(32) ⊗ Paley I(q = 7^3): 5 levels plus a
 * dense 344×344 block), each against a plain memory copy of the same array
 * measured in the same run (the group baseline). Elements per second =
 * rows·cols / time per iteration.
 *
 * Run: `deno bench -A tests/core/fwht_bench.ts`
 *
 * @module
 */

import { fwht, fwhtInPlace, fwhtPlan } from "../../core/fwht.ts";
import { prng } from "../../core/prng.ts";
import { type Tensor, tensor } from "../../core/tensor.ts";

function weight(rows: number, cols: number): Tensor<"f32"> {
  const rng = prng(rows ^ cols);
  const d = new Float32Array(rows * cols);
  for (let i = 0; i < d.length; i++) d[i] = rng.uniform() - 0.5;
  return tensor("f32", [rows, cols], d);
}

for (const [rows, cols, iterations] of [[4096, 4096, 10], [4096, 11008, 2]] as const) {
  const x = weight(rows, cols);
  const group = `fwht f32 [${rows}, ${cols}] (${rows * cols} elements)`;
  const work = x.data.slice();
  const plan = fwhtPlan(cols);
  Deno.bench({
    name: `copy [${rows}, ${cols}]`,
    group,
    baseline: true,
    n: 20,
    warmup: 2,
    fn: () => {
      x.data.slice();
    },
  });
  Deno.bench({
    name: `fwht [${rows}, ${cols}] (fresh result)`,
    group,
    n: iterations,
    warmup: 1,
    fn: () => {
      fwht(x);
    },
  });
  Deno.bench({
    name: `fwhtInPlace [${rows}, ${cols}] normalized`,
    group,
    n: iterations,
    warmup: 1,
    fn: () => {
      fwhtInPlace(work, plan, { normalize: true });
    },
  });
}
