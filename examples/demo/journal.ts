/**
 * The demo's `--resume` journal: a folder holding the finished rows
 * (`journal.json`) and, per method, the modules of the blocks finished so far
 * (`<method>.block-NNNNN.safetensors`: the uniform grids and AQLM codes the
 * packed checkpoint formats are written from, dense float32 weights where
 * the grid does not give them back bit for bit (a module without a grid,
 * pruned or rotated), keep masks, module records in the metadata).
 * Every file is replaced atomically, so an interrupted run leaves the last
 * consistent state, and a rerun continues from the last finished block.
 * Uses the `Deno` namespace.
 *
 * @module
 */

import { type Tensor, tensor } from "../../core/tensor.ts";
import { nextTask } from "../../core/_next_task.ts";
import { readSafetensors, writeSafetensors } from "../../core/safetensors_file.ts";
import {
  compressedFromTensors,
  compressedToTensors,
  LAYERS_METADATA_KEY,
  type StoredWeight,
} from "../../quantizers/serialize.ts";
import type { CompressedLinear } from "../../pipeline/compress_linear.ts";
import { dequantize, dequantizedFrom } from "../../quantizers/dequantize.ts";
import type { DemoRow } from "./report.ts";

/** An open journal. */
export interface Journal {
  /** Rows finished by earlier runs, by method. */
  readonly rows: ReadonlyMap<string, DemoRow>;
  /**
   * Modules of a method's finished blocks (empty when none). A module whose
   * weight is its dequantized grid reads `weight` as a fresh dequantization
   * each time (the modules hold codes, not float32 weights).
   *
   * @param method Method id.
   * @returns Modules by name.
   */
  completed(method: string): Promise<Map<string, CompressedLinear>>;
  /**
   * Records the modules of one finished block of a method, in a file of its
   * own (so each block is written once: rewriting every finished module at
   * each block wrote the model's size times the number of blocks).
   *
   * @param method Method id.
   * @param block Block index (the pipeline's; the head comes after the blocks).
   * @param modules The block's modules.
   */
  saveBlock(method: string, block: number, modules: readonly CompressedLinear[]): Promise<void>;
  /**
   * Records a finished row.
   *
   * @param row The row.
   */
  saveRow(row: DemoRow): Promise<void>;
}

interface JournalFile {
  fingerprint: string;
  rows: DemoRow[];
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}

