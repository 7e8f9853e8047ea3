/**
 * Saving and loading GPTQ checkpoints as safetensors files, with the
 * `quantization_config` that loaders read (stored in the file's metadata as
 * JSON, and returned for writing into a model's `config.json`). Uses the
 * `Deno` namespace (through `core/safetensors_file.ts`).
 *
 * @module
 */

import { readSafetensors, writeSafetensors } from "../core/safetensors_file.ts";
import type { Tensor } from "../core/tensor.ts";
import {
  fromGptqCheckpoint,
  type GptqCheckpointTensors,
  toGptqCheckpoint,
} from "./gptq_checkpoint.ts";
import type { QuantizedWeight } from "./quantized_weight.ts";

/** The `quantization_config` of a GPTQ checkpoint. */
export interface GptqQuantizationConfig {
  quant_method: "gptq";
  bits: number;
  group_size: number;
  desc_act: boolean;
  sym: boolean;
  checkpoint_format: "gptq" | "gptq_v2";
}

/** Options of {@linkcode saveGptqCheckpoint}. */
export interface SaveGptqCheckpointOptions {
  /** 1 ("gptq", zero − 1 stored) or 2 ("gptq_v2"). @default 1 */
  version?: 1 | 2;
}

/**
 * Writes quantized layers as a GPTQ checkpoint (`<name>.qweight`, `.qzeros`,
 * `.scales`, `.g_idx` per layer), atomically.
 *
 * @param path Destination `.safetensors` path.
 * @param layers Layer name (e.g. `model.layers.0.self_attn.q_proj`) → quantized weight;
 *   all with the same bits, group size and symmetry, as one `quantization_config` requires.
 * @param options The checkpoint version.
 * @returns The `quantization_config` written into the metadata.
 */
export async function saveGptqCheckpoint(
  path: string,
  layers: ReadonlyMap<string, QuantizedWeight> | Readonly<Record<string, QuantizedWeight>>,
  options: SaveGptqCheckpointOptions = {},
): Promise<GptqQuantizationConfig> {
  const { version = 1 } = options;
  const entries = layers instanceof Map ? [...layers] : Object.entries(layers);
  if (entries.length === 0) throw new RangeError("Cannot save a GPTQ checkpoint of no layers");
  const first = entries[0]![1];
  const tensors = new Map<string, Tensor>();
  let descAct = false;
  for (const [name, q] of entries) {
    if (
      q.bits !== first.bits || q.groupSize !== first.groupSize || q.symmetric !== first.symmetric
    ) {
      throw new RangeError(
        `Cannot save layer ${name} (${q.bits} bits, group ${q.groupSize}, symmetric ${q.symmetric}) ` +
          `beside ${
            entries[0]![0]
          } (${first.bits} bits, group ${first.groupSize}, symmetric ${first.symmetric}): ` +
          `one quantization_config covers every layer`,
      );
    }
    if (q.perm) descAct = true;
    const t = toGptqCheckpoint(q, { version });
    for (const key of ["qweight", "qzeros", "scales", "g_idx"] as const) {
      tensors.set(`${name}.${key}`, t[key]);
    }
  }
  const config: GptqQuantizationConfig = {
    quant_method: "gptq",
    bits: first.bits,
    group_size: first.groupSize,
    desc_act: descAct,
    sym: first.symmetric,
    checkpoint_format: version === 1 ? "gptq" : "gptq_v2",
  };
  await writeSafetensors(path, tensors, {
    format: "pt",
    quantization_config: JSON.stringify(config),
  });
  return config;
}

/**
 * Reads a GPTQ checkpoint written by {@linkcode saveGptqCheckpoint} (or any
 * file with the same tensors, given its `quantization_config`).
 *
 * @param path The `.safetensors` file.
 * @param config The `quantization_config` (from `config.json`); read from the
 *   file's metadata when absent.
 * @returns Layer name → quantized weight, and the config used.
 */
export async function loadGptqCheckpoint(
  path: string,
  config?: GptqQuantizationConfig,
): Promise<{ layers: Map<string, QuantizedWeight>; config: GptqQuantizationConfig }> {
  const { tensors, metadata } = await readSafetensors(path);
  let cfg = config;
  if (!cfg) {
    const raw = metadata.quantization_config;
    if (raw === undefined) {
      throw new RangeError(`${path} has no quantization_config in its metadata: pass one`);
    }
    try {
      cfg = JSON.parse(raw) as GptqQuantizationConfig;
    } catch {
      throw new RangeError(`${path}: quantization_config is not valid JSON`);
    }
  }
  const version = cfg.checkpoint_format === "gptq_v2" ? 2 : 1;
  const layers = new Map<string, QuantizedWeight>();
  for (const key of tensors.keys()) {
    if (!key.endsWith(".qweight")) continue;
    const name = key.slice(0, -".qweight".length);
    const part = (suffix: string): Tensor => {
      const t = tensors.get(`${name}.${suffix}`);
      if (!t) throw new RangeError(`${path}: layer ${name} has no ${suffix} tensor`);
      return t;
    };
    const t = {
      qweight: part("qweight"),
      qzeros: part("qzeros"),
      scales: part("scales"),
      g_idx: part("g_idx"),
    } as GptqCheckpointTensors;
    layers.set(
      name,
      fromGptqCheckpoint(t, {
        bits: cfg.bits,
        groupSize: cfg.group_size,
        symmetric: cfg.sym,
        version,
      }),
    );
  }
  return { layers, config: cfg };
}
