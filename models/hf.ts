/**
 * Hugging Face checkpoints of Llama-style decoders (Llama, Mistral, Qwen2,
 * Qwen3): reading a folder (`config.json`, one `model.safetensors` or shards
 * through `model.safetensors.index.json`; names
 * `model.layers.{i}.self_attn.q_proj.weight`, ...) and writing one. HF applies
 * rotary embeddings to the two halves of each head, llama2.c (and our forward
 * pass) to interleaved pairs, so the q and k rows (and their biases and
 * per-head norms) are permuted on the way in and out (the permutation of
 * HF's `convert_llama_weights_to_hf.py`). Quantized folders (GPTQ,
 * compressed-tensors pack-quantized; see `formats/`) keep their linears
 * packed. Uses the `Deno` namespace.
 *
 * @module
 */

import { tensor } from "../core/tensor.ts";
import type { Tensor } from "../core/tensor.ts";
import { asFloat32 } from "../core/convert.ts";
import { SafetensorsError } from "../core/safetensors.ts";
import {
  openSafetensors,
  readSafetensors,
  readSafetensorsTensorSync,
  type SafetensorsTensorInfo,
  writeSafetensors,
} from "../core/safetensors_file.ts";
import { f32Weight, LLAMA_LINEARS, llamaDims, llamaLinearShapes, STORED_LINEARS } from "./model.ts";
import type {
  LlamaConfig,
  LlamaLayer,
  LlamaLinear,
  LlamaModel,
  StoredLinear,
  WeightDType,
} from "./model.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { hfTokenizerJson } from "./hf_tokenizer.ts";
import { HF_ARCHITECTURES, hfModelConfig } from "./hf_config.ts";
import { dequantizePacked, isPackedLinear, type PackedLinear } from "./formats/packed_linear.ts";
import {
  moduleQuantization,
  parseQuantizationConfig,
  type QuantizationScheme,
} from "./formats/quantization_config.ts";
import { readPackedLinear } from "./formats/read_packed.ts";

/**
 * Row permutation between interleaved rotary pairs (llama2.c) and half-split
 * heads (HF): HF row `h·d + half·d/2 + j` is llama2.c row `h·d + 2j + half`.
 *
 * @param w Weight [heads·d, cols].
 * @param heads Number of heads.
 * @param toHf True: llama2.c → HF; false: HF → llama2.c.
 * @returns The permuted weight (fresh).
 */
export function permuteRotaryRows(w: Tensor<"f32">, heads: number, toHf: boolean): Tensor<"f32"> {
  const rows = w.shape[0]!, cols = w.shape[1]!;
  const order = rotaryRowOrder(heads, rows);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const [dst, src] = toHf ? [order[r]!, r] : [r, order[r]!];
    out.set(w.data.subarray(src * cols, (src + 1) * cols), dst * cols);
  }
  return tensor("f32", [rows, cols], out);
}

/**
 * {@linkcode permuteRotaryRows} of a vector (a bias [heads·d], or a per-head
 * norm weight [d] with `heads` 1).
 *
 * @param v The vector.
 * @param heads Number of heads.
 * @param toHf True: llama2.c → HF; false: HF → llama2.c.
 * @returns The permuted vector (fresh).
 */
export function permuteRotaryVector(v: Float32Array, heads: number, toHf: boolean): Float32Array {
  return permuteRotaryRows(tensor("f32", [v.length, 1], v), heads, toHf).data;
}

/**
 * The Hugging Face tensor names of block l (linears: their `.weight`).
 *
 * @param l Block index.
 * @returns Names by field of {@linkcode LlamaLayer}.
 */
export function hfNames(l: number): Record<
  "attnNorm" | "ffnNorm" | "qNorm" | "kNorm" | "bq" | "bk" | "bv" | LlamaLinear,
  string
> {
  const p = `model.layers.${l}`;
  return {
    attnNorm: `${p}.input_layernorm.weight`,
    wq: `${p}.self_attn.q_proj.weight`,
    wk: `${p}.self_attn.k_proj.weight`,
    wv: `${p}.self_attn.v_proj.weight`,
    wo: `${p}.self_attn.o_proj.weight`,
    bq: `${p}.self_attn.q_proj.bias`,
    bk: `${p}.self_attn.k_proj.bias`,
    bv: `${p}.self_attn.v_proj.bias`,
    qNorm: `${p}.self_attn.q_norm.weight`,
    kNorm: `${p}.self_attn.k_norm.weight`,
    ffnNorm: `${p}.post_attention_layernorm.weight`,
    w1: `${p}.mlp.gate_proj.weight`,
    w2: `${p}.mlp.down_proj.weight`,
    w3: `${p}.mlp.up_proj.weight`,
  };
}

