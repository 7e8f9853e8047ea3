/**
 * Sequential layer-wise compression, the way GPTQ does it: calibration
 * sequences run through the model block by block; within a block the linears
 * are compressed group by group in true-sequential order (each group's
 * Hessians come from inputs produced by the already-compressed earlier
 * groups), and the compressed block's outputs feed the next block. Memory
 * stays at one block's activations for the calibration set plus the model.
 * Web-standard only.
 *
 * @see Frantar et al., "GPTQ" (2023), Section 4 (the sequential pipeline) and
 * the reference `--true-sequential` option.
 *
 * @module
 */

import { numel, type Tensor } from "../core/tensor.ts";
import { addInputs, hessian } from "../hessian/hessian.ts";
import type { Hessian } from "../hessian/hessian.ts";
import { type DeviceHessian, isDeviceHessian } from "../hessian/device_hessian.ts";
import { compressLinear, stageNeedsHessian } from "./compress_linear.ts";
import type { CompressedLinear } from "./compress_linear.ts";
import type { CalibrationRunner, CompressibleBlock, CompressibleModel } from "./model.ts";
import type { Backend } from "../kernels/backend.ts";
import { releaseDeviceCopy } from "../kernels/device_copies.ts";
import { stagesFor, validateRecipe, weightStages } from "./recipe.ts";
import type { Recipe } from "./recipe.ts";

/** What {@linkcode compressModel} reports through `onProgress`. */
export interface PipelineProgress {
  /** Index of the block being compressed (`blocks` for the head). */
  readonly block: number;
  /** Number of blocks. */
  readonly blocks: number;
  /** Current phase. */
  readonly phase: "capture" | "compress" | "propagate" | "done";
  /** The module being compressed, in the `compress` phase. */
  readonly module?: string;
  /** Fraction of the whole run done, in [0, 1], weighted by block. */
  readonly fraction: number;
}

/** Options of {@linkcode compressModel}. */
export interface CompressModelOptions {
  /** Progress after each phase of each block. */
  onProgress?: (p: PipelineProgress) => void;
  /**
   * Called when a block is finished with its compressed modules (a journal
   * can save them; awaited before the next block starts).
   */
  onBlockDone?: (block: number, modules: readonly CompressedLinear[]) => void | Promise<void>;
  /**
   * Modules already compressed by an interrupted run (e.g. read back from a
   * journal), by name: they are not compressed again, their weights are used as
   * they are. Only whole blocks may be given.
   */
  completed?: ReadonlyMap<string, CompressedLinear>;
  /**
   * Compress the groups of a block one after the other, each seeing the inputs
   * the already-compressed earlier groups produce (GPTQ's `--true-sequential`).
   * When false, every linear of a block is compressed from the inputs of the
   * uncompressed block (one capture pass per block).
   * @default true
   */
  trueSequential?: boolean;
  /**
   * Where the calibration passes (block forwards, Hessians) run: on a device
   * when the model offers a `calibrationRunner` and the backend resolves to a
   * GPU ("auto": a hardware adapter), else on the host through the blocks'
   * `forward`. The solvers' backend is `solveBackend`.
   * @default "auto"
   */
  backend?: Backend;
  /**
   * Where the solvers (GPTQ, SparseGPT) and the layer errors run: "auto"
   * (WebGPU on a hardware adapter), "cpu" (float64 factorization), "webgpu".
   * @default "auto"
   */
  solveBackend?: Backend;
  /**
   * GPU memory the calibration passes may use, in bytes: a run whose estimate
   * exceeds it is refused before it starts (WebGPU does not report a
   * device's memory; without it the runner allocates up front and reports an
   * allocation failure then).
   */
  gpuMemoryBytes?: number;
  /**
   * Let a device runner read and upload the next block while the GPU works
   * on this one (two blocks' weights on the device instead of one).
   * @default true
   */
  prefetch?: boolean;
  /**
   * Keep every finished module (its weight, codes, mask) in the result. With
   * false, a block's modules are dropped once `onBlockDone` returned (a
   * journal or a streaming writer has them), so the host holds one block's
   * weights at a time; `summaries` still describes every module.
   * @default true
   */
  keepModules?: boolean;
}

