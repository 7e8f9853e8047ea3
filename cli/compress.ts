/**
 * `deno task compress`: compresses a model (a Hugging Face folder or a
 * llama2.c `.bin`) with one method, layer by layer on calibration text, and
 * writes the result as a float32 Hugging Face folder.
 *
 * ```sh
 * deno task compress --model path/to/Llama-3.2-1B --method gptq-w4-g128 \
 *   --calib c4 --calib-samples 128 --calib-len 2048 --out out/llama-gptq-w4 --json
 * ```
 *
 * `--help` prints the flags. Exit status 0 when done, 1 when the run failed
 * (its journal stays in `OUT.partial/` for `--resume`), 2 for bad flags or
 * an output folder in the way. For tests, `LLMC_COMPRESS_STOP_AFTER_BLOCK=k`
 * makes a run fail right after block k is journaled. Uses the `Deno`
 * namespace.
 *
 * @module
 */

import { quietGpuProbe } from "../examples/data.ts";
import { formatMethodList } from "../examples/demo/methods.ts";
import { COMPRESS_USAGE, parseCompressArgs } from "./_compress_args.ts";
import { failureStatus } from "./_flags.ts";
import { compressCommand } from "./_compress_command.ts";

/**
 * Runs the command line.
 *
 * @param argv The arguments.
 * @returns The exit status.
 */
export async function main(argv: readonly string[]): Promise<number> {
  try {
    const line = parseCompressArgs(argv);
    if (line.kind === "help") console.log(COMPRESS_USAGE);
    else if (line.kind === "list") console.log(formatMethodList());
    else {
      const report = await compressCommand(line.args, (s) => console.error(s));
      if (line.args.json) console.log(JSON.stringify(report));
      else {
        const compressed = report.modules.filter((m) => m.bits < 32);
        const errors = compressed.map((m) => m.layerError).filter((e) => e !== null);
        console.log(
          `${report.method}: ${compressed.length} of ${report.modules.length} linears compressed, ` +
            `${report.bitsPerWeight.toFixed(3)} bits/weight, mean layer error ${
              errors.length > 0
                ? (errors.reduce((a, b) => a + b, 0) / errors.length).toExponential(3)
                : "n/a"
            }; wrote ${report.out} in ${report.seconds.total.toFixed(1)} s`,
        );
      }
    }
    return 0;
  } catch (e) {
    return failureStatus(e, "compress");
  }
}

if (import.meta.main) {
  quietGpuProbe();
  Deno.exit(await main(Deno.args));
}
