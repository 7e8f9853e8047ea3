/**
 * Worker of {@linkcode perplexityPool}: scores a range of windows.
 *
 * @module
 */

import { windowsNll } from "./perplexity.ts";
import type { WindowPlan } from "./perplexity.ts";
import type { LlamaModel } from "./model.ts";

interface Job {
  id: number;
  model: LlamaModel;
  stream: Int32Array;
  plan: WindowPlan;
  from: number;
  to: number;
}

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<Job>) => void) | null;
  postMessage(m: unknown): void;
};

scope.onmessage = (e: MessageEvent<Job>) => {
  const { id, model, stream, plan, from, to } = e.data;
  try {
    const r = windowsNll(
      model,
      stream,
      plan,
      from,
      to,
      (tokens) => scope.postMessage({ id, progress: tokens }),
    );
    scope.postMessage({ id, ...r });
  } catch (err) {
    scope.postMessage({ id, error: String((err as Error)?.message ?? err) });
  }
};
