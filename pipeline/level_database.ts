/**
 * Level databases for dynamic non-uniform compression: every block linear of
 * a model compressed at several levels (e.g. GPTQ at 2, 3, 4, 5, 6, 8 bits,
 * or SparseGPT at 0–90% sparsity), with what each variant costs as the
 * pipeline counts it. A search (`evoPress`) or an allocation (`dpAllocation`)
 * then picks one level per module. Each level is one calibration pass of
 * {@linkcode compressModel}; with `dir`, each finished level is stored as one
 * safetensors file and a later call reads it back instead of compressing
 * again (resumption at level granularity). Reading and writing those files
 * uses the `Deno` namespace; everything else is web-standard.
 *
 * @see Sieberling et al., "EvoPress: Towards Optimal Dynamic Model
 * Compression via Evolutionary Search" (2024), Section 4 (the level database).
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import { readSafetensors, writeSafetensors } from "../core/safetensors_file.ts";
import { compressModel } from "./compress_model.ts";
import type { CompressModelOptions } from "./compress_model.ts";
import type { CompressibleModel } from "./model.ts";
import type { Recipe, Stage } from "./recipe.ts";
import { validateRecipe } from "./recipe.ts";

/**
 * One compression level: the stages every module gets at it, and its value
 * in the unit the constraint counts (bits per weight, or sparsity in percent).
 */
export interface DatabaseLevel {
  /** A short name, used in file names: letters, digits, `-` and `_`. */
  readonly name: string;
  /**
   * The level's integer value for the constraint: the grid bits of a GPTQ
   * level, the sparsity in percent of a pruning level. The constraint is on
   * the weight-count-weighted average of these values, in exact integer
   * arithmetic.
   */
  readonly value: number;
  /** The stages (a recipe's default stages); `[]` keeps the modules dense. */
  readonly stages: readonly Stage[];
}

/** One module compressed at one level. */
export interface LevelVariant {
  /** The dense stand-in [out, in]. */
  readonly weight: Tensor<"f32">;
  /** Storage bits per weight, as the pipeline counts them (32 when dense). */
  readonly bitsPerWeight: number;
  /** Fraction of weights kept. */
  readonly density: number;
  /** Relative output error on the calibration inputs (the pipeline's `layerError`). */
  readonly layerError: number;
  /** Relative weight error ‖W − Ŵ‖²_F / ‖W‖²_F against the model's weight. */
  readonly weightError: number;
}

/** A module of the database: its place in the model and its variants by level. */
export interface LevelModule {
  /** Module name, e.g. `layers.0.wq`. */
  readonly name: string;
  /** Index of its block. */
  readonly block: number;
  /** Its name within the block, e.g. `wq`. */
  readonly local: string;
  /** Number of weights. */
  readonly weights: number;
  /** One variant per level, in the order of the database's levels. */
  readonly variants: readonly LevelVariant[];
}

/** Every block linear of a model at every level. */
export interface LevelDatabase {
  /** The levels, in the order given. */
  readonly levels: readonly DatabaseLevel[];
  /** The block linears, in forward order. */
  readonly modules: readonly LevelModule[];
}

/** What {@linkcode buildLevelDatabase} reports through `onProgress`. */
export interface LevelDatabaseProgress {
  /** Index of the level being built. */
  readonly level: number;
  /** Number of levels. */
  readonly levels: number;
  /** Whether this level was read back from `dir` instead of compressed. */
  readonly resumed: boolean;
  /** Fraction of the level's pass done, in [0, 1]. */
  readonly fraction: number;
}

/** Options of {@linkcode buildLevelDatabase}. */
export interface BuildLevelDatabaseOptions {
  /**
   * Folder of the level files (`level-<name>.safetensors`, one per level,
   * each with its costs in the metadata); a level whose file is there is read
   * back, not compressed again. The folder must exist.
   * @default none (the database stays in memory)
   */
  dir?: string;
  /** Progress within and between levels. */
  onProgress?: (p: LevelDatabaseProgress) => void;
  /**
   * Where the calibration passes and the solvers run (the pipeline's
   * `backend`, `solveBackend`; see {@linkcode CompressModelOptions}).
   * @default "auto"
   */
  backend?: CompressModelOptions["backend"];
  /** Where the solvers run. @default "auto" */
  solveBackend?: CompressModelOptions["solveBackend"];
}

