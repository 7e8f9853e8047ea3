/**
 * The `quantization_config` of a Hugging Face `config.json`: building it for
 * the folders we write (GPTQ, compressed-tensors pack-quantized) and reading
 * it back ({@linkcode parseQuantizationConfig}), with a clear error for every
 * setting we do not load. Web-standard only.
 *
 * @module
 */

import type { GptqArgs } from "./gptq_linear.ts";
import { PACK_QUANTIZED_BITS, type PackQuantizedArgs } from "./pack_quantized.ts";
import type { SparseFormat } from "./sparse_bitmask.ts";
import { GPTQ_CHECKPOINT_BITS } from "../../quantizers/gptq_checkpoint.ts";

/** A checkpoint's quantization, as far as loading it goes. */
export type QuantizationScheme =
  | { readonly method: "gptq"; readonly args: GptqArgs }
  | {
    readonly method: "compressed-tensors";
    /** The config groups, in the file's order: which modules, and their weights' arguments. */
    readonly groups: readonly {
      readonly name: string;
      readonly targets: readonly string[];
      readonly args: PackQuantizedArgs;
    }[];
    /** Modules left out of quantization (`ignore`). */
    readonly ignore: readonly string[];
    /** The `sparsity_config`, when the folder holds pruned linears. */
    readonly sparsity: {
      readonly format: SparseFormat;
      readonly targets: readonly string[];
      readonly ignore: readonly string[];
    } | null;
  };

/** How one module's weight is stored. */
export type ModuleQuantization =
  | { readonly kind: "gptq"; readonly args: GptqArgs }
  | { readonly kind: "pack-quantized"; readonly args: PackQuantizedArgs }
  | { readonly kind: "sparse-bitmask"; readonly format: SparseFormat }
  | null;

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function fail(source: string, key: string, value: unknown, why: string): never {
  throw new RangeError(
    `${source}: quantization_config.${key} = ${JSON.stringify(value)} is not supported: ${why}`,
  );
}

function bool(json: Json, key: string, fallback: boolean, source: string, at = key): boolean {
  const v = json[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "boolean") fail(source, at, v, "it must be true or false");
  return v;
}

function parseGptq(q: Json, source: string): QuantizationScheme {
  const bits = q.bits;
  if (typeof bits !== "number" || !GPTQ_CHECKPOINT_BITS.includes(bits)) {
    fail(source, "bits", bits, "GPTQ checkpoints of 2, 3, 4 or 8 bits are read");
  }
  const groupSize = q.group_size ?? -1;
  if (!(groupSize === -1 || (Number.isInteger(groupSize) && (groupSize as number) > 0))) {
    fail(source, "group_size", groupSize, "it must be −1 (per channel) or a positive integer");
  }
  const format = q.checkpoint_format ?? q.format ?? "gptq";
  const formatKey = q.checkpoint_format !== undefined ? "checkpoint_format" : "format";
  if (format !== "gptq" && format !== "gptq_v2") {
    fail(source, formatKey, format, 'the GPTQ layouts "gptq" (v1) and "gptq_v2" are read');
  }
  if (q.lm_head === true) fail(source, "lm_head", true, "a quantized lm_head is not read");
  if (q.pack_dtype !== undefined && q.pack_dtype !== "int32") {
    fail(source, "pack_dtype", q.pack_dtype, "codes packed in int32 words are read");
  }
  if (isObject(q.dynamic) && Object.keys(q.dynamic).length > 0) {
    fail(source, "dynamic", q.dynamic, "per-module overrides are not read");
  }
  return {
    method: "gptq",
    args: {
      bits: bits as number,
      groupSize: groupSize as number,
      symmetric: bool(q, "sym", true, source),
      descAct: bool(q, "desc_act", false, source),
      version: format === "gptq" ? 1 : 2,
    },
  };
}

