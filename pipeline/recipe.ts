/**
 * Compression recipes as plain values: a list of stages per linear layer
 * (rotate → prune → quantize → low-rank correction), with per-module
 * overrides selected by name pattern. Web-standard only.
 *
 * @module
 */

import type { SparsityStructure } from "../pruners/structure.ts";
import type { GridOptions } from "../quantizers/grid.ts";
import type { MxFormat } from "../core/scaled_float.ts";
import { ACTIVATION_FORMATS, type ActivationFormat } from "../quantizers/activation_quant.ts";

/** Round-to-nearest onto a uniform grid (`rtn`). */
export interface RtnStage {
  /** Discriminant. */
  readonly kind: "rtn";
  /** Bits per code. */
  readonly bits: number;
  /** Input columns per group; −1 per output channel. @default -1 */
  readonly groupSize?: number;
  /** Symmetric grid. @default false */
  readonly symmetric?: boolean;
  /** MSE clipping search. @default false */
  readonly mse?: boolean;
}

/** GPTQ: uniform grid with Optimal Brain Surgeon error compensation (`gptq`). */
export interface GptqStage {
  /** Discriminant. */
  readonly kind: "gptq";
  /** Bits per code. */
  readonly bits: number;
  /** Input columns per group; −1 per output channel. @default -1 */
  readonly groupSize?: number;
  /** Symmetric grid. @default false */
  readonly symmetric?: boolean;
  /** Process columns by decreasing Hessian diagonal. @default false */
  readonly actOrder?: boolean;
  /** Fit group grids before the loop, on the original weights. @default false */
  readonly staticGroups?: boolean;
  /** Damping, as a fraction of the mean Hessian diagonal. @default 0.01 */
  readonly dampRatio?: number;
  /** Columns per lazy batch update. @default 128 */
  readonly blockSize?: number;
  /** MSE clipping search. @default false */
  readonly mse?: boolean;
  /**
   * QUIK: keep the `count` input columns with the largest input norms (the
   * Hessian diagonal) on a `bits`-bit grid of their own, solved last
   * (`gptqOutliers`; per channel only, CPU).
   */
  readonly outliers?: { readonly count: number; readonly bits?: number };
}

/**
 * SparseGPT: pruning with OBS compensation; with `grid`, the joint
 * sparse + quantized variant (kept weights land on the grid).
 */
export interface SparseGptStage {
  /** Discriminant. */
  readonly kind: "sparsegpt";
  /** Which weights to prune. */
  readonly structure: SparsityStructure;
  /** Also quantize the kept weights (joint compression). */
  readonly grid?: GridOptions;
  /** Damping, as a fraction of the mean Hessian diagonal. @default 0.01 */
  readonly dampRatio?: number;
  /** Columns per lazy batch update. @default 128 */
  readonly blockSize?: number;
}

/** Wanda: prune by |w|·‖x‖ per output row. */
export interface WandaStage {
  /** Discriminant. */
  readonly kind: "wanda";
  /** Which weights to prune. */
  readonly structure: SparsityStructure;
}

/** Magnitude pruning. */
export interface MagnitudeStage {
  /** Discriminant. */
  readonly kind: "magnitude";
  /** Which weights to prune. */
  readonly structure: SparsityStructure;
}

/**
 * A seeded randomized Hadamard rotation of the input side: later stages see
 * W·Q and QᵀHQ, and the dense result is rotated back (the rotation is free to
 * store: only its seed).
 */
export interface RotateStage {
  /** Discriminant. */
  readonly kind: "rotate";
  /** Seed of the random signs; mixed with the module name. @default 0 */
  readonly seed?: number;
  /** Structure when the width is not a Hadamard order. @default "kronecker" */
  readonly fallback?: "none" | "kronecker" | "blockDiagonal";
}

