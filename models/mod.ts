/**
 * Language models behind one interface: Llama-style decoders (Llama 2/3,
 * Mistral, Qwen2/2.5, Qwen3) read from Hugging Face folders or llama2.c
 * files, their tokenizers, the forward pass on the CPU and on WebGPU,
 * perplexity, activation capture, and the adapter the layer-wise pipeline
 * compresses. Loaders and writers use the `Deno` namespace (file system);
 * the forward math is web-standard.
 *
 * @module
 */
export * from "./model.ts";
export * from "./forward.ts";
export * from "./forward_gpu.ts";
export * from "./generate.ts";
export * from "./linear_weight.ts";
export * from "./capture.ts";
export * from "./compressible.ts";
export * from "./perplexity.ts";
export * from "./perplexity_pool.ts";
export * from "./linear_input_stats.ts";
export * from "./with_activation_quant.ts";
export * from "./with_kv_cache_quant.ts";
export * from "./smooth_quant.ts";
export * from "./quarot.ts";
export * from "./tokenizer.ts";
export * from "./llama2c_tokenizer.ts";
export * from "./hf_tokenizer.ts";
export * from "./hf.ts";
export * from "./hf_config.ts";
export * from "./causal_lm.ts";
export * from "./llama2c.ts";
export * from "./formats/mod.ts";
