/**
 * Quantizers: uniform grids, RTN, GPTQ, SpQR, FP formats, HIGGS, AQLM, packing, and
 * low-rank corrections of a compressed weight (EoRA, truncated SVD).
 *
 * @module
 */
export * from "./quantized_weight.ts";
export * from "./bitpack.ts";
export * from "./gptq_checkpoint.ts";
export * from "./aqlm.ts";
export * from "./serialize.ts";
export * from "./gptq_checkpoint_file.ts";
export * from "./grid.ts";
export * from "./rtn.ts";
export * from "./gptq.ts";
export * from "./dequantize.ts";
export * from "./mx.ts";
export * from "./fp8_quantize.ts";
export * from "./qsgd.ts";
export * from "./low_rank.ts";
export * from "./lloyd_max.ts";
export * from "./nf4.ts";
export * from "./higgs.ts";
export * from "./rotated.ts";
export * from "./pack.ts";
export * from "./low_rank_factors.ts";
export * from "./eora.ts";
export * from "./low_rank_svd.ts";
export * from "./spqr_weight.ts";
export * from "./spqr.ts";
export * from "./activation_quant.ts";
export * from "./kv_cache_quant.ts";
export * from "./gptq_outliers.ts";
