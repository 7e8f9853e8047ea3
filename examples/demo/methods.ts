/**
 * The demo's compression methods: a name, a recipe for the layer-wise
 * pipeline, and whether it is in the default set. The classifier (`output`)
 * is kept in float32 by every method, as GPTQ and SparseGPT do.
 * Web-standard only.
 *
 * @module
 */

import type { Recipe, Stage } from "../../pipeline/recipe.ts";

/** One row of the demo's table. */
export interface DemoMethod {
  /** Identifier used on the command line, e.g. `gptq-w4-g32`. */
  readonly id: string;
  /** What it does, for `--list`. */
  readonly description: string;
  /** The recipe (no stages: the uncompressed baseline). */
  readonly recipe: Recipe;
  /** In the default set. */
  readonly default: boolean;
}

const KEEP_HEAD = [{ match: "output", stages: [] }] as const;

function method(id: string, description: string, stages: Stage[], isDefault = true): DemoMethod {
  return { id, description, recipe: { stages, overrides: KEEP_HEAD }, default: isDefault };
}

const half = { kind: "unstructured", sparsity: 0.5 } as const;
const twoFour = { kind: "nm", n: 2, m: 4 } as const;

/** Every method the demo knows, in table order. */
export const DEMO_METHODS: readonly DemoMethod[] = [
  method("fp32", "uncompressed float32 baseline", []),
  method("rtn-w8", "round-to-nearest, 8 bits, per channel", [{ kind: "rtn", bits: 8 }]),
  method("rtn-w4", "round-to-nearest, 4 bits, per channel", [{ kind: "rtn", bits: 4 }]),
  method("gptq-w4", "GPTQ, 4 bits, per channel", [{ kind: "gptq", bits: 4 }]),
  method("rtn-w4-g32", "round-to-nearest, 4 bits, groups of 32", [
    { kind: "rtn", bits: 4, groupSize: 32 },
  ]),
  method("gptq-w4-g32", "GPTQ, 4 bits, groups of 32", [{ kind: "gptq", bits: 4, groupSize: 32 }]),
  method("rtn-w3", "round-to-nearest, 3 bits, per channel", [{ kind: "rtn", bits: 3 }]),
  method("gptq-w3", "GPTQ, 3 bits, per channel", [{ kind: "gptq", bits: 3 }]),
  method("gptq-w3-act", "GPTQ, 3 bits, per channel, act-order", [
    { kind: "gptq", bits: 3, actOrder: true },
  ]),
  method("rtn-w3-g32", "round-to-nearest, 3 bits, groups of 32", [
    { kind: "rtn", bits: 3, groupSize: 32 },
  ]),
  method("gptq-w3-g32", "GPTQ, 3 bits, groups of 32", [{ kind: "gptq", bits: 3, groupSize: 32 }]),
  method("hadamard-gptq-w3", "random Hadamard rotation, then GPTQ 3 bits per channel", [
    { kind: "rotate" },
    { kind: "gptq", bits: 3 },
  ]),
  method("higgs-w3", "HIGGS (Hadamard groups, Gaussian MSE grid), 3 bits, data-free", [
    { kind: "higgs", bits: 3 },
  ]),
  method("higgs-w4", "HIGGS, 4 bits, data-free", [{ kind: "higgs", bits: 4 }], false),
  method("nf4", "NF4 with absmax blocks of 64, data-free", [{ kind: "nf4" }], false),
  {
    id: "aqlm-2bit",
    description: "AQLM, 2 bits of codes: 2 codebooks of 2^8 vectors of 8 weights " +
      "(w2: 1 codebook of vectors of 4, as 8 does not divide 172)",
    recipe: {
      stages: [{ kind: "aqlm", codebooks: 2, codebookBits: 8, groupSize: 8, iterations: 2 }],
      overrides: [
        {
          match: "*.w2",
          stages: [{ kind: "aqlm", codebooks: 1, codebookBits: 8, groupSize: 4, iterations: 2 }],
        },
        ...KEEP_HEAD,
      ],
    },
    default: false,
  },
  method("magnitude-50", "magnitude pruning, 50% (layer-wide)", [{
    kind: "magnitude",
    structure: half,
  }]),
  method("wanda-50", "Wanda, 50% per output row", [{ kind: "wanda", structure: half }]),
  method("sparsegpt-50", "SparseGPT, 50%", [{ kind: "sparsegpt", structure: half }]),
  method("magnitude-2:4", "magnitude pruning, 2:4", [{ kind: "magnitude", structure: twoFour }]),
  method("wanda-2:4", "Wanda, 2:4", [{ kind: "wanda", structure: twoFour }], false),
  method("sparsegpt-2:4", "SparseGPT, 2:4", [{ kind: "sparsegpt", structure: twoFour }]),
  method("sparsegpt-50-w4", "SparseGPT 50% jointly with a 4-bit grid", [
    { kind: "sparsegpt", structure: half, grid: { bits: 4 } },
  ], false),
];

/**
 * Methods by id, in table order.
 *
 * @param ids Identifiers, or `["default"]`, or `["all"]`.
 * @returns The methods.
 * @throws {RangeError} naming an unknown id and listing the known ones.
 */
export function selectMethods(ids: readonly string[]): DemoMethod[] {
  if (ids.length === 1 && ids[0] === "all") return [...DEMO_METHODS];
  if (ids.length === 1 && ids[0] === "default") return DEMO_METHODS.filter((m) => m.default);
  const out: DemoMethod[] = [];
  for (const id of ids) {
    const m = DEMO_METHODS.find((x) => x.id === id);
    if (!m) {
      throw new RangeError(
        `Unknown method '${id}': use one of ${
          DEMO_METHODS.map((x) => x.id).join(", ")
        }, default, all`,
      );
    }
    out.push(m);
  }
  return out;
}
