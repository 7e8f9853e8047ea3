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

/** The window plan of a stream: length, cap and count, validated. */
export interface WindowPlan {
  /** Window length. */
  readonly seqLen: number;
  /** Tokens of the stream in use. */
  readonly n: number;
  /** Number of windows. */
  readonly windows: number;
}

/**
 * Validates the options and counts the windows.
 *
 * @param model The model (for the default window length).
 * @param streamLength Tokens in the stream.
 * @param options Window length and cap.
 * @returns The plan.
 * @throws {RangeError} for an invalid window length or fewer than 2 tokens.
 */
export function planWindows(
  model: LlamaModel,
  streamLength: number,
  options: PerplexityOptions = {},
): WindowPlan {
  const { seqLen = Math.min(256, model.config.seqLen), maxTokens = Infinity } = options;
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
  const n = Math.min(streamLength, maxTokens);
  if (n < 2) throw new RangeError(`Cannot evaluate perplexity on ${n} tokens`);
  return { seqLen, n, windows: Math.ceil((n - 1) / seqLen) };
}

/**
 * Summed negative log-likelihood of windows [from, to) of a plan.
 *
 * @param model The model.
 * @param stream Token ids.
 * @param plan The window plan.
 * @param from First window.
 * @param to One past the last window.
 * @param onWindow Called after each window with the tokens it scored.
 * @returns The NLL sum (nats) and the tokens scored.
 */
export function windowsNll(
  model: LlamaModel,
  stream: ArrayLike<number>,
  plan: WindowPlan,
  from: number,
  to: number,
  onWindow?: (tokens: number) => void,
): { nll: number; tokens: number } {
  const V = model.config.vocabSize;
  let nll = 0, scored = 0;
  for (let w = from; w < to; w++) {
    const s = w * plan.seqLen;
    const end = Math.min(s + plan.seqLen, plan.n - 1);
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
    onWindow?.(input.length);
  }
  return { nll, tokens: scored };
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
  const plan = planWindows(model, stream.length, options);
  let done = 0;
  const { nll, tokens } = windowsNll(model, stream, plan, 0, plan.windows, (t) => {
    done += t;
    options.onProgress?.(done, plan.n - 1);
  });
  return { perplexity: Math.exp(nll / tokens), nll: nll / tokens, tokens, windows: plan.windows };
}
