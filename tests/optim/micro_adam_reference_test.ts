import { microAdam, type MicroAdamOptions } from "../../optim/micro_adam.ts";
import { referenceMicroAdam, type ReferenceMicroAdamOptions } from "./_micro_adam_reference.ts";
import { leastSquares, mlp, type Problem } from "./_problems.ts";
import { assertClose } from "../_helpers.ts";

/**
 * Open loop: the port of the reference steps on its own gradients; ours gets
 * the same gradients (and the port's parameters, for the weight decay) and its
 * update must equal the one that the port applied, entry by entry.
 */
function compareWithReference(
  problem: Problem,
  steps: number,
  ref: ReferenceMicroAdamOptions,
  ours: MicroAdamOptions,
): void {
  const port = referenceMicroAdam(problem.init(), ref);
  const opt = microAdam(ours);
  let state = opt.init(problem.init());
  for (let t = 1; t <= steps; t++) {
    const params = Object.fromEntries(
      Object.entries(port.params).map(([name, p]) => [name, Float32Array.from(p)]),
    );
    const before = Object.fromEntries(Object.entries(port.params).map(([n, p]) => [n, p.slice()]));
    const grads = problem.grad(port.params);
    port.step(grads);
    const [updates, next] = opt.update(grads, state, params);
    state = next;
    for (const [name, u] of Object.entries(updates)) {
      const applied = port.params[name]!.map((p, i) => p - before[name]![i]!);
      // Agreement to float32 rounding; a different k or window entry differs by O(lr).
      assertClose(u, applied, { rtol: 1e-5, atol: 1e-6 * ref.lr, message: `${name}, step ${t}:` });
    }
  }
}

Deno.test("microAdam's updates equal the reference's (a port) for 300 steps on a 2,372-parameter MLP", () => {
  // One top-k block per tensor: w1 (2,048 entries) keeps ⌈20.48⌉ = 21, b1 1, w2 3, b2 1.
  compareWithReference(
    mlp(1),
    300,
    { lr: 1e-2, m: 10, kInit: 0.01, quantBlockSize: 64, topKBlockSize: 32768 },
    { learningRate: 1e-2 },
  );
});

Deno.test("microAdam's updates equal the reference's with weight decay, several top-k blocks and a short window", () => {
  // w1 in top-k blocks of 600 (k = 6, 6, 6 and ⌈2.48⌉ = 3) and error blocks of 100
  // (the last one 48 long); a window of 4 wraps around many times.
  compareWithReference(
    mlp(2),
    300,
    {
      lr: 3e-3,
      m: 4,
      kInit: 0.01,
      quantBlockSize: 100,
      topKBlockSize: 600,
      weightDecay: 0.1,
    },
    {
      learningRate: 3e-3,
      windowSize: 4,
      topKBlockSize: 600,
      errorQuantization: { bits: 4, blockSize: 100 },
      weightDecay: 0.1,
    },
  );
});

Deno.test("microAdam's updates equal the reference's on least squares with weight decay and density 5%", () => {
  compareWithReference(
    leastSquares(1),
    300,
    {
      lr: 1e-2,
      m: 10,
      kInit: 0.05,
      quantBlockSize: 64,
      topKBlockSize: 32768,
      weightDecay: 0.5,
    },
    { learningRate: 1e-2, density: 0.05, weightDecay: 0.5 },
  );
});

Deno.test("the test problems' gradients equal central differences of their losses", () => {
  for (const problem of [leastSquares(3), mlp(3)]) {
    const p = problem.init();
    // Move off the initial point (zero biases, x = 0) so that every term is exercised.
    for (const x of Object.values(p)) x.forEach((_, i) => (x[i] = x[i]! + ((0.01 * i) % 0.3)));
    const g = problem.grad(p);
    for (const [name, x] of Object.entries(p)) {
      for (const i of [0, 3, x.length - 1]) {
        const at = (v: number) => {
          const q = Float64Array.from(x);
          q[i] = v;
          return problem.loss({ ...p, [name]: q });
        };
        const h = 1e-4, fd = (at(x[i]! + h) - at(x[i]! - h)) / (2 * h);
        assertClose(g[name]![i]!, fd, { rtol: 1e-4, atol: 1e-7, message: `${name}[${i}]` });
      }
    }
  }
});