/** What the result tells of every module, kept or not. */
export interface ModuleSummary {
  /** Module name. */
  readonly name: string;
  /** Weights in the module. */
  readonly weights: number;
  /** Storage bits per weight (as `CompressedLinear.bitsPerWeight`). */
  readonly bitsPerWeight: number;
  /** Fraction of weights kept. */
  readonly density: number;
  /** The stage kinds applied. */
  readonly stages: readonly string[];
  /** Relative output error on the calibration inputs. */
  readonly layerError: number;
  /**
   * Seconds from the start of its stages to their end (a group's linears
   * are compressed together, so their spans overlap).
   */
  readonly seconds: number;
}

/** What {@linkcode compressModel} returns. */
export interface CompressedModel {
  /**
   * Every module the pipeline visited, by name, in order (uncompressed ones
   * included); empty of the blocks' modules with `keepModules: false`.
   */
  readonly modules: ReadonlyMap<string, CompressedLinear>;
  /** A summary of every module visited, in order. */
  readonly summaries: ReadonlyMap<string, ModuleSummary>;
  /** Weight-count-weighted mean bits per weight over the compressed modules (32 if none). */
  readonly bitsPerWeight: number;
  /** Total seconds. */
  readonly seconds: number;
  /**
   * Wall seconds by phase: `calibration` (forwards and Hessians up to each
   * group's solve), `compress` (the solves), `propagate` (moving the
   * calibration activations through finished blocks).
   */
  readonly phases: {
    readonly calibration: number;
    readonly compress: number;
    readonly propagate: number;
  };
  /**
   * The device that ran the calibration passes, its peak bytes and its
   * runner's timings, or null on the host.
   */
  readonly device: {
    readonly name: string;
    readonly peakBytes: number;
    readonly timings: Readonly<Record<string, number>>;
  } | null;
}

function accumulate(prev: Hessian | undefined, x: Tensor<"f32">): Hessian {
  return prev ? addInputs(prev, x) : hessian(x);
}

/**
 * Compresses a model layer by layer with a recipe.
 *
 * @example
 * ```ts ignore
 * import { compressModel } from "./compress_model.ts";
 * // `model` implements CompressibleModel (see models/compressible.ts)
 * const result = await compressModel(model, calibrationSequences, {
 *   stages: [{ kind: "gptq", bits: 4, groupSize: 32 }],
 *   overrides: [{ match: "*.wv", stages: [{ kind: "gptq", bits: 8 }] }],
 * });
 * const wq0 = result.modules.get("layers.0.wq")!.weight; // dense stand-in
 * ```
 * @param model The model (its weights are not modified).
 * @param calibration Calibration token sequences.
 * @param recipe Stages per module.
 * @param options Progress, journaling and resumption.
 * @returns The compressed modules (dense stand-ins, storage cost, layer errors).
 * @throws {RangeError} for an empty calibration set or a partly completed block.
 */
