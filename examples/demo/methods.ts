/**
 * The demo's compression methods: a name, a recipe for the layer-wise
 * pipeline, and whether it is in the default set. The classifier (`output`)
 * is kept in float32 by every method, as GPTQ and SparseGPT do.
 * Web-standard only.
 *
 * @module
 */

import { isLowRankStage, type Recipe, type Stage } from "../../pipeline/recipe.ts";
import type { SparsityStructure } from "../../pruners/structure.ts";
import type { KvCacheQuant } from "../../quantizers/kv_cache_quant.ts";

/**
 * A function-preserving change of the model before compression: SmoothQuant's
 * migration (`smoothQuant`, α) or QuaRot's rotation (`quarot`, with or
 * without the online Hadamard before w2, and with the online Hadamard of
 * queries and keys, `qkHadamard`, for a quantized KV cache).
 */
export type ModelTransform =
  | { readonly kind: "smoothquant"; readonly alpha: number }
  | {
    readonly kind: "quarot";
    readonly onlineHadamard: boolean;
    readonly qkHadamard?: boolean;
  };

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
  /** Applied to the model before compression. */
  readonly transform?: ModelTransform;
  /** KV cache quantization, put into the compressed model (`withKvCacheQuant`). */
  readonly kvCache?: KvCacheQuant;
}

const KEEP_HEAD = [{ match: "output", stages: [] }] as const;

function method(
  id: string,
  description: string,
  stages: Stage[],
  isDefault = true,
  transform?: ModelTransform,
): DemoMethod {
  return {
    id,
    description,
    recipe: { stages, overrides: KEEP_HEAD },
    default: isDefault,
    ...(transform ? { transform } : {}),
  };
}

const smooth = { kind: "smoothquant", alpha: 0.5 } as const;
const rotate = (onlineHadamard: boolean) => ({ kind: "quarot", onlineHadamard }) as const;
const int8Weights = { kind: "gptq", bits: 8, symmetric: true } as const;
const int4Weights = { kind: "gptq", bits: 4, symmetric: true } as const;
/** QuaRot's KV cache: asymmetric int4, a scale and zero point per token per head, clip 0.95. */
const kv4: KvCacheQuant = { format: "int4", asymmetric: true, clipRatio: 0.95 };
const act = (format: "int8" | "int4" | "fp8" | "mxfp4" | "nvfp4", granularity?: "tensor") =>
  ({ kind: "act", format, ...(granularity ? { granularity } : {}) }) as const;