/** AQLM additive vector quantization. */
export interface AqlmStage {
  /** Discriminant. */
  readonly kind: "aqlm";
  /** Number of codebooks. @default 1 */
  readonly codebooks?: number;
  /** Bits per code. @default 8 */
  readonly codebookBits?: number;
  /** Input columns per vector (must divide the columns). @default 8 */
  readonly groupSize?: number;
  /** Beam width. @default 4 */
  readonly beamSize?: number;
  /** Most rounds of beam search and codebook update. @default 100 */
  readonly iterations?: number;
  /**
   * Stop after a round that improves the best error by less than this
   * fraction (the reference's `--relative_mse_tolerance`); 0 runs every round.
   * @default 0.01
   */
  readonly relativeTolerance?: number;
  /** Lloyd steps of the residual k-means initialization. @default 100 */
  readonly kmeansIterations?: number;
  /** Visit groups and codebooks in a seeded order reshuffled every round. @default true */
  readonly shuffle?: boolean;
  /** Seed. @default 0 */
  readonly seed?: number;
}

/**
 * HIGGS: grouped random Hadamard rotation and an MSE-optimal Gaussian grid
 * (data-free).
 */
export interface HiggsStage {
  /** Discriminant. */
  readonly kind: "higgs";
  /** Bits per weight of the grid. */
  readonly bits: number;
  /** Rotation group; default: the largest Hadamard order ≤ 128 dividing the columns. */
  readonly groupSize?: number;
  /** Grid dimension. @default 1 */
  readonly p?: 1 | 2;
  /** Seed of the rotation; mixed with the module name. @default 0 */
  readonly seed?: number;
}

/** NF4 with per-block absmax scales (data-free). */
export interface Nf4Stage {
  /** Discriminant. */
  readonly kind: "nf4";
  /** Weights per absmax block. @default 64 */
  readonly blockSize?: number;
}

/**
 * GPTQ's options for a scaled floating-point stage (`method: "gptq"`); see
 * `GptqFloatOptions`.
 */
export interface FloatGptqStageOptions {
  /** `"rtn"` (round to nearest) or `"gptq"` (the OBS loop over the format's grid, CPU only). @default "rtn" */
  readonly method?: "rtn" | "gptq";
  /** GPTQ: process columns by decreasing Hessian diagonal. @default false */
  readonly actOrder?: boolean;
  /** GPTQ: damping, as a fraction of the mean Hessian diagonal. @default 0.01 */
  readonly dampRatio?: number;
  /** GPTQ: columns per lazy batch update. @default 128 */
  readonly blockSize?: number;
}

/**
 * A microscaling format (`mxQuantize`, or `gptq` with `format`): MXFP4 (E2M1,
 * an E8M0 scale per 32: 4.25 bits per weight) or NVFP4 (E2M1, an E4M3 scale
 * per 16 and an FP32 tensor scale: 4.5 bits per weight and 32 per tensor).
 */
export interface MxStage extends FloatGptqStageOptions {
  /** Discriminant. */
  readonly kind: "mx";
  /** The format. */
  readonly format: MxFormat;
  /** GPTQ: fit the block scales on the original weights before the loop (needed with `actOrder`). @default false */
  readonly staticGroups?: boolean;
}

/**
 * FP8 E4M3 with an FP32 scale per output row or per tensor (`fp8Quantize`,
 * or `gptq` with `format: "fp8"`).
 */
export interface Fp8Stage extends FloatGptqStageOptions {
  /** Discriminant. */
  readonly kind: "fp8";
  /** One scale per output row or per tensor. @default "channel" */
  readonly granularity?: "channel" | "tensor";
}

/**
 * SpQR (`spqr`): small groups on min–max grids whose scales and zero points
 * are quantized again, float16 outliers found in the OBS loop, act-order.
 * CPU only. Defaults are the paper's.
 */
