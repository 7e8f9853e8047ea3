/**
 * Library-internal: derives a per-step, per-tensor seed for seeded gradient
 * compressors, so that one `seed` option gives a fresh but reproducible
 * random choice at every step and for every tensor. Web-standard only.
 *
 * @module
 */

/**
 * Mixes a base seed with a step count and a tensor name (FNV-1a over the
 * name, then a murmur-style finalizer).
 *
 * @param seed Base seed.
 * @param step Step number.
 * @param name Tensor name.
 * @returns A 32-bit seed.
 */
export function mixSeed(seed: number, step: number, name: string): number {
  let h = 0x811c9dc5 ^ (Math.trunc(seed) >>> 0);
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ (step >>> 0), 0x01000193);
  h = Math.imul(h ^ Math.floor(step / 4294967296), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
