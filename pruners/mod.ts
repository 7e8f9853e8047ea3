/**
 * Pruners: magnitude, Wanda, SparseGPT, N:M structures and mask storage.
 *
 * @module
 */
