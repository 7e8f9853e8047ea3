/**
 * Hugging Face Llama checkpoints: a folder with `config.json` and one or more
 * `model*.safetensors` files (names `model.layers.{i}.self_attn.q_proj.weight`,
 * ...). HF applies rotary embeddings to the two halves of each head, llama2.c
 * to interleaved pairs, so the q and k rows are permuted on the way in and out
 * (the permutation of HF's `convert_llama_weights_to_hf.py`). Uses the `Deno`
 * namespace.
 *
 * @module
 */

import { tensor } from "../core/tensor.ts";
import type { Tensor } from "../core/tensor.ts";
import { asFloat32 } from "../core/convert.ts";
import { readSafetensors, writeSafetensors } from "../core/safetensors_file.ts";
import { llamaDims, validateLlamaConfig } from "./model.ts";
import type { LlamaConfig, LlamaLayer, LlamaModel } from "./model.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { hfTokenizerJson } from "./hf_tokenizer.ts";

const SUPPORTED = ["LlamaForCausalLM"];

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
  const d = rows / heads;
  const out = new Float32Array(rows * cols);
  for (let h = 0; h < heads; h++) {
    for (let half = 0; half < 2; half++) {
      for (let j = 0; j < d / 2; j++) {
        const hf = h * d + half * (d / 2) + j, l2c = h * d + 2 * j + half;
        const [dst, src] = toHf ? [hf, l2c] : [l2c, hf];
        out.set(w.data.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return tensor("f32", [rows, cols], out);
}

function hfNames(l: number) {
  const p = `model.layers.${l}`;
  return {
    attnNorm: `${p}.input_layernorm.weight`,
    wq: `${p}.self_attn.q_proj.weight`,
    wk: `${p}.self_attn.k_proj.weight`,
    wv: `${p}.self_attn.v_proj.weight`,
    wo: `${p}.self_attn.o_proj.weight`,
    ffnNorm: `${p}.post_attention_layernorm.weight`,
    w1: `${p}.mlp.gate_proj.weight`,
    w2: `${p}.mlp.down_proj.weight`,
    w3: `${p}.mlp.up_proj.weight`,
  };
}

/**
 * The HF tensors of a model (q/k rows permuted to HF's rotary layout).
 *
 * @param model The model.
 * @returns Tensors by HF name, in a stable order.
 */
export function toHfTensors(model: LlamaModel): Map<string, Tensor<"f32">> {
  const { nHeads, nKvHeads, dim } = model.config;
  const out = new Map<string, Tensor<"f32">>();
  out.set("model.embed_tokens.weight", model.tokenEmbedding);
  model.layers.forEach((layer, l) => {
    const n = hfNames(l);
    out.set(n.attnNorm, tensor("f32", [dim], layer.attnNorm));
    out.set(n.wq, permuteRotaryRows(layer.wq, nHeads, true));
    out.set(n.wk, permuteRotaryRows(layer.wk, nKvHeads, true));
    out.set(n.wv, layer.wv);
    out.set(n.wo, layer.wo);
    out.set(n.ffnNorm, tensor("f32", [dim], layer.ffnNorm));
    out.set(n.w1, layer.w1);
    out.set(n.w2, layer.w2);
    out.set(n.w3, layer.w3);
  });
  out.set("model.norm.weight", tensor("f32", [dim], model.finalNorm));
  if (!model.config.sharedClassifier || model.classifier !== model.tokenEmbedding) {
    out.set("lm_head.weight", model.classifier);
  }
  return out;
}

/**
 * The HF `config.json` object of a model.
 *
 * @param config The configuration.
 * @param tied Whether the classifier is the embedding.
 * @returns The JSON-ready object.
 */
export function hfConfig(config: LlamaConfig, tied: boolean): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: config.dim,
    intermediate_size: config.hiddenDim,
    num_hidden_layers: config.nLayers,
    num_attention_heads: config.nHeads,
    num_key_value_heads: config.nKvHeads,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.seqLen,
    rms_norm_eps: config.normEps,
    rope_theta: config.ropeTheta,
    hidden_act: "silu",
    tie_word_embeddings: tied,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "float32",
  };
}

/**
 * Writes a model as a Hugging Face Llama folder: `config.json` and
 * `model.safetensors` (float32), and `tokenizer.json` when a tokenizer is
 * given, each written atomically.
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

function configFromHf(json: Record<string, unknown>, source: string): LlamaConfig {
  const arch = json.architectures;
  const archs = Array.isArray(arch) ? arch.map(String) : [];
  if (!archs.some((a) => SUPPORTED.includes(a)) && json.model_type !== "llama") {
    throw new RangeError(
      `${source}: unknown architecture ${JSON.stringify(arch ?? json.model_type ?? null)}: ` +
        `only ${SUPPORTED.join(", ")} (model_type "llama") is supported`,
    );
  }
  const num = (key: string, fallback?: number): number => {
    const v = json[key] ?? fallback;
    if (typeof v !== "number") {
      throw new RangeError(
        `${source}: '${key}' must be a number: current value is ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
  if (json.hidden_act !== undefined && json.hidden_act !== "silu") {
    throw new RangeError(
      `${source}: hidden_act ${JSON.stringify(json.hidden_act)} is not supported (silu only)`,
    );
  }
  const scaling = json.rope_scaling;
  if (scaling !== undefined && scaling !== null) {
    throw new RangeError(`${source}: rope_scaling ${JSON.stringify(scaling)} is not supported`);
  }
  const nHeads = num("num_attention_heads");
  const config: LlamaConfig = {
    dim: num("hidden_size"),
    hiddenDim: num("intermediate_size"),
    nLayers: num("num_hidden_layers"),
    nHeads,
    nKvHeads: num("num_key_value_heads", nHeads),
    vocabSize: num("vocab_size"),
    seqLen: num("max_position_embeddings", 2048),
    ropeTheta: num("rope_theta", 10000),
    normEps: num("rms_norm_eps", 1e-6),
    sharedClassifier: json.tie_word_embeddings === true,
  };
  validateLlamaConfig(config, source);
  return config;
}

/**
 * Reads a Hugging Face Llama folder (`config.json` and every `model*.safetensors`
 * in it; f32, f16 and bf16 tensors are converted to f32).
 *
 * @param dir The folder.
 * @returns The model.
 * @throws {RangeError} naming the file for an unknown architecture, a missing
 *   or misshapen tensor, or an inconsistent configuration.
 */
export async function loadHfLlama(dir: string): Promise<LlamaModel> {
  const configPath = `${dir}/config.json`;
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(await Deno.readTextFile(configPath));
  } catch (e) {
    throw new RangeError(`${configPath}: cannot read the configuration (${(e as Error).message})`);
  }
  const config = configFromHf(json, configPath);
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && /^model.*\.safetensors$/.test(e.name)) files.push(`${dir}/${e.name}`);
  }
  files.sort();
  if (files.length === 0) throw new RangeError(`${dir}: no model*.safetensors file`);
  const all = new Map<string, { t: Tensor; file: string }>();
  for (const f of files) {
    const { tensors } = await readSafetensors(f);
    for (const [name, t] of tensors) all.set(name, { t, file: f });
  }
  const where = files.length === 1
    ? files[0]!
    : `${dir}/model*.safetensors (${files.length} files)`;
  const get = (name: string, shape: number[]): Tensor<"f32"> => {
    const e = all.get(name);
    if (!e) throw new RangeError(`${where}: missing tensor ${name}`);
    if (e.t.shape.join() !== shape.join()) {
      throw new RangeError(
        `${e.file}: tensor ${name} has shape [${e.t.shape}], config.json implies [${shape}]`,
      );
    }
    const data = e.t.dtype === "f32" ? Float32Array.from(e.t.data as Float32Array) : asFloat32(e.t);
    return tensor("f32", shape, data);
  };
  const { dim, hiddenDim, vocabSize, nHeads, nKvHeads } = config;
  const { kvDim } = llamaDims(config);
  const tokenEmbedding = get("model.embed_tokens.weight", [vocabSize, dim]);
  const layers: LlamaLayer[] = Array.from({ length: config.nLayers }, (_, l) => {
    const n = hfNames(l);
    return {
      attnNorm: get(n.attnNorm, [dim]).data,
      wq: permuteRotaryRows(get(n.wq, [dim, dim]), nHeads, false),
      wk: permuteRotaryRows(get(n.wk, [kvDim, dim]), nKvHeads, false),
      wv: get(n.wv, [kvDim, dim]),
      wo: get(n.wo, [dim, dim]),
      ffnNorm: get(n.ffnNorm, [dim]).data,
      w1: get(n.w1, [hiddenDim, dim]),
      w2: get(n.w2, [dim, hiddenDim]),
      w3: get(n.w3, [hiddenDim, dim]),
    };
  });
  const finalNorm = get("model.norm.weight", [dim]).data;
  const tied = config.sharedClassifier && !all.has("lm_head.weight");
  const classifier = tied ? tokenEmbedding : get("lm_head.weight", [vocabSize, dim]);
  return {
    config: { ...config, sharedClassifier: tied },
    tokenEmbedding,
    layers,
    finalNorm,
    classifier,
  };
}