/**
 * GPTQ levels at the given bits: asymmetric grids in groups of `groupSize`
 * input columns (value = bits).
 *
 * @param bits Grid bits of each level, e.g. `[2, 3, 4, 5, 6, 8]`.
 * @param groupSize Input columns per group (−1: per output channel).
 * @returns The levels, named `gptq-w<bits>`.
 */
export function gptqLevels(bits: readonly number[], groupSize = 128): DatabaseLevel[] {
  return bits.map((b) => ({
    name: `gptq-w${b}`,
    value: b,
    stages: [{ kind: "gptq", bits: b, groupSize }],
  }));
}

/**
 * SparseGPT levels (unstructured) at the given sparsities in percent (value
 * = percent; 0 keeps the modules dense).
 *
 * @param percents Sparsity of each level in percent, e.g. `[0, 10, ..., 70]`.
 * @returns The levels, named `sparsegpt-<percent>`.
 */
export function sparseGptLevels(percents: readonly number[]): DatabaseLevel[] {
  return percents.map((p) => ({
    name: `sparsegpt-${p}`,
    value: p,
    stages: p === 0
      ? []
      : [{ kind: "sparsegpt", structure: { kind: "unstructured", sparsity: p / 100 } }],
  }));
}

function checkLevels(levels: readonly DatabaseLevel[]): void {
  if (!Array.isArray(levels) || levels.length < 1) {
    throw new RangeError(`Cannot build a level database as 'levels' must hold at least one level`);
  }
  const names = new Set<string>();
  for (const l of levels) {
    if (!/^[A-Za-z0-9_-]+$/.test(l.name) || names.has(l.name)) {
      throw new RangeError(
        `Cannot build a level database as a level's 'name' must be unique and use letters, ` +
          `digits, '-' or '_': current value is '${l.name}'`,
      );
    }
    names.add(l.name);
    if (!Number.isSafeInteger(l.value) || l.value < 0) {
      throw new RangeError(
        `Cannot build a level database as level ${l.name}'s 'value' must be a non-negative ` +
          `integer: current value is ${l.value}`,
      );
    }
    validateRecipe({ stages: l.stages });
  }
}

interface StoredModule {
  bitsPerWeight: number;
  density: number;
  layerError: number;
  weightError: number;
}

const META_KEY = "llmcompress.level";

function relativeError(w: Tensor<"f32">, q: Tensor<"f32">): number {
  let num = 0, den = 0;
  for (let i = 0; i < w.data.length; i++) {
    const d = w.data[i]! - q.data[i]!;
    num += d * d;
    den += w.data[i]! * w.data[i]!;
  }
  return den > 0 ? num / den : 0;
}

/**
 * Compresses every block linear of a model at every level, one calibration
 * pass of the pipeline per level (the head stays dense).
 *
 * @example
 * ```ts ignore
 * import { buildLevelDatabase, gptqLevels } from "./level_database.ts";
 * const db = await buildLevelDatabase(model, calibration, gptqLevels([2, 3, 4, 5, 6, 8]), {
 *   dir: "out/levels",
 * });
 * ```
 * @param model The model (not modified).
 * @param calibration Calibration token sequences.
 * @param levels The levels.
 * @param options Storage folder, progress, backends.
 * @returns The database.
 * @throws {RangeError} for bad levels, or a stored level file whose level differs.
 */