/**
 * The HF tensors of a model (q/k rows, biases and norms permuted to HF's
 * rotary layout; embedding and classifier in their stored dtype).
 *
 * @param model The model.
 * @returns Tensors by HF name, in a stable order.
 */
export function toHfTensors(model: LlamaModel): Map<string, Tensor> {
  const { dim } = model.config;
  const out = new Map<string, Tensor>();
  out.set("model.embed_tokens.weight", model.tokenEmbedding);
  model.layers.forEach((layer, l) => {
    for (const [name, t] of hfLayerTensors(model.config, l, layer)) out.set(name, t);
  });
  out.set("model.norm.weight", tensor("f32", [dim], model.finalNorm));
  if (!model.config.sharedClassifier || model.classifier !== model.tokenEmbedding) {
    out.set("lm_head.weight", model.classifier);
  }
  return out;
}

/**
 * The HF tensors of one block (q/k rows, biases and norms permuted to HF's
 * rotary layout).
 *
 * @param config The configuration.
 * @param l The block's index.
 * @param layer The block.
 * @param hfLinears Linears already in HF's layout (and dtype), used as they
 *   are instead of `layer`'s (whose values are then not read).
 * @returns Tensors by HF name, in a stable order.
 */
export function hfLayerTensors(
  config: LlamaConfig,
  l: number,
  layer: LlamaLayer,
  hfLinears: Partial<Readonly<Record<LlamaLinear, Tensor>>> = {},
): Map<string, Tensor> {
  const { nHeads, nKvHeads, dim } = config;
  const out = new Map<string, Tensor>();
  const vec = (v: Float32Array) => tensor("f32", [v.length], v);
  const linear = (key: LlamaLinear, heads?: number): Tensor =>
    hfLinears[key] ??
      (heads === undefined ? layer[key] : permuteRotaryRows(layer[key], heads, true));
  {
    const n = hfNames(l);
    out.set(n.attnNorm, tensor("f32", [dim], layer.attnNorm));
    out.set(n.wq, linear("wq", nHeads));
    if (layer.bq) out.set(n.bq, vec(permuteRotaryVector(layer.bq, nHeads, true)));
    out.set(n.wk, linear("wk", nKvHeads));
    if (layer.bk) out.set(n.bk, vec(permuteRotaryVector(layer.bk, nKvHeads, true)));
    out.set(n.wv, linear("wv"));
    if (layer.bv) out.set(n.bv, vec(layer.bv));
    out.set(n.wo, linear("wo"));
    if (layer.qNorm) out.set(n.qNorm, vec(permuteRotaryVector(layer.qNorm, 1, true)));
    if (layer.kNorm) out.set(n.kNorm, vec(permuteRotaryVector(layer.kNorm, 1, true)));
    out.set(n.ffnNorm, tensor("f32", [dim], layer.ffnNorm));
    out.set(n.w1, linear("w1"));
    out.set(n.w2, linear("w2"));
    out.set(n.w3, linear("w3"));
  }
  return out;
}

/**
 * The HF `config.json` object of a model (transformers 4 layout for the
 * rotary settings: top-level `rope_theta` and `rope_scaling`, which
 * transformers 5 also reads).
 *
 * @param config The configuration.
 * @param tied Whether the classifier is the embedding.
 * @returns The JSON-ready object.
 */
export function hfConfig(config: LlamaConfig, tied: boolean): Record<string, unknown> {
  const family = config.family ?? "llama";
  const { headDim } = llamaDims(config);
  const rope = config.rope ?? { type: "default" };
  return {
    architectures: [HF_ARCHITECTURES[family]],
    model_type: family,
    hidden_size: config.dim,
    intermediate_size: config.hiddenDim,
    num_hidden_layers: config.nLayers,
    num_attention_heads: config.nHeads,
    num_key_value_heads: config.nKvHeads,
    head_dim: headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.seqLen,
    rms_norm_eps: config.normEps,
    rope_theta: config.ropeTheta,
    rope_scaling: rope.type === "default"
      ? null
      : rope.type === "linear"
      ? { rope_type: "linear", factor: rope.factor }
      : {
        rope_type: "llama3",
        factor: rope.factor,
        low_freq_factor: rope.lowFreqFactor,
        high_freq_factor: rope.highFreqFactor,
        original_max_position_embeddings: rope.originalMaxPositions,
      },
    hidden_act: "silu",
    tie_word_embeddings: tied,
    ...(family === "mistral" ? { sliding_window: config.slidingWindow ?? null } : {}),
    ...(family === "qwen2" || family === "qwen3"
      ? {
        use_sliding_window: config.slidingWindow !== undefined,
        sliding_window: config.slidingWindow ?? null,
      }
      : {}),
    ...(family === "qwen3" ? { attention_bias: false } : {}),
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "float32",
  };
}

