/**
 * The WebGPU backend of the solver kernels, in one import: choosing a
 * backend and acquiring one adapter and device per process
 * (`gpu_device.ts`), storage buffers and uploads (`gpu_buffers.ts`), a
 * pipeline cache keyed by the full kernel specialization
 * (`pipeline_cache.ts`), batched command encoding with timestamp queries and
 * read-backs that fail (never hang) on device loss (`gpu_batch.ts`), and the
 * pool of idle read-back buffers (`readback_pool.ts`).
 *
 * Web-standard only (`navigator.gpu`); in Deno it needs `--unstable-webgpu`
 * (or `"unstable": ["webgpu"]` in deno.json).
 *
 * @module
 */
export * from "./gpu_device.ts";
export * from "./gpu_buffers.ts";
export * from "./pipeline_cache.ts";
export * from "./gpu_batch.ts";
export * from "./readback_pool.ts";