export async function buildLevelDatabase(
  model: CompressibleModel,
  calibration: readonly (readonly number[])[],
  levels: readonly DatabaseLevel[],
  options: BuildLevelDatabaseOptions = {},
): Promise<LevelDatabase> {
  const { dir, onProgress, backend = "auto", solveBackend = "auto" } = options;
  checkLevels(levels);
  const blocks = model.blocks.map((b, i) => ({ block: i, b, names: Object.keys(b.linears) }));
  const order = blocks.flatMap(({ block, b, names }) =>
    names.map((local) => ({ name: `${b.name}.${local}`, block, local }))
  );
  const variants: LevelVariant[][] = order.map(() => []);
  for (let li = 0; li < levels.length; li++) {
    const level = levels[li]!;
    const path = dir === undefined ? undefined : `${dir}/level-${level.name}.safetensors`;
    const stored = path === undefined ? null : await readLevelFile(path);
    if (stored !== null) {
      const { meta, tensors } = stored;
      if (
        meta.value !== level.value || JSON.stringify(meta.stages) !== JSON.stringify(level.stages)
      ) {
        throw new RangeError(
          `Cannot resume the level database: ${path} holds level ${meta.name} ` +
            `(value ${meta.value}), not the one asked for`,
        );
      }
      order.forEach((m, i) => {
        const weight = tensors.get(m.name);
        const s = meta.modules[m.name];
        if (!weight || !s || weight.dtype !== "f32") {
          throw new RangeError(`Cannot resume the level database: ${path} lacks module ${m.name}`);
        }
        variants[i]!.push({ weight: weight as Tensor<"f32">, ...s });
      });
      onProgress?.({ level: li, levels: levels.length, resumed: true, fraction: 1 });
      continue;
    }
    const recipe: Recipe = {
      stages: level.stages,
      ...(model.head ? { overrides: [{ match: model.head.name, stages: [] }] } : {}),
    };
    const result = await compressModel(model, calibration, recipe, {
      backend,
      solveBackend,
      onProgress: (p) =>
        onProgress?.({ level: li, levels: levels.length, resumed: false, fraction: p.fraction }),
    });
    const tensors = new Map<string, Tensor<"f32">>();
    const modules: Record<string, StoredModule> = {};
    order.forEach((m, i) => {
      const c = result.modules.get(m.name)!;
      const original = blocks[m.block]!.b.linears[m.local]!;
      const s: StoredModule = {
        bitsPerWeight: c.bitsPerWeight,
        density: c.density,
        layerError: c.layerError,
        weightError: relativeError(original, c.weight),
      };
      modules[m.name] = s;
      tensors.set(m.name, c.weight);
      variants[i]!.push({ weight: c.weight, ...s });
    });
    if (path !== undefined) {
      await writeSafetensors(path, tensors, {
        [META_KEY]: JSON.stringify({ ...level, modules }),
      });
    }
  }
  return {
    levels,
    modules: order.map((m, i) => ({
      ...m,
      weights: variants[i]![0]!.weight.data.length,
      variants: variants[i]!,
    })),
  };
}

async function readLevelFile(path: string): Promise<
  {
    meta: DatabaseLevel & { modules: Record<string, StoredModule> };
    tensors: Map<string, Tensor>;
  } | null
> {
  try {
    await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  const { tensors, metadata } = await readSafetensors(path);
  const raw = metadata[META_KEY];
  if (raw === undefined) {
    throw new RangeError(`Cannot resume the level database: ${path} has no '${META_KEY}' metadata`);
  }
  return { meta: JSON.parse(raw), tensors };
}

/**
 * A per-module recipe for a chosen allocation: the pipeline (and the
 * compress CLI) compresses each module with the stages of its level.
 *
 * @param database The database the allocation indexes.
 * @param levels The level index of each module, by module name.
 * @returns A recipe with one override per module (the default stages keep
 *   anything else, e.g. the head, dense).
 * @throws {RangeError} for a module missing from `levels` or an index out of range.
 */
export function allocationRecipe(
  database: LevelDatabase,
  levels: ReadonlyMap<string, number>,
): Recipe {
  return {
    stages: [],
    overrides: database.modules.map((m) => {
      const l = levels.get(m.name);
      if (l === undefined || !Number.isInteger(l) || !database.levels[l]) {
        throw new RangeError(
          `Cannot make a recipe as module ${m.name}'s level must be an index into the ` +
            `database's levels: current value is ${l}`,
        );
      }
      return { match: m.name, stages: database.levels[l]!.stages };
    }),
  };
}
