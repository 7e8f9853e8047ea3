/**
 * GPTQ on the CPU: 4 bits, per channel and groups of 128, on 1024×1024 and
 * 4096×4096 layers (the 4096 ones run once). The Hessian is a random
 * low-rank-plus-diagonal matrix (building one from tokens is not what is
 * measured here). Each result's `stats` splits the time into the
 * factorization, the column loop and the lazy updates. The baseline is
 * `python3 tests/fixtures/gptq_reference.py --bench 1024 4096` (the same steps
 * in PyTorch, as the paper's reference implementation does them).
 */

import { tensor } from "../../core/tensor.ts";
import { prng, randn } from "../../core/prng.ts";
import type { Hessian } from "../../hessian/hessian.ts";
import { gptq } from "../../quantizers/gptq.ts";

function lowRankPlusDiagonal(n: number, seed: number): Hessian {
  const r = 16, f = randn(r * n, prng(seed));
  const xtx = new Float64Array(n * n);
  for (let k = 0; k < r; k++) {
    for (let i = 0; i < n; i++) {
      const a = f[k * n + i]! / r, row = i * n, fk = k * n;
      for (let j = 0; j < n; j++) xtx[row + j] = xtx[row + j]! + a * f[fk + j]!;
    }
  }
  for (let i = 0; i < n; i++) xtx[i * n + i] = xtx[i * n + i]! + 1;
  return { cols: n, count: 1, xtx };
}

for (const n of [1024, 4096]) {
  const h = lowRankPlusDiagonal(n, 1);
  const w = tensor("f32", [n, n], Float32Array.from(randn(n * n, prng(2))));
  for (const groupSize of [-1, 128]) {
    Deno.bench({
      name: `gptq ${n}×${n}, 4 bits, group ${groupSize}`,
      group: `gptq ${n}`,
      ...(n > 1024 ? { n: 1, warmup: 0 } : {}),
      async fn() {
        await gptq(w, h, { backend: "cpu", bits: 4, groupSize });
      },
    });
  }
}
