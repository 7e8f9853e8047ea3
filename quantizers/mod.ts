/**
 * Quantizers: uniform grids, RTN, GPTQ, FP formats, HIGGS, AQLM, packing.
 *
 * @module
 */
export * from "./quantized_weight.ts";
export * from "./bitpack.ts";
export * from "./gptq_checkpoint.ts";
