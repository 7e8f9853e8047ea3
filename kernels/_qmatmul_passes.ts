/**
 * WGSL of the qmatmul kernel's auxiliary passes: the gather of x before the
 * product, and the sum of split-K partials after it. Private: re-exported
 * by `qmatmul_wgsl.ts`.
 *
 * Web-standard only.
 *
 * @module
 */

/** Specialization of {@linkcode qmatmulGatherWgsl}. */
export interface QmatmulGatherSpec {
  /** Storage of x. */
  readonly input: "f32" | "f16";
  /** Columns are read through the column map (else packed column j is column j). */
  readonly gather: boolean;
}

/**
 * WGSL of the second pass of a split-K product: y[i] = Σ_s partials[s·count + i]
 * over the `splitK` slices in order (added to y[i] when `accumulate`).
 * Bindings: 0 = y (f32), 1 = partials (f32 [splitK, count]), 2 = the
 * uniform parameters {count, groupsX}.
 *
 * @param splitK Slices.
 * @param accumulate Add the sum to y's values instead of overwriting them.
 * @returns WGSL source with entry point `main`.
 */
export function qmatmulSplitReduceWgsl(splitK: number, accumulate = false): string {
  const terms = Array.from({ length: splitK }, (_, s) => `P[${s}u * p.count + i]`);
  return `struct Params { count: u32, groupsX: u32 }
@group(0) @binding(0) var<storage, read_write> Y: array<f32>;
@group(0) @binding(1) var<storage, read> P: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + t;
  if (i >= p.count) { return; }
  Y[i] ${accumulate ? "+=" : "="} ${terms.join(" + ")};
}
`;
}

/**
 * WGSL of the gather pass xp[m, j] = x[m, colIdx[j]] (0 where colIdx[j] < 0),
 * converting f16 activations (read as u32 pairs, so no `shader-f16` is needed)
 * to f32. Bindings: 0 = xp (f32 [M, Kp]), 1 = x, 2 = colIdx when `gather`,
 * then the uniform parameters {M, K, Kp, groupsX}.
 *
 * @param spec The specialization.
 * @returns WGSL source with entry point `main`.
 */
export function qmatmulGatherWgsl(spec: QmatmulGatherSpec): string {
  const { input, gather } = spec;
  const read = input === "f16" ? "unpack2x16float(X[i >> 1u])[i & 1u]" : "X[i]";
  return `struct Params { M: u32, K: u32, Kp: u32, groupsX: u32 }
@group(0) @binding(0) var<storage, read_write> XP: array<f32>;
@group(0) @binding(1) var<storage, read> X: array<${input === "f16" ? "u32" : "f32"}>;
${gather ? "@group(0) @binding(2) var<storage, read> colIdx: array<i32>;" : ""}
@group(0) @binding(${gather ? 3 : 2}) var<uniform> p: Params;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {
  let e = (wg.x + wg.y * p.groupsX) * 256u + t;
  if (e >= p.M * p.Kp) { return; }
  let m = e / p.Kp;
  let j = e % p.Kp;
  let k = ${gather ? "colIdx[j]" : "i32(j)"};
  var v = 0.0;
  if (k >= 0) { let i = m * p.K + u32(k); v = ${read}; }
  XP[e] = v;
}
`;
}
