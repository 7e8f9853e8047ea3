/**
 * Perplexity over non-overlapping windows: window i feeds tokens
 * [i·L, (i+1)·L) from position 0 and scores the next token at each position,
 * so every token after the first is predicted exactly once (with at most L
 * tokens of context). Web-standard only.
 *
 * @module
 */

import { llamaForward } from "./forward.ts";
import type { LlamaModel } from "./model.ts";

/** Options of {@linkcode perplexity}. */
export interface PerplexityOptions {
  /** Window length L (tokens fed per forward pass). @default min(256, model seqLen) */
  seqLen?: number;
  /** Use only the first this many tokens of the stream. @default all */
  maxTokens?: number;
  /** Called after each window with the tokens scored so far and the total to score. */
  onProgress?: (scored: number, total: number) => void;
}

/** The result of {@linkcode perplexity}. */
export interface PerplexityResult {
  /** exp(mean negative log-likelihood). */
  readonly perplexity: number;
  /** Mean negative log-likelihood in nats per token. */
  readonly nll: number;
  /** Number of tokens scored. */
  readonly tokens: number;
  /** Number of windows. */
  readonly windows: number;
}

/**
 * Perplexity of a token stream.
 *
 * @example
 * ```ts ignore
 * import { perplexity } from "./perplexity.ts";
 * const { perplexity: ppl, tokens } = perplexity(model, ids, { seqLen: 256, maxTokens: 32768 });
 * ```
 * @param model The model.
 * @param stream Token ids (documents concatenated, each after a BOS).
 * @param options Window length, cap, progress.
 * @returns Perplexity, mean NLL and the count of scored tokens.
 * @throws {RangeError} for an invalid window length or fewer than 2 tokens.
 */
export function perplexity(
  model: LlamaModel,
  stream: ArrayLike<number>,
  options: PerplexityOptions = {},
): PerplexityResult {
  const { seqLen = Math.min(256, model.config.seqLen), maxTokens = Infinity, onProgress } = options;
  if (!(Number.isInteger(seqLen) && seqLen >= 1)) {
    throw new RangeError(
      `Cannot evaluate as 'seqLen' must be a positive integer: current value is ${seqLen}`,
    );
  }
  if (!(maxTokens >= 2)) {
    throw new RangeError(
      `Cannot evaluate as 'maxTokens' must be at least 2: current value is ${maxTokens}`,
    );
  }
  const n = Math.min(stream.length, maxTokens);
  if (n < 2) throw new RangeError(`Cannot evaluate perplexity on ${n} tokens`);
  const V = model.config.vocabSize;
  const total = n - 1;
  let nll = 0, scored = 0, windows = 0;
  for (let s = 0; s < n - 1; s += seqLen) {
    const end = Math.min(s + seqLen, n - 1);
    const input = Array.from({ length: end - s }, (_, i) => stream[s + i]!);
    const logits = llamaForward(model, input);
    for (let t = 0; t < input.length; t++) {
      const o = t * V;
      let max = -Infinity;
      for (let v = 0; v < V; v++) if (logits[o + v]! > max) max = logits[o + v]!;
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(logits[o + v]! - max);
      nll += Math.log(sum) + max - logits[o + stream[s + t + 1]!]!;
    }
    scored += input.length;
    windows++;
    onProgress?.(scored, total);
  }
  const mean = nll / scored;
  return { perplexity: Math.exp(mean), nll: mean, tokens: scored, windows };
}