/** Weight and activation quantization (W8A8, W4A4); none is in the default set. */
const ACTIVATION_METHODS: readonly DemoMethod[] = [
  method("w8a8-fp8", "FP8 E4M3 weights (a scale per channel) and activations (per token)", [
    { kind: "fp8" },
    act("fp8"),
  ], false),
  method("w8a8-int8", "GPTQ int8 symmetric weights, int8 activations per token", [
    int8Weights,
    act("int8"),
  ], false),
  method(
    "w8a8-int8-smooth",
    "SmoothQuant (α = 0.5), then w8a8-int8",
    [
      int8Weights,
      act("int8"),
    ],
    false,
    smooth,
  ),
  method("w8a8-int8-static", "GPTQ int8 weights, int8 activations with a static scale per tensor", [
    int8Weights,
    act("int8", "tensor"),
  ], false),
  method(
    "w8a8-int8-static-smooth",
    "SmoothQuant (α = 0.5), then w8a8-int8-static",
    [
      int8Weights,
      act("int8", "tensor"),
    ],
    false,
    smooth,
  ),
  method("w16a4", "float32 weights, int4 activations per token", [act("int4")], false),
  method(
    "quarot-w16a4",
    "QuaRot rotation, float32 weights, int4 activations per token",
    [
      act("int4"),
    ],
    false,
    rotate(true),
  ),
  method("gptq-w4a4", "GPTQ int4 symmetric weights, int4 activations per token", [
    int4Weights,
    act("int4"),
  ], false),
  method(
    "quarot-w4a4",
    "QuaRot (rotated residual, online Hadamard before w2), then gptq-w4a4",
    [
      int4Weights,
      act("int4"),
    ],
    false,
    rotate(true),
  ),
  method(
    "quarot-w4a4-nohad",
    "QuaRot without the online Hadamard, then gptq-w4a4",
    [
      int4Weights,
      act("int4"),
    ],
    false,
    rotate(false),
  ),
  {
    ...method(
      "quarot-w4a4-kv4",
      "quarot-w4a4 with a 4-bit KV cache (asymmetric int4 per token and head, clip 0.95; " +
        "queries and keys rotated per head online)",
      [int4Weights, act("int4")],
      false,
      { kind: "quarot", onlineHadamard: true, qkHadamard: true },
    ),
    kvCache: kv4,
  },
  {
    ...method(
      "quarot-w4a4-kv4-noqk",
      "quarot-w4a4-kv4 without the online rotation of queries and keys",
      [int4Weights, act("int4")],
      false,
      rotate(true),
    ),
    kvCache: kv4,
  },
  {
    ...method(
      "w16a16-kv4",
      "float32 weights and activations, the 4-bit KV cache of quarot-w4a4-kv4 " +
        "without any rotation",
      [],
      false,
    ),
    kvCache: kv4,
  },
  {
    ...method(
      "quarot-w16a16-kv4",
      "QuaRot rotation with queries and keys rotated online, float32 weights and activations, " +
        "the 4-bit KV cache",
      [],
      false,
      { kind: "quarot", onlineHadamard: true, qkHadamard: true },
    ),
    kvCache: kv4,
  },
  method("mxfp4-w4a4", "GPTQ over MXFP4 weights, MXFP4 activations (E8M0 scale per 32)", [
    { kind: "mx", format: "mxfp4", method: "gptq" },
    act("mxfp4"),
  ], false),
  method("nvfp4-w4a4", "GPTQ over NVFP4 weights, NVFP4 activations (E4M3 per 16, a token scale)", [
    { kind: "mx", format: "nvfp4", method: "gptq" },
    act("nvfp4"),
  ], false),
];

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
  method("rtn-mxfp4", "MXFP4 (E2M1, an E8M0 scale per 32), round to nearest", [
    { kind: "mx", format: "mxfp4" },
  ], false),
  method("gptq-mxfp4", "GPTQ over the MXFP4 grid (CPU)", [
    { kind: "mx", format: "mxfp4", method: "gptq" },
  ], false),
  method(
    "rtn-nvfp4",
    "NVFP4 (E2M1, an E4M3 scale per 16, an FP32 tensor scale), round to nearest",
    [
      { kind: "mx", format: "nvfp4" },
    ],
    false,
  ),
  method("gptq-nvfp4", "GPTQ over the NVFP4 grid (CPU)", [
    { kind: "mx", format: "nvfp4", method: "gptq" },
  ], false),
  method("rtn-fp8", "FP8 E4M3, an FP32 scale per output channel, round to nearest", [
    { kind: "fp8" },
  ], false),
  method("gptq-fp8", "GPTQ over the FP8 E4M3 per-channel grid (CPU)", [
    { kind: "fp8", method: "gptq" },
  ], false),
  method(
    "spqr-w3-g16",
    "SpQR: 3 bits, groups of 16, 3-bit statistics in runs of 16 rows, float16 outliers " +
      "(τ 0.2), act-order",
    [{ kind: "spqr", bits: 3, groupSize: 16 }],
    false,
  ),
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
  ...ACTIVATION_METHODS,
];

/** A family of method ids with parameters, for `--list` and error messages. */
export interface MethodPattern {
  /** The id's shape, e.g. `rtn-w{2..8}[-g{G}]`. */
  readonly pattern: string;
  /** What it does. */
  readonly description: string;
  /** Ids it accepts. */
  readonly examples: readonly string[];
}

