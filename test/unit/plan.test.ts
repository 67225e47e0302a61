import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Codes, HostError, IntegrityError, RegistryError } from '../../src/errors.js';
import { Host } from '../../src/install/host.js';
import { runPlan, type Step } from '../../src/install/plan.js';
import { silentReporter } from '../../src/util/progress.js';
import { tmpdir } from '../helpers/peers.js';

const failing = (id: string, e: unknown): Step => ({
  id,
  title: `do ${id}`,
  check: async () => false,
  apply: async () => {
    throw e;
  },
});

async function failureOf(step: Step): Promise<{ error: unknown; logDir: string }> {
  const host = new Host(await tmpdir());
  const error = await runPlan(host, 'test', [step], silentReporter).then(
    () => undefined,
    (e: unknown) => e,
  );
  return { error, logDir: host.p('/var/log/ferry') };
}

describe('a failed plan step', () => {
  it('keeps the class, code, exit, hint and status of a FerryError, and names the step', async () => {
    const cause = new RegistryError(Codes.regAuth, 'the registry refused the credentials', { hint: 'Log in again.', status: 401 });
    const { error } = await failureOf(failing('pull', cause));
    expect(error).toBeInstanceOf(RegistryError);
    expect(error).toMatchObject({ code: 'REGISTRY_AUTH', exit: 'remote', hint: 'Log in again.', status: 401, message: 'step "do pull" failed: the registry refused the credentials' });
    expect((error as Error).cause).toBe(cause);
  });

  it('points a FerryError without a hint at the run log', async () => {
    const { error, logDir } = await failureOf(failing('verify', new IntegrityError(Codes.digestMismatch, 'blob sha256:ab does not match')));
    expect(error).toBeInstanceOf(IntegrityError);
    expect(error).toMatchObject({ code: 'DIGEST_MISMATCH', exit: 'integrity', message: 'step "do verify" failed: blob sha256:ab does not match' });
    expect((error as IntegrityError).hint).toContain(path.join(logDir, 'test-'));
  });

  it('turns any other error into INSTALL_STEP_FAILED, an io failure of this host', async () => {
    const { error } = await failureOf(failing('write', new Error('EACCES: permission denied')));
    expect(error).toBeInstanceOf(HostError);
    expect(error).toMatchObject({ code: 'INSTALL_STEP_FAILED', exit: 'io', message: 'step "do write" failed: EACCES: permission denied', hint: expect.stringContaining('re-run') });
  });

  it('fails with INSTALL_STEP_FAILED when the step applied but its check still fails', async () => {
    const { error } = await failureOf({ id: 'noop', title: 'do nothing', check: async () => false, apply: async () => {} });
    expect(error).toBeInstanceOf(HostError);
    expect(error).toMatchObject({ code: 'INSTALL_STEP_FAILED', exit: 'io', message: 'step "do nothing" ran but the host is still not as it should be' });
  });
});
