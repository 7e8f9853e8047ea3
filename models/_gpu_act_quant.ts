/**
 * Library-internal: activation quantization in the WebGPU forward pass. A
 * kernel fake-quantizes the input of a block product in place before the
 * product reads it, one workgroup per token row: the largest magnitude of the
 * row (of the kept and the other columns apart, for QUIK), then
 * quantize → dequantize. Formats: symmetric `int8` and `int4` and `fp8`
 * (E4M3), with per-token (dynamic) or static per-tensor scales, QUIK's
 * kept columns in `int8` or `fp8`, and the microscaling `mxfp4` and `nvfp4`
 * (one thread per block of 32 or 16 inputs). The CPU reference is
 * `fakeQuantizeActivations` (`quantizers/activation_quant.ts`), which the
 * kernel reproduces exactly (see {@linkcode actQuantWgsl}). The product
 * wrapper also multiplies w2's input by QuaRot's online Hadamard first.
 * Web-standard only.
 *
 * @module
 */

import {
  cachedPipeline,
  foldGroups,
  type Gpu,
  type GpuBatch,
  uploadBuffer,
} from "../kernels/backend.ts";
import { type ActivationQuant, checkActivationQuant } from "../quantizers/activation_quant.ts";
import { reduce, WG_FLAT } from "./_gpu_kernels.ts";
import { type BlockProduct, encodeLinear, type ProductEncoder } from "./_gpu_block.ts";
import type { LlamaLayer, LlamaLinear } from "./model.ts";

/** Threads per workgroup (one workgroup per token row). */
const WG = 64;

/** The element formats the kernel runs: all of `ActivationFormat`. */
type KernelFormat = "int8" | "int4" | "fp8" | "mxfp4" | "nvfp4";

/** The formats scaled by one amax per row (or its kept columns). */
type RowFormat = "int8" | "int4" | "fp8";

/** Specialization of {@linkcode actQuantWgsl}. */
export interface ActQuantKernelSpec {
  /** Format of the (other) columns. */
  readonly format: KernelFormat;
  /** One static scale from the uniform instead of each row's amax. */
  readonly static: boolean;
  /** Format of QUIK's kept columns (a 0/1 mask per column; int and FP8 formats only), or null. */
  readonly kept: "int8" | "fp8" | null;
  /**
   * Rows are groups of `width` values inside wider rows (a KV cache's heads):
   * group g starts at ⌊g / per⌋·ld + off + (g mod per)·width. @default false
   */
  readonly groups?: boolean;
}

/** The uniform struct and the first value of row (or group) wgi. */
function rowOrigin(groups: boolean | undefined): { struct: string; origin: string } {
  return groups
    ? {
      struct: "struct P { rows: u32, width: u32, scale: f32, per: u32, ld: u32, off: u32 }",
      origin: "let o = (wgi / p.per) * p.ld + p.off + (wgi % p.per) * p.width;",
    }
    : {
      struct: "struct P { rows: u32, width: u32, scale: f32 }",
      origin: "let o = wgi * p.width;",
    };
}

/** The largest integer code of a symmetric int format. */
const QMAX = { int8: 127, int4: 7 } as const;

/** The WGSL expression of x (f32) fake-quantized in `format` under scale `s` (> 0). */
function quantizeExpr(format: RowFormat, x: string, s: string): string {
  if (format === "fp8") return `clamp(quo(${x}, ${s}, 3u, -6), -448.0, 448.0) * ${s}`;
  const q = QMAX[format];
  return `clamp(round(quo(${x}, ${s}, 23u, -126)), -${q}.0, ${q}.0) * ${s}`;
}

/** The divisor of amax giving a format's (tensor) scale: Q for int, 448 for E4M3, 6·448 for NVFP4. */
function scaleDivisor(format: KernelFormat): number {
  if (format === "mxfp4") return 1; // no tensor scale
  return format === "fp8" ? 448 : format === "nvfp4" ? 6 * 448 : QMAX[format];
}

