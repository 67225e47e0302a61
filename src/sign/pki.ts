import { createPrivateKey, generateKeyPair, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { Codes, UsageError } from '../errors.js';
import { exists, writeFileAtomic } from '../util/fsx.js';

/*
 * The site PKI: a CA that stays on the servers, and TLS certificates for the site service signed by
 * it. Keys come from node:crypto (fast, native); node-forge builds and signs the X.509 structures.
 */

const generateKeyPairP = promisify(generateKeyPair);

const CA_DAYS = 3650;
const SERVER_DAYS = 1095;
/** A kept server certificate must stay valid at least this long, else init issues a new one. */
const RENEW_BEFORE_MS = 30 * 86_400_000;

export interface PkiInitOptions {
  domain: string;
  ips?: string[];
  outDir: string;
  caDays?: number;
  serverDays?: number;
}

export interface PkiInitResult {
  caCert: string;
  caKey: string;
  cert: string;
  key: string;
  /** The CA already existed and was kept: nodes that trust it keep working. */
  caReused: boolean;
  /** Whether the registry certificate was written now or an existing one still fits. */
  serverCert: 'issued' | 'kept';
  names: string[];
  ips: string[];
  /** SHA-256 of the CA certificate's DER, as `openssl x509 -fingerprint -sha256` prints it. */
  caFingerprint: string;
}

export interface IssueOptions {
  caDir: string;
  names: string[];
  ips?: string[];
  /** Writes `<outPrefix>.crt` and `<outPrefix>.key`. */
  outPrefix: string;
  days?: number;
}

export interface IssueResult {
  cert: string;
  key: string;
  names: string[];
  ips: string[];
  notAfter: string;
}

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

function checkDnsName(name: string, what: string): string {
  const n = name.trim().toLowerCase().replace(/\.$/, '');
  const labels = n.startsWith('*.') ? n.slice(2).split('.') : n.split('.');
  if (!n || n.length > 253 || !labels.every((l) => DNS_LABEL.test(l))) {
    throw new UsageError(Codes.pkiInvalid, `${what} "${name}" is not a valid DNS name`, {
      hint: 'Use letters, digits and hyphens in dot-separated labels, e.g. site.example or registry.site.example.',
    });
  }
  return n;
}

function checkIp(ip: string): string {
  const v = ip.trim();
  if (!net.isIP(v)) throw new UsageError(Codes.pkiInvalid, `"${ip}" is not an IP address`, { hint: 'Give IPv4 or IPv6 addresses, e.g. --ip 10.0.0.11 --ip fd00::11.' });
  // One spelling per address, so "covers" checks compare like with like.
  return net.isIPv6(v) ? new URL(`http://[${v}]/`).hostname.slice(1, -1) : v;
}

const uniq = <T>(xs: T[]) => [...new Set(xs)];

async function newKey(): Promise<{ pem: string; forgeKey: forge.pki.rsa.PrivateKey; forgePub: forge.pki.rsa.PublicKey }> {
  const { privateKey, publicKey } = await generateKeyPairP('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  return { pem, forgeKey: forge.pki.privateKeyFromPem(pem), forgePub: forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }) as string) };
}

/** A positive serial with 128 random bits: the top bit is cleared so DER keeps it unsigned. */
function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

function validity(cert: forge.pki.Certificate, days: number): void {
  // Back-date a little so nodes with a slightly slow clock accept a fresh certificate.
  cert.validity.notBefore = new Date(Date.now() - 10 * 60_000);
  cert.validity.notAfter = new Date(Date.now() + days * 86_400_000);
}

const toPem = (cert: forge.pki.Certificate) => forge.pki.certificateToPem(cert);

function buildCa(domain: string, key: Awaited<ReturnType<typeof newKey>>, days: number): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = key.forgePub;
  cert.serialNumber = serial();
  validity(cert, days);
  // A per-site suffix keeps two sites' CAs apart in a trust store that holds both.
  const subject = [
    { name: 'commonName', value: `ferry site CA ${domain} ${randomBytes(4).toString('hex')}` },
    { name: 'organizationName', value: 'ferry' },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(key.forgeKey, forge.md.sha256.create());
  return toPem(cert);
}

function buildServer(ca: { cert: forge.pki.Certificate; key: forge.pki.rsa.PrivateKey }, key: Awaited<ReturnType<typeof newKey>>, names: string[], ips: string[], days: number): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = key.forgePub;
  cert.serialNumber = serial();
  validity(cert, days);
  cert.setSubject([{ name: 'commonName', value: names[0] ?? ips[0] ?? 'ferry' }, { name: 'organizationName', value: 'ferry' }]);
  cert.setIssuer(ca.cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    // Clients (Go's crypto/x509 in containerd, curl, skopeo) match names only against these SANs.
    { name: 'subjectAltName', altNames: [...names.map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))] },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.cert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(ca.key, forge.md.sha256.create());
  return toPem(cert);
}

async function writeKey(file: string, pem: string): Promise<void> {
  await writeFileAtomic(file, pem, 0o600);
  await fs.chmod(file, 0o600);
}

interface LoadedCa {
  pem: string;
  x509: X509Certificate;
  key: KeyObject;
  forge: { cert: forge.pki.Certificate; key: forge.pki.rsa.PrivateKey };
}

