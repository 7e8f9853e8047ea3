/**
 * The host-side (CPU) phases of the WebGPU OBS solver path, which bound the
 * wall time of `gptq()` / `sparsegpt()` on a fast GPU: the input checks and
 * copies of `obsSolve` (`prepareObs`), SparseGPT's own weight check, the
 * Hessian's conversion to the float32 lower triangle that is uploaded (in
 * chunks; the upload itself is not timed, nor was it before), the
 * assembly of the result from the read-back buffers (pruned weights and mask;
 * grid codes) and SparseGPT's keep-mask. Shapes [rows, n] = [4096, 4096] and
 * [4096, 11008] (LLaMA-7B's down projection: H is 11008², 0.97 GB in float64).
 * The GPU's output is simulated: random weights, a random 50% mask, 4-bit
 * codes. "assemble and sparsegpt keep mask" is the assembly with SparseGPT's
 * keep-mask: unpacked directly (now), or the pruned mask inverted afterwards
 * (before), whose difference from "assemble pruned W and mask" was the mask's cost. The "… total" rows run every phase of one solve in sequence.
 *
 * Run: `deno bench -A tests/hessian/obs_host_bench.ts` (needs about 3 GB of memory).
 */

import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { prepareObs } from "../../hessian/_obs_host.ts";
import { packLowerChunks } from "../../kernels/cholesky_kernel.ts";
import { assembleObsResult } from "../../hessian/_obs_assemble.ts";
import type { ObsGpuProblem } from "../../hessian/obs_gpu.ts";
import { checkWeight, invertMaskInPlace } from "../../pruners/_common.ts";

/** A symmetric finite matrix with a positive diagonal (no factorization happens here). */
function pseudoHessian(n: number): Float64Array {
  const xtx = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const v = (((Math.imul(i * 31 + j, 2654435761) >>> 0) / 2 ** 32) - 0.5) * 1e-2;
      xtx[i * n + j] = v;
      xtx[j * n + i] = v;
    }
    xtx[i * n + i] = 1 + i / n;
  }
  return xtx;
}

for (const [rows, n] of [[4096, 4096], [4096, 11008]] as const) {
  const group = `${rows}x${n}`;
  const rng = prng(n);
  const wData = new Float32Array(rows * n);
  for (let i = 0; i < wData.length; i++) wData[i] = rng.uniform() - 0.5;
  const weight = tensor("f32", [rows, n], wData);
  const xtx = pseudoHessian(n);

  // What the GPU reads back: status, loss per row, then W (prune) or codes,
  // scales, zeros (grid), then the mask words (prune).
  const status = new Uint32Array(1).buffer;
  const loss = new Float32Array(rows).fill(1e-3).buffer;
  const wOut = wData.slice().buffer;
  const maskWords = new Uint32Array(rows * Math.ceil(n / 32));
  for (let i = 0; i < maskWords.length; i++) maskWords[i] = rng.nextU32();
  const codes = new Uint32Array(rows * n / 4);
  for (let i = 0; i < codes.length; i++) codes[i] = rng.nextU32() & 0x0f0f0f0f;
  const scales = new Float32Array(rows).fill(0.01).buffer,
    zeros = new Float32Array(rows).fill(8).buffer;
  const problem = (): ObsGpuProblem => {
    const p = prepareObs(weight, xtx, rows, n, false, undefined);
    return {
      rows,
      n,
      w: p.w,
      xtx,
      diag: p.diag,
      meanDiag: p.meanDiag,
      dampRatio: 0.01,
      maxDampingRetries: 0,
      decider: { kind: "prune", structure: { kind: "unstructured", sparsity: 0.5 } },
      blockSize: 128,
      perm: p.perm,
      original: p.original,
      cleaned: p.cleaned,
      deadColumns: p.deadColumns,
      t0: performance.now(),
    };
  };
  const p0 = problem();
  const perm = Int32Array.from({ length: n }, (_, i) => i);
  const gIdx = new Uint32Array(n);
  const phases = { gpuSeconds: NaN, phases: {} };
  const assemblePrune = (p: ObsGpuProblem, keepMask = false) =>
    assembleObsResult(p, perm, { data: [status, loss, wOut, maskWords.buffer], ...phases }, {
      hasGrid: false,
      cpw: 4,
      groups: 1,
      gIdx,
      damping: 0.01,
      structure: true,
      keepMask,
    });
  const assembleGrid = (p: ObsGpuProblem) =>
    assembleObsResult(p, perm, { data: [status, loss, codes.buffer, scales, zeros], ...phases }, {
      hasGrid: true,
      cpw: 4,
      groups: 1,
      gIdx,
      damping: 0.01,
      structure: false,
    });
  const opts = { group, n: 5, warmup: 1 };

  Deno.bench({
    name: `${group} obsSolve checks and copies (prepareObs)`,
    ...opts,
    fn: () => {
      prepareObs(weight, xtx, rows, n, false, undefined);
    },
  });
  Deno.bench({
    name: `${group} sparsegpt weight check`,
    ...opts,
    fn: () => {
      checkWeight(weight, "bench");
    },
  });
  Deno.bench({
    name: `${group} Hessian to f32 lower triangle`,
    ...opts,
    fn: () => {
      packLowerChunks(xtx, n, () => {});
    },
  });
  Deno.bench({
    name: `${group} assemble pruned W and mask`,
    ...opts,
    fn: () => {
      assemblePrune(p0);
    },
  });
  Deno.bench({
    name: `${group} assemble and sparsegpt keep mask (inverted afterwards, before 2026-11-22)`,
    ...opts,
    fn: () => {
      invertMaskInPlace(assemblePrune(p0).pruned!);
    },
  });
  Deno.bench({
    name: `${group} assemble and sparsegpt keep mask (unpacked directly)`,
    ...opts,
    fn: () => {
      const res = assemblePrune(p0, true);
      if (res.kept!.length !== rows * n || !(res.prunedCount! >= 0)) throw new Error("mask");
    },
  });
  Deno.bench({
    name: `${group} assemble grid codes`,
    ...opts,
    fn: () => {
      assembleGrid(p0);
    },
  });
  Deno.bench({
    name: `${group} sparsegpt host total`,
    ...opts,
    fn: () => {
      checkWeight(weight, "bench");
      const p = problem();
      packLowerChunks(xtx, n, () => {});
      const res = assemblePrune(p, true);
      if (res.kept!.length !== rows * n || !(res.prunedCount! >= 0)) throw new Error("mask");
    },
  });
  Deno.bench({
    name: `${group} gptq host total`,
    ...opts,
    fn: () => {
      const p = problem();
      packLowerChunks(xtx, n, () => {});
      assembleGrid(p);
    },
  });
}