function parseWeightArgs(w: unknown, source: string, at: string): PackQuantizedArgs {
  if (!isObject(w)) fail(source, at, w, "an object of weight quantization arguments is needed");
  if ((w.type ?? "int") !== "int") {
    fail(source, `${at}.type`, w.type, 'integer grids ("int") are read');
  }
  const bits = w.num_bits;
  if (typeof bits !== "number" || !PACK_QUANTIZED_BITS.includes(bits)) {
    fail(source, `${at}.num_bits`, bits, "1 to 8 bits are packed");
  }
  const strategy = w.strategy ??
    (w.group_size === undefined || w.group_size === null
      ? "tensor"
      : (w.group_size as number) > 0
      ? "group"
      : "channel");
  let groupSize: number;
  if (strategy === "group") {
    if (!(Number.isInteger(w.group_size) && (w.group_size as number) > 0)) {
      fail(
        source,
        `${at}.group_size`,
        w.group_size,
        'strategy "group" needs a positive group size',
      );
    }
    groupSize = w.group_size as number;
  } else if (strategy === "channel") {
    groupSize = -1;
  } else {
    fail(source, `${at}.strategy`, strategy, 'strategies "channel" and "group" are read');
  }
  if (w.dynamic !== undefined && w.dynamic !== false) {
    fail(source, `${at}.dynamic`, w.dynamic, "static weight grids are read");
  }
  const actorder = w.actorder ?? null;
  if (![null, false, true, "group", "weight", "static", "dynamic"].includes(actorder as string)) {
    fail(source, `${at}.actorder`, actorder, 'null, "group" or "weight" is read');
  }
  return {
    bits: bits as number,
    groupSize,
    symmetric: bool(w, "symmetric", true, source, `${at}.symmetric`),
  };
}

function stringList(v: unknown, source: string, key: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((t) => typeof t === "string")) {
    fail(source, key, v, "a list of module names or classes is needed");
  }
  return v as string[];
}

function parseSparsity(
  q: Json,
  source: string,
): { format: SparseFormat; targets: string[]; ignore: string[] } | null {
  const sc = q.sparsity_config;
  if (sc === undefined || sc === null || (isObject(sc) && Object.keys(sc).length === 0)) {
    return null;
  }
  if (!isObject(sc)) fail(source, "sparsity_config", sc, "an object is needed");
  const format = sc.format;
  if (format === "dense") return null;
  if (format !== "sparse-bitmask" && format !== "sparse-24-bitmask") {
    fail(
      source,
      "sparsity_config.format",
      format,
      'the "sparse-bitmask" and "sparse-24-bitmask" formats are read',
    );
  }
  return {
    format,
    targets: stringList(sc.targets ?? ["Linear"], source, "sparsity_config.targets"),
    ignore: stringList(sc.ignore, source, "sparsity_config.ignore"),
  };
}

function parseCompressedTensors(q: Json, source: string): QuantizationScheme {
  const sparsity = parseSparsity(q, source);
  if (q.kv_cache_scheme !== undefined && q.kv_cache_scheme !== null) {
    fail(source, "kv_cache_scheme", q.kv_cache_scheme, "it is not read");
  }
  if (isObject(q.transform_config) && Object.keys(q.transform_config).length > 0) {
    fail(source, "transform_config", q.transform_config, "it is not read");
  }
  const cg = q.config_groups;
  // A pruned folder without quantization has no config groups (and no status).
  if (sparsity && (cg === undefined || cg === null)) {
    return { method: "compressed-tensors", groups: [], ignore: [], sparsity };
  }
  const status = q.quantization_status;
  if (status !== "compressed") {
    fail(source, "quantization_status", status, 'compressed folders ("compressed") are read');
  }
  const format = q.format;
  if (format !== undefined && format !== "pack-quantized" && format !== "mixed-precision") {
    fail(source, "format", format, 'the "pack-quantized" format is read');
  }
  if (!isObject(cg) || Object.keys(cg).length === 0) {
    fail(source, "config_groups", cg, "an object of one or more groups is needed");
  }
  const groups = Object.entries(cg).map(([name, g]) => {
    const at = `config_groups.${name}`;
    if (!isObject(g)) fail(source, at, g, "a group must be an object");
    const gf = g.format ?? format;
    if (gf !== undefined && gf !== "pack-quantized") {
      fail(source, `${at}.format`, gf, 'the "pack-quantized" format is read');
    }
    for (const key of ["input_activations", "output_activations"]) {
      if (g[key] !== undefined && g[key] !== null) {
        fail(source, `${at}.${key}`, g[key], "only weights are quantized in the folders read");
      }
    }
    if (!Array.isArray(g.targets)) {
      fail(source, `${at}.targets`, g.targets, "a list of module names or classes is needed");
    }
    return {
      name,
      targets: stringList(g.targets, source, `${at}.targets`),
      args: parseWeightArgs(g.weights, source, `${at}.weights`),
    };
  });
  return {
    method: "compressed-tensors",
    groups,
    ignore: stringList(q.ignore, source, "ignore"),
    sparsity,
  };
}

