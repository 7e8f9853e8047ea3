/**
 * Layer errors of modules compressed without calibration data. The pipeline
 * builds Hessians only for stages that read them (GPTQ, SparseGPT, Wanda,
 * AQLM), so data-free stages (RTN, magnitude, HIGGS, NF4) come back with a
 * NaN layer error; this pass measures them on the same calibration windows.
 * Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { addInputs, type Hessian, hessian } from "../hessian/hessian.ts";
import { layerError } from "../hessian/layer_error.ts";
import type { CompressedLinear } from "../pipeline/compress_linear.ts";
import type { CompressibleModel } from "../pipeline/model.ts";

/**
 * Fills in the layer errors ‖(W − Ŵ)X‖² / ‖WX‖² the pipeline left NaN. X is
 * each linear's input in the compressed model (compressed earlier blocks and
 * earlier linears of its block), which is the input true-sequential
 * compression gives a linear, so a measured error means what the pipeline's
 * errors mean. One forward pass over the calibration windows, one block's
 * Hessians held at a time; nothing runs when no error is missing.
 *
 * @param model The uncompressed model (not modified).
 * @param calibration The calibration windows the compression used.
 * @param modules The pipeline's modules (not modified).
 * @returns The modules, in the same order, with the missing errors measured.
 */
export function measureLayerErrors(
  model: CompressibleModel,
  calibration: readonly (readonly number[])[],
  modules: ReadonlyMap<string, CompressedLinear>,
): Map<string, CompressedLinear> {
  const out = new Map(modules);
  const missing = new Set(
    [...modules.values()]
      .filter((m) => m.stages.length > 0 && Number.isNaN(m.layerError))
      .map((m) => m.name),
  );
  const seqs = calibration.filter((s) => s.length > 0);
  if (missing.size === 0 || seqs.length === 0) return out;
  const measure = (name: string, weight: Tensor<"f32">, h: Hessian) => {
    const m = modules.get(name)!;
    out.set(name, { ...m, layerError: layerError(weight, m.weight, h) });
    missing.delete(name);
  };
  let xs = seqs.map((s) => model.embed(s));
  for (const block of model.blocks) {
    if (missing.size === 0) return out;
    const full = (n: string) => `${block.name}.${n}`;
    const weights: Record<string, Tensor<"f32">> = { ...block.linears };
    for (const n of Object.keys(weights)) {
      const m = modules.get(full(n));
      if (m) weights[n] = m.weight;
    }
    const want = new Set(Object.keys(weights).filter((n) => missing.has(full(n))));
    // Linears that read the same input (q, k, v) share one Hessian: `alias` maps
    // each to the first one that saw it.
    const alias = new Map<string, string>();
    const hessians = new Map<string, Hessian>();
    xs = xs.map((x) => {
      const seen = new Map<Tensor<"f32">, string>();
      return block.forward(x, weights, {
        onInput: (name, input) => {
          if (!want.has(name)) return;
          const first = seen.get(input);
          if (first !== undefined) return void alias.set(name, first);
          seen.set(input, name);
          const prev = hessians.get(name);
          hessians.set(name, prev ? addInputs(prev, input) : hessian(input));
        },
      })!;
    });
    for (const n of want) measure(full(n), block.linears[n]!, hessians.get(alias.get(n) ?? n)!);
  }
  const head = model.head;
  if (head && missing.has(head.name)) {
    let h: Hessian | undefined;
    for (const x of xs) {
      const input = head.input(x);
      h = h ? addInputs(h, input) : hessian(input);
    }
    measure(head.name, head.weight, h!);
  }
  return out;
}
