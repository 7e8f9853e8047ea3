/**
 * Bit packing of b-bit codes into 32-bit words, as the quantizers' formats
 * use it: the arithmetic lives in `core/bitpack.ts` (the layout is described
 * there), since core's own block quantization needs it too; this module keeps
 * it among the quantizers' names. Web-standard only.
 *
 * @module
 */

export { packBits, packBitsInto, packedWords, unpackBits } from "../core/bitpack.ts";