async function loadCa(caDir: string): Promise<LoadedCa> {
  const certFile = path.join(caDir, 'ca.crt');
  const keyFile = path.join(caDir, 'ca.key');
  let pem: string;
  let keyPem: string;
  try {
    pem = await fs.readFile(certFile, 'utf8');
    keyPem = await fs.readFile(keyFile, 'utf8');
  } catch (e) {
    throw new UsageError(Codes.pkiMissing, `no site CA in ${caDir}: ${(e as Error).message}`, {
      hint: 'Run `ferry pki init --domain <domain> --out <dir>` first, or point --ca-dir at the directory holding ca.crt and ca.key.',
      cause: e,
    });
  }
  try {
    const x509 = new X509Certificate(pem);
    const key = createPrivateKey(keyPem);
    if (!x509.ca) throw new Error('ca.crt is not a CA certificate');
    if (!x509.checkPrivateKey(key)) throw new Error('ca.key does not belong to ca.crt');
    return { pem, x509, key, forge: { cert: forge.pki.certificateFromPem(pem), key: forge.pki.privateKeyFromPem(keyPem) } };
  } catch (e) {
    throw new UsageError(Codes.pkiInvalid, `the site CA in ${caDir} is unusable: ${(e as Error).message}`, {
      hint: 'Restore ca.crt and ca.key from the first server or its backup. Do not make a new CA unless every node will be given it.',
      cause: e,
    });
  }
}

/** DNS names and IPs a certificate's SAN extension lists. */
function certificateSans(x509: X509Certificate): { names: string[]; ips: string[] } {
  const names: string[] = [];
  const ips: string[] = [];
  for (const part of (x509.subjectAltName ?? '').split(/,\s*/)) {
    if (part.startsWith('DNS:')) names.push(part.slice(4).toLowerCase());
    else if (part.startsWith('IP Address:')) ips.push(checkIp(part.slice(11)));
  }
  return { names, ips };
}

async function serverCertFits(certFile: string, keyFile: string, ca: LoadedCa, names: string[], ips: string[]): Promise<boolean> {
  try {
    const x509 = new X509Certificate(await fs.readFile(certFile));
    const key = createPrivateKey(await fs.readFile(keyFile));
    if (!x509.checkPrivateKey(key) || !x509.verify(ca.x509.publicKey)) return false;
    if (Date.parse(x509.validTo) - Date.now() < RENEW_BEFORE_MS) return false;
    const have = certificateSans(x509);
    return names.every((n) => have.names.includes(n)) && ips.every((i) => have.ips.includes(i));
  } catch {
    return false;
  }
}

const fingerprintOf = (x509: X509Certificate) => x509.fingerprint256;

/**
 * Makes the site CA and the registry certificate for `registry.<domain>`. An existing CA is kept,
 * never replaced: every node trusts it. A half-present CA (only one of ca.crt and ca.key) is an
 * error, because writing either half would orphan the other.
 */
export async function initPki(o: PkiInitOptions): Promise<PkiInitResult> {
  const domain = checkDnsName(o.domain, 'domain');
  const outDir = path.resolve(o.outDir);
  const caCert = path.join(outDir, 'ca.crt');
  const caKey = path.join(outDir, 'ca.key');
  const cert = path.join(outDir, 'registry.crt');
  const key = path.join(outDir, 'registry.key');
  const names = uniq([`registry.${domain}`, 'localhost']);
  const ips = uniq([...(o.ips ?? []).map(checkIp), '127.0.0.1', '::1']);

  const [hasCert, hasKey] = [await exists(caCert), await exists(caKey)];
  if (hasCert !== hasKey) {
    throw new UsageError(Codes.pkiInvalid, `${outDir} holds ${hasCert ? 'ca.crt but no ca.key' : 'ca.key but no ca.crt'}`, {
      hint: 'Restore the missing half from a backup. ferry will not replace a CA that nodes may already trust.',
    });
  }
  const caReused = hasCert;
  if (!caReused) {
    await fs.mkdir(outDir, { recursive: true, mode: 0o700 });
    const k = await newKey();
    await writeKey(caKey, k.pem);
    await writeFileAtomic(caCert, buildCa(domain, k, o.caDays ?? CA_DAYS));
  }
  const ca = await loadCa(outDir);
  let serverCert: 'issued' | 'kept' = 'kept';
  if (!(await serverCertFits(cert, key, ca, names, ips))) {
    await issueWith(ca, names, ips, path.join(outDir, 'registry'), o.serverDays ?? SERVER_DAYS);
    serverCert = 'issued';
  }
  return { caCert, caKey, cert, key, caReused, serverCert, names, ips, caFingerprint: fingerprintOf(ca.x509) };
}

async function issueWith(ca: LoadedCa, names: string[], ips: string[], outPrefix: string, days: number): Promise<IssueResult> {
  const k = await newKey();
  const pem = buildServer(ca.forge, k, names, ips, days);
  const cert = `${outPrefix}.crt`;
  const key = `${outPrefix}.key`;
  await fs.mkdir(path.dirname(path.resolve(cert)), { recursive: true });
  await writeKey(key, k.pem);
  await writeFileAtomic(cert, pem);
  return { cert, key, names, ips, notAfter: new X509Certificate(pem).validTo };
}

/** Issues one more server certificate from the site CA (for another server, or a renewal). */
export async function issueServerCert(o: IssueOptions): Promise<IssueResult> {
  const names = uniq(o.names.map((n) => checkDnsName(n, 'name')));
  const ips = uniq((o.ips ?? []).map(checkIp));
  if (!names.length && !ips.length) {
    throw new UsageError(Codes.pkiInvalid, 'a server certificate needs at least one name or IP', { hint: 'Pass --name registry.<domain> and/or --ip <address>.' });
  }
  const ca = await loadCa(path.resolve(o.caDir));
  return issueWith(ca, names, ips, path.resolve(o.outPrefix), o.days ?? SERVER_DAYS);
}
