/**
 * A Hugging Face folder written while a model is being compressed: each
 * finished block goes to a shard of its own as soon as the pipeline hands it
 * over (so the host need not keep the compressed blocks, and the disk works
 * while the GPU computes the next block), and the last shard (embedding,
 * final norm, classifier), `model.safetensors.index.json` and `config.json`
 * come at the end. Everything is written into a sibling folder that is
 * renamed into place by `finish`, so a failed run leaves no half folder.
 * Block weights are float32, the embedding and classifier in their stored
 * dtype, as {@linkcode writeHfLlama} writes them. Uses the `Deno` namespace.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { tensor } from "../core/tensor.ts";
import { writeSafetensors } from "../core/safetensors_file.ts";
import { hfConfig, hfLayerTensors, hfNames, rotaryRowOrder } from "./hf.ts";
import { isFilled } from "../core/lazy_tensor.ts";
import { dequantizedFrom } from "../quantizers/dequantize.ts";
import { type DenseWorker, denseWorker } from "./_dense_on_worker.ts";
import { convert } from "../core/convert.ts";
import { nextTask } from "../core/_next_task.ts";
import { shardName, writeShardIndex } from "./formats/_shards.ts";
import { hfTokenizerJson } from "./hf_tokenizer.ts";
import { layerVectors, LLAMA_LINEARS } from "./model.ts";
import type { LlamaLayer, LlamaLinear, LlamaModel } from "./model.ts";
import type { Tokenizer } from "./tokenizer.ts";

function inverse(order: Int32Array): Int32Array {
  const inv = new Int32Array(order.length);
  for (let i = 0; i < order.length; i++) inv[order[i]!] = i;
  return inv;
}

/** Options of {@linkcode openHfStreamWriter}. */
export interface HfStreamOptions {
  /** Extra safetensors metadata of every shard (`format: "pt"` is added). */
  metadata?: Record<string, string>;
  /** A tokenizer to write as `tokenizer.json`. */
  tokenizer?: Tokenizer;
  /**
   * The dtype of the block linears in the shards (rounded to nearest even
   * from float32); norms and biases stay float32, the embedding and the
   * classifier in their stored dtype.
   * @default "f32"
   */
  dtype?: "f32" | "f16" | "bf16";
}

/** A folder being written block by block. */
export interface HfStreamWriter {
  /** The folder `finish` creates. */
  readonly dir: string;
  /**
   * Writes one block's shard: its linears from `weights` (by local name: wq,
   * wk, ...), its norms and biases from the model.
   *
   * @param block The block's index.
   * @param weights A weight [out, in] for every linear of the block.
   * @returns When the shard is on disk.
   */
  writeBlock(block: number, weights: Readonly<Record<string, Tensor<"f32">>>): Promise<void>;
  /**
   * Waits for the blocks, writes the last shard, the index and the
   * configuration, and renames the folder into place.
   *
   * @param classifier The classifier to write (default: the model's).
   * @throws {Error} when a block was not written.
   */
  finish(classifier?: Tensor): Promise<void>;
  /** Removes the partial folder (after a failure). */
  abort(): Promise<void>;
}

/**
 * Opens a folder to write a model block by block.
 *
 * @param model The model (its embedding, norms, biases and classifier are written from it).
 * @param dir The folder to create; it must not exist.
 * @param options Metadata and tokenizer.
 * @returns The writer.
 * @throws {Error} when `dir` exists.
 */
