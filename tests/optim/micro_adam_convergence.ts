/**
 * MicroAdam at a large learning rate: the loss of the reference (our port of
 * it), of `microAdam` with the paper's bias correction (the default) and with
 * `windowBiasCorrection`, and of dense Adam, on the two seeded problems of
 * `_problems.ts` (least squares, 256 parameters; a 2,372-parameter MLP), at
 * lr 1e-2 for 3,000 full-batch steps, with the step multiplier c1/√c2.
 *
 *     deno run tests/optim/micro_adam_convergence.ts
 *
 * Prints a Markdown table (the figures in `optim/micro_adam.ts` and the
 * README) and asserts what the docs claim of it. About 30 s of CPU.
 *
 * @module
 */

import { microAdam, microAdamCorrections } from "../../optim/micro_adam.ts";
import { adam } from "../../optim/adam.ts";
import { applyUpdates, type GradientTransform, type Params } from "../../core/transform.ts";
import { referenceMicroAdam } from "./_micro_adam_reference.ts";
import { leastSquares, mlp, type Problem } from "./_problems.ts";

const LR = 1e-2, STEPS = 3000, AT = [100, 300, 1000, 3000];

/** Losses at the steps of `AT`, training with one of our transforms. */
function train(problem: Problem, opt: GradientTransform<never>): number[] {
  const tr = opt as unknown as GradientTransform;
  let params: Params = problem.init(), state = tr.init(params);
  const out: number[] = [];
  for (let t = 1; t <= STEPS; t++) {
    const [u, next] = tr.update(problem.grad(params), state, params);
    params = applyUpdates(params, u);
    state = next;
    if (AT.includes(t)) out.push(problem.loss(params));
  }
  return out;
}

/** Losses at the steps of `AT`, training with the port of the reference. */
function trainReference(problem: Problem): number[] {
  const port = referenceMicroAdam(problem.init(), {
    lr: LR,
    m: 10,
    kInit: 0.01,
    quantBlockSize: 64,
    topKBlockSize: 32768,
  });
  const out: number[] = [];
  for (let t = 1; t <= STEPS; t++) {
    port.step(problem.grad(port.params));
    if (AT.includes(t)) out.push(problem.loss(port.params));
  }
  return out;
}

const multiplier = (t: number, windowBiasCorrection: boolean): number => {
  const { c1, c2 } = microAdamCorrections(t, { windowBiasCorrection });
  return c1 / Math.sqrt(c2);
};

const rows: string[] = [
  `| problem | optimizer | loss at 0 | ${AT.map((t) => `at ${t}`).join(" | ")} |`,
  `| --- | --- | --- | ${AT.map(() => "---").join(" | ")} |`,
];
const fmt = (x: number): string => x.toPrecision(3);
for (
  const [label, problem] of [["least squares (256)", leastSquares()], [
    "MLP (2,372)",
    mlp(),
  ]] as const
) {
  const start = problem.loss(problem.init());
  const runs = {
    "reference (port)": trainReference(problem),
    "microAdam": train(problem, microAdam({ learningRate: LR }) as never),
    "microAdam, windowBiasCorrection": train(
      problem,
      microAdam({ learningRate: LR, windowBiasCorrection: true }) as never,
    ),
    "Adam": train(problem, adam({ learningRate: LR }) as never),
  };
  for (const [name, losses] of Object.entries(runs)) {
    rows.push(`| ${label} | ${name} | ${fmt(start)} | ${losses.map(fmt).join(" | ")} |`);
  }
  const [ref, ours, win] = [
    runs["reference (port)"],
    runs.microAdam,
    runs[
      "microAdam, windowBiasCorrection"
    ],
  ];
  // What the docs claim: ours follows the reference to 1% up to step 1,000 (each
  // run feeds back its own parameters, float32 here and float64 in the port, so
  // rounding differences compound once the loss rises: 2% and 10% apart at
  // 3,000; the tests compare the updates open loop); both rise after step 300
  // (2× or more at 3,000); the window's corrections end at least 10× lower.
  ours.slice(0, 3).forEach((l, i) => {
    if (Math.abs(l - ref[i]!) > 0.01 * ref[i]!) {
      throw new Error(`${label}: ours ${l} vs the reference ${ref[i]} at step ${AT[i]}`);
    }
  });
  for (const losses of [ref, ours]) {
    if (!(losses[3]! > 2 * losses[1]!)) throw new Error(`${label}: no rise after step 300`);
  }
  if (!(win[3]! < ours[3]! / 10 && win[3]! < win[1]!)) {
    throw new Error(`${label}: windowBiasCorrection did not keep the loss down`);
  }
}
console.log(rows.join("\n"));
console.log(
  `\nc1/√c2: ${multiplier(100, false).toFixed(3)} at t = 100, ${
    multiplier(3000, false).toFixed(3)
  } at t = 3000; with windowBiasCorrection ${multiplier(3000, true).toFixed(3)} for t ≥ 10`,
);