export async function compressModel(
  model: CompressibleModel,
  calibration: readonly (readonly number[])[],
  recipe: Recipe,
  options: CompressModelOptions = {},
): Promise<CompressedModel> {
  const {
    onProgress,
    onBlockDone,
    completed = new Map(),
    trueSequential = true,
    backend = "auto",
    solveBackend = "auto",
    gpuMemoryBytes,
    prefetch = true,
    keepModules = true,
  } = options;
  if (typeof trueSequential !== "boolean") {
    throw new TypeError(
      `Cannot compress as 'trueSequential' must be a boolean: current value is ${trueSequential}`,
    );
  }
  validateRecipe(recipe);
  const seqs = calibration.filter((s) => s.length > 0);
  if (seqs.length === 0) {
    throw new RangeError(
      `Cannot compress as 'calibration' must hold at least one non-empty sequence`,
    );
  }
  const t0 = performance.now();
  const B = model.blocks.length;
  const modules = new Map<string, CompressedLinear>();
  const summaries = new Map<string, ModuleSummary>();
  const keep = (c: CompressedLinear) => {
    modules.set(c.name, c);
    summaries.set(c.name, {
      name: c.name,
      weights: numel(c.weight.shape),
      bitsPerWeight: c.bitsPerWeight,
      density: c.density,
      stages: c.stages,
      layerError: c.layerError,
      seconds: c.seconds,
    });
  };
  const report = (block: number, phase: PipelineProgress["phase"], frac: number, module?: string) =>
    onProgress?.({
      block,
      blocks: B,
      phase,
      fraction: Math.min(1, (block + frac) / (B + (model.head ? 1 : 0))),
      ...(module ? { module } : {}),
    });

  const needs = (name: string) => stagesFor(recipe, name).some(stageNeedsHessian);
  // Recipes without calibration-based stages (RTN, magnitude) need no forward passes at all.
  const anyNeeds =
    model.blocks.some((b) => Object.keys(b.linears).some((n) => needs(`${b.name}.${n}`))) ||
    (model.head !== undefined && needs(model.head.name));
  const phases = { calibration: 0, compress: 0, propagate: 0 };
  const timed = async <T>(phase: keyof typeof phases, work: () => T | Promise<T>): Promise<T> => {
    const start = performance.now();
    try {
      return await work();
    } finally {
      phases[phase] += (performance.now() - start) / 1000;
    }
  };
  const runner: CalibrationRunner | null = anyNeeds && model.calibrationRunner
    ? await timed(
      "calibration",
      () =>
        model.calibrationRunner!(seqs, {
          backend,
          ...(gpuMemoryBytes !== undefined ? { memoryBudget: gpuMemoryBytes } : {}),
          prefetch,
        }),
    )
    : null;
  // The weights of the block in progress (whose device copies a failure releases).
  let current: Record<string, Tensor<"f32">> | null = null;
  try {
    let xs: Tensor<"f32">[] = anyNeeds && runner === null ? seqs.map((s) => model.embed(s)) : [];
    for (let b = 0; b < B; b++) {
      const block = model.blocks[b]!;
      const names = Object.keys(block.linears);
      const full = (n: string) => `${block.name}.${n}`;
      const done = names.filter((n) => completed.has(full(n)));
      if (done.length > 0 && done.length < names.length) {
        throw new RangeError(
          `Cannot resume: block ${block.name} is only partly completed (${done.join(", ")})`,
        );
      }
      // The block's weights as read once here (a lazily loaded model may drop
      // them from its cache meanwhile: a runner reads the next block ahead).
      const originals: Readonly<Record<string, Tensor<"f32">>> = { ...block.linears };
      const weights: Record<string, Tensor<"f32">> = { ...originals };
      current = weights;
      const results: CompressedLinear[] = [];
      if (done.length === names.length) {
        for (const n of names) {
          const c = completed.get(full(n))!;
          weights[n] = c.weight;
          results.push(c);
        }
      } else {
        const grouped = new Set(block.groups.flat());
        const missing = names.filter((n) => !grouped.has(n));
        if (missing.length > 0 || grouped.size !== block.groups.flat().length) {
          throw new RangeError(
            `Block ${block.name}: 'groups' must hold every linear exactly once (missing: ${missing})`,
          );
        }
        let g = 0;
        const groups = trueSequential ? block.groups : [block.groups.flat()];
        for (const group of groups) {
          const todo = group.filter((n) => needs(full(n)));
          let hessians = new Map<string, Hessian | DeviceHessian>();
          if (todo.length > 0) {
            report(b, "capture", g / groups.length);
            hessians = await timed(
              "calibration",
              () =>
                runner
                  ? runner.hessians(b, weights, todo)
                  : hostHessians(block, xs, weights, new Set(todo)),
            );
          }
          try {
            // The group's linears are compressed together: a GPU solve queues
            // its work before it first waits, so the device solves the next
            // linear while the host assembles the last one's result.
            const settled = await timed(
              "compress",
              () =>
                Promise.allSettled(group.map(async (n): Promise<CompressedLinear> => {
                  report(b, "compress", (g + 0.5) / groups.length, full(n));
                  const stages = stagesFor(recipe, full(n));
                  const w = originals[n]!;
                  if (weightStages(stages).length === 0) {
                    return {
                      name: full(n),
                      weight: w,
                      bitsPerWeight: 32,
                      density: 1,
                      stages: [],
                      layerError: 0,
                      seconds: 0,
                    };
                  }
                  return await compressLinear(w, hessians.get(n) ?? null, stages, {
                    name: full(n),
                    backend: solveBackend,
                    // Ŵ stays on the GPU for the runner to copy (it takes it).
                    deviceWeight: runner !== null,
                  });
                })),
            );
            const failed = settled.find((r) => r.status === "rejected");
            if (failed !== undefined) {
              for (const r of settled) {
                if (r.status === "fulfilled") releaseDeviceCopy(r.value.weight);
              }
              throw failed.reason;
            }
            group.forEach((n, i) => {
              const c = (settled[i] as PromiseFulfilledResult<CompressedLinear>).value;
              weights[n] = c.weight;
              results.push(c);
            });
          } finally {
            releaseAll(hessians.values());
          }
          g++;
        }
      }
      for (const c of results) keep(c);
      report(b, "propagate", 0.95);
      if (anyNeeds) {
        await timed("propagate", async () => {
          if (runner) await runner.propagate(b, weights);
          else xs = xs.map((x) => block.forward(x, weights)!);
        });
      }
      // A device copy the runner did not take (or a view of its) is not needed any more.
      releaseCopies(weights);
      current = null;
      await onBlockDone?.(b, results);
      if (!keepModules) { for (const c of results) modules.delete(c.name); }
      report(b, "done", 1);
    }
    if (model.head) {
      const { name } = model.head;
      const stages = stagesFor(recipe, name);
      if (completed.has(name)) keep(completed.get(name)!);
      else if (weightStages(stages).length > 0) {
        report(B, "capture", 0);
        let h: Hessian | DeviceHessian | undefined;
        if (needs(name)) {
          h = await timed("calibration", async () => {
            if (runner) return await runner.headHessian();
            let acc: Hessian | undefined;
            for (const x of xs) acc = accumulate(acc, model.head!.input(x));
            return acc;
          });
        }
        report(B, "compress", 0.5, name);
        const { weight } = model.head;
        const c = await timed(
          "compress",
          () => compressLinear(weight, h ?? null, stages, { name, backend: solveBackend }),
        ).finally(() => releaseAll(h ? [h] : []));
        keep(c);
        await onBlockDone?.(B, [c]);
      }
      report(B, "done", 1);
    }
  } finally {
    if (current !== null) releaseCopies(current);
    runner?.dispose();
  }
  let bits = 0, count = 0;
  for (const c of summaries.values()) {
    if (c.stages.length === 0) continue;
    bits += c.bitsPerWeight * c.weights;
    count += c.weights;
  }
  return {
    modules,
    summaries,
    bitsPerWeight: count > 0 ? bits / count : 32,
    seconds: (performance.now() - t0) / 1000,
    phases,
    device: runner
      ? { name: runner.device, peakBytes: runner.memory.peak, timings: runner.timings }
      : null,
  };
}

