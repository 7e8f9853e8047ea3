/**
 * Hugging Face `config.json` → {@linkcode LlamaConfig}, for the families whose
 * decoder this package implements: Llama 2/3/3.1/3.2 (`LlamaForCausalLM`),
 * Mistral (`MistralForCausalLM`), Qwen2/2.5 (`Qwen2ForCausalLM`, q/k/v
 * biases) and Qwen3 (`Qwen3ForCausalLM`, per-head q/k RMSNorm, explicit
 * head_dim). Both layouts of the rotary settings are read: transformers 4's
 * top-level `rope_theta` and `rope_scaling`, and transformers 5's
 * `rope_parameters`.
 *
 * Anything that changes the math and is not implemented (another
 * architecture, rope type or activation, an output-projection or MLP bias,
 * partial rotary embeddings) is a `RangeError` naming the key and its value:
 * never a silent fallback. Keys that a family's transformers class gives a
 * default take that same default when absent. Web-standard only.
 *
 * @module
 */

import type { LlamaConfig, ModelFamily, RopeScaling } from "./model.ts";
import { validateLlamaConfig } from "./model.ts";

/** The architectures (and `model_type`s) read, by family. */
export const HF_ARCHITECTURES: Readonly<Record<ModelFamily, string>> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
};

/** Defaults of the transformers config classes for keys that may be absent. */
const DEFAULTS: Readonly<
  Record<ModelFamily, { ropeTheta: number; normEps: number; seqLen: number }>
> = {
  llama: { ropeTheta: 10000, normEps: 1e-6, seqLen: 2048 },
  mistral: { ropeTheta: 10000, normEps: 1e-6, seqLen: 4096 * 32 },
  qwen2: { ropeTheta: 10000, normEps: 1e-6, seqLen: 32768 },
  qwen3: { ropeTheta: 10000, normEps: 1e-6, seqLen: 32768 },
};

type Json = Record<string, unknown>;

function familyOf(json: Json, source: string): ModelFamily {
  const archs = Array.isArray(json.architectures) ? json.architectures.map(String) : [];
  const families = Object.keys(HF_ARCHITECTURES) as ModelFamily[];
  const byArch = families.find((f) => archs.includes(HF_ARCHITECTURES[f]));
  const byType = families.find((f) => json.model_type === f);
  if (archs.length > 0 && byArch === undefined) {
    throw new RangeError(
      `${source}: 'architectures' ${JSON.stringify(json.architectures)} is not supported ` +
        `(supported: ${Object.values(HF_ARCHITECTURES).join(", ")})`,
    );
  }
  const family = byArch ?? byType;
  if (family === undefined) {
    throw new RangeError(
      `${source}: 'model_type' ${JSON.stringify(json.model_type ?? null)} is not supported ` +
        `(supported: ${families.join(", ")}), and 'architectures' names none`,
    );
  }
  return family;
}

