/**
 * Writing a compressed model as a Hugging Face folder in one of three
 * formats ({@linkcode writeCheckpoint}): `dense` (every linear in f32, f16
 * or bf16), `gptq` (the GPTQ layout of `quantizers/gptq_checkpoint.ts`, v1
 * or v2) or `compressed-tensors` (pack-quantized, `pack_quantized.ts`, and
 * for pruned linears sparse-bitmask or sparse-24-bitmask, `sparse_bitmask.ts`), each
 * with `config.json` (and its `quantization_config`), the tokenizer and
 * generation files, and shards of at most 5 GB. The folder is written into a
 * temporary sibling and renamed into place, so a failed write leaves nothing.
 * Uses the `Deno` namespace.
 *
 * @module
 */

import type { Tensor } from "../../core/tensor.ts";
import { hfConfig } from "../hf.ts";
import { hfTokenizerJson } from "../hf_tokenizer.ts";
import { LLAMA_LINEARS, type LlamaModel } from "../model.ts";
import type { Tokenizer } from "../tokenizer.ts";
import { writeShards } from "./_shards.ts";
import { HEAD, planCheckpoint } from "./_checkpoint_plan.ts";

/** The folder layouts {@linkcode writeCheckpoint} writes. */
export type CheckpointFormat = "dense" | "gptq" | "compressed-tensors";

/** The formats, in the order the command line lists them. */
export const CHECKPOINT_FORMATS: readonly CheckpointFormat[] = [
  "dense",
  "gptq",
  "compressed-tensors",
];

/** Storage types of a dense folder's linears. */
export type DenseDType = "f32" | "f16" | "bf16";

/** A compressed module as the pipeline returns it (a `CompressedLinear` is one). */
export interface CheckpointModule {
  /** The dense weight it stands for, [out, in], in the model's row order. */
  readonly weight: Tensor<"f32">;
  /** The quantized form, when a quantizer ran; a uniform grid is written packed. */
  readonly quantized?: { readonly kind: string };
  /** Keep-mask [out, in] (1 kept), when a pruner ran; compressed-tensors stores it sparse. */
  readonly mask?: Uint8Array;
}

/** Options of {@linkcode writeCheckpoint}. */
export interface WriteCheckpointOptions {
  /** The layout. @default "dense" */
  readonly format?: CheckpointFormat;
  /**
   * Storage of the compressed weights kept as floats: every linear of a dense
   * folder, the kept values of a sparse one (compressed-tensors). @default "f32"
   */
  readonly dtype?: DenseDType;
  /** GPTQ's `checkpoint_format`: "gptq" stores zero points minus one, "gptq_v2" as they are. @default "gptq" */
  readonly checkpointFormat?: "gptq" | "gptq_v2";
  /** GPTQ's `damp_percent` and `true_sequential`, recorded in the configuration. @default { dampPercent: 0.01, trueSequential: true } */
  readonly gptq?: { readonly dampPercent?: number; readonly trueSequential?: boolean };
  /**
   * The source folder's `config.json` object, kept but for the dtype keys
   * (`torch_dtype`, `dtype`), `tie_word_embeddings` and
   * `quantization_config`. Built with `hfConfig` when absent (a llama2.c model).
   */
  readonly config?: Readonly<Record<string, unknown>>;
  /** Files copied into the folder, by their name there (tokenizer and generation files). */
  readonly copy?: ReadonlyMap<string, string>;
  /** Written as `tokenizer.json` when `copy` holds none. */
  readonly tokenizer?: Tokenizer;
  /** Safetensors metadata of every shard (`format: "pt"` is added). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Largest shard, in bytes of tensor data. @default 5e9 */
  readonly maxShardBytes?: number;
}

const TORCH_DTYPES: Readonly<Record<DenseDType, string>> = {
  f32: "float32",
  f16: "float16",
  bf16: "bfloat16",
};

/**
 * Writes a compressed model as a Hugging Face folder:
 *
 * - `dense`: every linear in `dtype` (`config.json`'s `torch_dtype` names it);
 * - `gptq`: every block linear as `qweight`, `qzeros`, `scales` (f16),
 *   `g_idx`; `quantization_config` `{quant_method: "gptq", bits, group_size,
 *   desc_act, sym, checkpoint_format, lm_head: false, true_sequential,
 *   damp_percent}`. Every block linear must be quantized on one grid (bits,
 *   group size, symmetry);
 * - `compressed-tensors`: quantized linears as `weight_packed`,
 *   `weight_scale` (f16), `weight_zero_point` (asymmetric), `weight_shape`,
 *   `weight_g_idx` (act-order); one config group per grid (targets
 *   `["Linear"]` when one grid covers every block linear); pruned linears
 *   (a `mask`, no grid) as `bitmask`, `compressed` (values in `dtype`),
 *   `row_offsets`, `shape`, in the sparse-24-bitmask layout when every mask
 *   is 2:4, else sparse-bitmask, with a `sparsity_config`; other linears
 *   dense, listed in `ignore` with `lm_head`.
 *
 * The q and k rows (and codes, scales, zero points) are permuted to Hugging
 * Face's rotary layout. Embedding, norms, biases and an uncompressed
 * classifier stay in the model's stored dtype (the embedding's); a
 * compressed classifier (`output`) is written dense, in float32 unless the
 * format is dense.
 *
 * @example
 * ```ts ignore
 * const lm = await loadModel("Llama-3.2-1B");
 * const run = await compressModel(lm, windows, { stages: [{ kind: "gptq", bits: 4, groupSize: 128 }] });
 * await writeCheckpoint(lm.model, run.modules, "out/llama-gptq", { format: "gptq" });
 * ```
 * @param model The uncompressed model (not modified).
 * @param modules Compressed modules by name (`layers.i.wq`, …, `output`).
 * @param dir The folder: absent or empty; written only when complete.
 * @param options Format, dtypes, source configuration, side files, metadata, shard size.
 * @returns The names of the files written, sorted.
 * @throws {RangeError} for bad options, a non-empty `dir`, or modules the
 *   format cannot hold (naming the module); nothing is written then.
 */