/**
 * WGSL of the kernel. The CPU rounds twice through quotients computed in
 * float64: int formats take round_half_even(fl32(x/s)), FP8 rounds the exact
 * x/s to E4M3 (saturating at 448), and the dynamic scale is fl32(amax/Q).
 * WGSL's `/` is only accurate to 2.5 ulp, so the kernel divides the 24-bit
 * significands by integer long division (26 quotient bits and a sticky
 * remainder) and rounds to nearest even on the target grid (`quo`): float32
 * for the int formats and the scales, E4M3 (3 fraction bits, subnormals
 * below 2^−6) for FP8. Multiplications (q·s) are correctly rounded in WGSL,
 * `round` breaks ties to even, and the max reduction is exact, so the values
 * are the CPU's exactly, except where a device flushes subnormal floats
 * (scales or products below 2^−126, rows with amax below about 2^−119).
 * MXFP4 and NVFP4 follow `quantizers/activation_quant.ts` the same way: the
 * E8M0 exponent is ⌊log₂ amax⌋ − 2 read from the bits, NVFP4's block scale
 * rounds the exact amax/(6·s) to E4M3 (its divisor 6·s held as a 26-bit
 * significand), and the elements round the exact x/m to E2M1 (1 fraction
 * bit, subnormal below 1, saturating at 6).
 *
 * @param spec The specialization.
 * @returns WGSL source.
 */
export function actQuantWgsl(spec: ActQuantKernelSpec): string {
  const { format, kept } = spec;
  if (format === "mxfp4" || format === "nvfp4") return mxWgsl(format, spec.static, spec.groups);
  const { struct, origin } = rowOrigin(spec.groups);
  const keptDecl = kept
    ? "@group(0) @binding(1) var<storage, read> keep: array<u32>;\n" +
      "@group(0) @binding(2) var<uniform> p: P;"
    : "@group(0) @binding(1) var<uniform> p: P;";
  const isKept = kept ? "keep[i] != 0u" : "false";
  const scale = (f: KernelFormat, amax: string) => `quo(${amax}, ${scaleDivisor(f)}.0, 23u, -126)`;
  const s0 = spec.static ? "p.scale" : scale(format, "red[0].x");
  const s1 = kept ? scale(kept, "red[0].y") : "0.0";
  return `${struct}
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
${keptDecl}
var<workgroup> red: array<vec2f, ${WG}>;
${DIVISION}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.rows) { return; }
  ${origin}
  var m = vec2f(0.0);
  for (var i = lid; i < p.width; i += ${WG}u) {
    let a = abs(X[o + i]);
    if (${isKept}) { m.y = max(m.y, a); } else { m.x = max(m.x, a); }
  }
  red[lid] = m;
${reduce("max", WG)}
  let s0 = ${s0};
  let s1 = ${s1};
  for (var i = lid; i < p.width; i += ${WG}u) {
    let x = X[o + i];
    if (${isKept}) {
      X[o + i] = select(0.0, ${kept ? quantizeExpr(kept, "x", "s1") : "0.0"}, s1 > 0.0);
    } else {
      X[o + i] = select(0.0, ${quantizeExpr(format, "x", "s0")}, s0 > 0.0);
    }
  }
}
`;
}

/**
 * WGSL of the microscaling formats: one thread per block of a row (NVFP4's
 * tensor scale from the row's amax, or static).
 */
