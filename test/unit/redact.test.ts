import { Readable } from 'node:stream';
import { text as readAll } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { isSecretKey, REDACTED, redact, redactStream, Redactor } from '../../src/util/redact.js';

/* Issue 22 item 6: what `ferry support-bundle` takes off a site carries no secret. */

const PEM = ['-----BEGIN EC PRIVATE KEY-----', 'MHcCAQEEIBb3c2VjcmV0LWtleS1ib2R5LWxpbmUtb25lAAAAAAAAoAoGCCqGSM49', 'AwEHoUQDQgAEbWFya2VyLWxpbmUtdHdvAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', '-----END EC PRIVATE KEY-----'];

describe('redact', () => {
  it('blanks every line of a private key block, keeps its frame and a certificate', () => {
    const cert = ['-----BEGIN CERTIFICATE-----', 'MIIBcertificatebodyisnotsecret', '-----END CERTIFICATE-----'];
    const out = redact([...cert, ...PEM, 'after'].join('\n'));
    expect(out).not.toContain('MHcCAQEEIBb3');
    expect(out).not.toContain('AwEHoUQDQgAE');
    expect(out).toContain('MIIBcertificatebodyisnotsecret');
    expect(out).toContain('-----BEGIN EC PRIVATE KEY-----');
    expect(out).toContain('-----END EC PRIVATE KEY-----');
    expect(out.split('\n').at(-1)).toBe('after');
    // The frame lines stay as they were, indentation too; key material before an END marker goes.
    expect(redact(['  -----BEGIN RSA PRIVATE KEY-----', '  QUJD', '  -----END RSA PRIVATE KEY-----'].join('\n'))).toBe(['  -----BEGIN RSA PRIVATE KEY-----', REDACTED, '  -----END RSA PRIVATE KEY-----'].join('\n'));
    expect(redact('-----BEGIN PRIVATE KEY-----\nQUJD\nQUJDREVG-----END PRIVATE KEY-----')).not.toContain('QUJDREVG');
  });

  it('blanks a private key written on one line (JSON with \\n escapes)', () => {
    const out = redact(`{"key": "${PEM.join('\\n')}", "name": "ca"}`);
    expect(out).not.toContain('MHcCAQEEIBb3');
    expect(out).toContain('"name": "ca"');
  });

  it("blanks a kubeconfig's credentials and keeps its server and certificate", () => {
    const kubeconfig = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0FEQVRB
    server: https://k8s-cluster.site.test:6443
users:
- name: admin
  user:
    client-certificate-data: Q0VSVERBVEE=
    client-key-data: S0VZREFUQVNFQ1JFVA==
    token: kubeconfig-token-0001
    password: hunter2hunter2
`;
    const out = redact(kubeconfig);
    for (const s of ['S0VZREFUQVNFQ1JFVA==', 'kubeconfig-token-0001', 'hunter2hunter2']) expect(out).not.toContain(s);
    expect(out).toContain('server: https://k8s-cluster.site.test:6443');
    expect(out).toContain('client-certificate-data: Q0VSVERBVEE=');
    expect(out).toContain(`client-key-data: ${REDACTED}`);
  });

  it('blanks a YAML block scalar under a secret key, and only it', () => {
    const out = redact('certificateKey: |\n  aaaabbbbccccdddd\n  eeeeffff00001111\nname: x\n');
    expect(out).not.toMatch(/aaaabbbb|eeeeffff/);
    expect(out).toContain('name: x');
  });

  it('blanks secrets in JSON, key=value, --flag value, headers, URLs and kubeadm output', () => {
    const cases: [string, string][] = [
      ['{"auths":{"reg.site":{"auth":"dXNlcjpwYXNzd29yZA=="}},"token":"json-token-123"}', 'dXNlcjpwYXNzd29yZA=='],
      ['{"auths":{"reg.site":{"auth":"dXNlcjpwYXNzd29yZA=="}},"token":"json-token-123"}', 'json-token-123'],
      ['kubeadm join k8s:6443 --token=abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:1', 'abcdef.0123456789abcdef'],
      ['running kubeadm join --certificate-key 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 --control-plane', '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'],
      ['Nov 30 kubelet[1]: token abcdef.0123456789abcdef used', 'abcdef.0123456789abcdef'],
      ['GET / Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig', 'eyJhbGciOiJSUzI1NiJ9'],
      ['ferry images push --creds harbor.site=admin:s3cretpass', 's3cretpass'],
      ['fetching https://admin:s3cretpass@harbor.site/v2/', 's3cretpass'],
      ['REGISTRY_PASSWORD=s3cretpass ferry lock', 's3cretpass'],
    ];
    for (const [line, secret] of cases) expect(redact(line), line).not.toContain(secret);
    // kubeadm prints the certificate key on the line after its label.
    const out = redact('[upload-certs] Using certificate key:\n0f3c0b8e7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e\n[mark-control-plane] done');
    expect(out).not.toContain('0f3c0b8e7d6a');
    expect(out).toContain('[mark-control-plane] done');
  });

  it('keeps what a diagnosis needs: digests, journal keys, node names, addresses, errors', () => {
    const keep = [
      'sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  files/kubelet',
      '{"key": "k8s-agent-01/node-join", "at": "2026-12-03T10:00:00Z"}',
      'k8s-server-01   Ready    control-plane   3d    v1.36.1   10.0.0.11',
      'error[JOIN_FAILED]: k8s-agent-01 did not join: kubeadm join failed (exit 1)',
      'kind: Secret',
    ];
    for (const l of keep) expect(redact(l)).toBe(l);
  });

  it('blanks the literal secrets it is given, wherever they appear', () => {
    expect(redact('the answers said lab-passphrase-77 somewhere', ['lab-passphrase-77'])).not.toContain('lab-passphrase-77');
  });

  it('names secret keys and flags, and not ordinary ones', () => {
    for (const k of ['token', '--token', 'client-key-data', 'certificateKey', '--certificate-key', 'PASSWORD', 'auth', 'identitytoken', 'secret_access_key']) expect(isSecretKey(k), k).toBe(true);
    for (const k of ['key', 'name', 'server', 'client-certificate-data', 'author', 'kind']) expect(isSecretKey(k), k).toBe(false);
  });
});

describe('redactStream', () => {
  it('redacts a stream cut anywhere, a key block across chunks included, with the same result as the whole text', async () => {
    const text = `a line\nclient-key-data: S0VZREFUQVNFQ1JFVA==\n${PEM.join('\n')}\nü non-ascii kept\nlast line without newline`;
    const bytes = Buffer.from(text);
    // Cut into 7-byte pieces: lines, a key block and a multi-byte character all span chunks.
    const chunks: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += 7) chunks.push(bytes.subarray(i, i + 7));
    const out = await readAll(Readable.from(chunks).pipe(redactStream(new Redactor())));
    expect(out).toBe(redact(text));
    expect(out).not.toContain('S0VZREFUQVNFQ1JFVA==');
    expect(out).not.toContain('MHcCAQEEIBb3');
    expect(out).toContain('ü non-ascii kept');
  });
});
