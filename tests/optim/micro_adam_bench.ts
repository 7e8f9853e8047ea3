import { adam } from "../../optim/adam.ts";
import { microAdam } from "../../optim/micro_adam.ts";
import { errorFeedback } from "../../core/error_feedback.ts";
import { topKCompressor } from "../../pruners/topk_compressor.ts";
import type { GradientTransform, Params } from "../../core/transform.ts";
import { prng } from "../../core/prng.ts";

// One optimizer step on 2^17 parameters in two tensors (state carried over).
const rng = prng(1);
const params: Params = {
  w: Float32Array.from({ length: 1 << 17 }, () => rng.normal()),
  b: Float32Array.from({ length: 512 }, () => rng.normal()),
};
const grads = params;

function bench(name: string, t: GradientTransform<never>, baseline = false): void {
  const tr = t as unknown as GradientTransform;
  let state = tr.init(params);
  Deno.bench({ name, group: "optimizer step, 131k params", baseline }, () => {
    state = tr.update(grads, state)[1];
  });
}

bench("adam", adam({ learningRate: 1e-3 }) as never, true);
bench("microAdam (k = 1%, m = 10, 4-bit error)", microAdam({ learningRate: 1e-3 }) as never);
bench(
  "errorFeedback(top-1%) with a float32 error",
  errorFeedback(topKCompressor({ density: 0.01 })) as never,
);
