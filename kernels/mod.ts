/**
 * WebGPU kernels with their CPU references, and backend selection.
 *
 * @module
 */
export * from "./backend.ts";
export * from "./gemm_kernel.ts";
export * from "./gemm_tiled_kernel.ts";
export * from "./gemm_tiled_wgsl.ts";
export * from "./hessian_kernel.ts";
export * from "./cholesky_kernel.ts";
export * from "./obs_kernel.ts";
export * from "./obs_spqr_kernel.ts";
export * from "./fwht_kernel.ts";
export * from "./qmatmul_kernel.ts";
export * from "./aqlm_matmul_kernel.ts";
export * from "./paley_kernel.ts";
export * from "./fwht_butterfly_wgsl.ts";
export * from "./paley_wgsl.ts";
export * from "./qmatmul_wgsl.ts";
export * from "./qmatmul_default_spec.ts";
export * from "./qmatmul_reference.ts";
export * from "./qmatmul_spec.ts";
export * from "./row_dot_kernel.ts";
export * from "./subtract_kernel.ts";
