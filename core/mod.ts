/**
 * Core: tensors, dtype conversions, seeded randomness, float64 linear algebra,
 * safetensors, Hadamard rotations and the optax-style transform contract.
 *
 * @module
 */
export * from "./tensor.ts";
export * from "./lazy_tensor.ts";
export * from "./convert.ts";
export * from "./prng.ts";
export { CholeskyError } from "./_dense.ts";
export * from "./fp8.ts";
export * from "./fp4.ts";
export * from "./e8m0.ts";
export * from "./scaled_float.ts";
export * from "./safetensors.ts";
export * from "./safetensors_file.ts";
export * from "./galois.ts";
export * from "./hadamard.ts";
export * from "./fwht.ts";
export * from "./rotation.ts";
export * from "./linalg.ts";
export * from "./transform.ts";
export * from "./error_feedback.ts";
