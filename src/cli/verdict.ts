/*
 * A command whose answer is an exit code of its own (ferry status: healthy, degraded, down) sets it
 * here; main() returns it when the command ends without an error. Errors keep their own codes.
 */
let pending: number | undefined;

export function setVerdictExit(code: number): void {
  pending = code;
}

/** The code a command set (once), or undefined. */
export function takeVerdictExit(): number | undefined {
  const c = pending;
  pending = undefined;
  return c;
}
