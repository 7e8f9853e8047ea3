/**
 * Loader for llama2.c checkpoints (legacy version 0): a header of seven
 * little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len) and the float32 tensors in llama2.c's fixed order. A
 * negative vocab_size means an unshared classifier stored after the rotary
 * tables. The header is checked against the file size, so a truncated or
 * inconsistent file is refused with the file name and both sizes.
 *
 * `parseLlama2c` is web-standard; `loadLlama2c` reads a file with the `Deno`
 * namespace.
 *
 * @module
 */

import { tensor } from "../core/tensor.ts";
import type { Tensor } from "../core/tensor.ts";
import { llamaDims, validateLlamaConfig } from "./model.ts";
import type { LlamaConfig, LlamaLayer, LlamaModel } from "./model.ts";

const HEADER_BYTES = 28;

/** Options of {@linkcode parseLlama2c}. */
export interface Llama2cOptions {
  /** Rotary embedding base θ (not stored in the file). @default 10000 */
  ropeTheta?: number;
  /** RMSNorm epsilon (not stored in the file). @default 1e-5 */
  normEps?: number;
}

/**
 * Parses a llama2.c checkpoint held in memory.
 *
 * @example
 * ```ts ignore
 * import { parseLlama2c } from "./llama2c.ts";
 * const model = parseLlama2c(await Deno.readFile("stories260K.bin"), "stories260K.bin");
 * console.log(model.config.dim); // 64
 * ```
 * @param bytes The whole file.
 * @param source The file name, for error messages.
 * @param options Constants the format does not store.
 * @returns The model (weights copied out of `bytes`).
 * @throws {RangeError} when the header is inconsistent or does not match the file size.
 */
export function parseLlama2c(
  bytes: Uint8Array,
  source = "checkpoint",
  options: Llama2cOptions = {},
): LlamaModel {
  const { ropeTheta = 10000, normEps = 1e-5 } = options;
  if (bytes.length < HEADER_BYTES) {
    throw new RangeError(
      `${source}: a llama2.c checkpoint starts with a 28-byte header, but the file has ` +
        `${bytes.length} bytes`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = Array.from({ length: 7 }, (_, i) => view.getInt32(4 * i, true));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, rawVocab, seqLen] = h as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const config: LlamaConfig = {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize: Math.abs(rawVocab),
    seqLen,
    ropeTheta,
    normEps,
    sharedClassifier: rawVocab > 0,
  };
  try {
    validateLlamaConfig(config, source);
  } catch (e) {
    throw new RangeError(
      `${(e as Error).message} (header: ${h.join(", ")}; is this a llama2.c v0 checkpoint?)`,
    );
  }
  const { headDim, kvDim } = llamaDims(config);
  const V = config.vocabSize, L = nLayers;
  const counts = {
    embedding: V * dim,
    layers: L * (2 * dim + 2 * dim * dim + 2 * kvDim * dim + 3 * dim * hiddenDim),
    finalNorm: dim,
    rope: seqLen * headDim,
    classifier: config.sharedClassifier ? 0 : V * dim,
  };
  const floats = counts.embedding + counts.layers + counts.finalNorm + counts.rope +
    counts.classifier;
  const expected = HEADER_BYTES + 4 * floats;
  if (bytes.length !== expected) {
    const what = bytes.length < expected ? "truncated" : "has trailing bytes";
    throw new RangeError(
      `${source}: the header (dim ${dim}, hidden ${hiddenDim}, ${L} layers, ${nHeads} heads, ` +
        `${nKvHeads} kv heads, vocab ${rawVocab}, seq_len ${seqLen}) implies ${expected} bytes, ` +
        `but the file has ${bytes.length} bytes (${what})`,
    );
  }
  let offset = HEADER_BYTES;
  const take = (n: number): Float32Array => {
    const out = new Float32Array(n);
    new Uint8Array(out.buffer).set(bytes.subarray(offset, offset + 4 * n));
    offset += 4 * n;
    return out;
  };
  const stacked = (rows: number, cols: number): Tensor<"f32">[] =>
    Array.from({ length: L }, () => tensor("f32", [rows, cols], take(rows * cols)));
  const tokenEmbedding = tensor("f32", [V, dim], take(V * dim));
  const attnNorm = Array.from({ length: L }, () => take(dim));
  const wq = stacked(dim, dim);
  const wk = stacked(kvDim, dim);
  const wv = stacked(kvDim, dim);
  const wo = stacked(dim, dim);
  const ffnNorm = Array.from({ length: L }, () => take(dim));
  const w1 = stacked(hiddenDim, dim);
  const w2 = stacked(dim, hiddenDim);
  const w3 = stacked(hiddenDim, dim);
  const finalNorm = take(dim);
  offset += 4 * counts.rope; // precomputed rotary tables: recomputed from ropeTheta instead
  const classifier = config.sharedClassifier
    ? tokenEmbedding
    : tensor("f32", [V, dim], take(V * dim));
  const layers: LlamaLayer[] = Array.from({ length: L }, (_, l) => ({
    attnNorm: attnNorm[l]!,
    wq: wq[l]!,
    wk: wk[l]!,
    wv: wv[l]!,
    wo: wo[l]!,
    ffnNorm: ffnNorm[l]!,
    w1: w1[l]!,
    w2: w2[l]!,
    w3: w3[l]!,
  }));
  return { config, tokenEmbedding, layers, finalNorm, classifier };
}

/**
 * Reads a llama2.c checkpoint file. Uses the `Deno` namespace.
 *
 * @param path The `.bin` file.
 * @param options Constants the format does not store.
 * @returns The model.
 * @throws {RangeError} naming the file when it is inconsistent or truncated.
 */
export async function loadLlama2c(path: string, options: Llama2cOptions = {}): Promise<LlamaModel> {
  return parseLlama2c(await Deno.readFile(path), path, options);
}
