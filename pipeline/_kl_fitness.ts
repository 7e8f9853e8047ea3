/**
 * The fitness of a compressed model: the mean KL divergence of its
 * next-token distribution from the dense model's, computed through the
 * pipeline's model interface alone (embed → blocks' `forward` → the head's
 * input → the head's weight), on the host. Web-standard only.
 *
 * Candidates of a search differ from their parent in a few modules, so the
 * evaluator keeps the parent's ("anchor's") block outputs per sequence and
 * starts a candidate's forward at the first block whose weights differ. The
 * anchor's outputs are computed only as far as a candidate needs them, and a
 * new anchor keeps the old one's outputs of the blocks before the first block
 * where the two differ, plus the outputs of the later blocks that a candidate
 * evaluated with `keepOutputs` computed, when the new anchor is that
 * candidate (a search's survivor becoming the parent): the same values as
 * computed afresh, since a block's output depends only on its input and its
 * weights.
 * Tokens are scored either as the first tokens of the sequences (a fixed
 * set) or as a seeded sample of whole sequences (a search resamples its
 * fitness tokens every selection step, as EvoPress does, so that it does not
 * fit one small set of tokens). Held-apart sequences are scored only as
 * their first tokens (`held`), never sampled: a search judges its result on
 * tokens its selection has not seen.
 *
 * @module
 */

import type { Prng } from "../core/prng.ts";
import type { Tensor } from "../core/tensor.ts";
import type { CompressibleModel } from "./model.ts";

/** A weight per module, by module index, in the order of `modules`. */
export type WeightAssignment = readonly Tensor<"f32">[];

/** A piece of the fitness tokens: the first `length` tokens of sequence `sequence`. */
export interface FitnessPiece {
  /** Index of the sequence. */
  readonly sequence: number;
  /** Tokens of it scored (its first ones). */
  readonly length: number;
}

interface Piece {
  key: string;
  tokens: readonly number[];
}

/** Options of {@linkcode KlFitness.evaluate}. */
export interface KlEvaluateOptions {
  /**
   * Keep the block outputs the candidate's forward computes, for
   * {@linkcode KlFitness.setAnchor} to reuse should the candidate become the
   * anchor (they are dropped at the next `setAnchor`).
   * @default false
   */
  keepOutputs?: boolean;
}

/** The anchor's values on one piece. */
interface AnchorActs {
  /** The embedding (kept so that a block's own cache of its input's intermediates is hit). */
  embed: Tensor<"f32">;
  /** Outputs of blocks 0, 1, ... (as many as computed so far). */
  outs: Tensor<"f32">[];
}

/** Block outputs a candidate computed, from its first block that differs from the anchor's. */
interface KeptOutputs {
  weights: WeightAssignment;
  anchor: WeightAssignment;
  first: number;
  outs: Map<string, Tensor<"f32">[]>;
}

/** KL fitness of weight assignments against the dense model. */
export class KlFitness {
  readonly #model: CompressibleModel;
  readonly #modules: readonly { block: number; local: string }[];
  /** The pool's sequences, then the held-apart ones. */
  readonly #sequences: readonly (readonly number[])[];
  /** How many of `#sequences` are the pool's. */
  readonly #poolCount: number;
  readonly #dense: WeightAssignment;
  readonly #denseLogProbs = new Map<string, Float64Array>();
  #anchor: WeightAssignment | null = null;
  #anchorActs = new Map<string, AnchorActs>();
  #kept: KeptOutputs[] = [];
  /** Evaluations so far (one assignment on one set of tokens; for cost reports). */
  evaluations = 0;
  /** Tokens scored so far (for cost reports). */
  tokensScored = 0;
  /** Block forwards run so far, in tokens (a block on T tokens counts T; for cost reports). */
  blockTokens = 0;

  /**
   * @param model The model; it must have a head.
   * @param modules Block and local name of each module.
   * @param sequences The fitness token sequences (the pool `first` and `sample` take from).
   * @param caller What is being done (for messages).
   * @param heldApart Sequences scored only through `held`, never sampled.
   */
  constructor(
    model: CompressibleModel,
    modules: readonly { block: number; local: string }[],
    sequences: readonly (readonly number[])[],
    caller: string,
    heldApart: readonly (readonly number[])[] = [],
  ) {
    if (!model.head) {
      throw new TypeError(`Cannot ${caller}: the model has no head to compute logits with`);
    }
    const seqs = sequences.filter((s) => s.length >= 2);
    if (seqs.length === 0) {
      throw new RangeError(
        `Cannot ${caller} as 'calibration' must hold a sequence of at least 2 tokens`,
      );
    }
    this.#model = model;
    this.#modules = modules;
    this.#sequences = [...seqs, ...heldApart.filter((s) => s.length >= 2)];
    this.#poolCount = seqs.length;
    this.#dense = modules.map((m) => model.blocks[m.block]!.linears[m.local]!);
  }

  /** The dense weights. */
  get dense(): WeightAssignment {
    return this.#dense;
  }

  /** Tokens of the pool. */
  get totalTokens(): number {
    return this.#pool().reduce((a, i) => a + this.#sequences[i]!.length, 0);
  }

