/**
 * Digest of the WGSL our generators emit over a seeded sample of
 * specializations, for refactors that must not change a kernel: run it
 * before and after (`deno run tests/bench/wgsl_digest.ts`) and compare the
 * printed lines. Each line names a generator, how many specializations it
 * accepted (and refused) and a SHA-256 over the hashes of their sources in
 * order; `--dump=DIR` also
 * writes every source to DIR to diff one that moved.
 *
 * Uses the file system only with `--dump`.
 *
 * @module
 */

import {
  aqlmLookupWgsl,
  aqlmLutWgsl,
  choleskyBlockWgsl,
  fwhtColumnsWgsl,
  fwhtDenseWgsl,
  fwhtLanesWgsl,
  fwhtRowsWgsl,
  gemmSpec,
  gemmWgsl,
  hessianWgsl,
  obsBlockWgsl,
  obsSelectWgsl,
  paleyWgsl,
  permuteReverseWgsl,
  qmatmulGatherWgsl,
  type QmatmulSpec,
  qmatmulSplitReduceWgsl,
  qmatmulWgsl,
  reverseUpperWgsl,
} from "../../kernels/mod.ts";
import { prng } from "../../core/prng.ts";

const dumpDir = Deno.args.find((a) => a.startsWith("--dump="))?.slice("--dump=".length);

async function sha256(text: string): Promise<string> {
  const bytes = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)),
  );
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Generates every spec that the generator accepts; returns [accepted, digest]. */
async function digest<S>(name: string, specs: Iterable<S>, gen: (s: S) => string): Promise<void> {
  const parts: string[] = [];
  let refused = 0;
  for (const s of specs) {
    let code: string;
    try {
      code = gen(s);
    } catch {
      refused++;
      continue;
    }
    const text = JSON.stringify(s) + "\n" + code;
    parts.push(await sha256(text));
    if (dumpDir) {
      await Deno.mkdir(`${dumpDir}/${name}`, { recursive: true });
      await Deno.writeTextFile(`${dumpDir}/${name}/${parts.length - 1}.wgsl`, text);
    }
  }
  console.log(`${name} ${parts.length} (refused ${refused}) ${await sha256(parts.join("\n"))}`);
}

function* product<T extends Record<string, readonly unknown[]>>(
  axes: T,
): Generator<{ [K in keyof T]: T[K][number] }> {
  const keys = Object.keys(axes);
  const idx = new Array<number>(keys.length).fill(0);
  while (true) {
    yield Object.fromEntries(keys.map((k, i) => [k, axes[k]![idx[i]!]])) as {
      [K in keyof T]: T[K][number];
    };
    let i = keys.length - 1;
    while (i >= 0 && ++idx[i]! === axes[keys[i]!]!.length) idx[i--] = 0;
    if (i < 0) return;
  }
}

/** A seeded sample of qmatmul specializations over every field. */
function* qmatmulSpecs(count: number): Generator<QmatmulSpec> {
  const r = prng(20261206);
  const rng = (): number => r.uniform();
  const pick = <T>(xs: readonly T[]): T => xs[r.int(xs.length)]!;
  for (let i = 0; i < count; i++) {
    const chunks = pick([1, 2, 4, 8, 12, 128, 344, 448]);
    const tiled = rng() < 0.2;
    const spec: QmatmulSpec = {
      bits: pick([2, 3, 4, 8]),
      scaleType: pick(["f16", "f32"] as const),
      zeros: rng() < 0.5,
      chunks,
      groupChunks: pick([1, 2, 4, chunks]),
      rowTiles: pick([1, 2, 4]),
      warps: pick([1, 2, 4, 8, 16, 32]),
      split: tiled ? 1 : pick([1, 2, 4]),
      batch: tiled ? pick([4, 8, 16, 32, 64, 128]) : pick([1, 2, 3, 4, 8, 9, 16, 32]),
      unroll: pick([1, 2, 4]),
      prefetch: rng() < 0.5,
      sharedX: tiled ? false : rng() < 0.6,
      batchedStage: rng() < 0.5,
      dequant: tiled ? "fma" : pick(["fma", "exact", "half", "dot4"] as const),
      reduce: pick(["tree", "flat"] as const),
      ...(rng() < 0.3 ? { codesFirst: true } : {}),
      ...(tiled ? { tiled, microRows: pick([4, 8]), microBatch: pick([4, 8]) } : {}),
      ...(!tiled && rng() < 0.3 ? { splitK: pick([2, 4, 8]) } : {}),
    };
    yield spec;
  }
}

