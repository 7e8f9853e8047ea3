/**
 * AQLM on one 1024×1024 layer at 1×8 and 2×8 codebooks with groups of 8:
 * the start (k-means of up to 100 steps, least-squares codebooks and scales)
 * and one round of beam search plus codebook update.
 * `deno bench -A tests/quantizers/aqlm_bench.ts`
 */
import { aqlm } from "../../quantizers/aqlm.ts";
import { hessian } from "../../hessian/hessian.ts";
import { prng, randn } from "../../core/prng.ts";
import { tensor } from "../../core/tensor.ts";
import { correlatedInputs } from "./_correlated.ts";

const n = 1024;
const g = prng(1);
const w = tensor("f32", [n, n], Float32Array.from(randn(n * n, g)));
const h = hessian(correlatedInputs(2048, n, 2, { rank: 32 }));

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
