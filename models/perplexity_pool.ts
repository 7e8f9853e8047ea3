/**
 * Perplexity on several cores: each evaluation's windows are split over a
 * pool of workers, and evaluations queue, so the caller can go on (e.g.
 * compress the next model) while they run. Uses Web Workers (Deno or a browser).
 *
 * @module
 */

import { planWindows } from "./perplexity.ts";
import type { PerplexityOptions, PerplexityResult } from "./perplexity.ts";
import type { LlamaModel } from "./model.ts";

/** A pool of perplexity workers. */
export interface PerplexityPool {
  /** Number of workers. */
  readonly size: number;
  /**
   * Perplexity of a token stream (the same result as `perplexity()` up to the
   * order of the float64 sum).
   *
   * @param model The model (copied to the workers).
   * @param stream Token ids.
   * @param options Window length, cap, and `onProgress` (tokens scored so far, total).
   * @returns The result.
   */
  evaluate(
    model: LlamaModel,
    stream: ArrayLike<number>,
    options?: PerplexityOptions,
  ): Promise<PerplexityResult>;
  /** Terminates the workers (pending evaluations are rejected). */
  close(): void;
}

interface Reply {
  id: number;
  progress?: number;
  nll?: number;
  tokens?: number;
  error?: string;
}

/**
 * Starts a pool of perplexity workers.
 *
 * @param size Number of workers. @default navigator.hardwareConcurrency
 * @returns The pool.
 */
export function perplexityPool(size = navigator.hardwareConcurrency ?? 2): PerplexityPool {
  if (!(Number.isInteger(size) && size >= 1)) {
    throw new RangeError(
      `Cannot start a pool as 'size' must be a positive integer: current value is ${size}`,
    );
  }
  const url = new URL("./_perplexity_worker.ts", import.meta.url).href;
  const workers = Array.from({ length: size }, () => new Worker(url, { type: "module" }));
  let nextId = 0;
  const pending = new Map<
    number,
    { resolve(r: Reply): void; reject(e: Error): void; progress(t: number): void }
  >();
  for (const w of workers) {
    w.onmessage = (e: MessageEvent<Reply>) => {
      const p = pending.get(e.data.id);
      if (!p) return;
      if (e.data.progress !== undefined) p.progress(e.data.progress);
      else {
        pending.delete(e.data.id);
        if (e.data.error) p.reject(new Error(e.data.error));
        else p.resolve(e.data);
      }
    };
    w.onerror = (e) => {
      e.preventDefault();
      for (const p of pending.values()) {
        p.reject(new Error(`perplexity worker failed: ${e.message}`));
      }
      pending.clear();
    };
  }
  return {
    size,
    async evaluate(model, stream, options = {}) {
      const plan = planWindows(model, stream.length, options);
      const ids = Int32Array.from({ length: plan.n }, (_, i) => stream[i]!);
      const chunks = Math.min(size, plan.windows);
      let done = 0;
      const parts = Array.from({ length: chunks }, (_, c) => {
        const from = Math.floor((c * plan.windows) / chunks);
        const to = Math.floor(((c + 1) * plan.windows) / chunks);
        const id = nextId++;
        return new Promise<Reply>((resolve, reject) => {
          pending.set(id, {
            resolve,
            reject,
            progress: (t) => {
              done += t;
              options.onProgress?.(done, plan.n - 1);
            },
          });
          workers[c % size]!.postMessage({ id, model, stream: ids, plan, from, to });
        });
      });
      const replies = await Promise.all(parts);
      const nll = replies.reduce((s, r) => s + r.nll!, 0);
      const tokens = replies.reduce((s, r) => s + r.tokens!, 0);
      return {
        perplexity: Math.exp(nll / tokens),
        nll: nll / tokens,
        tokens,
        windows: plan.windows,
      };
    },
    close() {
      for (const w of workers) w.terminate();
      for (const p of pending.values()) p.reject(new Error("perplexity pool closed"));
      pending.clear();
    },
  };
}
