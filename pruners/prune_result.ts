/**
 * The plain result every pruner returns. Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import type { CompressionStats } from "../quantizers/quantized_weight.ts";

/** A pruned weight: new values, the keep-mask and what the method measured. */
export interface PruneResult {
  /** Pruned weight [rows, cols], f32, exactly zero wherever `mask` is 0. */
  readonly weight: Tensor<"f32">;
  /** Keep-mask [rows, cols]: 1 where the weight is kept, 0 where it was pruned. */
  readonly mask: Tensor<"bool">;
  /** Achieved sparsity: the fraction of zeros in `mask`. */
  readonly sparsity: number;
  /** Seconds spent and, for solver-based pruners, the OBS loss, damping and dead columns. */
  readonly stats: CompressionStats;
}