export interface SpqrStage {
  /** Discriminant. */
  readonly kind: "spqr";
  /** Bits per code, in [1, 8]. @default 3 */
  readonly bits?: number;
  /** Input columns per first-level group. @default 16 */
  readonly groupSize?: number;
  /** Bits of each group's scale (second level). @default 3 */
  readonly scaleBits?: number;
  /** Bits of each group's zero point (second level). @default 3 */
  readonly zeroBits?: number;
  /** Output rows per second-level run. @default 16 */
  readonly statisticGroupSize?: number;
  /** τ, relative to the layer's typical OBS error; `Infinity`: no outliers. @default 0.2 */
  readonly outlierThreshold?: number;
  /** Skip the leave-one-out screening before each group's fit. @default false */
  readonly simplifiedOutliers?: boolean;
  /** Process columns by decreasing Hessian diagonal. @default true */
  readonly actOrder?: boolean;
  /** Damping, as a fraction of the mean Hessian diagonal. @default 0.01 */
  readonly dampRatio?: number;
  /** Columns per lazy batch update. @default 128 */
  readonly blockSize?: number;
}

/**
 * EoRA: a rank-r correction B·A of the compressed weight, fitted in the
 * eigenspace of the layer's input Hessian (`eora`); the last stage, after the
 * compressors. The dense stand-in becomes Ŵ + B·A in the original basis.
 */
export interface EoraStage {
  /** Discriminant. */
  readonly kind: "eora";
  /** Rank of the correction (at most min(out, in) of every module it reaches). */
  readonly rank: number;
  /** Store the factors on a uniform grid (RTN) instead of float16. */
  readonly quantize?: GridOptions;
  /** Relative eigenvalue floor (see `EoraOptions.eigenFloor`). @default 1e-10 */
  readonly eigenFloor?: number;
}

/**
 * The plain baseline of {@linkcode EoraStage}: the rank-r truncated SVD of
 * the compression error W − Ŵ (`lowRankSvd`), blind to the inputs.
 */
export interface SvdStage {
  /** Discriminant. */
  readonly kind: "svd";
  /** Rank of the correction (at most min(out, in) of every module it reaches). */
  readonly rank: number;
  /** Store the factors on a uniform grid (RTN) instead of float16. */
  readonly quantize?: GridOptions;
}

/**
 * Quantized activations at the module's input (see
 * `quantizers/activation_quant.ts`): not a weight stage, so it may stand
 * anywhere in the list (at most once); `compressLinear` skips it and the
 * model applies it (`withActivationQuant` in `models/`).
 */
export interface ActivationStage {
  /** Discriminant. */
  readonly kind: "act";
  /** The format. */
  readonly format: ActivationFormat;
  /** Dynamic per-token scales, or one static scale calibrated as the calibration set's max |x|. @default "token" */
  readonly granularity?: "token" | "tensor";
  /**
   * QUIK: keep the `count` input columns with the largest input norms in
   * `format` (the columns a GPTQ stage's `outliers` kept, where it ran).
   */
  readonly outliers?: { readonly count: number; readonly format?: "int8" | "fp8" };
}

/**
 * The weight stages of a list (every stage but the activation stage).
 *
 * @param stages Stages.
 * @returns Those that compress the weight.
 */
export function weightStages(stages: readonly Stage[]): Stage[] {
  return stages.filter((s) => s.kind !== "act");
}

/**
 * The activation stage of a list, if any.
 *
 * @param stages Stages.
 * @returns It, or undefined.
 */
export function activationStage(stages: readonly Stage[]): ActivationStage | undefined {
  return stages.find((s): s is ActivationStage => s.kind === "act");
}

/**
 * Whether any module of a recipe has an activation stage.
 *
 * @param recipe The recipe.
 * @returns True when the default stages or an override hold an `act` stage.
 */
export function hasActivationStages(recipe: Recipe): boolean {
  return [recipe.stages, ...(recipe.overrides ?? []).map((o) => o.stages)]
    .some((stages) => activationStage(stages) !== undefined);
}

/** One step of a linear layer's compression, as a value. */
export type Stage =
  | RtnStage
  | GptqStage
  | SparseGptStage
  | WandaStage
  | MagnitudeStage
  | RotateStage
  | AqlmStage
  | HiggsStage
  | Nf4Stage
  | MxStage
  | Fp8Stage
  | SpqrStage
  | EoraStage
  | SvdStage
  | ActivationStage;

