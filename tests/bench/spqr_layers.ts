/**
 * SpQR on real llama5M layers: against the authors' implementation, and
 * against GPTQ 4-bit with groups of 128. Reads the layers that
 * `examples/aqlm_layers.ts --export DIR` writes (DIR/<block>.<linear>.safetensors:
 * `weight` f32, `xtx` f64, the mean of x·xᵀ) and, with `--reference`, the
 * dequantized weights that `tests/interop/spqr_reference.py` wrote beside them.
 * Uses the `Deno` namespace.
 *
 *   deno run -A examples/aqlm_layers.ts --export DIR --blocks 0,5 --linears wq,wk,wo,w1,w2
 *   /usr/bin/python3 tests/interop/spqr_reference.py REFERENCE_CHECKOUT DIR --wbits 3
 *   deno run -A tests/bench/spqr_layers.ts DIR --reference [--bits 3] [--group 16] [--tau 0.2]
 *     [--damp 0.01] [--tag w3g16t0.2]
 *   deno run -A tests/bench/spqr_layers.ts DIR --goal        # configurations ≤ 4 bits vs GPTQ w4 g128
 *
 * Both errors are ‖(W − Ŵ)X‖²/‖WX‖² computed by `layerError` on the same
 * Hessian; bits per weight count, for both, codes, both levels of statistics,
 * 32 bits per outlier and 16 per column for the act-order permutation.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { readSafetensors } from "../../core/safetensors_file.ts";
import type { Tensor } from "../../core/tensor.ts";
import type { Hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { spqr, type SpqrOptions } from "../../quantizers/spqr.ts";
import { spqrBitsPerWeight } from "../../quantizers/spqr_weight.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    reference: { type: "boolean", default: false },
    goal: { type: "boolean", default: false },
    bits: { type: "string", default: "3" },
    group: { type: "string", default: "16" },
    tau: { type: "string", default: "0.2" },
    damp: { type: "string", default: "0.01" },
    tag: { type: "string" },
  },
});
const dir = positionals[0];
if (dir === undefined || (!values.reference && !values.goal)) {
  console.error("usage: spqr_layers.ts DIR --reference|--goal [--bits B --group G --tau T]");
  Deno.exit(2);
}

async function layers(): Promise<{ name: string; w: Tensor; h: Hessian }[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir!)) {
    if (/^\d+\.\w+\.safetensors$/.test(e.name)) names.push(e.name.slice(0, -12));
  }
  names.sort();
  const out = [];
  for (const name of names) {
    const file = await readSafetensors(`${dir}/${name}.safetensors`);
    const w = file.tensors.get("weight")!, xtx = file.tensors.get("xtx")!;
    const cols = w.shape[1]!;
    const h = { cols, count: 1, xtx: Float64Array.from(xtx.data as Float64Array) };
    out.push({ name, w, h });
  }
  return out;
}

const geo = (xs: number[]): number => Math.exp(xs.reduce((a, x) => a + Math.log(x), 0) / xs.length);

if (values.reference) {
  const bits = Number(values.bits), groupSize = Number(values.group);
  const tau = Number(values.tau), dampRatio = Number(values.damp);
  const tag = values.tag ?? `w${bits}g${groupSize}t${tau}`;
  const options: SpqrOptions = { bits, groupSize, outlierThreshold: tau, dampRatio };
  console.log(`SpQR ${JSON.stringify(options)} (act-order, 3-bit statistics in runs of 16)`);
  console.log(
    "layer  shape     ours err   ref err    ratio   ours bits  ref bits  ours outl.  ref outl.  ours s",
  );
  const ratios: number[] = [];
  for (const { name, w, h } of await layers()) {
    const [rows, cols] = w.shape as [number, number];
    const ref = await readSafetensors(`${dir}/${name}.spqr-${tag}.safetensors`);
    const t0 = performance.now();
    const q = await spqr(w, h, options);
    const seconds = (performance.now() - t0) / 1000;
    const ours = layerError(w, dequantize(q), h);
    const theirs = layerError(w, ref.tensors.get("weight")!, h);
    const refOutliers = Number(ref.metadata.outliers);
    const refBits = spqrBitsPerWeight({
      rows,
      cols,
      bits,
      groupSize,
      scaleBits: 3,
      zeroBits: 3,
      statisticGroupSize: 16,
      outliers: refOutliers,
      permuted: true,
    });
    ratios.push(ours / theirs);
    console.log(
      name.padEnd(6),
      `${rows}x${cols}`.padEnd(9),
      ours.toExponential(3).padEnd(10),
      theirs.toExponential(3).padEnd(10),
      (ours / theirs).toFixed(3).padEnd(7),
      q.stats.bitsPerWeight.toFixed(3).padEnd(10),
      refBits.toFixed(3).padEnd(9),
      `${(100 * q.stats.outlierFraction).toFixed(2)}%`.padEnd(11),
      `${(100 * refOutliers / (rows * cols)).toFixed(2)}%`.padEnd(10),
      seconds.toFixed(2),
    );
  }
  console.log(
    `geomean error ratio (ours / reference) over ${ratios.length} layers: ${
      geo(ratios).toFixed(4)
    }; worst ${Math.max(...ratios).toFixed(4)}`,
  );
}

if (values.goal) {
  const configs: { label: string; options: SpqrOptions }[] = [
    { label: "w3 g16 τ∞", options: { bits: 3, groupSize: 16, outlierThreshold: Infinity } },
    { label: "w3 g16 τ0.2", options: { bits: 3, groupSize: 16, outlierThreshold: 0.2 } },
    { label: "w3 g16 τ0.35", options: { bits: 3, groupSize: 16, outlierThreshold: 0.35 } },
    { label: "w3 g16 τ0.5", options: { bits: 3, groupSize: 16, outlierThreshold: 0.5 } },
    { label: "w3 g32 τ0.2", options: { bits: 3, groupSize: 32, outlierThreshold: 0.2 } },
    { label: "w4 g16 τ0.2", options: { bits: 4, groupSize: 16, outlierThreshold: 0.2 } },
  ];
  const head = [
    "layer ",
    "GPTQ w4 g128",
    "GPTQ w4",
    "GPTQ w3 g16",
    ...configs.map((c) => c.label),
  ];
  console.log("relative layer error (bits per weight, everything counted)");
  console.log(head.map((h) => h.padEnd(22)).join(""));
  const rel: number[][] = configs.map(() => []);
  const bitsAll: number[][] = configs.map(() => []);
  const gptq3: number[] = [], gptq4: number[] = [];
  for (const { name, w, h } of await layers()) {
    const g = await gptq(w, h, { bits: 4, groupSize: 128 });
    const gErr = layerError(w, dequantize(g), h);
    const g4 = await gptq(w, h, { bits: 4 });
    const g4Err = layerError(w, dequantize(g4), h);
    gptq4.push(g4Err / gErr);
    const g3 = await gptq(w, h, { bits: 3, groupSize: 16 });
    const g3Err = layerError(w, dequantize(g3), h);
    gptq3.push(g3Err / gErr);
    // GPTQ's bits: codes, an f16 scale and a b-bit zero point per group.
    const cells = [
      name,
      `${gErr.toExponential(3)} (4.16)`,
      `${g4Err.toExponential(3)} (${(4 + 20 / w.shape[1]!).toFixed(2)})`,
      `${g3Err.toExponential(3)} (4.19)`,
    ];
    for (const [i, c] of configs.entries()) {
      const q = await spqr(w, h, c.options);
      const err = layerError(w, dequantize(q), h);
      rel[i]!.push(err / gErr);
      bitsAll[i]!.push(q.stats.bitsPerWeight);
      cells.push(`${err.toExponential(3)} (${q.stats.bitsPerWeight.toFixed(2)})`);
    }
    console.log(cells.map((s) => s.padEnd(22)).join(""));
  }
  console.log(`GPTQ w4 per channel: error / GPTQ w4 g128 geomean ${geo(gptq4).toFixed(3)}`);
  console.log(`GPTQ w3 g16: error / GPTQ w4 g128 geomean ${geo(gptq3).toFixed(3)}`);
  for (const [i, c] of configs.entries()) {
    const mean = bitsAll[i]!.reduce((a, b) => a + b, 0) / bitsAll[i]!.length;
    console.log(
      `${c.label}: error / GPTQ w4 g128 geomean ${geo(rel[i]!).toFixed(3)}, worst ${
        Math.max(...rel[i]!).toFixed(3)
      }; bits ${Math.min(...bitsAll[i]!).toFixed(2)}–${Math.max(...bitsAll[i]!).toFixed(2)} (mean ${
        mean.toFixed(3)
      })`,
    );
  }
}
