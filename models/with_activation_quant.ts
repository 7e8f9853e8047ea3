/**
 * Puts a recipe's activation stages into a model: each block linear whose
 * stages hold an `act` stage gets an `ActivationQuant` at its input
 * (`layer.actQuant`), with its static scale (granularity "tensor")
 * calibrated as the largest |x| its input reaches on the calibration set and
 * QUIK's kept columns taken from the weight stage that chose them (or, where
 * none did, the columns with the largest input norms). Web-standard only.
 *
 * @module
 */

import type { ActivationQuant } from "../quantizers/activation_quant.ts";
import { activationBits, checkActivationQuant } from "../quantizers/activation_quant.ts";
import type { CompressedLinear } from "../pipeline/compress_linear.ts";
import { activationStage, type Recipe, stagesFor, validateRecipe } from "../pipeline/recipe.ts";
import { type LinearInputStats, linearInputStats } from "./linear_input_stats.ts";
import { LLAMA_HEAD } from "./compressible.ts";
import { LLAMA_LINEARS, type LlamaLinear, llamaLinearShapes, type LlamaModel } from "./model.ts";

/** Options of {@linkcode withActivationQuant}. */
export interface WithActivationQuantOptions {
  /**
   * Calibration token sequences: needed for static scales and for kept
   * columns no weight stage chose (the model's own inputs are measured).
   */
  calibration?: readonly (readonly number[])[];
  /** The compressed modules, whose `outlierColumns` QUIK's activations keep. */
  modules?: ReadonlyMap<string, CompressedLinear>;
}

/**
 * A copy of the model with the recipe's activation quantization at the
 * inputs of its block linears (the CPU forward pass applies it).
 *
 * @example
 * ```ts ignore
 * const recipe = { stages: [{ kind: "gptq", bits: 8, symmetric: true }, { kind: "act", format: "int8" }] };
 * const res = await compressModel(llamaCompressible(model), calib, recipe);
 * const w8a8 = withActivationQuant(withCompressedWeights(model, res.modules), recipe);
 * ```
 * @param model The model (not modified).
 * @param recipe The recipe (its `act` stages are read).
 * @param options Calibration and the compressed modules.
 * @returns The model with `actQuant` on its layers.
 * @throws {RangeError} when a static scale or kept columns need calibration and none is given,
 *   or the classifier has an `act` stage (its input is not quantized).
 */
export function withActivationQuant(
  model: LlamaModel,
  recipe: Recipe,
  options: WithActivationQuantOptions = {},
): LlamaModel {
  validateRecipe(recipe);
  const { calibration, modules } = options;
  if (activationStage(stagesFor(recipe, LLAMA_HEAD))) {
    throw new RangeError(
      `Cannot quantize activations of the classifier ('${LLAMA_HEAD}'): not implemented; ` +
        `give it stages without 'act' (e.g. { match: "${LLAMA_HEAD}", stages: [] })`,
    );
  }
  let stats: Map<string, LinearInputStats> | null = null;
  const statsOf = (name: string, why: string): LinearInputStats => {
    if (!calibration) {
      throw new RangeError(
        `Cannot quantize the activations of ${name} as ${why} needs 'calibration': none given`,
      );
    }
    stats ??= linearInputStats(model, calibration);
    return stats.get(name)!;
  };
  const layers = model.layers.map((layer, i) => {
    const actQuant: Partial<Record<LlamaLinear, ActivationQuant>> = {};
    for (const n of LLAMA_LINEARS) {
      const name = `layers.${i}.${n}`;
      const stage = activationStage(stagesFor(recipe, name));
      if (!stage) continue;
      const { format, granularity = "token", outliers } = stage;
      const inFeatures = llamaLinearShapes(model.config)[n][1];
      let spec: ActivationQuant = { format, granularity };
      if (granularity === "tensor") {
        spec = { ...spec, absMax: statsOf(name, "a static scale").absMax };
      }
      if (outliers) {
        const chosen = modules?.get(name)?.outlierColumns;
        const count = Math.min(outliers.count, inFeatures);
        const columns = chosen ?? largestColumns(statsOf(name, "choosing kept columns"), count);
        if (columns.length !== count) {
          throw new RangeError(
            `Cannot quantize the activations of ${name}: its weight kept ${columns.length} ` +
              `columns, its act stage asks for ${count}`,
          );
        }
        spec = { ...spec, outliers: { columns, format: outliers.format ?? "int8" } };
      }
      actQuant[n] = checkActivationQuant(spec, inFeatures);
    }
    return Object.keys(actQuant).length > 0 ? { ...layer, actQuant } : layer;
  });
  return { ...model, layers };
}

/** The `count` columns with the largest Σx², ascending. */
function largestColumns(s: LinearInputStats, count: number): Int32Array {
  const order = Array.from(s.channelSumSq.keys());
  order.sort((a, b) => s.channelSumSq[b]! - s.channelSumSq[a]! || a - b);
  return Int32Array.from(order.slice(0, count)).sort();
}

/**
 * Mean storage bits per activation element over the inputs of a model's
 * block linears, weighted by their widths (an input without activation
 * quantization counts 32; the classifier's input is not counted, as the
 * weights' bits leave out the classifier).
 *
 * @param model The model.
 * @returns Bits per activation (32 for a float model).
 */
export function meanActivationBits(model: LlamaModel): number {
  let bits = 0, n = 0;
  const shapes = llamaLinearShapes(model.config);
  for (const layer of model.layers) {
    for (const name of LLAMA_LINEARS) {
      const inFeatures = shapes[name][1], spec = layer.actQuant?.[name];
      bits += (spec ? activationBits(spec, inFeatures) : 32) * inFeatures;
      n += inFeatures;
    }
  }
  return n > 0 ? bits / n : 32;
}
