/**
 * One compression of a model with a recipe: the layer-wise pipeline with the
 * chosen solver backend, resumable from finished blocks, reporting every
 * finished block, with the layer errors of data-free stages measured
 * afterwards. Web-standard only.
 *
 * @module
 */

import type { Backend } from "../kernels/backend.ts";
import type { CompressedLinear } from "../pipeline/compress_linear.ts";
import {
  type CompressedModel,
  compressModel,
  type PipelineProgress,
} from "../pipeline/compress_model.ts";
import type { CompressibleModel } from "../pipeline/model.ts";
import type { Recipe } from "../pipeline/recipe.ts";
import { measureLayerErrors } from "./_layer_errors.ts";

/** Options of {@linkcode compressRun}. */
export interface CompressRunOptions {
  /**
   * Where the calibration passes and GPTQ's column loop run: `"auto"` (WebGPU
   * on a hardware adapter, else the CPU), `"cpu"` or `"webgpu"` (any adapter).
   * @default "auto"
   */
  readonly backend?: Backend;
  /** GPU memory the calibration passes may use, in bytes (see `compressModel`). */
  readonly gpuMemoryBytes?: number;
  /** Modules of whole blocks finished by an interrupted run (e.g. from a journal). */
  readonly completed?: ReadonlyMap<string, CompressedLinear>;
  /** The pipeline's progress, after each phase of each block. */
  readonly onProgress?: (p: PipelineProgress) => void;
  /**
   * Called (and awaited) after each block with the modules that block
   * finished (none of the `completed` ones): what a journal saves.
   */
  readonly onBlockDone?: (
    block: number,
    modules: readonly CompressedLinear[],
  ) => void | Promise<void>;
  /**
   * Keep the blocks' modules in the result. With false (a journal has them),
   * the host holds one block's at a time; `modules` then holds the head's
   * alone, and the layer errors of data-free stages are left to the caller
   * (`measureLayerErrors` on the modules it reads back).
   * @default true
   */
  readonly keepModules?: boolean;
}

/** What {@linkcode compressRun} returns. */
export interface CompressRunResult {
  /** Every module the pipeline visited, in order, with its layer error. */
  readonly modules: ReadonlyMap<string, CompressedLinear>;
  /** Weight-count-weighted mean bits per weight over the compressed modules (32 if none). */
  readonly bitsPerWeight: number;
  /** Modules taken from `completed`. */
  readonly resumed: number;
  /** Seconds in the pipeline and in measuring the missing layer errors. */
  readonly seconds: { readonly pipeline: number; readonly measure: number };
  /** The pipeline's seconds by phase (`compressModel`'s `phases`). */
  readonly phases: CompressedModel["phases"];
  /**
   * Stages that can run on WebGPU but do not receive the backend, one
   * sentence each (empty with the default backend).
   */
  readonly notes: readonly string[];
}

/**
 * Compresses a model layer by layer with a recipe on calibration windows
 * (true-sequential, as GPTQ does) and measures the layer errors that
 * data-free stages leave out (see `_layer_errors.ts`).
 *
 * @param model The model (a `CausalLM` is one; not modified).
 * @param calibration Calibration windows.
 * @param recipe The recipe.
 * @param options Backend, finished blocks, progress and block callbacks.
 * @returns The modules, their mean bits per weight, the timings.
 */
export async function compressRun(
  model: CompressibleModel,
  calibration: readonly (readonly number[])[],
  recipe: Recipe,
  options: CompressRunOptions = {},
): Promise<CompressRunResult> {
  const {
    backend = "auto",
    completed = new Map(),
    onProgress,
    onBlockDone,
    gpuMemoryBytes,
    keepModules = true,
  } = options;
  const notes: string[] = [];
  const t0 = performance.now();
  const res = await compressModel(model, calibration, recipe, {
    completed,
    trueSequential: true,
    keepModules,
    backend,
    solveBackend: backend,
    ...(gpuMemoryBytes !== undefined ? { gpuMemoryBytes } : {}),
    ...(onProgress ? { onProgress } : {}),
    onBlockDone: async (block, modules) => {
      const fresh = modules.filter((m) => !completed.has(m.name));
      if (fresh.length > 0) await onBlockDone?.(block, fresh);
    },
  });
  const t1 = performance.now();
  const modules = keepModules ? measureLayerErrors(model, calibration, res.modules) : res.modules;
  return {
    modules,
    bitsPerWeight: res.bitsPerWeight,
    resumed: [...res.summaries.keys()].filter((n) => completed.has(n)).length,
    seconds: { pipeline: (t1 - t0) / 1000, measure: (performance.now() - t1) / 1000 },
    phases: res.phases,
    notes,
  };
}
