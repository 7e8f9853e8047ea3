/**
 * Writing a checkpoint's tensors as Hugging Face shards: one
 * `model.safetensors`, or `model-0000i-of-0000n.safetensors` files of at
 * most a given size and `model.safetensors.index.json`. Tensors are made one
 * shard at a time, so at most one shard is in memory. Uses the `Deno`
 * namespace.
 *
 * @module
 */

import { writeSafetensors } from "../../core/safetensors_file.ts";
import { type DType, itemSize, numel, type Tensor } from "../../core/tensor.ts";

/** A tensor to write, made when its shard is written. */
export interface PlannedTensor {
  /** Its name in the checkpoint. */
  readonly name: string;
  /** Its dtype. */
  readonly dtype: DType;
  /** Its shape. */
  readonly shape: readonly number[];
  /** Makes it (called once, when its shard is written). */
  readonly make: () => Tensor;
}

/** Bytes of a planned tensor's data. */
function bytesOf(t: PlannedTensor): number {
  return numel(t.shape) * itemSize(t.dtype);
}

/**
 * Splits tensors, in order, into shards of at most `maxBytes` (a larger
 * tensor gets a shard of its own) and writes them into `dir`.
 *
 * @param dir The folder (exists).
 * @param tensors The tensors, in order.
 * @param maxBytes Largest shard's data.
 * @param metadata Safetensors metadata of every shard.
 * @returns The names of the files written.
 */
export async function writeShards(
  dir: string,
  tensors: readonly PlannedTensor[],
  maxBytes: number,
  metadata: Readonly<Record<string, string>>,
): Promise<string[]> {
  const shards: PlannedTensor[][] = [];
  let size = Infinity;
  for (const t of tensors) {
    const b = bytesOf(t);
    if (size + b > maxBytes || shards.length === 0) {
      shards.push([]);
      size = 0;
    }
    shards.at(-1)!.push(t);
    size += b;
  }
  const names = shards.length === 1
    ? ["model.safetensors"]
    : shards.map((_, i) => shardName(i, shards.length));
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (let i = 0; i < shards.length; i++) {
    const made = new Map<string, Tensor>();
    for (const t of shards[i]!) {
      const x = t.make();
      if (x.dtype !== t.dtype || x.shape.join() !== t.shape.join()) {
        throw new Error(
          `internal: tensor ${t.name} was planned as ${t.dtype} [${t.shape}], made ${x.dtype} [${x.shape}]`,
        );
      }
      made.set(t.name, x);
      weightMap[t.name] = names[i]!;
      total += bytesOf(t);
    }
    await writeSafetensors(`${dir}/${names[i]}`, made, metadata);
  }
  if (shards.length === 1) return names;
  return [...names, await writeShardIndex(dir, weightMap, total)];
}

/**
 * The file name of shard `i` (from 0) of `total`.
 *
 * @param i The shard's index.
 * @param total The number of shards.
 * @returns `model-0000{i+1}-of-0000{total}.safetensors`.
 */
export function shardName(i: number, total: number): string {
  const pad = (k: number) => String(k).padStart(5, "0");
  return `model-${pad(i + 1)}-of-${pad(total)}.safetensors`;
}

/**
 * Writes `model.safetensors.index.json`.
 *
 * @param dir The folder.
 * @param weightMap The shard file of every tensor.
 * @param totalSize Bytes of all tensors' data.
 * @returns The file's name.
 */
export async function writeShardIndex(
  dir: string,
  weightMap: Readonly<Record<string, string>>,
  totalSize: number,
): Promise<string> {
  const name = "model.safetensors.index.json";
  const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
  await Deno.writeTextFile(`${dir}/${name}`, JSON.stringify(index, null, 2) + "\n");
  return name;
}
