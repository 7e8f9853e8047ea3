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
import type { Recipe, Stage } from "../pipeline/recipe.ts";
import { measureLayerErrors } from "./_layer_errors.ts";

/** Options of {@linkcode compressRun}. */
export interface CompressRunOptions {
  /**
   * Where the calibration passes and GPTQ's column loop run: `"auto"` (WebGPU
   * on a hardware adapter, else the CPU), `"cpu"` or `"webgpu"` (any adapter).
   * @default "auto"
   */
  readonly backend?: Backend;
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
 * The recipe with `backend` in every GPTQ stage. The stage type has no
 * `backend` field, but `compressLinear` passes a GPTQ stage's fields on to
 * `gptq` as its options, so the field reaches the solver (the CLI's tests
 * check it does, through the GPU buffers a `"webgpu"` run creates). SparseGPT
 * stages are passed field by field and keep the solver's default.
 *
 * @param recipe The recipe (not modified).
 * @param backend The backend.
 * @returns A new recipe.
 */
export function withBackend(recipe: Recipe, backend: Backend): Recipe {
  const stages = (list: readonly Stage[]): Stage[] =>
    list.map((s) => (s.kind === "gptq" ? { ...s, backend } as Stage : s));
  return {
    stages: stages(recipe.stages),
    ...(recipe.overrides
      ? { overrides: recipe.overrides.map((o) => ({ ...o, stages: stages(o.stages) })) }
      : {}),
  };
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
  const { backend = "auto", completed = new Map(), onProgress, onBlockDone } = options;
  const notes: string[] = [];
  const all = [recipe.stages, ...(recipe.overrides ?? []).map((o) => o.stages)].flat();
  if (backend !== "auto" && all.some((s) => s.kind === "sparsegpt")) {
    notes.push(
      `--backend ${backend} reaches GPTQ only: the pipeline gives SparseGPT no backend, so its ` +
        `solver runs on its default (auto: WebGPU on a hardware adapter, else the CPU)`,
    );
  }
  const t0 = performance.now();
  const res = await compressModel(model, calibration, withBackend(recipe, backend), {
    completed,
    trueSequential: true,
    backend,
    ...(onProgress ? { onProgress } : {}),
    onBlockDone: async (block, modules) => {
      const fresh = modules.filter((m) => !completed.has(m.name));
      if (fresh.length > 0) await onBlockDone?.(block, fresh);
    },
  });
  const t1 = performance.now();
  const modules = measureLayerErrors(model, calibration, res.modules);
  return {
    modules,
    bitsPerWeight: res.bitsPerWeight,
    resumed: [...res.modules.keys()].filter((n) => completed.has(n)).length,
    seconds: { pipeline: (t1 - t0) / 1000, measure: (performance.now() - t1) / 1000 },
    phases: res.phases,
    notes,
  };
}
