/**
 * Composable compression primitives for large language models: Hessians and
 * the OBS solver, quantizers, pruners, rotations, error-feedback optimizers and
 * WebGPU kernels.
 *
 * @module
 */
export * from "./core/mod.ts";
export * from "./hessian/mod.ts";
export * from "./quantizers/mod.ts";
export * from "./pruners/mod.ts";
export * from "./kernels/mod.ts";
export * from "./optim/mod.ts";
export * from "./pipeline/mod.ts";
