/**
 * The demo's model transforms before compression: SmoothQuant's migration
 * (statistics from the calibration set) and QuaRot's rotation (with the
 * online rotation of queries and keys where the method quantizes the KV cache).
 * Web-standard only.
 *
 * @module
 */

import { linearInputStats, type LlamaModel, quarot, smoothQuant } from "../../models/mod.ts";
import type { ModelTransform } from "./methods.ts";

/**
 * The model a method compresses.
 *
 * @param model The model.
 * @param transform The method's transform (none: the model itself).
 * @param calibration Calibration sequences (SmoothQuant's statistics).
 * @param seed Seed of QuaRot's rotations.
 * @returns The transformed model.
 */
export function transformModel(
  model: LlamaModel,
  transform: ModelTransform | undefined,
  calibration: readonly (readonly number[])[],
  seed: number,
): LlamaModel {
  if (!transform) return model;
  if (transform.kind === "smoothquant") {
    return smoothQuant(model, linearInputStats(model, calibration), { alpha: transform.alpha });
  }
  return quarot(model, {
    seed,
    onlineHadamard: transform.onlineHadamard,
    qkHadamard: transform.qkHadamard ?? false,
  });
}