function mxWgsl(format: "mxfp4" | "nvfp4", isStatic: boolean, groups?: boolean): string {
  const { struct, origin } = rowOrigin(groups);
  const bs = format === "mxfp4" ? 32 : 16;
  const rowAmax = format === "nvfp4" && !isStatic
    ? `  var a = 0.0;
  for (var i = lid; i < p.width; i += ${WG}u) { a = max(a, abs(X[o + i])); }
  red[lid] = vec2f(a, 0.0);
${reduce("max", WG)}
  let ts = quo(red[0].x, ${scaleDivisor("nvfp4")}.0, 23u, -126);`
    : format === "nvfp4"
    ? "  let ts = p.scale;"
    : "";
  const blockScale = format === "mxfp4"
    // E8M0 2^(⌊log₂ amax⌋ − 2), its code clamped to [0, 254]; an all-zero block 2^−127.
    ? `    var m = ldexp(1.0, -127);
    if (amax > 0.0) { m = ldexp(1.0, clamp(sig(amax).e - 2 + 127, 0, 254) - 127); }`
    // E4M3(amax / (6·ts)), saturating at 448, times ts; 0 where ts or amax is 0.
    : `    var m = 0.0;
    if (ts > 0.0 && amax > 0.0) {
      let T = sig(ts);
      m = min(quoSig(sig(amax), Sig(3u * T.m, T.e + 1), false, 3u, -6), 448.0) * ts;
    }`;
  return `${struct}
@group(0) @binding(0) var<storage, read_write> X: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
var<workgroup> red: array<vec2f, ${WG}>;
${DIVISION}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nw: vec3u) {
  ${WG_FLAT}
  if (wgi >= p.rows) { return; }
  ${origin}
${rowAmax}
  let nb = (p.width + ${bs - 1}u) / ${bs}u;
  for (var b = lid; b < nb; b += ${WG}u) {
    let c0 = o + b * ${bs}u;
    let c1 = o + min((b + 1u) * ${bs}u, p.width);
    var amax = 0.0;
    for (var c = c0; c < c1; c++) { amax = max(amax, abs(X[c])); }
${blockScale}
    for (var c = c0; c < c1; c++) {
      X[c] = select(0.0, clamp(quo(X[c], m, 1u, 0), -6.0, 6.0) * m, m > 0.0);
    }
  }
}
`;
}

/** WGSL of exactly rounded division (see {@linkcode actQuantWgsl}): `sig`, `quoSig`, `quo`. */
export const DIVISION = `
struct Sig { m: u32, e: i32 }

// |v| = m·2^(e − 23), m in [2^23, 2^24) (v ≠ 0, subnormals normalized).
fn sig(v: f32) -> Sig {
  let u = bitcast<u32>(v) & 0x7fffffffu;
  let f = u & 0x7fffffu;
  if ((u >> 23u) == 0u) {
    let sh = countLeadingZeros(f) - 8u;
    return Sig(f << sh, -126 - i32(sh));
  }
  return Sig(f | 0x800000u, i32(u >> 23u) - 127);
}

// ±A / B (A = A.m·2^(A.e − 23) > 0, B likewise with B.m < 2^26) rounded to
// nearest, ties to even, on the grid of mb fraction bits whose exponent is at
// least emin (spacing 2^(max(e, emin) − mb)); magnitudes of 2^126 and more
// return ±2^126 (every caller clamps them or cannot reach them).
fn quoSig(A: Sig, B: Sig, neg: bool, mb: u32, emin: i32) -> f32 {
  var ma = A.m;
  var e = A.e - B.e;
  while (ma < B.m) { ma = ma << 1u; e = e - 1; }
  // ma / B.m in [1, 2): q holds 26 bits of it, r the remainder.
  var r = ma - B.m;
  var q = 1u;
  for (var i = 0u; i < 25u; i++) {
    r = r << 1u;
    q = q << 1u;
    if (r >= B.m) { r = r - B.m; q = q | 1u; }
  }
  // |a / b| = (q + r / B.m) · 2^(e − 25)
  var v = ldexp(1.0, 126);
  if (e < 126) {
    let d = u32(25 - i32(mb) + max(0, emin - e));
    if (d > 26u) { return 0.0; }
    var k = q >> d;
    let rem = q & ((1u << d) - 1u);
    let half = 1u << (d - 1u);
    if (rem > half || (rem == half && (r != 0u || (k & 1u) == 1u))) { k = k + 1u; }
    v = ldexp(f32(k), i32(d) + e - 25);
  }
  return select(v, -v, neg);
}

// a / b (b > 0) rounded as quoSig does.
fn quo(a: f32, b: f32, mb: u32, emin: i32) -> f32 {
  if ((bitcast<u32>(a) & 0x7fffffffu) == 0u) { return 0.0; }
  return quoSig(sig(a), sig(b), a < 0.0, mb, emin);
}
`;