/**
 * Reads a `quantization_config` object: GPTQ (`quant_method: "gptq"`,
 * `checkpoint_format` "gptq" or "gptq_v2") or compressed-tensors
 * (`quant_method: "compressed-tensors"`, `format: "pack-quantized"`,
 * `quantization_status: "compressed"`, integer weight-only groups).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseQuantizationConfig } from "./quantization_config.ts";
 * const s = parseQuantizationConfig({ quant_method: "gptq", bits: 4, group_size: 128 }, "config.json");
 * assert.equal(s.method === "gptq" && s.args.version, 1);
 * assert.throws(() => parseQuantizationConfig({ quant_method: "awq", bits: 4 }, "config.json"),
 *   /quant_method = "awq" is not supported/);
 * ```
 * @param q The `quantization_config` value.
 * @param source Where it came from (for messages): the `config.json` path.
 * @returns The scheme.
 * @throws {RangeError} naming the key and its value for every setting that is not read.
 */
export function parseQuantizationConfig(q: unknown, source: string): QuantizationScheme {
  if (!isObject(q)) {
    throw new RangeError(
      `${source}: quantization_config must be an object: it is ${JSON.stringify(q)}`,
    );
  }
  const method = q.quant_method;
  if (method === "gptq") return parseGptq(q, source);
  if (method === "compressed-tensors") return parseCompressedTensors(q, source);
  return fail(
    source,
    "quant_method",
    method,
    'GPTQ ("gptq") and compressed-tensors ("compressed-tensors", pack-quantized) are read',
  );
}

/** Whether a compressed-tensors target (`Linear`, a name, or `re:` a regex) names a linear module. */
function targetMatches(target: string, name: string): boolean {
  if (target === "Linear") return true;
  if (target.startsWith("re:")) return new RegExp(`^(?:${target.slice(3)})`).test(name);
  return target === name;
}

/**
 * How the scheme stores one linear module's weight: GPTQ every linear but
 * `lm_head`; compressed-tensors packs those a config group targets and
 * `ignore` does not name (the first matching group wins), and stores sparse
 * those the `sparsity_config` targets and does not ignore. Null: a dense
 * `.weight`.
 *
 * @param scheme The scheme.
 * @param name The linear module's name, e.g. `model.layers.0.mlp.down_proj`.
 * @returns Its quantization, or null.
 * @throws {RangeError} for a module both quantized and sparse (not read).
 */
export function moduleQuantization(scheme: QuantizationScheme, name: string): ModuleQuantization {
  if (scheme.method === "gptq") {
    return name === "lm_head" ? null : { kind: "gptq", args: scheme.args };
  }
  const matches = (targets: readonly string[]) => targets.some((t) => targetMatches(t, name));
  const group = matches(scheme.ignore) ? undefined : scheme.groups.find((g) => matches(g.targets));
  const { sparsity } = scheme;
  const sparse = sparsity !== null && matches(sparsity.targets) && !matches(sparsity.ignore);
  if (group && sparse) {
    throw new RangeError(
      `${name} is both quantized (${group.name}) and sparse (${sparsity.format}): ` +
        `stacked compression is not read`,
    );
  }
  if (group) return { kind: "pack-quantized", args: group.args };
  return sparse ? { kind: "sparse-bitmask", format: sparsity.format } : null;
}

