/**
 * Quantized modules of a fixture model for the writer's tests: every block
 * linear on a grid (RTN, or GPTQ with act-order on a random Hessian), scales
 * rounded to f16 so that a packed folder and the dense folder of the same
 * grids hold the same values.
 *
 * @module
 */

import { prng, randn } from "../../../core/prng.ts";
import { tensor } from "../../../core/tensor.ts";
import { hessian } from "../../../hessian/hessian.ts";
import { LLAMA_LINEARS, type LlamaModel } from "../../../models/model.ts";
import { dequantize } from "../../../quantizers/dequantize.ts";
import { gptq } from "../../../quantizers/gptq.ts";
import type { QuantizedWeight } from "../../../quantizers/quantized_weight.ts";
import { rtn } from "../../../quantizers/rtn.ts";
import type { CheckpointModule } from "../../../models/formats/write_checkpoint.ts";

/** A grid of the tests. */
export interface TestGrid {
  readonly bits: number;
  readonly groupSize: number;
  readonly symmetric: boolean;
  /** GPTQ with act-order (else RTN). */
  readonly actOrder: boolean;
}

/** A module with its grid, scales already f16 values. */
export interface TestModule extends CheckpointModule {
  readonly quantized: QuantizedWeight;
}

/** The quantized weight with its scales rounded to f16, and its dense weight. */
export function f16Module(q: QuantizedWeight): TestModule {
  const r = { ...q, scales: q.scales.map(Math.f16round) };
  return { weight: dequantize(r), quantized: r };
}

/** Every block linear of a model quantized on `grid` (or on `gridOf(name)`). */
export async function quantizedModules(
  model: LlamaModel,
  gridOf: (name: string) => TestGrid,
  seed = 0,
): Promise<Map<string, TestModule>> {
  const out = new Map<string, TestModule>();
  for (let l = 0; l < model.layers.length; l++) {
    for (const key of LLAMA_LINEARS) {
      const name = `layers.${l}.${key}`, grid = gridOf(name);
      const w = model.layers[l]![key];
      const { bits, groupSize, symmetric } = grid;
      let q: QuantizedWeight;
      if (grid.actOrder) {
        const cols = w.shape[1]!, rng = prng(seed + l);
        const xs = randn(128 * cols, rng).map((v, i) => (i % cols) % 5 === 0 ? 4 * v : v);
        const H = hessian(tensor("f32", [128, cols], Float32Array.from(xs)));
        q = await gptq(w, H, { bits, groupSize, symmetric, actOrder: true, backend: "cpu" });
      } else {
        q = await rtn(w, { bits, groupSize, symmetric });
      }
      out.set(name, f16Module(q));
    }
  }
  return out;
}