await digest("qmatmulWgsl", qmatmulSpecs(40000), qmatmulWgsl);
await digest(
  "qmatmulGatherWgsl",
  product({ input: ["f32", "f16"] as const, gather: [false, true] }),
  qmatmulGatherWgsl,
);
await digest("qmatmulSplitReduceWgsl", [2, 4, 8], qmatmulSplitReduceWgsl);
const aqlm = product({
  groupSize: [1, 4, 8, 16],
  codebookBits: [4, 8, 12, 16],
  numCodebooks: [1, 2, 4],
});
await digest("aqlmLutWgsl", aqlm, aqlmLutWgsl);
await digest(
  "aqlmLookupWgsl",
  product({ groupSize: [1, 4, 8, 16], codebookBits: [4, 8, 12, 16], numCodebooks: [1, 2, 4] }),
  aqlmLookupWgsl,
);
const grids = [
  null,
  ...product({
    maxq: [1, 3, 7, 15, 255],
    symmetric: [false, true],
    mse: [false, true],
    fitGroupSize: [-1, 32, 128],
  }),
];
const prunes = [null, { kind: "unstructured" as const }, { kind: "nm" as const, n: 2, m: 4 }, {
  kind: "nm" as const,
  n: 4,
  m: 8,
}];
await digest(
  "obsBlockWgsl",
  product({ rowsPerGroup: [1, 2, 4, 8], blockSize: [32, 64, 128], grid: grids, prune: prunes }),
  obsBlockWgsl,
);
await digest(
  "obsSelectWgsl",
  product({
    entry: ["scores", "init", "hist", "scan", "ties", "allow"] as const,
    blockSize: [32, 64, 128],
  }),
  (s) => obsSelectWgsl(s.entry, s.blockSize),
);
await digest("hessianWgsl", product({ inputs: ["f32", "f16"] as const }), hessianWgsl);
await digest(
  "gemmWgsl",
  product({
    transA: [false, true],
    transB: [false, true],
    accumulate: [false, true],
    inputs: ["f32", "f16"] as const,
    aInC: [false, true],
    bInC: [false, true],
    lowerC: [false, true],
    lowerB: [false, true],
    lowerA: [false, true],
    tile: ["large", "small"] as const,
  }),
  (s) => gemmWgsl(gemmSpec(s)),
);
await digest(
  "cholesky",
  [0, 1, 2],
  (i) => [choleskyBlockWgsl, reverseUpperWgsl, permuteReverseWgsl][i]!(),
);
await digest("fwhtDenseWgsl", [false, true], fwhtDenseWgsl);
await digest(
  "fwhtRowsWgsl",
  product({
    kind: ["rows"] as const,
    n: [64, 1024, 4096, 11008],
    pow2: [64, 1024, 4096],
    threads: [64, 256],
    radix: [2, 4, 8],
    rowsPerGroup: [1, 2],
    order: ["desc", "asc"] as const,
    vec4: [false, true],
    persistent: [0, 1024],
  }),
  fwhtRowsWgsl,
);
await digest(
  "fwhtColumnsWgsl",
  product({ kind: ["columns"] as const, n: [64, 11008], pow2: [32, 64], width: [1, 4] as const }),
  fwhtColumnsWgsl,
);
await digest(
  "fwhtLanesWgsl",
  product({
    kind: ["lanes"] as const,
    n: [1024, 4096, 16384],
    threads: [32, 128, 512],
    persistent: [0, 1024],
    prefetch: [false, true],
    outOfPlace: [false, true],
    ends: ["both", "load", "store"] as const,
    smemVec4: [false, true],
  }),
  fwhtLanesWgsl,
);
await digest(
  "paleyWgsl",
  product({
    q: [7, 43, 343],
    transpose: [false, true],
    chunks: [1, 2, 4],
    threads: [64, 256],
    pow2: [1, 32],
    vec4: [false, true],
    plane: [false, true],
    persistent: [0, 1024],
  }),
  paleyWgsl,
);
