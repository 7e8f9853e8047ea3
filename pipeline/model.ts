/**
 * The small model interface the layer-wise pipeline compresses: an embedding,
 * a list of blocks (each with named linear weights [out, in] and a forward
 * function over activations [tokens, width]) and an optional classifier head.
 * Model code (for example the Llama code in `examples/`) implements it; the
 * library never depends on a particular architecture. Web-standard only.
 *
 * @module
 */

import type { Tensor } from "../core/tensor.ts";
import type { Backend } from "../kernels/backend.ts";
import type { Hessian } from "../hessian/hessian.ts";
import type { DeviceHessian } from "../hessian/device_hessian.ts";

/** Options of {@linkcode CompressibleBlock.forward}. */
export interface BlockForwardOptions {
  /**
   * Called with the input X [tokens, in] of each linear as the forward pass
   * reaches it. Linears that share an input receive the same tensor object;
   * it must not be modified.
   */
  onInput?: (name: string, input: Tensor<"f32">) => void;
  /**
   * The forward pass may stop (and return null) once the inputs of all these
   * linears were delivered; the pipeline uses it to skip work it does not need.
   */
  stopAfter?: ReadonlySet<string>;
}

/** One block (e.g. a transformer layer) of a {@linkcode CompressibleModel}. */
export interface CompressibleBlock {
  /** The block's name; module names are `${name}.${linear}`, e.g. `layers.0.wq`. */
  readonly name: string;
  /** Weights of the block's linears, [out, in], by local name. */
  readonly linears: Readonly<Record<string, Tensor<"f32">>>;
  /**
   * The true-sequential order: groups of linears compressed together, each
   * group seeing the inputs that the already-compressed earlier groups produce,
   * e.g. `[["wq", "wk", "wv"], ["wo"], ["w1", "w3"], ["w2"]]`. Every linear
   * appears in exactly one group.
   */
  readonly groups: readonly (readonly string[])[];
  /**
   * The block's output for one sequence, with the given weights in place of
   * its linears.
   *
   * @param x The block's input [tokens, width].
   * @param weights A weight for every name in `linears`.
   * @param options Input capture and early stop.
   * @returns The output [tokens, width], or null after an early stop.
   */
  forward(
    x: Tensor<"f32">,
    weights: Readonly<Record<string, Tensor<"f32">>>,
    options?: BlockForwardOptions,
  ): Tensor<"f32"> | null;
}

/** The classifier head, compressed after the blocks when a recipe selects it. */
export interface CompressibleHead {
  /** Module name, e.g. `output`. */
  readonly name: string;
  /** Weight [vocab, width]. */
  readonly weight: Tensor<"f32">;
  /**
   * The head's input (e.g. the final norm) from the last block's output.
   *
   * @param x The last block's output [tokens, width].
   * @returns The classifier's input [tokens, width].
   */
  input(x: Tensor<"f32">): Tensor<"f32">;
}

/**
 * Runs a model's calibration passes on a device (a GPU) for the pipeline:
 * the activations of every calibration token stay there between blocks, and
 * the Hessians stay there too (device Hessians, which the solvers read in
 * place; the pipeline releases them after the group's solves). The pipeline
 * calls, per block, `hessians` for each group of linears (with the weights
 * compressed so far), then `propagate`.
 */
export interface CalibrationRunner {
  /** The device, in words. */
  readonly device: string;
  /** Device bytes the runner holds now, and the most it held. */
  readonly memory: { readonly current: number; readonly peak: number };
  /**
   * Seconds spent so far, by what the runner measures (e.g. GPU seconds by
   * phase, host work), and counts where a name says so (e.g. linears copied
   * on the device rather than uploaded).
   */
  readonly timings: Readonly<Record<string, number>>;
  /**
   * The Hessians of the inputs of `linears` (names local to the block) over
   * every calibration token, with `weights` in place of the block's linears.
   * Linears that share an input share one Hessian object.
   *
   * @param block Block index.
   * @param weights A weight for every linear of the block.
   * @param linears The linears whose input Hessians are wanted.
   * @returns Hessian by linear name.
   */
  hessians(
    block: number,
    weights: Readonly<Record<string, Tensor<"f32">>>,
    linears: readonly string[],
  ): Promise<Map<string, Hessian | DeviceHessian>>;
  /**
   * Moves the calibration activations through a block with these weights.
   *
   * @param block Block index (called in order).
   * @param weights A weight for every linear of the block.
   */
  propagate(block: number, weights: Readonly<Record<string, Tensor<"f32">>>): Promise<void>;
  /**
   * The Hessian of the head's input after the last block.
   *
   * @returns The Hessian.
   */
  headHessian(): Promise<Hessian | DeviceHessian>;
  /** Frees the device memory; the runner must not be used afterwards. */
  dispose(): void;
}

/** A model the pipeline can compress layer by layer. */
export interface CompressibleModel {
  /** Blocks, in forward order. */
  readonly blocks: readonly CompressibleBlock[];
  /** Classifier head, if it may be compressed. */
  readonly head?: CompressibleHead;
  /**
   * The first block's input for a token sequence.
   *
   * @param tokens Token ids.
   * @returns Activations [tokens, width].
   */
  embed(tokens: readonly number[]): Tensor<"f32">;
  /**
   * A runner of the calibration passes on a device, or null where the
   * backend resolves to none (the pipeline then runs `embed` and the blocks'
   * `forward` on the host).
   *
   * @param sequences The calibration token sequences.
   * @param options Where to run, the device memory the run may use
   *   (bytes): a runner refuses, before starting, a run that does not fit;
   *   whether it may read the next block ahead (default true).
   * @returns The runner, or null.
   */
  calibrationRunner?(
    sequences: readonly (readonly number[])[],
    options: {
      readonly backend: Backend;
      readonly memoryBudget?: number;
      readonly prefetch?: boolean;
    },
  ): Promise<CalibrationRunner | null>;
}
