/**
 * Pruners: magnitude, Wanda, SparseGPT, N:M structures and mask storage.
 *
 * @module
 */
export * from "./structure.ts";
export * from "./prune_result.ts";
export * from "./magnitude.ts";
export * from "./mask_storage.ts";
export * from "./schedule.ts";
export * from "./topk_compressor.ts";
export * from "./wanda.ts";
export * from "./sparsegpt.ts";
