/**
 * SpQR on WebGPU against the CPU on random correlated layers: the share of
 * equal codes and outlier positions, the layer errors, GPTQ w3 g16's share of
 * equal codes on the same layers for comparison, and the wall seconds of
 * each backend (the GPU's include its first-call setup only on the first
 * layer). The README's figures come from
 *
 *   deno run -A tests/bench/spqr_gpu_agreement.ts                       # 12 layers 64×96
 *   deno run -A tests/bench/spqr_gpu_agreement.ts --rows 256 --cols 1024 --seeds 2
 *
 * @module
 */

import { parseArgs } from "node:util";
import { hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { spqr } from "../../quantizers/spqr.ts";
import type { SpqrWeight } from "../../quantizers/spqr_weight.ts";
import { correlatedInputs, randomWeight } from "../quantizers/_correlated.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rows: { type: "string", default: "64" },
    cols: { type: "string", default: "96" },
    seeds: { type: "string", default: "12" },
  },
});
const rows = Number(values.rows), cols = Number(values.cols), seeds = Number(values.seeds);

function outlierMask(q: SpqrWeight): Uint8Array {
  const m = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let e = q.outliers.rowStart[r]!; e < q.outliers.rowStart[r + 1]!; e++) {
      m[r * cols + q.outliers.columns[e]!] = 1;
    }
  }
  return m;
}

function share(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

const pct = (x: number, d = 2) => `${(100 * x).toFixed(d)}%`;
let codes = 0, outliers = 0, gptqCodes = 0, meanDiff = 0, identical = 0;
console.log("seed  codes    outliers  error cpu   error gpu   Δ        gptq codes  cpu s   gpu s");
for (let seed = 1; seed <= seeds; seed++) {
  const w = randomWeight(rows, cols, seed);
  const h = hessian(correlatedInputs(4 * cols, cols, seed + 1));
  const t0 = performance.now();
  const c = await spqr(w, h, { backend: "cpu" });
  const t1 = performance.now();
  const g = await spqr(w, h, { backend: "webgpu" });
  const t2 = performance.now();
  const ec = layerError(w, dequantize(c), h), eg = layerError(w, dequantize(g), h);
  const sc = share(c.codes, g.codes), so = share(outlierMask(c), outlierMask(g));
  const gc = await gptq(w, h, { bits: 3, groupSize: 16, actOrder: true, backend: "cpu" });
  const gg = await gptq(w, h, { bits: 3, groupSize: 16, actOrder: true, backend: "webgpu" });
  const sg = share(gc.codes, gg.codes);
  codes += sc / seeds;
  outliers += so / seeds;
  gptqCodes += sg / seeds;
  meanDiff += Math.abs(eg - ec) / ec / seeds;
  if (sc === 1 && so === 1) identical++;
  console.log(
    `${String(seed).padEnd(5)} ${pct(sc).padEnd(8)} ${pct(so, 3).padEnd(9)} ${
      ec.toExponential(4)
    }  ${eg.toExponential(4)}  ${pct((eg - ec) / ec, 3).padEnd(8)} ${pct(sg).padEnd(11)} ${
      ((t1 - t0) / 1000).toFixed(3)
    }   ${((t2 - t1) / 1000).toFixed(3)}`,
  );
}
console.log(
  `mean: codes ${pct(codes, 3)}, outlier positions ${pct(outliers, 3)}, |Δ error| ${
    pct(meanDiff, 3)
  }, GPTQ codes ${pct(gptqCodes, 3)}; identical layers ${identical} of ${seeds}`,
);
