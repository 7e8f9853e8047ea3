/**
 * WebGPU kernels with their CPU references, and backend selection.
 *
 * @module
 */
