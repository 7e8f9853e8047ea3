/**
 * The layer-level fallback of the demo, for machines without the model
 * files: seeded synthetic linear layers whose inputs have the statistics that
 * make LLM compression hard (correlated features, channel scales spread over
 * orders of magnitude, a few outlier channels, heavy tails), compressed by
 * the same recipes and compared by relative layer error ‖(W − Ŵ)X‖²/‖WX‖².
 * It measures layers, not a language model. Web-standard only.
 *
 * @module
 */

import { prng } from "../../core/prng.ts";
import { tensor } from "../../core/tensor.ts";
import type { Tensor } from "../../core/tensor.ts";
import { hessian } from "../../hessian/hessian.ts";
import type { Hessian } from "../../hessian/hessian.ts";
import { compressLinear, stageNeedsHessian } from "../../pipeline/compress_linear.ts";
import { stagesFor } from "../../pipeline/recipe.ts";
import type { DemoMethod } from "./methods.ts";
import type { DemoRow } from "./report.ts";

/** A synthetic layer: its weight and the Hessian of its inputs. */
export interface SyntheticLayer {
  /** Module name. */
  readonly name: string;
  /** W [out, in]. */
  readonly weight: Tensor<"f32">;
  /** H of the inputs. */
  readonly hessian: Hessian;
}

/**
 * Seeded synthetic layers with LLM-like input statistics.
 *
 * @param seed Seed.
 * @param tokens Calibration tokens per layer.
 * @returns Four layers shaped like a small transformer block (attention and MLP).
 */
export function syntheticLayers(seed = 0, tokens = 1024): SyntheticLayer[] {
  const rng = prng(seed);
  const shapes: [string, number, number][] = [
    ["layers.0.wq", 128, 128],
    ["layers.0.wo", 128, 128],
    ["layers.0.w1", 344, 128],
    ["layers.0.w2", 128, 344],
  ];
  return shapes.map(([name, out, inp]) => {
    const rank = 16;
    const mix = Float64Array.from({ length: rank * inp }, () => rng.normal());
    // Channel scales: log-normal spread, and 2% outlier channels 20× larger.
    const scale = Float64Array.from({ length: inp }, () => Math.exp(0.7 * rng.normal()));
    for (let k = 0; k < Math.max(1, Math.round(0.02 * inp)); k++) scale[rng.int(inp)]! *= 20;
    const x = new Float32Array(tokens * inp);
    for (let t = 0; t < tokens; t++) {
      const z = Float64Array.from({ length: rank }, () => rng.normal());
      // Heavy tails: a per-token Student-t-like amplitude.
      const amp = 1 / Math.sqrt(Math.max(0.05, -Math.log(rng.uniform() + 1e-12) / 2));
      for (let i = 0; i < inp; i++) {
        let v = 0.3 * rng.normal();
        for (let r = 0; r < rank; r++) v += z[r]! * mix[r * inp + i]! / Math.sqrt(rank);
        x[t * inp + i] = v * scale[i]! * amp;
      }
    }
    const w = new Float32Array(out * inp);
    for (let o = 0; o < out; o++) {
      const rowScale = Math.exp(0.3 * rng.normal()) / Math.sqrt(inp);
      for (let i = 0; i < inp; i++) w[o * inp + i] = rng.normal() * rowScale;
    }
    return {
      name,
      weight: tensor("f32", [out, inp], w),
      hessian: hessian(tensor("f32", [tokens, inp], x)),
    };
  });
}

/**
 * Compresses the synthetic layers with a method; the row's `perplexity`
 * field holds the weight-count-weighted mean relative layer error under the
 * key `"synthetic layers"`.
 *
 * @param layers The layers.
 * @param method The method.
 * @returns The row.
 */
export async function syntheticRow(
  layers: readonly SyntheticLayer[],
  method: DemoMethod,
): Promise<DemoRow> {
  const t0 = performance.now();
  let bits = 0, err = 0, kept = 0, n = 0, compressed = 0;
  for (const layer of layers) {
    const stages = stagesFor(method.recipe, layer.name);
    const c = await compressLinear(
      layer.weight,
      stages.some(stageNeedsHessian) || stages.length > 0 ? layer.hessian : null,
      stages,
      { name: layer.name },
    );
    const size = layer.weight.data.length;
    n += size;
    bits += c.bitsPerWeight * size;
    err += c.layerError * size;
    kept += c.density * size;
    if (stages.length > 0) compressed += size;
  }
  return {
    method: method.id,
    bitsPerWeight: compressed > 0 ? bits / n : 32,
    sizeBytes: Math.round(bits / 8),
    perplexity: { "synthetic layers": err / n },
    tokens: { "synthetic layers": layers[0]?.hessian.count ?? 0 },
    seconds: (performance.now() - t0) / 1000,
    evalSeconds: 0,
    layerError: err / n,
    density: kept / n,
  };
}
