/**
 * Random-weight bf16 Hugging Face folders at real Llama shapes, written by
 * the benchmarks themselves (1B and 8B shapes, any number of layers): three
 * shards with an index, a Llama config with llama3 rope. Uses the file system.
 *
 * @module
 */

import { f32ToBf16Bits } from "../../core/convert.ts";
import { serializeSafetensors } from "../../core/safetensors.ts";
import type { Tensor } from "../../core/tensor.ts";

/** The shapes of a Llama checkpoint. */
export interface LlamaShape {
  readonly hidden: number;
  readonly inter: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly vocab: number;
  readonly tied: boolean;
}

/** Llama-3.2-1B (1.24 B parameters) and Llama-3.1-8B (8.03 B). */
export const LLAMA_SHAPES: Readonly<Record<"1b" | "8b", LlamaShape>> = {
  "1b": {
    hidden: 2048,
    inter: 8192,
    layers: 16,
    heads: 32,
    kvHeads: 8,
    headDim: 64,
    vocab: 128256,
    tied: true,
  },
  "8b": {
    hidden: 4096,
    inter: 14336,
    layers: 32,
    heads: 32,
    kvHeads: 8,
    headDim: 128,
    vocab: 128256,
    tied: false,
  },
};

/**
 * Random bf16 weights, uniform in ±scale up to a table of 4096 values
 * (xorshift32, seeded per tensor; two values per draw: a 1.9 B-value 8B
 * folder takes ~5 s).
 */
function randomBf16(shape: number[], seed: number, scale: number): Tensor<"bf16"> {
  const n = shape.reduce((a, b) => a * b, 1);
  const table = new Uint16Array(4096);
  let s = (seed * 2654435761) | 0 || 1;
  for (let i = 0; i < table.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    table[i] = f32ToBf16Bits(((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale);
  }
  const words = new Uint32Array(Math.ceil(n / 2));
  for (let i = 0; i < words.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    words[i] = table[s & 4095]! | (table[(s >>> 16) & 4095]! << 16);
  }
  return { dtype: "bf16", shape, data: new Uint16Array(words.buffer, 0, n) };
}

/**
 * Writes a random-weight bf16 folder.
 *
 * @param dir The folder (created).
 * @param shape The shapes.
 * @returns The bytes of the tensors written.
 */
export async function writeRandomLlama(dir: string, shape: LlamaShape): Promise<number> {
  await Deno.mkdir(dir, { recursive: true });
  const { hidden: d, inter, layers, heads, kvHeads, headDim, vocab, tied } = shape;
  const q = heads * headDim, kv = kvHeads * headDim;
  const names: [string, number[]][] = [["model.embed_tokens.weight", [vocab, d]]];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    names.push(
      [`${p}.input_layernorm.weight`, [d]],
      [`${p}.self_attn.q_proj.weight`, [q, d]],
      [`${p}.self_attn.k_proj.weight`, [kv, d]],
      [`${p}.self_attn.v_proj.weight`, [kv, d]],
      [`${p}.self_attn.o_proj.weight`, [d, q]],
      [`${p}.post_attention_layernorm.weight`, [d]],
      [`${p}.mlp.gate_proj.weight`, [inter, d]],
      [`${p}.mlp.up_proj.weight`, [inter, d]],
      [`${p}.mlp.down_proj.weight`, [d, inter]],
    );
  }
  names.push(["model.norm.weight", [d]]);
  if (!tied) names.push(["lm_head.weight", [vocab, d]]);
  // Shards of at most ~2 GB, written without a sync (a benchmark's scratch
  // folder: the page cache takes it at memory speed).
  const size = (shape: number[]) => 2 * shape.reduce((a, b) => a * b, 1);
  const plan: [string, number[]][][] = [[]];
  let inShard = 0;
  for (const entry of names) {
    if (inShard > 0 && inShard + size(entry[1]) > 2e9) {
      plan.push([]);
      inShard = 0;
    }
    plan.at(-1)!.push(entry);
    inShard += size(entry[1]);
  }
  const shards = plan.length;
  const weightMap: Record<string, string> = {};
  let bytes = 0;
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, "0")}-of-${
      String(shards).padStart(5, "0")
    }.safetensors`;
    const tensors = new Map<string, Tensor>();
    plan[s]!.forEach(([name, shape], i) => {
      const norm = shape.length === 1;
      const t = randomBf16(shape, s * 1000 + i + 1, norm ? 1 : 1 / Math.sqrt(shape[1]!));
      if (norm) t.data.fill(f32ToBf16Bits(1));
      tensors.set(name, t);
      weightMap[name] = file;
      bytes += t.data.byteLength;
    });
    await Deno.writeFile(`${dir}/${file}`, serializeSafetensors(tensors, { format: "pt" }));
  }
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: { total_size: bytes }, weight_map: weightMap }),
  );
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({
      architectures: ["LlamaForCausalLM"],
      model_type: "llama",
      hidden_size: d,
      intermediate_size: inter,
      num_hidden_layers: layers,
      num_attention_heads: heads,
      num_key_value_heads: kvHeads,
      head_dim: headDim,
      vocab_size: vocab,
      max_position_embeddings: 131072,
      rms_norm_eps: 1e-5,
      tie_word_embeddings: tied,
      rope_parameters: {
        rope_type: "llama3",
        rope_theta: 500000,
        factor: 32,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8192,
      },
    }),
  );
  return bytes;
}