/** The method ids {@linkcode parseMethodId} builds from parameters. */
export const METHOD_PATTERNS: readonly MethodPattern[] = [
  {
    pattern: "rtn-w{2..8}[-g{G}][-sym]",
    description:
      "round-to-nearest, per output channel or in groups of G input columns; -sym: symmetric grid",
    examples: ["rtn-w4", "rtn-w4-g32", "rtn-w8-sym"],
  },
  {
    pattern: "gptq-w{2..8}[-g{G}][-act][-sym]",
    description: "GPTQ, same grids; -act: columns by decreasing Hessian diagonal (act-order)",
    examples: ["gptq-w4-g128", "gptq-w3-act"],
  },
  {
    pattern: "spqr-w{2..8}[-g{G}][-t{T}]",
    description: "SpQR: B-bit codes in groups of G input columns (16), 3-bit scales and zero " +
      "points in runs of 16 rows, float16 outliers above T times the typical OBS error " +
      "(0.2; -tinf: none), act-order",
    examples: ["spqr-w3-g16", "spqr-w3-g16-t0.35", "spqr-w4-g16-tinf"],
  },
  {
    pattern: "magnitude|wanda|sparsegpt-{P}",
    description: "prune P% of the weights (P in 1..99)",
    examples: ["sparsegpt-50", "wanda-60"],
  },
  {
    pattern: "magnitude|wanda|sparsegpt-{N}:{M}",
    description: "N:M sparsity: keep N of every M consecutive input columns (1 ≤ N < M)",
    examples: ["sparsegpt-2:4", "wanda-4:8"],
  },
  {
    pattern: "quik-w4a4-c{K}",
    description: "QUIK: the K input columns with the largest activation norms in 8 bits " +
      "(GPTQ weights solved last, int8 activations), the rest int4 (GPTQ, per-token activations)",
    examples: ["quik-w4a4-c64", "quik-w4a4-c128", "quik-w4a4-c256"],
  },
  {
    pattern: "{method}+eora|svd-r{R}[-w{B}[-g{G}]]",
    description: "then a rank-R correction B·A of each compressed linear: EoRA (in the " +
      "eigenspace of its inputs) or the plain SVD of W − Ŵ; factors float16, or with -w{B} " +
      "B-bit RTN per row (-g{G}: groups of G)",
    examples: ["gptq-w3+eora-r32-w4", "gptq-w3+svd-r32-w4", "sparsegpt-2:4+eora-r64"],
  },
];

const PRUNER_NAMES = {
  magnitude: "magnitude pruning",
  wanda: "Wanda",
  sparsegpt: "SparseGPT",
} as const;

/** The integer a decimal field spells, or null for a leading zero (ids are canonical). */
function field(text: string): number | null {
  return /^(0|[1-9]\d*)$/.test(text) ? Number(text) : null;
}

function unknown(id: string, reason: string, extra: string): RangeError {
  return new RangeError(
    `Unknown method '${id}': ${reason}. Named methods: ${
      DEMO_METHODS.map((m) => m.id).join(", ")
    }${extra}; patterns: ${METHOD_PATTERNS.map((p) => p.pattern).join(", ")} (see --list)`,
  );
}

/**
 * The method an id names: a row of {@linkcode DEMO_METHODS}, or one built
 * from a pattern of {@linkcode METHOD_PATTERNS} (`gptq-w4-g128`,
 * `sparsegpt-60`, `wanda-4:8`; not in the demo's default set). Built methods
 * keep the classifier in float32 as the table's do.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseMethodId } from "./methods.ts";
 * const m = parseMethodId("gptq-w4-g128");
 * assert.deepEqual(m.recipe.stages, [{ kind: "gptq", bits: 4, groupSize: 128 }]);
 * ```
 * @param id The id.
 * @returns The method.
 * @throws {RangeError} for an id that is neither, saying which parameter is out
 *   of range or listing the named methods and the patterns.
 */
export function parseMethodId(id: string): DemoMethod {
  return methodOf(id, "");
}