  /** Tokens of the held-apart sequences. */
  get heldTokens(): number {
    return this.#held().reduce((a, i) => a + this.#sequences[i]!.length, 0);
  }

  #pool(): number[] {
    return Array.from({ length: this.#poolCount }, (_, i) => i);
  }

  #held(): number[] {
    return Array.from(
      { length: this.#sequences.length - this.#poolCount },
      (_, i) => this.#poolCount + i,
    );
  }

  /**
   * The first `tokens` tokens of the pool: whole sequences in order, the last one cut.
   *
   * @param tokens Tokens wanted.
   * @returns The pieces.
   */
  first(tokens: number): FitnessPiece[] {
    return this.#take(this.#pool(), tokens);
  }

  /**
   * The first `tokens` tokens of the held-apart sequences: whole sequences in
   * order, the last one cut.
   *
   * @param tokens Tokens wanted.
   * @returns The pieces.
   */
  held(tokens: number): FitnessPiece[] {
    return this.#take(this.#held(), tokens);
  }

  /**
   * Whether a piece is of a held-apart sequence.
   *
   * @param p The piece.
   * @returns True for a held-apart sequence's piece.
   */
  isHeld(p: FitnessPiece): boolean {
    return p.sequence >= this.#poolCount;
  }

  /**
   * `tokens` tokens of whole pool sequences drawn at random without
   * replacement (the last one cut), in the order drawn.
   *
   * @param tokens Tokens wanted (at most every token).
   * @param rng The generator.
   * @returns The pieces.
   */
  sample(tokens: number, rng: Prng): FitnessPiece[] {
    const order = this.#pool();
    for (let i = order.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    return this.#take(order, tokens);
  }

  #take(order: readonly number[], tokens: number): FitnessPiece[] {
    const out: FitnessPiece[] = [];
    let left = tokens;
    for (const i of order) {
      if (left < 2) break;
      const length = Math.min(this.#sequences[i]!.length, left);
      out.push({ sequence: i, length });
      left -= length;
    }
    return out;
  }

  /**
   * The tokens of a piece.
   *
   * @param p The piece.
   * @returns Its tokens.
   */
  tokensOf(p: FitnessPiece): readonly number[] {
    return this.#piece(p).tokens;
  }

  #piece(p: FitnessPiece): Piece {
    const s = this.#sequences[p.sequence]!;
    return {
      key: `${p.sequence}:${p.length}`,
      tokens: p.length === s.length ? s : s.slice(0, p.length),
    };
  }

  /**
   * Makes `w` the anchor whose block outputs are kept for later candidates.
   * The old anchor's outputs of the blocks before the first block where the
   * two differ stay; so do the later ones that a candidate with these weights
   * kept (`keepOutputs`) while the old anchor was the anchor. Kept outputs
   * are dropped.
   *
   * @param w The anchor's weights.
   */
  setAnchor(w: WeightAssignment): void {
    const old = this.#anchor;
    const kept = this.#kept;
    this.#kept = [];
    if (old !== null && w.every((t, i) => t === old[i])) return;
    this.#anchor = w;
    if (old === null) {
      this.#anchorActs = new Map();
      return;
    }
    const first = this.#firstChanged(w, old);
    const from = kept.find((k) => k.anchor === old && k.weights.every((t, i) => t === w[i]));
    for (const [key, acts] of this.#anchorActs) {
      if (acts.outs.length > first) acts.outs.length = first;
      const outs = from?.first === first ? from.outs.get(key) : undefined;
      if (outs && acts.outs.length === first) acts.outs.push(...outs);
    }
  }

  /** The first block where `w`'s weights differ from `anchor`'s (the block count if none). */
  #firstChanged(w: WeightAssignment, anchor: WeightAssignment): number {
    let first = this.#model.blocks.length;
    this.#modules.forEach((m, i) => {
      if (w[i] !== anchor[i] && m.block < first) first = m.block;
    });
    return first;
  }

  /**
   * Mean KL(dense ‖ candidate) in nats per token over the first `tokens`
   * tokens, or over the given pieces.
   *
   * @param w The candidate's weights.
   * @param tokens Tokens to score, or the pieces (from `first` or `sample`).
   * @param options Whether to keep the block outputs for `setAnchor`.
   * @returns The mean KL.
   */
  evaluate(
    w: WeightAssignment,
    tokens: number | readonly FitnessPiece[],
    options: KlEvaluateOptions = {},
  ): number {
    const { keepOutputs = false } = options;
    const pieces = (typeof tokens === "number" ? this.first(tokens) : tokens).map((p) =>
      this.#piece(p)
    );
    let kept: KeptOutputs | null = null;
    if (keepOutputs && this.#anchor !== null) {
      const anchor = this.#anchor;
      kept = this.#kept.find((k) => k.anchor === anchor && k.weights.every((t, i) => t === w[i])) ??
        null;
      if (!kept) {
        kept = { weights: w, anchor, first: this.#firstChanged(w, anchor), outs: new Map() };
        this.#kept.push(kept);
      }
    }
    let sum = 0, count = 0;
    for (const p of pieces) {
      let dense = this.#denseLogProbs.get(p.key);
      if (!dense) {
        dense = logSoftmaxRows(this.#logits(this.#dense, p, false, null), this.#vocab());
        this.#denseLogProbs.set(p.key, dense);
      }
      const logits = this.#logits(w, p, true, kept);
      sum += klRows(dense, logits, this.#vocab());
      count += p.tokens.length;
    }
    this.evaluations++;
    this.tokensScored += count;
    return sum / count;
  }

  #vocab(): number {
    return this.#model.head!.weight.shape[0]!;
  }

  /** The weights of block `b` in an assignment. */
  #blockWeights(w: WeightAssignment, b: number): Readonly<Record<string, Tensor<"f32">>> {
    const block = this.#model.blocks[b]!;
    let r: Record<string, Tensor<"f32">> | null = null;
    this.#modules.forEach((m, i) => {
      if (m.block !== b) return;
      r ??= { ...block.linears };
      r[m.local] = w[i]!;
    });
    return r ?? block.linears;
  }

  /** The anchor's embedding and outputs of blocks 0 to `upTo - 1` (at least) on a piece. */
  #anchorOutputs(p: Piece, upTo: number): AnchorActs {
    let acts = this.#anchorActs.get(p.key);
    if (!acts) this.#anchorActs.set(p.key, acts = { embed: this.#model.embed(p.tokens), outs: [] });
    const { outs } = acts;
    let x = outs.length > 0 ? outs[outs.length - 1]! : acts.embed;
    for (let b = outs.length; b < upTo; b++) {
      x = this.#forward(b, x, this.#blockWeights(this.#anchor!, b));
      outs.push(x);
    }
    return acts;
  }

  #forward(
    b: number,
    x: Tensor<"f32">,
    weights: Readonly<Record<string, Tensor<"f32">>>,
  ): Tensor<"f32"> {
    this.blockTokens += x.shape[0]!;
    return this.#model.blocks[b]!.forward(x, weights)!;
  }

  #logits(
    w: WeightAssignment,
    p: Piece,
    useAnchor: boolean,
    kept: KeptOutputs | null,
  ): Float32Array {
    const model = this.#model;
    const B = model.blocks.length;
    const anchor = useAnchor ? this.#anchor : null;
    // The first block whose weights differ from the anchor's.
    const first = anchor !== null ? this.#firstChanged(w, anchor) : 0;
    let x: Tensor<"f32">;
    if (anchor !== null) {
      const acts = this.#anchorOutputs(p, first);
      x = first > 0 ? acts.outs[first - 1]! : acts.embed;
    } else {
      x = model.embed(p.tokens);
    }
    const outs: Tensor<"f32">[] = [];
    for (let b = first; b < B; b++) {
      x = this.#forward(b, x, this.#blockWeights(w, b));
      outs.push(x);
    }
    if (kept && !kept.outs.has(p.key)) kept.outs.set(p.key, outs);
    return headLogits(model, x);
  }
}

