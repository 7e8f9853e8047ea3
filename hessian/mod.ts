/**
 * Layer Hessians from calibration inputs and the one Optimal Brain Surgeon
 * column solver that GPTQ, SparseGPT and joint compression share.
 *
 * @module
 */
export * from "./hessian.ts";
export * from "./device_hessian.ts";
export * from "./obs.ts";
export * from "./obs_gpu.ts";
export * from "./layer_error.ts";
