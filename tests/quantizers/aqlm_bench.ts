/**
 * AQLM on one 1024×1024 layer at 1×8 and 2×8 codebooks with groups of 8
 * (one round of beam search plus codebook update, after the k-means start).
 * `deno bench -A tests/quantizers/aqlm_bench.ts`
 */
import { aqlm } from "../../quantizers/aqlm.ts";
import { hessian } from "../../hessian/hessian.ts";
import { prng, randn } from "../../core/prng.ts";
import { tensor } from "../../core/tensor.ts";

const n = 1024;
const g = prng(1);
const w = tensor("f32", [n, n], Float32Array.from(randn(n * n, g)));
const rank = 32;
const A = randn(rank * n, g);
const tokens = 2048;
const X = new Float32Array(tokens * n);
for (let t = 0; t < tokens; t++) {
  const z = randn(rank, g);
  for (let c = 0; c < n; c++) {
    let s = 0.3 * g.normal();
    for (let k = 0; k < rank; k++) s += z[k]! * A[k * n + c]!;
    X[t * n + c] = s;
  }
}
const h = hessian(tensor("f32", [tokens, n], X));

for (const [codebooks, codebookBits] of [[1, 8], [2, 8]] as const) {
  Deno.bench({
    name: `aqlm ${codebooks}x${codebookBits}g8 on 1024x1024, 1 round, beam 4`,
    n: 1,
    warmup: 0,
    async fn() {
      await aqlm(w, h, { codebooks, codebookBits, groupSize: 8, iterations: 1, beamSize: 4 });
    },
  });
}
