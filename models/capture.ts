/**
 * Activation capture: run token sequences through a Llama model and collect,
 * for each block and each linear layer, the inputs X [tokens, in] that the
 * layer sees, so that real-layer Hessians H = 2·XᵀX can be built. Web-standard
 * only.
 *
 * @module
 */

import { tensor } from "../core/tensor.ts";
import type { Tensor } from "../core/tensor.ts";
import { llamaBlockForward, llamaEmbed } from "./forward.ts";
import { LLAMA_LINEARS } from "./model.ts";
import type { LlamaLinear, LlamaModel } from "./model.ts";

/** Options of {@linkcode captureLinearInputs}. */
export interface CaptureOptions {
  /** Block indices to capture. @default every block */
  layers?: readonly number[];
  /** Linears to capture. @default all seven: wq, wk, wv, wo, w1, w3, w2 */
  linears?: readonly LlamaLinear[];
  /**
   * Streaming mode: called with each sequence's input of each captured linear
   * (X [T, in], f32, fresh per call but shared between linears that see the same
   * input, so do not modify it). When given, nothing is stored and the result is empty.
   */
  onInput?: (layer: number, name: LlamaLinear, x: Tensor<"f32">) => void;
}

/** Captured inputs: per block index, per linear, X [total tokens, in]. */
export type CapturedInputs = Map<number, Partial<Record<LlamaLinear, Tensor<"f32">>>>;

/**
 * Runs sequences through the (unmodified) model and returns each linear's
 * inputs, the rows of all sequences concatenated in order.
 *
 * @example
 * ```ts ignore
 * import { loadLlama2c } from "./llama2c.ts";
 * import { loadTokenizer } from "./tokenizer.ts";
 * import { captureLinearInputs } from "./capture.ts";
 * import { dataFile } from "../examples/data.ts";
 *
 * const modelPath = dataFile("stories260K/stories260K.bin");
 * if (modelPath) {
 *   const model = await loadLlama2c(modelPath);
 *   const tok = await loadTokenizer(dataFile("stories260K/tok512.bin")!, { vocabSize: 512 });
 *   const text = await Deno.readTextFile(dataFile("text/tinystories_val_sample.txt")!);
 *   const ids = tok.encode(text.slice(0, 20000), { bos: true });
 *   const seqs = [ids.slice(0, 128), ids.slice(128, 256)];
 *   const inputs = captureLinearInputs(model, seqs, { layers: [2], linears: ["w2"] });
 *   const X = inputs.get(2)!.w2!; // Tensor f32 [256, 172]
 *   // Hessian of GPTQ: H = 2·XᵀX / rows (e.g. with hessian/hessian.ts)
 * }
 * ```
 * @param model The model.
 * @param sequences Token id sequences (each run from position 0, causally).
 * @param options Which blocks and linears; streaming callback.
 * @returns Per block index, per linear name, the inputs [Σ T, in].
 */
export function captureLinearInputs(
  model: LlamaModel,
  sequences: readonly (readonly number[])[],
  options: CaptureOptions = {},
): CapturedInputs {
  const { nLayers } = model.config;
  const {
    layers = Array.from({ length: nLayers }, (_, i) => i),
    linears = LLAMA_LINEARS,
    onInput,
  } = options;
  for (const l of layers) {
    if (!(Number.isInteger(l) && l >= 0 && l < nLayers)) {
      throw new RangeError(
        `Cannot capture as 'layers' must hold block indices in [0, ${nLayers}): current value is [${layers}]`,
      );
    }
  }
  for (const n of linears) {
    if (!(LLAMA_LINEARS as readonly string[]).includes(n)) {
      throw new RangeError(
        `Cannot capture as 'linears' must name ${LLAMA_LINEARS.join(", ")}: current value is ${n}`,
      );
    }
  }
  const wanted = new Set(layers), names = new Set<string>(linears);
  const last = Math.max(-1, ...layers);
  const parts = new Map<string, Float32Array[]>();
  for (const seq of sequences) {
    const T = seq.length;
    if (T === 0) continue;
    let x = llamaEmbed(model, seq);
    for (let l = 0; l <= last; l++) {
      const hook = wanted.has(l)
        ? (name: LlamaLinear, input: Float32Array, rows: number) => {
          if (!names.has(name)) return;
          const width = input.length / rows;
          if (onInput) onInput(l, name, tensor("f32", [rows, width], input));
          else {
            const key = `${l}/${name}`;
            if (!parts.has(key)) parts.set(key, []);
            parts.get(key)!.push(input);
          }
        }
        : undefined;
      x = llamaBlockForward(model.config, model.layers[l]!, x, T, hook);
    }
  }
  const out: CapturedInputs = new Map();
  if (onInput) return out;
  for (const l of layers) {
    const entry: Partial<Record<LlamaLinear, Tensor<"f32">>> = {};
    for (const name of linears) {
      const chunks = parts.get(`${l}/${name}`) ?? [];
      const width = model.layers[l]![name].shape[1]!;
      const total = chunks.reduce((s, c) => s + c.length, 0);
      const data = new Float32Array(total);
      let o = 0;
      for (const c of chunks) {
        data.set(c, o);
        o += c.length;
      }
      entry[name] = tensor("f32", [total / width, width], data);
    }
    out.set(l, entry);
  }
  return out;
}