/**
 * The input Hessians of `want` (linears of `block`) on the host: each
 * sequence's forward with `weights` delivers the inputs; linears that share
 * an input share the Hessian update.
 */
function hostHessians(
  block: CompressibleBlock,
  xs: readonly Tensor<"f32">[],
  weights: Readonly<Record<string, Tensor<"f32">>>,
  want: ReadonlySet<string>,
): Map<string, Hessian> {
  const hessians = new Map<string, Hessian>();
  for (const x of xs) {
    const seen = new Map<Tensor<"f32">, Hessian>();
    block.forward(x, weights, {
      stopAfter: want,
      onInput: (name, input) => {
        if (!want.has(name)) return;
        let sample = seen.get(input);
        if (!sample) seen.set(input, sample = hessian(input));
        const prev = hessians.get(name);
        hessians.set(name, prev ? addInputsFrom(prev, sample) : sample);
      },
    });
  }
  return hessians;
}

/** The running mean of two Hessians over their combined tokens. */
function addInputsFrom(a: Hessian, b: Hessian): Hessian {
  const total = a.count + b.count;
  const xtx = new Float64Array(a.xtx.length);
  if (total > 0) {
    const wa = a.count / total, wb = b.count / total;
    for (let i = 0; i < xtx.length; i++) xtx[i] = wa * a.xtx[i]! + wb * b.xtx[i]!;
  }
  return { cols: a.cols, count: total, xtx };
}

/** Releases the device copies of a block's weights (`kernels/device_copies.ts`). */
function releaseCopies(weights: Readonly<Record<string, Tensor<"f32">>>): void {
  for (const w of Object.values(weights)) releaseDeviceCopy(w);
}

/** Frees the device Hessians among `hessians` (each once). */
function releaseAll(hessians: Iterable<Hessian | DeviceHessian>): void {
  for (const h of hessians) if (isDeviceHessian(h)) h.release();
}