/** One product's activation quantization on the GPU: the kernel, its static scale, its mask. */
export interface GpuActQuant {
  /** The kernel's specialization. */
  readonly spec: ActQuantKernelSpec;
  /** The static scale, fl32(absMax/Q), fl32(absMax/448) or fl32(absMax/(6·448)) as on the CPU (0 when dynamic). */
  readonly scale: number;
  /** 1 for each kept column [width] (u32), or null. */
  readonly keep: GPUBuffer | null;
  /** The input width. */
  readonly width: number;
}

/**
 * Uploads one linear input's activation quantization (its kept-column mask).
 *
 * @param gpu The GPU.
 * @param aq The activation quantization (checked by the caller).
 * @param width The input width.
 * @param label Buffer label.
 * @returns The plan of {@linkcode encodeActQuant}.
 */
export function uploadActQuant(
  gpu: Gpu,
  aq: ActivationQuant,
  width: number,
  label: string,
): GpuActQuant {
  const { format } = aq;
  const isStatic = (aq.granularity ?? "token") === "tensor";
  const cols = aq.outliers ? Array.from(aq.outliers.columns) : [];
  let keep: GPUBuffer | null = null;
  if (cols.length > 0) {
    const mask = new Uint32Array(width);
    for (const c of cols) mask[c] = 1;
    keep = uploadBuffer(gpu, mask, `${label}:keep`);
  }
  return {
    spec: { format, static: isStatic, kept: keep ? aq.outliers!.format : null },
    scale: isStatic ? Math.fround(aq.absMax! / scaleDivisor(format)) : 0,
    keep,
    width,
  };
}

/**
 * Records the fake quantization of x [rows, width] in place.
 *
 * @param batch The batch.
 * @param x The activations [rows, plan.width], overwritten.
 * @param plan The uploaded activation quantization.
 * @param rows Rows (tokens).
 */
export function encodeActQuant(
  batch: GpuBatch,
  x: GPUBuffer,
  plan: GpuActQuant,
  rows: number,
): void {
  const { spec } = plan;
  const key = `llama:actquant:${spec.format}:${spec.static}:${spec.kept}`;
  const pipeline = cachedPipeline(batch.gpu, key, () => actQuantWgsl(spec));
  const u = batch.uniform([{ u32: rows }, { u32: plan.width }, { f32: plan.scale }]);
  batch.dispatch(pipeline, plan.keep ? [x, plan.keep, u] : [x, u], foldGroups(batch.gpu, rows));
}

/** The linears whose shared input each block product reads. */
const PRODUCT_LINEARS: Readonly<Record<BlockProduct, readonly LlamaLinear[]>> = {
  qkv: ["wq", "wk", "wv"],
  o: ["wo"],
  gateUp: ["w1", "w3"],
  down: ["w2"],
};

/** A canonical string of what an activation quantization computes (undefined: none). */
function specKey(aq: ActivationQuant | undefined): string {
  if (aq === undefined) return "none";
  const { format, granularity = "token", absMax, outliers } = aq;
  const cols = outliers ? Array.from(outliers.columns).sort((a, b) => a - b) : [];
  return JSON.stringify([
    format,
    granularity,
    granularity === "tensor" ? absMax : null,
    cols.length > 0 ? [outliers!.format, cols] : null,
  ]);
}

/**
 * What the WebGPU forward pass cannot run of a layer's activation
 * quantization, or null: different settings on linears that share a product
 * (wq, wk, wv; w1, w3).
 *
 * @param layer The layer.
 * @param i Its index, for the message.
 * @returns A description naming the layer and the option, or null.
 */
