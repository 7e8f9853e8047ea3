/**
 * The layer-wise compression pipeline: a small model interface, recipes of
 * stages per linear layer (rotate → prune → quantize) with per-module
 * overrides, and GPTQ-style sequential compression with true-sequential
 * groups; level databases and the non-uniform allocations over them (the
 * DP allocation, the EvoPress search).
 *
 * @module
 */
export * from "./model.ts";
export * from "./recipe.ts";
export * from "./compress_linear.ts";
export * from "./compress_model.ts";
export * from "./level_database.ts";
export * from "./dp_allocation.ts";
export * from "./evopress.ts";