function numberAt(json: Json, key: string, source: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (v === undefined) throw new RangeError(`${source}: missing key '${key}'`);
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new RangeError(
      `${source}: '${key}' must be a number: current value is ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function unsupported(source: string, key: string, value: unknown, why: string): never {
  throw new RangeError(`${source}: '${key}' ${JSON.stringify(value)} is not supported (${why})`);
}

/** The rotary settings: transformers 5 `rope_parameters`, else transformers 4 keys. */
function ropeOf(
  json: Json,
  family: ModelFamily,
  source: string,
): { theta: number; scaling: RopeScaling } {
  const params = json.rope_parameters;
  let where: string, p: Json;
  let theta: unknown;
  if (params !== undefined && params !== null) {
    if (typeof params !== "object" || Array.isArray(params)) {
      unsupported(source, "rope_parameters", params, "an object is expected");
    }
    where = "rope_parameters";
    p = params as Json;
    if (!("rope_type" in p) && !("rope_theta" in p) && !("type" in p)) {
      unsupported(source, where, params, "per-layer-type rotary settings are not implemented");
    }
    theta = p.rope_theta ?? json.rope_theta;
  } else {
    where = "rope_scaling";
    const scaling = json.rope_scaling;
    if (
      scaling !== undefined && scaling !== null &&
      (typeof scaling !== "object" || Array.isArray(scaling))
    ) {
      unsupported(source, where, scaling, "an object is expected");
    }
    p = (scaling ?? {}) as Json;
    theta = json.rope_theta;
  }
  theta ??= DEFAULTS[family].ropeTheta;
  if (typeof theta !== "number" || !(theta > 0)) {
    unsupported(
      source,
      `${where === "rope_parameters" ? where + "." : ""}rope_theta`,
      theta,
      "a positive number is expected",
    );
  }
  const type = p.rope_type ?? p.type ?? "default";
  const num = (key: string): number => {
    const v = p[key];
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new RangeError(
        `${source}: '${where}.${key}' must be a number for rope type ${JSON.stringify(type)}: ` +
          `current value is ${JSON.stringify(v ?? null)}`,
      );
    }
    return v;
  };
  for (const key of ["attention_factor", "partial_rotary_factor"]) {
    const v = p[key] ?? (key === "partial_rotary_factor" ? json[key] : undefined);
    if (v !== undefined && v !== null && v !== 1) {
      unsupported(source, `${where}.${key}`, v, "only 1 is implemented");
    }
  }
  let scaling: RopeScaling;
  if (type === "default") scaling = { type: "default" };
  else if (type === "linear") scaling = { type: "linear", factor: num("factor") };
  else if (type === "llama3") {
    scaling = {
      type: "llama3",
      factor: num("factor"),
      lowFreqFactor: num("low_freq_factor"),
      highFreqFactor: num("high_freq_factor"),
      originalMaxPositions: num("original_max_position_embeddings"),
    };
  } else {
    unsupported(source, `${where}.rope_type`, type, "implemented: default, linear, llama3");
  }
  return { theta, scaling };
}

/**
 * The normalized configuration of a Hugging Face `config.json`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hfModelConfig } from "./hf_config.ts";
 * const config = hfModelConfig({
 *   architectures: ["LlamaForCausalLM"], hidden_size: 64, intermediate_size: 128,
 *   num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 100,
 *   rope_parameters: { rope_type: "default", rope_theta: 500000 },
 * }, "config.json");
 * assert.equal(config.ropeTheta, 500000);
 * ```
 * @param json The parsed `config.json`.
 * @param source Where it came from, for error messages (its path).
 * @returns The configuration.
 * @throws {RangeError} naming the key and its value for a missing key or a
 *   setting that is not implemented.
 */
export function hfModelConfig(json: Json, source: string): LlamaConfig {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new RangeError(`${source}: the configuration must be a JSON object`);
  }
  const family = familyOf(json, source);
  const act = json.hidden_act ?? json.hidden_activation ?? "silu";
  if (act !== "silu") unsupported(source, "hidden_act", act, "only silu is implemented");
  if (json.mlp_bias === true) {
    unsupported(source, "mlp_bias", true, "MLP biases are not implemented");
  }
  // Llama, Mistral and Qwen3 put attention_bias on q, k, v and o; Qwen2 has q/k/v biases always.
  if (family !== "qwen2" && json.attention_bias === true) {
    unsupported(source, "attention_bias", true, "an output-projection bias is not implemented");
  }
  const nHeads = numberAt(json, "num_attention_heads", source);
  const dim = numberAt(json, "hidden_size", source);
  const headDimDefault = family === "qwen3" ? 128 : dim / nHeads;
  const headDim = numberAt(json, "head_dim", source, headDimDefault);
  const { theta, scaling } = ropeOf(json, family, source);
  const defaults = DEFAULTS[family];
  let slidingWindow: number | undefined;
  const window = json.sliding_window;
  const layerTypes = Array.isArray(json.layer_types) ? json.layer_types : [];
  const windowed = family === "mistral"
    ? window !== undefined && window !== null
    : json.use_sliding_window === true || layerTypes.includes("sliding_attention");
  if (windowed) {
    if (typeof window !== "number" || !(window > 0)) {
      unsupported(
        source,
        "sliding_window",
        window ?? null,
        "a positive number is expected with a sliding window",
      );
    }
    slidingWindow = window;
  }
  const config: LlamaConfig = {
    dim,
    hiddenDim: numberAt(json, "intermediate_size", source),
    nLayers: numberAt(json, "num_hidden_layers", source),
    nHeads,
    nKvHeads: numberAt(json, "num_key_value_heads", source, nHeads),
    vocabSize: numberAt(json, "vocab_size", source),
    seqLen: numberAt(json, "max_position_embeddings", source, defaults.seqLen),
    ropeTheta: theta,
    normEps: numberAt(json, "rms_norm_eps", source, defaults.normEps),
    sharedClassifier: json.tie_word_embeddings === true,
    family,
    ...(headDim !== dim / nHeads ? { headDim } : {}),
    ...(scaling.type !== "default" ? { rope: scaling } : {}),
    ...(family === "qwen2" ? { qkvBias: true } : {}),
    ...(family === "qwen3" ? { qkNorm: true } : {}),
    ...(slidingWindow !== undefined ? { slidingWindow } : {}),
  };
  validateLlamaConfig(config, source);
  return config;
}