export function gpuActQuantIssue(layer: Pick<LlamaLayer, "actQuant">, i: number): string | null {
  const aq = layer.actQuant;
  if (!aq) return null;
  for (const names of Object.values(PRODUCT_LINEARS)) {
    const keys = new Set(names.map((n) => specKey(aq[n])));
    if (keys.size > 1) {
      return `different activation quantizations of ${names.join(", ")} ('actQuant' of ` +
        `layer ${i}; the WebGPU forward multiplies them as one product, so they must match)`;
    }
  }
  return null;
}

/**
 * Checks a layer's activation quantizations against the products' input
 * widths, as the CPU forward pass does before quantizing.
 *
 * @param layer The layer.
 * @param widths The input width of each product.
 * @throws {TypeError|RangeError} for an invalid spec (`checkActivationQuant`).
 */
export function checkBlockActQuant(
  layer: Pick<LlamaLayer, "actQuant">,
  widths: Readonly<Record<BlockProduct, number>>,
): void {
  for (
    const [product, names] of Object.entries(PRODUCT_LINEARS) as [BlockProduct, LlamaLinear[]][]
  ) {
    for (const n of names) {
      const aq = layer.actQuant?.[n];
      if (aq) checkActivationQuant(aq, widths[product]);
    }
  }
}

/** A block's activation quantizations on the GPU, per product. */
export type BlockActQuant = Partial<Record<BlockProduct, GpuActQuant>>;

/**
 * Uploads a block's activation quantizations (the layer passed
 * {@linkcode gpuActQuantIssue} and {@linkcode checkBlockActQuant}).
 *
 * @param gpu The GPU.
 * @param layer The layer.
 * @param widths The input width of each product.
 * @param label Buffer label prefix.
 * @returns The plans, per product (empty without `actQuant`).
 */
export function uploadBlockActQuant(
  gpu: Gpu,
  layer: Pick<LlamaLayer, "actQuant">,
  widths: Readonly<Record<BlockProduct, number>>,
  label: string,
): BlockActQuant {
  const out: BlockActQuant = {};
  for (
    const [product, names] of Object.entries(PRODUCT_LINEARS) as [BlockProduct, LlamaLinear[]][]
  ) {
    const aq = layer.actQuant?.[names[0]!];
    if (aq) out[product] = uploadActQuant(gpu, aq, widths[product], `${label}:${product}`);
  }
  return out;
}

/** The mask buffers of a block's activation quantizations (to destroy them). */
export function actQuantBuffers(plans: BlockActQuant): GPUBuffer[] {
  return Object.values(plans).flatMap((p) => (p.keep ? [p.keep] : []));
}

/** QuaRot's online Hadamard before the down projection, on the GPU. */
export interface GpuOnlineHadamard {
  /** Qᵀ [n, n] (Q the layer's rotation, `onlineRotation`), dense float32. */
  readonly qt: GPUBuffer;
  /** The order (the hidden width). */
  readonly n: number;
  /** Where g·Q goes, [rows, n] at least (a buffer the pass no longer reads). */
  readonly scratch: GPUBuffer;
}

/**
 * A product encoder that fake-quantizes each product's input in place first
 * (the forward pass reads none of these inputs after their product), the
 * down projection's after multiplying it by the online Hadamard (into
 * `online.scratch`), as the CPU forward pass does.
 *
 * @param products The block's products.
 * @param plans The block's activation quantizations.
 * @param online The layer's online Hadamard, or null.
 * @returns The wrapped encoder (`products` itself without either).
 */
export function withActQuantProducts(
  products: ProductEncoder,
  plans: BlockActQuant,
  online: GpuOnlineHadamard | null = null,
): ProductEncoder {
  if (Object.keys(plans).length === 0 && online === null) return products;
  return (batch, product, out, x, rows) => {
    if (product === "down" && online !== null) {
      // x·Q = x·(Qᵀ)ᵀ: the GEMM's x·Wᵀ with W = Qᵀ.
      encodeLinear(batch, online.scratch, x, online.qt, rows, online.n, online.n, false);
      x = online.scratch;
    }
    const plan = plans[product];
    if (plan) encodeActQuant(batch, x, plan, rows);
    products(batch, product, out, x, rows);
  };
}