/** Whether two float32 tensors hold the same bits (NaN payloads included). */
function sameBits(a: Tensor<"f32">, b: Tensor<"f32">): boolean {
  if (a.shape.join() !== b.shape.join()) return false;
  const x = new Uint32Array(a.data.buffer, a.data.byteOffset, a.data.length);
  const y = new Uint32Array(b.data.buffer, b.data.byteOffset, b.data.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

function safeName(method: string): string {
  return method.replace(/[^A-Za-z0-9_.-]/g, "_");
}

/**
 * Opens (or creates) a journal folder.
 *
 * @param dir The folder.
 * @param fingerprint What the results depend on (model, data, settings); a
 *   journal written with another fingerprint is refused.
 * @returns The journal.
 * @throws {Error} when the folder holds a journal of other settings.
 */
export async function openJournal(dir: string, fingerprint: string): Promise<Journal> {
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}/journal.json`;
  let file: JournalFile = { fingerprint, rows: [] };
  try {
    file = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new Error(
        `${path}: unreadable journal (${(e as Error).message}); delete it to start over`,
      );
    }
    // Written now, so that modules saved before the first row are fingerprinted too.
    await writeAtomic(path, JSON.stringify(file, null, 1));
  }
  if (file.fingerprint !== fingerprint) {
    throw new Error(
      `${path} was written with other settings (${file.fingerprint}); now: ${fingerprint}. ` +
        `Use another --resume folder or delete this one`,
    );
  }
  const rows = new Map(file.rows.map((r) => [r.method, r]));
  return {
    rows,
    async completed(method) {
      const out = new Map<string, CompressedLinear>();
      const prefix = `${safeName(method)}.block-`;
      const files: string[] = [];
      for await (const e of Deno.readDir(dir)) {
        if (e.isFile && e.name.startsWith(prefix) && e.name.endsWith(".safetensors")) {
          files.push(`${dir}/${e.name}`);
        }
      }
      for (const p of files.sort()) {
        const st = await readSafetensors(p);
        const records = JSON.parse(st.metadata.modules ?? "[]") as (
          & Omit<CompressedLinear, "weight">
          & { weightFromGrid?: boolean }
        )[];
        const quantized = st.metadata[LAYERS_METADATA_KEY] === undefined
          ? new Map<string, StoredWeight>()
          : compressedFromTensors(st.tensors, st.metadata);
        for (const { weightFromGrid, ...r } of records) {
          const q = quantized.get(r.name);
          const mask = st.tensors.get(`${r.name}.mask`);
          const module = {
            ...r,
            layerError: r.layerError ?? NaN,
            ...(q ? { quantized: q } : {}),
            ...(mask ? { mask: Uint8Array.from(mask.data as Uint8Array) } : {}),
          };
          if (weightFromGrid) {
            if (q?.kind !== "uniform") throw new Error(`${p}: missing the grid of ${r.name}`);
            // Dequantized when read, each time: a model's worth of modules
            // holds its codes, not its float32 weights.
            Object.defineProperty(module, "weight", {
              get: () => dequantize(q),
              enumerable: true,
            });
            out.set(r.name, module as CompressedLinear);
          } else {
            const t = st.tensors.get(r.name);
            if (!t || t.dtype !== "f32") throw new Error(`${p}: missing module ${r.name}`);
            const weight = tensor("f32", t.shape, Float32Array.from(t.data as Float32Array));
            out.set(r.name, { ...module, weight });
          }
        }
      }
      return out;
    },
    async saveBlock(method, block, modules) {
      if (!(Number.isInteger(block) && block >= 0)) {
        throw new RangeError(`Cannot journal block ${block}: not a block index`);
      }
      // The host work runs after the caller's turn (e.g. while the GPU works).
      await nextTask();
      const tensors = new Map<string, Tensor>();
      // The grids (and AQLM codes) too: the packed checkpoint formats are written from them.
      const grids = new Map<string, StoredWeight>();
      // Modules whose weight is the dequantized grid, bit for bit: not stored twice.
      const fromGrid = new Set<string>();
      for (const m of modules) {
        if (m.quantized?.kind === "uniform" || m.quantized?.kind === "aqlm") {
          grids.set(m.name, m.quantized as StoredWeight);
        }
        if (
          m.quantized?.kind === "uniform" && !m.mask &&
          (dequantizedFrom(m.weight) === m.quantized || sameBits(dequantize(m.quantized), m.weight))
        ) {
          fromGrid.add(m.name);
        } else tensors.set(m.name, m.weight);
        if (m.mask) tensors.set(`${m.name}.mask`, tensor("u8", m.weight.shape, m.mask));
      }
      // Packed a module at a time, yielding in between (a block's codes are
      // hundreds of millions at 8B: this runs between the GPU's waits).
      const layers: Record<string, unknown> = {};
      for (const [name, q] of grids) {
        await nextTask();
        const one = compressedToTensors(new Map([[name, q]]));
        for (const [k, t] of one.tensors) tensors.set(k, t);
        Object.assign(layers, JSON.parse(one.metadata[LAYERS_METADATA_KEY]!));
      }
      const packed = { metadata: { [LAYERS_METADATA_KEY]: JSON.stringify(layers) } };
      const records = modules.map((m) => ({
        name: m.name,
        bitsPerWeight: m.bitsPerWeight,
        density: m.density,
        stages: m.stages,
        layerError: Number.isFinite(m.layerError) ? m.layerError : null,
        seconds: m.seconds,
        ...(fromGrid.has(m.name) ? { weightFromGrid: true } : {}),
      }));
      const name = `${safeName(method)}.block-${String(block).padStart(5, "0")}.safetensors`;
      await writeSafetensors(`${dir}/${name}`, tensors, {
        modules: JSON.stringify(records),
        ...(grids.size > 0 ? packed.metadata : {}),
      });
    },
    async saveRow(row) {
      rows.set(row.method, row);
      await writeAtomic(path, JSON.stringify({ fingerprint, rows: [...rows.values()] }, null, 1));
    },
  };
}