/** Settings of a GPTQ `quantization_config` we write. */
export interface GptqConfigOptions {
  /** Bits per code. */
  readonly bits: number;
  /** Group size, −1 per channel. */
  readonly groupSize: number;
  /** Symmetric grids. */
  readonly symmetric: boolean;
  /** Act-order (the solver's column order; `g_idx` then matters). */
  readonly descAct: boolean;
  /** 1: `checkpoint_format` "gptq" (zero points minus one); 2: "gptq_v2". */
  readonly version: 1 | 2;
  /** The solver compressed the groups of a block one after another. @default true */
  readonly trueSequential?: boolean;
  /** GPTQ's damping, as a fraction of the mean Hessian diagonal. @default 0.01 */
  readonly dampPercent?: number;
}

/**
 * The GPTQ `quantization_config` of a folder we write (the keys transformers,
 * GPTQModel and vLLM read).
 *
 * @param o The settings.
 * @returns The JSON-ready object.
 */
export function gptqQuantizationConfig(o: GptqConfigOptions): Record<string, unknown> {
  return {
    quant_method: "gptq",
    bits: o.bits,
    group_size: o.groupSize,
    desc_act: o.descAct,
    sym: o.symmetric,
    checkpoint_format: o.version === 1 ? "gptq" : "gptq_v2",
    lm_head: false,
    true_sequential: o.trueSequential ?? true,
    damp_percent: o.dampPercent ?? 0.01,
  };
}

/** One config group of a compressed-tensors `quantization_config` we write. */
export interface CompressedTensorsGroup {
  /** Module names, or `["Linear"]` for every linear not ignored. */
  readonly targets: readonly string[];
  /** Bits per code. */
  readonly bits: number;
  /** Group size, −1 per channel. */
  readonly groupSize: number;
  /** Symmetric grids. */
  readonly symmetric: boolean;
  /** Act-order groups (`weight_g_idx` stored). */
  readonly actOrder: boolean;
}

/** The pruned linears of a compressed-tensors folder we write. */
export interface CompressedTensorsSparsity {
  /** The layout. */
  readonly format: SparseFormat;
  /** Module names, or `["Linear"]`. */
  readonly targets: readonly string[];
  /** Fraction of zeros over the targets. */
  readonly globalSparsity: number;
}

/**
 * The compressed-tensors `quantization_config` of a folder we write:
 * weight-only integer groups (pack-quantized; `lm_head` and the `ignore`d
 * modules not quantized) and, for pruned linears, a `sparsity_config`. A
 * folder without quantized linears has no config groups (as
 * compressed-tensors writes a pruned model).
 *
 * @param groups The config groups.
 * @param ignore Linear modules not quantized besides `lm_head`.
 * @param sparsity The pruned linears, if any.
 * @returns The JSON-ready object.
 */
export function compressedTensorsQuantizationConfig(
  groups: readonly CompressedTensorsGroup[],
  ignore: readonly string[] = [],
  sparsity: CompressedTensorsSparsity | null = null,
): Record<string, unknown> {
  const sparsityConfig = sparsity
    ? {
      format: sparsity.format,
      global_sparsity: sparsity.globalSparsity,
      sparsity_structure: sparsity.format === "sparse-24-bitmask" ? "2:4" : "unstructured",
      targets: [...sparsity.targets],
      ignore: ["lm_head"],
      registry_requires_subclass: false,
    }
    : {};
  if (groups.length === 0) {
    return {
      quant_method: "compressed-tensors",
      sparsity_config: sparsityConfig,
      transform_config: {},
    };
  }
  const configGroups: Record<string, unknown> = {};
  groups.forEach((g, i) => {
    configGroups[`group_${i}`] = {
      targets: [...g.targets],
      weights: {
        num_bits: g.bits,
        type: "int",
        symmetric: g.symmetric,
        group_size: g.groupSize > 0 ? g.groupSize : null,
        strategy: g.groupSize > 0 ? "group" : "channel",
        block_structure: null,
        dynamic: false,
        actorder: g.actOrder ? "group" : null,
        observer: "minmax",
        observer_kwargs: {},
      },
      input_activations: null,
      output_activations: null,
      format: "pack-quantized",
    };
  });
  return {
    quant_method: "compressed-tensors",
    format: "pack-quantized",
    config_groups: configGroups,
    ignore: ["lm_head", ...ignore],
    quantization_status: "compressed",
    kv_cache_scheme: null,
    global_compression_ratio: null,
    sparsity_config: sparsityConfig,
  };
}