/** {@linkcode parseMethodId}, with `extra` ids listed after the named ones in errors. */
function methodOf(id: string, extra: string): DemoMethod {
  const unknownMethod = (reason: string) => unknown(id, reason, extra);
  const named = DEMO_METHODS.find((m) => m.id === id);
  if (named) return named;
  const corrected = /^(.+)\+(eora|svd)-r(\d+)(?:-w(\d+)(?:-g(\d+))?)?$/.exec(id);
  if (corrected) return withLowRank(id, corrected, extra);
  const quant = /^(rtn|gptq)-w(\d+)(?:-g(\d+))?(-act)?(-sym)?$/.exec(id);
  if (quant) {
    const kind = quant[1] as "rtn" | "gptq", b = quant[2]!, g = quant[3], act = quant[4];
    const sym = quant[5];
    const bits = field(b);
    if (bits === null || bits < 2 || bits > 8) {
      throw unknownMethod(`the bits (w${b}) must be an integer in 2..8`);
    }
    const groupSize = g === undefined ? undefined : field(g);
    if (groupSize === null || (groupSize !== undefined && groupSize < 1)) {
      throw unknownMethod(`the group size (g${g}) must be a positive integer`);
    }
    if (act && kind === "rtn") throw unknownMethod("act-order (-act) is a GPTQ option");
    const stage: Stage = {
      kind,
      bits,
      ...(groupSize !== undefined ? { groupSize } : {}),
      ...(act ? { actOrder: true } : {}),
      ...(sym ? { symmetric: true } : {}),
    };
    const what = kind === "rtn" ? "round-to-nearest" : "GPTQ";
    const grid = groupSize === undefined ? "per channel" : `groups of ${groupSize}`;
    const extras = `${act ? ", act-order" : ""}${sym ? ", symmetric" : ""}`;
    return method(id, `${what}, ${bits} bits, ${grid}${extras}`, [stage], false);
  }
  const sp = /^spqr-w(\d+)(?:-g(\d+))?(?:-t(inf|\d+(?:\.\d+)?))?$/.exec(id);
  if (sp) {
    const bits = field(sp[1]!);
    if (bits === null || bits < 2 || bits > 8) {
      throw unknownMethod(`the bits (w${sp[1]}) must be an integer in 2..8`);
    }
    const groupSize = sp[2] === undefined ? 16 : field(sp[2]);
    if (groupSize === null || groupSize < 1) {
      throw unknownMethod(`the group size (g${sp[2]}) must be a positive integer`);
    }
    const tau = sp[3] === undefined ? 0.2 : sp[3] === "inf" ? Infinity : Number(sp[3]);
    const stage: Stage = {
      kind: "spqr",
      bits,
      groupSize,
      ...(sp[3] !== undefined ? { outlierThreshold: tau } : {}),
    };
    const outliers = tau === Infinity ? "no outliers" : `float16 outliers (τ ${tau})`;
    return method(
      id,
      `SpQR: ${bits} bits, groups of ${groupSize}, 3-bit statistics, ${outliers}, act-order`,
      [stage],
      false,
    );
  }
  const quik = /^quik-w4a4-c(\d+)$/.exec(id);
  if (quik) {
    const count = field(quik[1]!);
    if (count === null || count < 1) {
      throw unknownMethod(`the kept columns (c${quik[1]}) must be a positive integer`);
    }
    return method(
      id,
      `QUIK: ${count} input columns with the largest activation norms in 8 bits, the rest 4-bit`,
      [
        { ...int4Weights, outliers: { count, bits: 8 } },
        { kind: "act", format: "int4", outliers: { count, format: "int8" } },
      ],
      false,
    );
  }
  const prune = /^(magnitude|wanda|sparsegpt)-(?:(\d+)|(\d+):(\d+))$/.exec(id);
  if (prune) {
    const kind = prune[1] as keyof typeof PRUNER_NAMES;
    let structure: SparsityStructure, what: string;
    if (prune[2] !== undefined) {
      const pct = field(prune[2]);
      if (pct === null || pct < 1 || pct > 99) {
        throw unknownMethod(`the sparsity (${prune[2]}%) must be an integer percentage in 1..99`);
      }
      structure = { kind: "unstructured", sparsity: pct / 100 };
      what = `${pct}%`;
    } else {
      const n = field(prune[3]!), m = field(prune[4]!);
      if (n === null || m === null || n < 1 || n >= m) {
        throw unknownMethod(`N:M sparsity needs integers 1 ≤ N < M: got ${prune[3]}:${prune[4]}`);
      }
      structure = { kind: "nm", n, m };
      what = `${n}:${m}`;
    }
    return method(id, `${PRUNER_NAMES[kind]}, ${what}`, [{ kind, structure }], false);
  }
  throw unknownMethod("no named method or pattern fits it");
}

