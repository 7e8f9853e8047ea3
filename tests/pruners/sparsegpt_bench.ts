/**
 * SparseGPT (50% unstructured and 2:4) against GPTQ (4 bits, per channel) on
 * the same layer and Hessian, on the CPU: 1024×1024 and 4096×4096 (one
 * iteration for 4096). Both run the same OBS solver, so their times should
 * be about equal. Run: `deno bench -A tests/pruners/sparsegpt_bench.ts`.
 */

import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import type { Hessian } from "../../hessian/hessian.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { sparsegpt } from "../../pruners/sparsegpt.ts";

/** A well-conditioned correlated Hessian: rank-8 plus diagonal, with a few outlier channels. */
function syntheticHessian(n: number, seed: number): Hessian {
  const rng = prng(seed);
  const rank = 8;
  const v = new Float64Array(rank * n);
  for (let i = 0; i < v.length; i++) v[i] = rng.normal();
  const scale = new Float64Array(n).fill(1);
  for (let k = 0; k < 4; k++) scale[rng.int(n)] = 10;
  const xtx = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = i === j ? 0.25 : 0;
      for (let k = 0; k < rank; k++) s += v[k * n + i]! * v[k * n + j]!;
      s *= scale[i]! * scale[j]!;
      xtx[i * n + j] = s;
      xtx[j * n + i] = s;
    }
  }
  return { cols: n, count: 4096, xtx };
}

for (const size of [1024, 4096]) {
  const rng = prng(size);
  const data = new Float32Array(size * size);
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  const w = tensor("f32", [size, size], data);
  let h: Hessian | undefined;
  const hess = () => (h ??= syntheticHessian(size, size + 1));
  const opts = size === 4096 ? { n: 1, warmup: 0 } : {};
  const group = `${size}x${size}`;
  Deno.bench({
    name: `gptq 4-bit per channel ${group}`,
    group,
    baseline: true,
    ...opts,
    async fn(b) {
      const H = hess();
      b.start();
      await gptq(w, H, { backend: "cpu", bits: 4 });
      b.end();
    },
  });
  Deno.bench({
    name: `sparsegpt 50% ${group}`,
    group,
    ...opts,
    async fn(b) {
      const H = hess();
      b.start();
      await sparsegpt(w, H, { backend: "cpu", structure: { kind: "unstructured", sparsity: 0.5 } });
      b.end();
    },
  });
  Deno.bench({
    name: `sparsegpt 2:4 ${group}`,
    group,
    ...opts,
    async fn(b) {
      const H = hess();
      b.start();
      await sparsegpt(w, H, { backend: "cpu", structure: { kind: "nm", n: 2, m: 4 } });
      b.end();
    },
  });
}