/** Stages for the modules whose name matches `match`. */
export interface RecipeOverride {
  /**
   * Module names it applies to: a RegExp, or a glob where `*` matches any
   * run of characters (`"*.wv"`, `"layers.0.*"`, `"output"`); a glob must
   * match the whole name.
   */
  readonly match: string | RegExp;
  /** The stages for those modules; `[]` keeps them uncompressed. */
  readonly stages: readonly Stage[];
}

/**
 * A compression recipe: default stages and overrides (the last matching
 * override wins). A model's classifier head (e.g. `output`) is a module too,
 * so the default stages reach it unless an override keeps it:
 * `{ match: "output", stages: [] }`.
 */
export interface Recipe {
  /** Stages of every module that no override matches. */
  readonly stages: readonly Stage[];
  /** Per-module exceptions. @default [] */
  readonly overrides?: readonly RecipeOverride[];
}

function globToRegExp(glob: string): RegExp {
  const body = glob.split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*");
  return new RegExp(`^${body}$`);
}

/**
 * Whether a module name matches an override pattern.
 *
 * @param name A module name, e.g. `layers.3.wv`.
 * @param match A RegExp or a whole-name glob.
 * @returns True when it matches.
 */
export function matchesModule(name: string, match: string | RegExp): boolean {
  return (typeof match === "string" ? globToRegExp(match) : match).test(name);
}

/**
 * The stages a recipe gives a module.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { stagesFor } from "./recipe.ts";
 * const recipe = {
 *   stages: [{ kind: "gptq", bits: 4 }] as const,
 *   overrides: [{ match: "*.wv", stages: [{ kind: "gptq", bits: 8 }] as const }],
 * };
 * assert(stagesFor(recipe, "layers.0.wv")[0]!.kind === "gptq");
 * ```
 * @param recipe The recipe.
 * @param name The module name.
 * @returns The stages of the last matching override, else the default stages.
 */
export function stagesFor(recipe: Recipe, name: string): readonly Stage[] {
  let stages = recipe.stages;
  for (const o of recipe.overrides ?? []) if (matchesModule(name, o.match)) stages = o.stages;
  return stages;
}

const KINDS = new Set([
  "rtn",
  "gptq",
  "sparsegpt",
  "wanda",
  "magnitude",
  "rotate",
  "aqlm",
  "higgs",
  "nf4",
  "mx",
  "fp8",
  "spqr",
  "eora",
  "svd",
  "act",
]);

/**
 * Whether a stage is a low-rank correction of the compressed weight (EoRA or
 * SVD), which comes last and needs a compressor before it.
 *
 * @param stage The stage.
 * @returns True for `eora` and `svd`.
 */
export function isLowRankStage(stage: Stage): stage is EoraStage | SvdStage {
  return stage.kind === "eora" || stage.kind === "svd";
}

/**
 * Checks a recipe's shape: known stage kinds, integer bits and ranks, and the
 * order rotate → prune → quantize → low-rank correction (`rotate` first, at
 * most one quantizer, last but for an `eora` or `svd` stage, which follows a
 * pruner or quantizer and ends the list); each stage's own options are
 * checked by the compressor it calls.
 *
 * @param recipe The recipe.
 * @throws {TypeError} for an unknown stage kind or a malformed recipe.
 * @throws {RangeError} for bits outside [1, 16] or stages out of order.
 */