/**
 * Writes a model as a Hugging Face folder: `config.json` and
 * `model.safetensors` (block weights float32, embedding and classifier in
 * their stored dtype), and `tokenizer.json` when a tokenizer is given, each
 * written atomically.
 *
 * @param model The model.
 * @param dir The folder (created if needed).
 * @param options Extra safetensors metadata; the tokenizer to write.
 */
export async function writeHfLlama(
  model: LlamaModel,
  dir: string,
  options: { metadata?: Record<string, string>; tokenizer?: Tokenizer } = {},
): Promise<void> {
  const { metadata = {}, tokenizer } = options;
  await Deno.mkdir(dir, { recursive: true });
  const tied = model.classifier === model.tokenEmbedding;
  const writeJson = async (name: string, value: unknown) => {
    const tmp = `${dir}/.${name}.${crypto.randomUUID()}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(value, null, 2) + "\n");
    await Deno.rename(tmp, `${dir}/${name}`);
  };
  await writeJson("config.json", hfConfig(model.config, tied));
  if (tokenizer) await writeJson("tokenizer.json", hfTokenizerJson(tokenizer));
  await writeSafetensors(`${dir}/model.safetensors`, toHfTensors(model), {
    format: "pt",
    ...metadata,
  });
}

/** Options of {@linkcode loadHfLlama}. */
export interface LoadHfOptions {
  /**
   * When the block weights become float32: `"block"` keeps every tensor in
   * its stored dtype (bf16, f16 or f32) and widens a block's linears as the
   * forward pass or the pipeline reads them, one at a time (the widened
   * linears of the last block read are kept);
   * `"load"` widens every block once, at load (faster repeated passes over a
   * small model, 2× the memory of a bf16 checkpoint and more).
   * @default "block"
   */
  widen?: "block" | "load";
  /**
   * Where the block linears' stored values live: `"memory"` reads every
   * tensor at load; `"disk"` reads only the headers (checking every tensor's
   * name, shape and dtype), the embedding, classifier, norms and biases at
   * load, and each block linear from its file when it is widened or read as
   * stored (so the host holds one block, not the checkpoint); `"auto"` is
   * `"disk"` for an unquantized checkpoint of at least 1 GiB with `widen:
   * "block"`, else `"memory"`.
   * @default "auto"
   */
  read?: "auto" | "memory" | "disk";
}

const STORED: readonly string[] = ["f32", "f16", "bf16"];

async function readJson(path: string, what: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new RangeError(`${path}: cannot read the ${what} (${(e as Error).message})`);
  }
  try {
    const json = JSON.parse(text);
    if (json === null || typeof json !== "object" || Array.isArray(json)) {
      throw new Error("not an object");
    }
    return json;
  } catch (e) {
    throw new RangeError(`${path}: the ${what} is not a JSON object (${(e as Error).message})`);
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * The safetensors files of a folder: those `model.safetensors.index.json`
 * names (each must exist), else `model.safetensors`, else every
 * `model*.safetensors`.
 */
async function shardFiles(dir: string): Promise<{ files: string[]; index: Map<string, string> }> {
  const indexPath = `${dir}/model.safetensors.index.json`;
  const index = new Map<string, string>();
  if (await isFile(indexPath)) {
    const json = await readJson(indexPath, "shard index");
    const map = json.weight_map;
    if (map === null || typeof map !== "object" || Array.isArray(map)) {
      throw new RangeError(`${indexPath}: 'weight_map' must be an object of tensor → file`);
    }
    for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
      if (typeof file !== "string" || file.includes("/") || file.includes("\\")) {
        throw new RangeError(
          `${indexPath}: tensor ${name} maps to ${JSON.stringify(file)}, not a file name`,
        );
      }
      index.set(name, file);
    }
    const files = [...new Set(index.values())].sort();
    for (const f of files) {
      if (!(await isFile(`${dir}/${f}`))) {
        throw new RangeError(`${indexPath} names ${f}, which is not in ${dir}`);
      }
    }
    if (files.length === 0) throw new RangeError(`${indexPath}: 'weight_map' names no file`);
    return { files: files.map((f) => `${dir}/${f}`), index };
  }
  if (await isFile(`${dir}/model.safetensors`)) {
    return { files: [`${dir}/model.safetensors`], index };
  }
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && /^model.*\.safetensors$/.test(e.name)) files.push(`${dir}/${e.name}`);
  }
  if (files.length === 0) {
    throw new RangeError(
      `${dir}: no model.safetensors, model*.safetensors or model.safetensors.index.json`,
    );
  }
  return { files: files.sort(), index };
}

/**
 * HF row of each interleaved-layout row of a q or k weight [heads·d, ·]:
 * llama2.c row `h·d + 2j + half` is HF row `h·d + half·d/2 + j`.
 *
 * @param heads Number of heads.
 * @param rows heads·d.
 * @returns The HF row of each row.
 */
export function rotaryRowOrder(heads: number, rows: number): Int32Array {
  const d = rows / heads;
  const order = new Int32Array(rows);
  for (let h = 0; h < heads; h++) {
    for (let half = 0; half < 2; half++) {
      for (let j = 0; j < d / 2; j++) order[h * d + 2 * j + half] = h * d + half * (d / 2) + j;
    }
  }
  return order;
}

/**
 * Layers whose small vectors (norms, biases) are plain fields and whose
 * linears are read through getters: the first read of a linear of layer l
 * widens that linear (`widen(l, key)`), and the block's widened linears are
 * kept until a linear of another block is read, so at most one widened
 * block exists at a time (plus what callers hold on to); a caller may widen
 * a block linear by linear. Each layer also keeps its linears as stored
 * under the non-enumerable {@linkcode STORED_LINEARS}, which the CPU forward
 * pass uses without widening (not when `stored` is null: a checkpoint read
 * from disk, whose linears are read when widened).
 */
function lazyLayers(
  n: number,
  small: (l: number) => Omit<LlamaLayer, LlamaLinear>,
  stored: ((l: number) => Record<LlamaLinear, StoredLinear>) | null,
  widen: (l: number, key: LlamaLinear) => Tensor<"f32">,
  readAsync: ((l: number, key: LlamaLinear) => Promise<StoredRows>) | null,
): LlamaLayer[] {
  let cached: { l: number; linears: Partial<Record<LlamaLinear, Tensor<"f32">>> } | null = null;
  /** The block's cache entry of a linear (the previous block's released first). */
  const keep = (l: number, key: LlamaLinear, make: () => Tensor<"f32">): Tensor<"f32"> => {
    if (cached === null || cached.l !== l) cached = { l, linears: {} };
    return cached.linears[key] ??= make();
  };
  return Array.from({ length: n }, (_, l) => {
    const layer = { ...small(l) };
    for (const key of LLAMA_LINEARS) {
      Object.defineProperty(layer, key, {
        get: () => keep(l, key, () => widen(l, key)),
        enumerable: true,
      });
    }
    if (stored !== null) {
      Object.defineProperty(layer, STORED_LINEARS, { value: stored(l), enumerable: false });
    }
    if (readAsync !== null) {
      const ahead: ReadAhead = async (key, widenRows) => {
        const held = cached?.l === l ? cached.linears[key] : undefined;
        if (held !== undefined) return held;
        const { weight, rowFrom } = await readAsync(l, key);
        const wide = await widenRows(weight, rowFrom);
        // A read of `layer[key]` meanwhile wins (one tensor per linear while cached).
        return keep(l, key, () => wide);
      };
      Object.defineProperty(layer, READ_AHEAD, { value: ahead, enumerable: false });
    }
    return layer as LlamaLayer;
  });
}

/** A stored block linear and the source row of each of its rows in the model's order. */
interface StoredRows {
  readonly weight: Tensor<WeightDType>;
  readonly rowFrom: Int32Array | null;
}

/**
 * Widens a stored weight to float32 with row r taken from row `rowFrom[r]`
 * (null: the same order), as `f32Weight` and a row gather do; it may take
 * `weight`'s buffer (transfer it to a worker).
 */
export type WidenRows = (
  weight: Tensor<WeightDType>,
  rowFrom: Int32Array | null,
) => Promise<Tensor<"f32">>;

type ReadAhead = (key: LlamaLinear, widen: WidenRows) => Promise<Tensor<"f32">>;

const READ_AHEAD = Symbol("readAhead");

/**
 * A block linear of a loaded model, the tensor `layer[key]` returns, read
 * without blocking the caller's thread where the loader can: a checkpoint
 * read from disk by block (`loadHf`'s `read: "disk"`) reads the linear's
 * bytes asynchronously and hands them to `widen` (e.g. a worker thread), and
 * the result is then what `layer[key]` returns while the block stays cached.
 * Any other layer gives `layer[key]`.
 *
 * @param layer A block of a model.
 * @param key The linear.
 * @param widen Widens the stored weight and orders its rows (the result must
 *   equal `f32Weight(weight)` with row r taken from row `rowFrom[r]`).
 * @returns The linear, float32, in the model's row order.
 */
export async function readLinearAhead(
  layer: LlamaLayer,
  key: LlamaLinear,
  widen: WidenRows,
): Promise<Tensor<"f32">> {
  const ahead = (layer as { [READ_AHEAD]?: ReadAhead })[READ_AHEAD];
  return ahead ? await ahead(key, widen) : layer[key];
}

/**
 * Reads a Hugging Face folder of a Llama-style decoder (Llama, Mistral, Qwen2,
 * Qwen3; see `hf_config.ts`): `config.json` and the weights, one
 * `model.safetensors` or the shards `model.safetensors.index.json` names.
 * Tensors stay in their stored dtype (bf16, f16 or f32); the blocks are
 * widened to float32 one at a time as they are read (see {@linkcode LoadHfOptions}),
 * the embedding row by row, the classifier in chunks of rows. Every tensor's
 * presence, shape and dtype is checked at load.
 *
 * @param dir The folder.
 * @param options When to widen.
 * @returns The model (q/k rows in the interleaved rotary layout of the forward pass).
 * @throws {RangeError} naming the file, the tensor or the key: an unsupported
 *   architecture or setting, a missing key, an index naming a missing file, a
 *   missing tensor, a tensor of the wrong shape or dtype.
 * @throws {SafetensorsError} naming the file for a truncated or broken shard.
 */
export async function loadHfLlama(dir: string, options: LoadHfOptions = {}): Promise<LlamaModel> {
  const { widen = "block", read = "auto" } = options;
  if (widen !== "block" && widen !== "load") {
    throw new RangeError(
      `Cannot load a model as 'widen' must be "block" or "load": current value is ${
        JSON.stringify(widen)
      }`,
    );
  }
  if (read !== "auto" && read !== "memory" && read !== "disk") {
    throw new RangeError(
      `Cannot load a model as 'read' must be "auto", "memory" or "disk": current value is ${
        JSON.stringify(read)
      }`,
    );
  }
  const configPath = `${dir}/config.json`;
  const json = await readJson(configPath, "configuration");
  const config = hfModelConfig(json, configPath);
  const quantization: QuantizationScheme | null = json.quantization_config === undefined
    ? null
    : parseQuantizationConfig(json.quantization_config, configPath);
  const { files, index } = await shardFiles(dir);
  let totalBytes = 0;
  // Each file's size and modification time: a block linear read later from
  // a file that changed since is refused (its byte ranges may be others').
  const stamps = new Map<string, string>();
  const stamp = (info: Deno.FileInfo) => `${info.size}:${info.mtime?.getTime()}`;
  for (const f of files) {
    const info = await Deno.stat(f);
    totalBytes += info.size;
    stamps.set(f, stamp(info));
  }
  if (read === "disk" && (quantization !== null || widen !== "block")) {
    throw new RangeError(
      `Cannot load ${dir} with 'read' "disk": it applies to unquantized checkpoints ` +
        `widened by block (this one is ${
          quantization !== null ? "quantized" : 'widened at "load"'
        })`,
    );
  }
  const fromDisk = read === "disk" ||
    (read === "auto" && widen === "block" && quantization === null && totalBytes >= 2 ** 30);
  // Every tensor's header; its values read now, or (block linears read from
  // disk) when used.
  const all = new Map<string, { t: Tensor | SafetensorsTensorInfo; file: string }>();
  const blockLinear = new Set<string>();
  for (let l = 0; l < config.nLayers; l++) {
    for (const key of LLAMA_LINEARS) blockLinear.add(hfNames(l)[key]);
  }
  for (const f of files) {
    try {
      if (fromDisk) {
        const handle = await openSafetensors(f);
        try {
          for (const name of handle.names) {
            all.set(name, {
              t: blockLinear.has(name) ? handle.info(name) : await handle.read(name),
              file: f,
            });
          }
        } finally {
          handle.close();
        }
      } else {
        const { tensors } = await readSafetensors(f);
        for (const [name, t] of tensors) all.set(name, { t, file: f });
      }
    } catch (e) {
      if (e instanceof SafetensorsError) throw new SafetensorsError(`${f}: ${e.message}`);
      throw e;
    }
  }
  const where = (name: string): string => {
    const listed = index.get(name);
    if (listed !== undefined) return `${dir}/${listed} (as the index says)`;
    return files.length === 1 ? files[0]! : `${dir} (${files.length} safetensors files)`;
  };
  /** A tensor's entry, its presence, shape and dtype checked (nothing read). */
  const entry = (name: string, shape: readonly number[]) => {
    const e = all.get(name);
    if (!e) throw new RangeError(`${where(name)}: missing tensor ${name}`);
    if (e.t.shape.join() !== shape.join()) {
      throw new RangeError(
        `${e.file}: tensor ${name} has shape [${e.t.shape}], config.json implies [${shape}]`,
      );
    }
    if (!STORED.includes(e.t.dtype)) {
      throw new RangeError(
        `${e.file}: tensor ${name} has dtype ${e.t.dtype}; expected bf16, f16 or f32`,
      );
    }
    return e;
  };
  /** Refuses to read `name` from `file` if the file changed since the load (`info`: its stat now). */
  const checkUnchanged = (name: string, file: string, info: Deno.FileInfo): void => {
    if (stamp(info) !== stamps.get(file)) {
      throw new Error(
        `Cannot read tensor ${name}: ${file} changed since the model was loaded ` +
          `(its block linears are read from disk when used); load the model again`,
      );
    }
  };
  /** A checked tensor; one left on disk is read now (each time: callers keep what they need). */
  const get = (name: string, shape: readonly number[]): Tensor<WeightDType> => {
    const e = entry(name, shape);
    if ("data" in e.t) return e.t as Tensor<WeightDType>;
    checkUnchanged(name, e.file, Deno.statSync(e.file));
    return readSafetensorsTensorSync(e.file, e.t) as Tensor<WeightDType>;
  };
  const { dim, vocabSize, nHeads, nKvHeads, nLayers } = config;
  const { headDim, qDim, kvDim } = llamaDims(config);
  const linearShapes = llamaLinearShapes(config);
  const shapes = (l: number): Record<string, readonly number[]> => {
    const n = hfNames(l);
    return {
      [n.attnNorm]: [dim],
      [n.ffnNorm]: [dim],
      ...(config.qkvBias ? { [n.bq]: [qDim], [n.bk]: [kvDim], [n.bv]: [kvDim] } : {}),
      ...(config.qkNorm ? { [n.qNorm]: [headDim], [n.kNorm]: [headDim] } : {}),
    };
  };
  // Quantized linears stay packed: read (and checked) once, here.
  const packed = new Map<string, PackedLinear>();
  const linearWeight = (l: number, key: LlamaLinear): Tensor<WeightDType> | PackedLinear => {
    const name = hfNames(l)[key];
    return packed.get(name) ?? get(name, linearShapes[key]);
  };
  // Check everything now, so that a bad checkpoint fails at load, not mid-run.
  for (let l = 0; l < nLayers; l++) {
    for (const [name, shape] of Object.entries(shapes(l))) get(name, shape);
    for (const key of LLAMA_LINEARS) {
      const name = hfNames(l)[key], module = name.slice(0, -".weight".length);
      const q = quantization && moduleQuantization(quantization, module);
      if (!q) {
        entry(name, linearShapes[key]);
        continue;
      }
      try {
        const tensorOf = (t: string) => {
          const e = all.get(t);
          return e && "data" in e.t ? e.t : undefined;
        };
        packed.set(name, readPackedLinear(q, tensorOf, module, linearShapes[key]));
      } catch (e) {
        if (!(e instanceof RangeError)) throw e;
        const first = `${module}.${
          {
            gptq: "qweight",
            "pack-quantized": "weight_packed",
            "sparse-bitmask": "bitmask",
          }[q.kind]
        }`;
        throw new RangeError(`${where(first)}: ${e.message}`);
      }
    }
  }
  if (quantization && moduleQuantization(quantization, "lm_head")) {
    throw new RangeError(
      `${configPath}: quantization_config quantizes lm_head, which is not read`,
    );
  }
  const vec = (t: Tensor<WeightDType>): Float32Array => asFloat32(t);
  // Norms and biases (a few thousand values a block) are widened at load.
  const small = (l: number): Omit<LlamaLayer, LlamaLinear> => {
    const n = hfNames(l);
    return {
      attnNorm: vec(get(n.attnNorm, [dim])),
      ffnNorm: vec(get(n.ffnNorm, [dim])),
      ...(config.qkvBias
        ? {
          bq: permuteRotaryVector(vec(get(n.bq, [qDim])), nHeads, false),
          bk: permuteRotaryVector(vec(get(n.bk, [kvDim])), nKvHeads, false),
          bv: vec(get(n.bv, [kvDim])),
        }
        : {}),
      ...(config.qkNorm
        ? {
          qNorm: permuteRotaryVector(vec(get(n.qNorm, [headDim])), 1, false),
          kNorm: permuteRotaryVector(vec(get(n.kNorm, [headDim])), 1, false),
        }
        : {}),
    };
  };
  const qOrder = rotaryRowOrder(nHeads, qDim), kOrder = rotaryRowOrder(nKvHeads, kvDim);
  const storedLinears = (l: number): Record<LlamaLinear, StoredLinear> => {
    const at = (key: LlamaLinear) => linearWeight(l, key);
    return {
      wq: { weight: at("wq"), rowOrder: qOrder },
      wk: { weight: at("wk"), rowOrder: kOrder },
      wv: { weight: at("wv") },
      wo: { weight: at("wo") },
      w1: { weight: at("w1") },
      w3: { weight: at("w3") },
      w2: { weight: at("w2") },
    };
  };
  const f32 = (w: Tensor<WeightDType> | PackedLinear): Tensor<"f32"> =>
    isPackedLinear(w) ? dequantizePacked(w) : f32Weight(w);
  const widenLinear = (l: number, key: LlamaLinear): Tensor<"f32"> => {
    const w = f32(linearWeight(l, key));
    if (key === "wq") return permuteRotaryRows(w, nHeads, false);
    if (key === "wk") return permuteRotaryRows(w, nKvHeads, false);
    return w;
  };
  /** A block linear left on disk, read without blocking (`readLinearAhead`). */
  const readStoredAsync = async (l: number, key: LlamaLinear): Promise<StoredRows> => {
    const name = hfNames(l)[key];
    const e = entry(name, linearShapes[key]);
    const rowFrom = key === "wq" ? qOrder : key === "wk" ? kOrder : null;
    if ("data" in e.t) return { weight: e.t as Tensor<WeightDType>, rowFrom };
    checkUnchanged(name, e.file, await Deno.stat(e.file));
    const handle = await openSafetensors(e.file);
    try {
      return { weight: await handle.read(name) as Tensor<WeightDType>, rowFrom };
    } finally {
      handle.close();
    }
  };
  const widenLinears = (l: number): Record<LlamaLinear, Tensor<"f32">> =>
    Object.fromEntries(LLAMA_LINEARS.map((key) => [key, widenLinear(l, key)])) as Record<
      LlamaLinear,
      Tensor<"f32">
    >;
  const layers = widen === "load"
    ? Array.from({ length: nLayers }, (_, l): LlamaLayer => ({ ...small(l), ...widenLinears(l) }))
    : lazyLayers(
      nLayers,
      small,
      fromDisk ? null : storedLinears,
      widenLinear,
      fromDisk ? readStoredAsync : null,
    );
  const stored = (t: Tensor<WeightDType>) => widen === "load" ? f32Weight(t) : t;
  const tokenEmbedding = stored(get("model.embed_tokens.weight", [vocabSize, dim]));
  const finalNorm = vec(get("model.norm.weight", [dim]));
  const tied = config.sharedClassifier && !all.has("lm_head.weight");
  const classifier = tied ? tokenEmbedding : stored(get("lm_head.weight", [vocabSize, dim]));
  return {
    config: { ...config, sharedClassifier: tied },
    tokenEmbedding,
    layers,
    finalNorm,
    classifier,
  };
}