/** `{method}+eora|svd-r{R}[-w{B}[-g{G}]]`: the base method with a low-rank stage appended. */
function withLowRank(id: string, match: RegExpExecArray, extra: string): DemoMethod {
  const unknownMethod = (reason: string) => unknown(id, reason, extra);
  const [, baseId, kind, r, b, g] = match as unknown as [
    string,
    string,
    "eora" | "svd",
    string,
    string?,
    string?,
  ];
  const base = methodOf(baseId, extra);
  if (base.recipe.stages.length === 0) {
    throw unknownMethod(`a low-rank correction needs a compressed base method, not '${baseId}'`);
  }
  if (base.recipe.stages.some(isLowRankStage)) {
    throw unknownMethod("a method takes one low-rank correction (one +eora or +svd)");
  }
  const rank = field(r);
  if (rank === null || rank < 1) throw unknownMethod(`the rank (r${r}) must be a positive integer`);
  const bits = b === undefined ? undefined : field(b);
  if (bits === null || (bits !== undefined && (bits < 2 || bits > 8))) {
    throw unknownMethod(`the factor bits (w${b}) must be an integer in 2..8`);
  }
  const groupSize = g === undefined ? undefined : field(g);
  if (groupSize === null || (groupSize !== undefined && groupSize < 1)) {
    throw unknownMethod(`the factor group size (g${g}) must be a positive integer`);
  }
  const stage: Stage = {
    kind,
    rank,
    ...(bits !== undefined
      ? { quantize: { bits, ...(groupSize !== undefined ? { groupSize } : {}) } }
      : {}),
  };
  const append = (stages: readonly Stage[]): Stage[] =>
    stages.length === 0 ? [] : [...stages, stage];
  const storage = bits === undefined
    ? "float16"
    : `${bits}-bit RTN ${groupSize === undefined ? "per row" : `groups of ${groupSize}`}`;
  return {
    id,
    description: `${base.description}, then ${kind === "eora" ? "EoRA" : "SVD of W − Ŵ"} ` +
      `rank ${rank} (factors ${storage})`,
    recipe: {
      stages: append(base.recipe.stages),
      overrides: (base.recipe.overrides ?? []).map((o) => ({ ...o, stages: append(o.stages) })),
    },
    default: false,
    ...(base.transform ? { transform: base.transform } : {}),
    ...(base.kvCache ? { kvCache: base.kvCache } : {}),
  };
}

/**
 * The text of `--list`: the named methods (`*` marks the demo's default set),
 * then the patterns with examples.
 *
 * @returns Lines joined by \n.
 */
export function formatMethodList(): string {
  const lines = DEMO_METHODS.map((m) =>
    `${m.id.padEnd(18)} ${m.default ? "*" : " "} ${m.description}`
  );
  lines.push("", "* in the demo's default set", "", "Patterns (any parameters in range):");
  for (const p of METHOD_PATTERNS) {
    lines.push(`${p.pattern.padEnd(36)} ${p.description} (e.g. ${p.examples.join(", ")})`);
  }
  return lines.join("\n");
}

/**
 * Methods by id, in the order given: table rows, or ids built from a pattern
 * (see {@linkcode parseMethodId}).
 *
 * @param ids Identifiers, or `["default"]`, or `["all"]` (the table).
 * @returns The methods.
 * @throws {RangeError} naming an unknown id and listing the known ones.
 */
export function selectMethods(ids: readonly string[]): DemoMethod[] {
  if (ids.length === 1 && ids[0] === "all") return [...DEMO_METHODS];
  if (ids.length === 1 && ids[0] === "default") return DEMO_METHODS.filter((m) => m.default);
  return ids.map((id) => methodOf(id, ", default, all"));
}