export async function writeCheckpoint(
  model: LlamaModel,
  modules: ReadonlyMap<string, CheckpointModule>,
  dir: string,
  options: WriteCheckpointOptions = {},
): Promise<string[]> {
  const {
    format = "dense",
    dtype = "f32",
    checkpointFormat = "gptq",
    gptq = {},
    config,
    copy = new Map(),
    tokenizer,
    metadata = {},
    maxShardBytes = 5e9,
  } = options;
  if (!CHECKPOINT_FORMATS.includes(format)) {
    throw new RangeError(
      `Cannot write a checkpoint as 'format' must be one of ${
        CHECKPOINT_FORMATS.join(", ")
      }: current value is ${format}`,
    );
  }
  if (!(dtype in TORCH_DTYPES)) {
    throw new RangeError(
      `Cannot write a checkpoint as 'dtype' must be f32, f16 or bf16: current value is ${dtype}`,
    );
  }
  if (checkpointFormat !== "gptq" && checkpointFormat !== "gptq_v2") {
    throw new RangeError(
      `Cannot write a checkpoint as 'checkpointFormat' must be "gptq" or "gptq_v2": current value is ${checkpointFormat}`,
    );
  }
  if (!(maxShardBytes > 0)) {
    throw new RangeError(
      `Cannot write a checkpoint as 'maxShardBytes' must be positive: current value is ${maxShardBytes}`,
    );
  }
  for (const name of modules.keys()) {
    const m = /^layers\.(\d+)\.(\w+)$/.exec(name);
    const known = name === HEAD ||
      (m && +m[1]! < model.layers.length && (LLAMA_LINEARS as readonly string[]).includes(m[2]!));
    if (!known) throw new RangeError(`Cannot write a checkpoint: unknown Llama module '${name}'`);
  }
  const existing = await Deno.stat(dir).catch(() => null);
  if (
    existing && (!existing.isDirectory || (await Array.fromAsync(Deno.readDir(dir))).length > 0)
  ) {
    throw new RangeError(
      `Cannot write a checkpoint into ${dir}: it exists and is not an empty folder`,
    );
  }

  const { plan, quantizationConfig } = planCheckpoint(model, modules, format, {
    dtype,
    version: checkpointFormat === "gptq" ? 1 : 2,
    dampPercent: gptq.dampPercent ?? 0.01,
    trueSequential: gptq.trueSequential ?? true,
  });
  const sourceDtype = model.tokenEmbedding.dtype;
  const tied = model.classifier === model.tokenEmbedding && !modules.has(HEAD);
  const json: Record<string, unknown> = config ? { ...config } : hfConfig(model.config, tied);
  const torchDtype = TORCH_DTYPES[format === "dense" ? dtype : sourceDtype];
  // transformers 4 reads `torch_dtype`, 5 reads `dtype`: set the ones the source has.
  if ("torch_dtype" in json || !("dtype" in json)) json.torch_dtype = torchDtype;
  if ("dtype" in json) json.dtype = torchDtype;
  json.tie_word_embeddings = tied;
  delete json.quantization_config;
  if (quantizationConfig) json.quantization_config = quantizationConfig;

  const tmp = `${dir.replace(/\/+$/, "")}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  await Deno.mkdir(tmp, { recursive: true });
  try {
    const written: string[] = [];
    for (const [name, from] of copy) {
      await Deno.copyFile(from, `${tmp}/${name}`);
      written.push(name);
    }
    await Deno.writeTextFile(`${tmp}/config.json`, JSON.stringify(json, null, 2) + "\n");
    written.push("config.json");
    if (!copy.has("tokenizer.json") && tokenizer) {
      await Deno.writeTextFile(
        `${tmp}/tokenizer.json`,
        JSON.stringify(hfTokenizerJson(tokenizer), null, 2) + "\n",
      );
      written.push("tokenizer.json");
    }
    written.push(...await writeShards(tmp, plan, maxShardBytes, { format: "pt", ...metadata }));
    if (existing) await Deno.remove(dir);
    await Deno.rename(tmp, dir);
    return written.sort();
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}
