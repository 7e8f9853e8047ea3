/**
 * Optimizers built on error-feedback compressors (Adam, MicroAdam), optax-style.
 *
 * @module
 */
export * from "./adam.ts";
export * from "./sgd.ts";
export * from "./micro_adam.ts";
export * from "./lgreco.ts";
