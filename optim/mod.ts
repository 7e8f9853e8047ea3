/**
 * Optimizers built on error-feedback compressors (Adam, MicroAdam), optax-style.
 *
 * @module
 */
