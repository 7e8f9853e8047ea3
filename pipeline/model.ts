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
}