/** logits [T, V] = input(x) · Wᵀ with the head's weight [V, width]. */
function headLogits(model: CompressibleModel, x: Tensor<"f32">): Float32Array {
  const head = model.head!;
  const h = head.input(x); // [T, width]
  const W = head.weight; // [V, width]
  const [T, D] = [h.shape[0]!, h.shape[1]!];
  const V = W.shape[0]!;
  const out = new Float32Array(T * V);
  for (let t = 0; t < T; t++) {
    const ho = t * D;
    for (let v = 0; v < V; v++) {
      const wo = v * D;
      let s = 0;
      for (let k = 0; k < D; k++) s += h.data[ho + k]! * W.data[wo + k]!;
      out[t * V + v] = s;
    }
  }
  return out;
}

/** log Σ exp of the row of V values starting at o, shifted by its maximum. */
function logSumExp(x: Float32Array, o: number, V: number): number {
  let max = -Infinity;
  for (let v = 0; v < V; v++) max = Math.max(max, x[o + v]!);
  let sum = 0;
  for (let v = 0; v < V; v++) sum += Math.exp(x[o + v]! - max);
  return max + Math.log(sum);
}

/** Row-wise log-softmax of [T, V]. */
function logSoftmaxRows(logits: Float32Array, V: number): Float64Array {
  const out = new Float64Array(logits.length);
  for (let o = 0; o < logits.length; o += V) {
    const lse = logSumExp(logits, o, V);
    for (let v = 0; v < V; v++) out[o + v] = logits[o + v]! - lse;
  }
  return out;
}

/** Σ over rows of KL(p ‖ q), p given as log-probabilities, q as logits. */
function klRows(logP: Float64Array, logitsQ: Float32Array, V: number): number {
  let total = 0;
  for (let o = 0; o < logP.length; o += V) {
    const lse = logSumExp(logitsQ, o, V);
    let kl = 0;
    for (let v = 0; v < V; v++) {
      const lp = logP[o + v]!;
      kl += Math.exp(lp) * (lp - (logitsQ[o + v]! - lse));
    }
    total += Math.max(0, kl);
  }
  return total;
}
