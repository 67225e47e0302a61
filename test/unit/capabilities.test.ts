import { describe, expect, it } from 'vitest';
import { hasCapability, mayLowerOomScore } from '../../src/install/capabilities.js';
import { containerdConfig } from '../../src/install/system-files.js';

describe('capabilities', () => {
  it('reads CAP_SYS_RESOURCE from the effective set', async () => {
    expect(await mayLowerOomScore('CapEff:\t000001ffffffffff\n')).toBe(true);
    // The sandbox this project runs in: every capability but 24 (CAP_SYS_RESOURCE).
    expect(await mayLowerOomScore('CapEff:\t000001fffeffffff\n')).toBe(false);
    expect(await hasCapability(0, 'CapEff:\t0000000000000000\n')).toBe(false);
  });

  it('makes containerd clamp OOM scores only where the host cannot lower them', () => {
    const base = { pauseImage: 'registry.k8s.io/pause:3.10.2', cgroupDriver: 'systemd' as const };
    const v3 = containerdConfig({ ...base, configVersion: 3, restrictOomScoreAdj: true });
    expect(v3).toMatch(/\[plugins\."io\.containerd\.cri\.v1\.runtime"\]\n  restrict_oom_score_adj = true\n/);
    expect(containerdConfig({ ...base, configVersion: 3 })).not.toContain('restrict_oom_score_adj');
    expect(containerdConfig({ ...base, configVersion: 2, restrictOomScoreAdj: true })).toMatch(/\[plugins\."io\.containerd\.grpc\.v1\.cri"\]\n  sandbox_image = \S+\n  restrict_oom_score_adj = true\n/);
  });
});