export function validateRecipe(recipe: Recipe): void {
  if (recipe === null || typeof recipe !== "object" || !Array.isArray(recipe.stages)) {
    throw new TypeError(`Cannot compress as 'recipe' must be { stages: Stage[], overrides? }`);
  }
  const all = [recipe.stages, ...(recipe.overrides ?? []).map((o) => o.stages)];
  for (const list of all) {
    if (!Array.isArray(list)) {
      throw new TypeError(`Cannot compress as every override needs 'stages' (an array)`);
    }
    const acts = (list as Stage[]).filter((s) => s?.kind === "act");
    if (acts.length > 1) {
      throw new RangeError(
        `Cannot compress as a module takes at most one 'act' stage: found ${acts.length}`,
      );
    }
    // The activation stage is outside the weight stages' order.
    const stages = (list as Stage[]).filter((s) => s?.kind !== "act");
    for (const s of [...stages, ...acts]) {
      if (s === null || typeof s !== "object" || !KINDS.has(s.kind)) {
        throw new TypeError(
          `Cannot compress as a stage's 'kind' must be one of ${[...KINDS].join(", ")}: ` +
            `current value is ${String((s as { kind?: unknown })?.kind)}`,
        );
      }
      if (s.kind === "act") {
        checkActivationStage(s);
        continue;
      }
      const at = (stages as Stage[]).indexOf(s);
      const earlier = (stages as Stage[]).slice(0, at);
      if (s.kind === "rotate" && earlier.length > 0) {
        throw new RangeError(
          `Cannot compress as 'rotate' must be the first stage: it follows ${
            earlier.map((e) => e.kind)
          }`,
        );
      }
      const correction = earlier.find(isLowRankStage);
      if (correction) {
        throw new RangeError(
          `Cannot compress as a low-rank correction ('${correction.kind}') must be the last ` +
            `stage: '${s.kind}' follows it (order: rotate → prune → quantize → correct)`,
        );
      }
      if (isLowRankStage(s)) {
        if (!earlier.some((e) => e.kind !== "rotate")) {
          throw new RangeError(
            `Cannot compress as '${s.kind}' corrects a compressed weight: it must follow a ` +
              `pruner or quantizer (stages: ${(stages as Stage[]).map((e) => e.kind)})`,
          );
        }
        if (!(Number.isInteger(s.rank) && s.rank >= 1)) {
          throw new RangeError(
            `Cannot compress as a ${s.kind} stage's 'rank' must be a positive integer: ` +
              `current value is ${s.rank}`,
          );
        }
        continue;
      }
      const quantizer = earlier.find((e) =>
        e.kind !== "rotate" && e.kind !== "magnitude" && e.kind !== "wanda" &&
        !(e.kind === "sparsegpt" && e.grid === undefined)
      );
      if (quantizer) {
        throw new RangeError(
          `Cannot compress as a quantizer ('${quantizer.kind}') must be the last stage: ` +
            `'${s.kind}' follows it (order: rotate → prune → quantize)`,
        );
      }
      if ("bits" in s && !(Number.isInteger(s.bits) && s.bits >= 1 && s.bits <= 16)) {
        throw new RangeError(
          `Cannot compress as a ${s.kind} stage's 'bits' must be an integer in [1, 16]: ` +
            `current value is ${s.bits}`,
        );
      }
    }
  }
}

function checkActivationStage(s: ActivationStage): void {
  if (!ACTIVATION_FORMATS.includes(s.format)) {
    throw new TypeError(
      `Cannot compress as an act stage's 'format' must be one of ${
        ACTIVATION_FORMATS.join(", ")
      }: ` +
        `current value is ${String(s.format)}`,
    );
  }
  const g = s.granularity ?? "token";
  if (g !== "token" && g !== "tensor") {
    throw new TypeError(
      `Cannot compress as an act stage's 'granularity' must be "token" or "tensor": ` +
        `current value is ${String(g)}`,
    );
  }
  if (s.outliers !== undefined) {
    const { count, format = "int8" } = s.outliers;
    if (!(Number.isInteger(count) && count >= 1) || (format !== "int8" && format !== "fp8")) {
      throw new RangeError(
        `Cannot compress as an act stage's 'outliers' needs a positive integer 'count' and ` +
          `'format' "int8" or "fp8": current values are ${count} and ${String(format)}`,
      );
    }
  }
}
