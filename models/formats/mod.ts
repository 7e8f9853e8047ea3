/**
 * Quantized Hugging Face checkpoints: the GPTQ layout (v1 and v2, described
 * in `quantizers/gptq_checkpoint.ts`) and compressed-tensors' pack-quantized
 * layout (described in `pack_quantized.ts`), written by
 * {@linkcode writeCheckpoint} (with the dense layout) and read by
 * `loadModel`, which keeps their linears packed ({@linkcode PackedLinear})
 * and runs them on the CPU through {@linkcode dequantizePackedRows}, the
 * formats' CPU reference; a WebGPU session (`llamaSession`, and so
 * `CausalLM.logits`/`perplexity` on WebGPU) converts the quantized ones of
 * 2, 3, 4 or 8 bits to the layout of `qmatmul` once and runs them packed.
 *
 * @module
 */
export * from "./packed_linear.ts";
export * from "./gptq_linear.ts";
export * from "./pack_quantized.ts";
export * from "./quantization_config.ts";
export * from "./read_packed.ts";
export * from "./write_checkpoint.ts";