export async function openHfStreamWriter(
  model: LlamaModel,
  dir: string,
  options: HfStreamOptions = {},
): Promise<HfStreamWriter> {
  const { metadata = {}, tokenizer, dtype = "f32" } = options;
  if (dtype !== "f32" && dtype !== "f16" && dtype !== "bf16") {
    throw new RangeError(
      `Cannot write a model as 'dtype' must be "f32", "f16" or "bf16": current value is ${
        JSON.stringify(dtype)
      }`,
    );
  }
  const exists = await Deno.stat(dir).then(() => true, () => false);
  if (exists) throw new Error(`Cannot write the model into ${dir}: it exists`);
  const tmp = `${dir}.partial-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(tmp, { recursive: true });
  const L = model.layers.length;
  const shards = L + 1;
  const weightMap: Record<string, string> = {};
  const written = new Map<number, Promise<void>>();
  let totalSize = 0;
  const meta = { format: "pt", ...metadata };
  const writeShard = async (i: number, tensors: Map<string, Tensor>) => {
    const name = shardName(i, shards);
    for (const [k, t] of tensors) {
      weightMap[k] = name;
      totalSize += (t.data as ArrayBufferView).byteLength;
    }
    await writeSafetensors(`${tmp}/${name}`, tensors, meta);
  };
  // Two threads: a block's linears are made dense two at a time.
  const workers: DenseWorker[] = [];
  const { nHeads, nKvHeads } = model.config;
  const denseFromGrids = async (
    layer: LlamaLayer,
  ): Promise<Partial<Record<LlamaLinear, Tensor>>> => {
    const out: Partial<Record<LlamaLinear, Tensor>> = {};
    const jobs: Promise<void>[] = [];
    let turn = 0;
    for (const n of LLAMA_LINEARS) {
      const w = layer[n], q = dequantizedFrom(w);
      if (q === undefined || isFilled(w)) continue;
      const rows = w.shape[0]!;
      const heads = n === "wq" ? nHeads : n === "wk" ? nKvHeads : 0;
      if (workers.length < 2) workers.push(denseWorker());
      const worker = workers[turn++ % workers.length]!;
      // Hugging Face's row r of q/k is our row order⁻¹[r] (`permuteRotaryRows`).
      const rowFrom = heads > 0 ? inverse(rotaryRowOrder(heads, rows)) : null;
      jobs.push(worker.grid(q, dtype, rowFrom).then((t) => void (out[n] = t)));
    }
    await Promise.all(jobs);
    return out;
  };
  const closeWorker = () => {
    for (const w of workers.splice(0)) w.close();
  };
  return {
    dir,
    writeBlock(block, weights) {
      if (!(Number.isInteger(block) && block >= 0 && block < L) || written.has(block)) {
        return Promise.reject(
          new RangeError(`Cannot write block ${block}: not a block index, or written already`),
        );
      }
      // The norms and biases from the model (reading its linears would widen a lazy layer).
      const layer = { ...layerVectors(model.layers[block]!) } as LlamaLayer;
      for (const n of LLAMA_LINEARS) {
        const w = weights[n];
        if (!w) return Promise.reject(new RangeError(`Cannot write block ${block}: no '${n}'`));
        (layer as Record<LlamaLinear, Tensor<"f32">>)[n] = w;
      }
      // The host work (q/k rows to Hugging Face's order, the dtype's
      // rounding) runs a linear at a time, yielding to the event loop in
      // between, so that it fills the caller's waits (e.g. for the GPU). A
      // weight that is a uniform grid not yet dequantized on the host
      // (`dequantizeLazily`, a pipeline's Ŵ left on the GPU) is made dense
      // on a worker thread instead, from its codes.
      const p = (async () => {
        await nextTask();
        const fromGrids = await denseFromGrids(layer);
        const tensors = hfLayerTensors(model.config, block, layer, fromGrids);
        if (dtype !== "f32") {
          for (const n of LLAMA_LINEARS) {
            if (fromGrids[n]) continue;
            await nextTask();
            const key = hfNames(block)[n];
            tensors.set(key, convert(tensors.get(key)!, dtype));
          }
        }
        await writeShard(block, tensors);
      })();
      written.set(block, p);
      return p;
    },
    async finish(classifier = model.classifier) {
      const missing = model.layers.map((_, l) => l).filter((l) => !written.has(l));
      if (missing.length > 0) throw new Error(`Cannot finish ${dir}: blocks ${missing} missing`);
      try {
        await Promise.all(written.values());
      } finally {
        closeWorker();
      }
      const rest = new Map<string, Tensor>();
      rest.set("model.embed_tokens.weight", model.tokenEmbedding);
      rest.set("model.norm.weight", tensor("f32", [model.config.dim], model.finalNorm));
      const tied = classifier === model.tokenEmbedding;
      if (!tied) rest.set("lm_head.weight", classifier);
      await writeShard(L, rest);
      const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";
      await writeShardIndex(tmp, weightMap, totalSize);
      await Deno.writeTextFile(`${tmp}/config.json`, json(hfConfig(model.config, tied)));
      if (tokenizer) {
        await Deno.writeTextFile(`${tmp}/tokenizer.json`, json(hfTokenizerJson(tokenizer)));
      }
      await Deno.rename(tmp, dir);
    },
    async abort() {
      await Promise.allSettled(written.values());
      closeWorker();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    },
  };
}
