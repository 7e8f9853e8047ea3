/**
 * The `--format dense` output: a compressed model as a float32 Hugging Face
 * folder (Hugging Face tensor names and layout) that `loadModel` reads back.
 * Uses the `Deno` namespace.
 *
 * @module
 */

import { convert } from "../core/convert.ts";
import { writeSafetensors } from "../core/safetensors_file.ts";
import type { Tensor } from "../core/tensor.ts";
import { withCompressedWeights } from "../models/compressible.ts";
import { hfConfig, toHfTensors } from "../models/hf.ts";
import { hfTokenizerJson } from "../models/hf_tokenizer.ts";
import type { LlamaModel } from "../models/model.ts";
import type { Tokenizer } from "../models/tokenizer.ts";

/** The files a Hugging Face folder's tokenizer and generation settings live in. */
export const HF_SIDE_FILES: readonly string[] = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
];

/** Options of {@linkcode writeDenseFolder}. */
export interface DenseFolderOptions {
  /**
   * The source folder's `config.json` object: kept as it is (so keys the
   * library does not read survive) but for the dtype (`torch_dtype` and
   * `dtype`, those present, become `float32`) and `tie_word_embeddings`. When
   * absent (a llama2.c model) the configuration is built with `hfConfig`.
   */
  readonly config?: Readonly<Record<string, unknown>>;
  /** Files copied into the folder, by their name there (e.g. the source's tokenizer files). */
  readonly copy?: ReadonlyMap<string, string>;
  /** Written as `tokenizer.json` when `copy` holds none (e.g. a llama2.c tokenizer). */
  readonly tokenizer?: Tokenizer;
  /** Safetensors metadata (`format: "pt"` is added). */
  readonly metadata?: Readonly<Record<string, string>>;
}

/**
 * Writes a model with compressed weights in place as a float32 Hugging Face
 * folder: `config.json`, `model.safetensors` (every tensor float32, the q/k
 * rows in Hugging Face's rotary layout), and the tokenizer files.
 *
 * @param model The uncompressed model (not modified).
 * @param modules Dense stand-ins of the compressed modules, by name.
 * @param dir The folder (created; files already there are replaced).
 * @param options The source configuration, files to copy, the tokenizer, metadata.
 * @returns The names of the files written, sorted.
 */
export async function writeDenseFolder(
  model: LlamaModel,
  modules: ReadonlyMap<string, { readonly weight: Tensor<"f32"> }>,
  dir: string,
  options: DenseFolderOptions = {},
): Promise<string[]> {
  const { config, copy = new Map(), tokenizer, metadata = {} } = options;
  const compressed = withCompressedWeights(model, modules);
  const tied = compressed.classifier === compressed.tokenEmbedding;
  await Deno.mkdir(dir, { recursive: true });
  const written: string[] = [];
  for (const [name, from] of copy) {
    await Deno.copyFile(from, `${dir}/${name}`);
    written.push(name);
  }
  const json = config
    ? {
      ...config,
      // transformers 4 reads `torch_dtype`, 5 reads `dtype`: set the ones the source has.
      ...("torch_dtype" in config || !("dtype" in config) ? { torch_dtype: "float32" } : {}),
      ...("dtype" in config ? { dtype: "float32" } : {}),
      tie_word_embeddings: tied,
    }
    : hfConfig(compressed.config, tied);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(json, null, 2) + "\n");
  written.push("config.json");
  if (!copy.has("tokenizer.json") && tokenizer) {
    await Deno.writeTextFile(
      `${dir}/tokenizer.json`,
      JSON.stringify(hfTokenizerJson(tokenizer), null, 2) + "\n",
    );
    written.push("tokenizer.json");
  }
  const tensors = new Map<string, Tensor>();
  for (const [name, t] of toHfTensors(compressed)) {
    tensors.set(name, t.dtype === "f32" ? t : convert(t, "f32"));
  }
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt", ...metadata });
  written.push("model.safetensors");
  return written.sort();
}
